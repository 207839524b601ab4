package sqlstore

import (
	"context"
	"fmt"

	"github.com/threepidd/threepidd/storage"
)

const sessionColumns = `sid, client_secret, medium, address, token_hash, send_attempt,
	next_link, failed_attempts, validated_at, expires_at, created_at`

var (
	qCreateSession = defineQuery(`INSERT INTO sessions (` + sessionColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	qSessionByID  = defineQuery(`SELECT ` + sessionColumns + ` FROM sessions WHERE sid = ?`)
	qSessionByKey = defineQuery(`SELECT ` + sessionColumns + ` FROM sessions
		WHERE client_secret = ? AND medium = ? AND address = ?
		ORDER BY created_at DESC, sid DESC LIMIT 1`)
	qUpdateSessionToken = defineQuery(`UPDATE sessions
		SET token_hash = ?, send_attempt = ?, expires_at = ?, failed_attempts = 0 WHERE sid = ?`)
	qIncrementSessionFailures = defineQuery(`UPDATE sessions
		SET failed_attempts = failed_attempts + 1 WHERE sid = ? RETURNING failed_attempts`)
	qMarkSessionValidated = defineQuery(`UPDATE sessions
		SET validated_at = CASE WHEN validated_at = 0 THEN ? ELSE validated_at END WHERE sid = ?`)
	qDeleteSession        = defineQuery(`DELETE FROM sessions WHERE sid = ?`)
	qDeleteExpiredSession = defineQuery(`DELETE FROM sessions WHERE expires_at < ?`)
)

func scanSession(r scanner) (s storage.Session, err error) {
	err = r.Scan(&s.SID, &s.ClientSecret, &s.Medium, &s.Address, &s.TokenHash, &s.SendAttempt,
		&s.NextLink, &s.FailedAttempts, &s.ValidatedAt, &s.ExpiresAt, &s.CreatedAt)
	return s, err
}

// CreateSession inserts s. ErrConflict if s.SID exists.
func (q *querier) CreateSession(ctx context.Context, s storage.Session) error {
	n, err := q.exec(ctx, qCreateSession, s.SID, s.ClientSecret, s.Medium, s.Address, s.TokenHash,
		s.SendAttempt, s.NextLink, s.FailedAttempts, s.ValidatedAt, s.ExpiresAt, s.CreatedAt)
	if err == nil && n == 0 {
		err = storage.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("create session %q: %w", s.SID, err)
	}
	return nil
}

// SessionByID returns the session with that sid, or ErrNotFound.
func (q *querier) SessionByID(ctx context.Context, sid string) (storage.Session, error) {
	s, err := one(ctx, q, q.read, qSessionByID, scanSession, sid)
	if err != nil {
		return s, fmt.Errorf("session %q: %w", sid, err)
	}
	return s, nil
}

// SessionByKey returns the session for (client_secret, medium, address), the
// newest if there are several, or ErrNotFound.
func (q *querier) SessionByKey(ctx context.Context, clientSecret, medium, address string) (storage.Session, error) {
	s, err := one(ctx, q, q.read, qSessionByKey, scanSession, clientSecret, medium, address)
	if err != nil {
		return s, fmt.Errorf("session by key: %w", err)
	}
	return s, nil
}

// UpdateSessionToken replaces the token of sid. ErrNotFound if absent.
func (q *querier) UpdateSessionToken(ctx context.Context, sid, tokenHash string, sendAttempt, expiresAt int64) error {
	if err := q.execOne(ctx, qUpdateSessionToken, tokenHash, sendAttempt, expiresAt, sid); err != nil {
		return fmt.Errorf("update token of session %q: %w", sid, err)
	}
	return nil
}

// IncrementSessionFailures adds one failed token attempt and returns the new
// count. ErrNotFound if absent.
func (q *querier) IncrementSessionFailures(ctx context.Context, sid string) (int, error) {
	n, err := scalar[int](ctx, q, q.write, qIncrementSessionFailures, sid)
	if err != nil {
		return 0, fmt.Errorf("count failure of session %q: %w", sid, err)
	}
	return n, nil
}

// MarkSessionValidated sets validated_at if it is still 0. ErrNotFound if absent.
func (q *querier) MarkSessionValidated(ctx context.Context, sid string, at int64) error {
	if err := q.execOne(ctx, qMarkSessionValidated, at, sid); err != nil {
		return fmt.Errorf("mark session %q validated: %w", sid, err)
	}
	return nil
}

// DeleteSession removes sid and reports whether a row was removed.
func (q *querier) DeleteSession(ctx context.Context, sid string) (bool, error) {
	n, err := q.exec(ctx, qDeleteSession, sid)
	if err != nil {
		return false, fmt.Errorf("delete session %q: %w", sid, err)
	}
	return n > 0, nil
}

// DeleteSessionsExpiredBefore removes sessions whose expiry is before t.
func (q *querier) DeleteSessionsExpiredBefore(ctx context.Context, t int64) (int64, error) {
	n, err := q.exec(ctx, qDeleteExpiredSession, t)
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return n, nil
}
