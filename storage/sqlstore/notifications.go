package sqlstore

import (
	"context"
	"fmt"

	"github.com/threepidd/threepidd/storage"
)

const notificationColumns = `stream_id, user_id, medium, address, deleted, mxid, origin, at`

var (
	// qNextStreamID takes the counter row's lock until the transaction ends, so
	// positions commit in order and a rolled-back position is reused.
	qNextStreamID       = defineQuery(`UPDATE stream_counter SET value = value + 1 WHERE id = 1 RETURNING value`)
	qMaxStreamID        = defineQuery(`SELECT value FROM stream_counter WHERE id = 1`)
	qInsertNotification = defineQuery(`INSERT INTO notifications (` + notificationColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	qNotificationsSince = defineQuery(`SELECT ` + notificationColumns + ` FROM notifications
		WHERE user_id = ? AND stream_id > ? AND at >= ? ORDER BY stream_id LIMIT ?`)
	qUsersNotifiedBetween = defineQuery(`SELECT DISTINCT user_id FROM notifications
		WHERE stream_id > ? AND stream_id <= ?`)
)

func scanNotification(r scanner) (n storage.Notification, err error) {
	err = r.Scan(&n.StreamID, &n.UserID, &n.Medium, &n.Address, &n.Deleted, &n.MXID, &n.Origin, &n.At)
	return n, err
}

// AppendNotification allocates the next stream position for n in the caller's
// transaction (in its own outside one), stores n and returns its position.
// Subscribers are woken once the transaction commits.
func (q *querier) AppendNotification(ctx context.Context, n storage.Notification) (int64, error) {
	err := q.inTx(ctx, func(q *querier) error {
		pos, err := scalar[int64](ctx, q, q.write, qNextStreamID)
		if err != nil {
			return fmt.Errorf("allocate stream position: %w", err)
		}
		if _, err := q.exec(ctx, qInsertNotification, pos, n.UserID, n.Medium, n.Address, n.Deleted, n.MXID, n.Origin, n.At); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		if q.s.notify != "" {
			if _, err := q.write.ExecContext(ctx, q.s.notify, wakePayload(pos, n.UserID)); err != nil {
				return fmt.Errorf("notify: %w", err)
			}
		}
		q.tx.woken = append(q.tx.woken, n.UserID)
		n.StreamID = pos
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("append notification for %q: %w", n.UserID, err)
	}
	return n.StreamID, nil
}

// NotificationsSince returns userID's notifications with StreamID > after and
// At >= notBefore, oldest first, at most limit (none if limit <= 0).
func (q *querier) NotificationsSince(ctx context.Context, userID string, after, notBefore int64, limit int) ([]storage.Notification, error) {
	if limit <= 0 {
		return []storage.Notification{}, nil
	}
	ns, err := list(ctx, q, qNotificationsSince, scanNotification, userID, after, notBefore, limit)
	if err != nil {
		return nil, fmt.Errorf("notifications of %q: %w", userID, err)
	}
	return ns, nil
}

// MaxStreamID returns the highest allocated (and committed) position, 0 if none.
func (q *querier) MaxStreamID(ctx context.Context) (int64, error) {
	pos, err := scalar[int64](ctx, q, q.read, qMaxStreamID)
	if err != nil {
		return 0, fmt.Errorf("max stream id: %w", err)
	}
	return pos, nil
}

// usersSince returns the users notified at positions in (after, upTo].
func (s *Store) usersSince(ctx context.Context, after, upTo int64) ([]string, error) {
	users, err := list(ctx, &s.querier, qUsersNotifiedBetween, func(r scanner) (u string, err error) {
		return u, r.Scan(&u)
	}, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("users notified since %d: %w", after, err)
	}
	return users, nil
}
