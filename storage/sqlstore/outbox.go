package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/threepidd/threepidd/storage"
)

const outboxColumns = `id, kind, item_key, payload, attempts, next_attempt, created_at, last_error, item_group`

var (
	qEnqueueOutbox = defineQuery(`INSERT INTO outbox
		(kind, item_key, payload, attempts, next_attempt, created_at, last_error, item_group)
		VALUES (?, ?, ?, 0, ?, ?, ?, ?)
		ON CONFLICT (kind, item_key) WHERE item_key <> '' DO NOTHING RETURNING id`)
	qDueOutbox = defineQuery(`SELECT ` + outboxColumns + ` FROM outbox
		WHERE kind = ? AND next_attempt <= ? ORDER BY next_attempt, id LIMIT ?{{skiplocked}}`)
	qRescheduleOutbox = defineQuery(`UPDATE outbox
		SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE id = ?`)
	qReleaseOutbox = defineQuery(`UPDATE outbox SET next_attempt = ? WHERE id = ?`)
	qDeleteOutbox  = defineQuery(`DELETE FROM outbox WHERE id = ?`)
	qPendingOutbox = defineQuery(`SELECT ` + outboxColumns + ` FROM outbox
		WHERE kind = ? AND item_key = ? ORDER BY id`)
	qCountOutbox  = defineQuery(`SELECT COUNT(*) FROM outbox WHERE kind = ?`)
	qOldestOutbox = defineQuery(`SELECT COALESCE(MIN(created_at), 0) FROM outbox WHERE kind = ?`)
	// The due head of each group; an item without a group is a group of its
	// own. FOR UPDATE SKIP LOCKED applies to the outer select (Postgres
	// refuses it next to a window function).
	qDueOutboxGroups = defineQuery(`SELECT ` + outboxColumns + ` FROM outbox WHERE id IN (
			SELECT id FROM (
				SELECT id, ROW_NUMBER() OVER (
					PARTITION BY CASE WHEN item_group = '' THEN CAST(id AS TEXT) ELSE item_group END
					ORDER BY next_attempt, id) AS rank
				FROM outbox WHERE kind = ? AND next_attempt <= ?
			) heads WHERE rank = 1
		) ORDER BY next_attempt, id LIMIT ?{{skiplocked}}`)
	qDeferOutboxGroup = defineQuery(`UPDATE outbox SET next_attempt = ?
		WHERE kind = ? AND item_group = ? AND next_attempt < ?`)
	qCountOutboxKeyPrefix = defineQuery(`SELECT COUNT(*) FROM outbox
		WHERE kind = ? AND item_key <> '' AND substr(item_key, 1, ?) = ?`)
)

// leaseOutboxSQL is the UPDATE that leases claimed rows; Rebind runs on it
// once the number of ids is known.
const leaseOutboxSQL = `UPDATE outbox SET next_attempt = ? WHERE id IN (`

func scanOutbox(r scanner) (it storage.OutboxItem, err error) {
	err = r.Scan(&it.ID, &it.Kind, &it.Key, &it.Payload, &it.Attempts, &it.NextAttempt, &it.CreatedAt, &it.LastError, &it.Group)
	return it, err
}

// EnqueueOutbox stores item (ID and Attempts ignored) and returns its ID.
func (q *querier) EnqueueOutbox(ctx context.Context, item storage.OutboxItem) (int64, error) {
	payload := item.Payload
	if payload == nil {
		payload = []byte{}
	}
	id, err := scalar[int64](ctx, q, q.write, qEnqueueOutbox,
		item.Kind, item.Key, payload, item.NextAttempt, item.CreatedAt, item.LastError, item.Group)
	if errors.Is(err, storage.ErrNotFound) {
		// No row came back: an item with that key is already pending.
		return 0, fmt.Errorf("enqueue %s item: key already pending: %w", item.Kind, storage.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("enqueue %s item: %w", item.Kind, err)
	}
	return id, nil
}

// ClaimOutbox returns up to limit items of kind due at or before now, oldest
// due first, and pushes their NextAttempt (as returned, too) to leaseUntil, in
// one transaction. On Postgres the rows are selected FOR UPDATE SKIP LOCKED, so
// concurrent claimers never wait for or share an item.
func (q *querier) ClaimOutbox(ctx context.Context, kind string, now, leaseUntil int64, limit int) ([]storage.OutboxItem, error) {
	return q.claim(ctx, qDueOutbox, kind, now, leaseUntil, limit)
}

// ClaimOutboxGroups is ClaimOutbox taking the due head of each group only.
func (q *querier) ClaimOutboxGroups(ctx context.Context, kind string, now, leaseUntil int64, limit int) ([]storage.OutboxItem, error) {
	return q.claim(ctx, qDueOutboxGroups, kind, now, leaseUntil, limit)
}

// claim selects the items of due (a query taking kind, now and limit) and
// leases them until leaseUntil, in one transaction.
func (q *querier) claim(ctx context.Context, due query, kind string, now, leaseUntil int64, limit int) ([]storage.OutboxItem, error) {
	if limit <= 0 {
		return []storage.OutboxItem{}, nil
	}
	var items []storage.OutboxItem
	err := q.inTx(ctx, func(q *querier) error {
		var err error
		items, err = list(ctx, q, due, scanOutbox, kind, now, limit)
		if err != nil || len(items) == 0 {
			return err
		}
		args := make([]any, 0, len(items)+1)
		args = append(args, leaseUntil)
		for i := range items {
			items[i].NextAttempt = leaseUntil
			args = append(args, items[i].ID)
		}
		lease := q.s.dialect.Rebind(leaseOutboxSQL + placeholders(len(items)) + ")")
		if _, err := q.write.ExecContext(ctx, lease, args...); err != nil {
			return fmt.Errorf("lease: %w", q.s.translate(err))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim %s items: %w", kind, err)
	}
	return items, nil
}

// RescheduleOutbox records a failed attempt. ErrNotFound if id is gone.
func (q *querier) RescheduleOutbox(ctx context.Context, id int64, nextAttempt int64, lastErr string) error {
	if err := q.execOne(ctx, qRescheduleOutbox, nextAttempt, lastErr, id); err != nil {
		return fmt.Errorf("reschedule outbox item %d: %w", id, err)
	}
	return nil
}

// ReleaseOutbox makes a claimed, unattempted item due at nextAttempt.
// ErrNotFound if id is gone.
func (q *querier) ReleaseOutbox(ctx context.Context, id int64, nextAttempt int64) error {
	if err := q.execOne(ctx, qReleaseOutbox, nextAttempt, id); err != nil {
		return fmt.Errorf("release outbox item %d: %w", id, err)
	}
	return nil
}

// DeleteOutbox removes an item. ErrNotFound if it is gone already.
func (q *querier) DeleteOutbox(ctx context.Context, id int64) error {
	if err := q.execOne(ctx, qDeleteOutbox, id); err != nil {
		return fmt.Errorf("delete outbox item %d: %w", id, err)
	}
	return nil
}

// PendingOutbox lists pending items of kind whose Key is key, oldest first.
func (q *querier) PendingOutbox(ctx context.Context, kind, key string) ([]storage.OutboxItem, error) {
	items, err := list(ctx, q, qPendingOutbox, scanOutbox, kind, key)
	if err != nil {
		return nil, fmt.Errorf("pending %s items: %w", kind, err)
	}
	return items, nil
}

// CountOutbox returns how many items of kind are pending.
func (q *querier) CountOutbox(ctx context.Context, kind string) (int64, error) {
	n, err := scalar[int64](ctx, q, q.read, qCountOutbox, kind)
	if err != nil {
		return 0, fmt.Errorf("count %s items: %w", kind, err)
	}
	return n, nil
}

// OldestOutbox returns the CreatedAt of the oldest pending item of kind, 0
// when none is pending.
func (q *querier) OldestOutbox(ctx context.Context, kind string) (int64, error) {
	at, err := scalar[int64](ctx, q, q.read, qOldestOutbox, kind)
	if err != nil {
		return 0, fmt.Errorf("oldest %s item: %w", kind, err)
	}
	return at, nil
}

// DeferOutboxGroup pushes the pending items of kind in group to until at the
// earliest.
func (q *querier) DeferOutboxGroup(ctx context.Context, kind, group string, until int64) (int64, error) {
	if group == "" {
		return 0, fmt.Errorf("defer %s items: no group", kind)
	}
	n, err := q.exec(ctx, qDeferOutboxGroup, until, kind, group, until)
	if err != nil {
		return 0, fmt.Errorf("defer %s items of %s: %w", kind, group, err)
	}
	return n, nil
}

// CountOutboxKeyPrefix returns how many items of kind whose Key starts with
// prefix are pending. substr counts characters on both backends.
func (q *querier) CountOutboxKeyPrefix(ctx context.Context, kind, prefix string) (int64, error) {
	if prefix == "" {
		return 0, fmt.Errorf("count %s items: empty key prefix", kind)
	}
	n, err := scalar[int64](ctx, q, q.read, qCountOutboxKeyPrefix, kind, utf8.RuneCountInString(prefix), prefix)
	if err != nil {
		return 0, fmt.Errorf("count %s items by key prefix: %w", kind, err)
	}
	return n, nil
}
