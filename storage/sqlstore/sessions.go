package sqlstore

import (
	"context"
	"fmt"

	"github.com/threepidd/threepidd/storage"
)

const sessionColumns = `sid, client_secret, medium, address, send_attempt,
	next_link, validated_at, expires_at, created_at`

const tokenColumns = `sid, token_hash, send_attempt, expires_at, used_at`

var (
	qCreateSession = defineQuery(`INSERT INTO sessions (` + sessionColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	qSessionByID  = defineQuery(`SELECT ` + sessionColumns + ` FROM sessions WHERE sid = ?`)
	qSessionByKey = defineQuery(`SELECT ` + sessionColumns + ` FROM sessions
		WHERE client_secret = ? AND medium = ? AND address = ?
		ORDER BY created_at DESC, sid DESC LIMIT 1`)
	qSessionResent = defineQuery(`UPDATE sessions SET
		send_attempt = CASE WHEN send_attempt < ? THEN ? ELSE send_attempt END,
		expires_at = CASE WHEN expires_at < ? THEN ? ELSE expires_at END
		WHERE sid = ?`)
	qInsertToken = defineQuery(`INSERT INTO session_tokens (` + tokenColumns + `) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (sid, token_hash) DO UPDATE SET
		send_attempt = excluded.send_attempt, expires_at = excluded.expires_at, used_at = 0`)
	qKeepTokens = defineQuery(`DELETE FROM session_tokens WHERE sid = ? AND token_hash NOT IN (
		SELECT token_hash FROM session_tokens WHERE sid = ?
		ORDER BY expires_at DESC, send_attempt DESC, token_hash LIMIT ?)`)
	qSessionTokens = defineQuery(`SELECT ` + tokenColumns + ` FROM session_tokens WHERE sid = ?
		ORDER BY expires_at DESC, send_attempt DESC, token_hash`)
	qMarkSessionValidated = defineQuery(`UPDATE sessions
		SET validated_at = CASE WHEN validated_at = 0 THEN ? ELSE validated_at END WHERE sid = ?`)
	qMarkTokenUsed = defineQuery(`UPDATE session_tokens
		SET used_at = CASE WHEN used_at = 0 THEN ? ELSE used_at END WHERE sid = ? AND token_hash = ?`)
	qDeleteSessionTokens  = defineQuery(`DELETE FROM session_tokens WHERE sid = ?`)
	qDeleteSession        = defineQuery(`DELETE FROM sessions WHERE sid = ?`)
	qDeleteExpiredTokens  = defineQuery(`DELETE FROM session_tokens WHERE sid IN (SELECT sid FROM sessions WHERE expires_at < ?)`)
	qDeleteExpiredSession = defineQuery(`DELETE FROM sessions WHERE expires_at < ?`)
)

func scanSession(r scanner) (s storage.Session, err error) {
	err = r.Scan(&s.SID, &s.ClientSecret, &s.Medium, &s.Address, &s.SendAttempt,
		&s.NextLink, &s.ValidatedAt, &s.ExpiresAt, &s.CreatedAt)
	return s, err
}

func scanToken(r scanner) (t storage.SessionToken, err error) {
	err = r.Scan(&t.SID, &t.TokenHash, &t.SendAttempt, &t.ExpiresAt, &t.UsedAt)
	return t, err
}

// CreateSession inserts s with its first token. ErrConflict if s.SID exists.
func (q *querier) CreateSession(ctx context.Context, s storage.Session, first storage.SessionToken) error {
	err := q.inTx(ctx, func(q *querier) error {
		n, err := q.exec(ctx, qCreateSession, s.SID, s.ClientSecret, s.Medium, s.Address,
			s.SendAttempt, s.NextLink, s.ValidatedAt, s.ExpiresAt, s.CreatedAt)
		if err == nil && n == 0 {
			err = storage.ErrConflict
		}
		if err != nil {
			return err
		}
		return q.insertToken(ctx, s.SID, first)
	})
	if err != nil {
		return fmt.Errorf("create session %q: %w", s.SID, err)
	}
	return nil
}

func (q *querier) insertToken(ctx context.Context, sid string, t storage.SessionToken) error {
	_, err := q.exec(ctx, qInsertToken, sid, t.TokenHash, t.SendAttempt, t.ExpiresAt, t.UsedAt)
	return err
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

// AddSessionToken adds t to its session and keeps the keep tokens that
// expire last. ErrNotFound if the session is absent.
func (q *querier) AddSessionToken(ctx context.Context, t storage.SessionToken, keep int) error {
	err := q.inTx(ctx, func(q *querier) error {
		if err := q.execOne(ctx, qSessionResent, t.SendAttempt, t.SendAttempt, t.ExpiresAt, t.ExpiresAt, t.SID); err != nil {
			return err
		}
		if err := q.insertToken(ctx, t.SID, t); err != nil {
			return err
		}
		_, err := q.exec(ctx, qKeepTokens, t.SID, t.SID, keep)
		return err
	})
	if err != nil {
		return fmt.Errorf("add a token to session %q: %w", t.SID, err)
	}
	return nil
}

// SessionTokens lists the tokens of sid, the one that expires last first.
func (q *querier) SessionTokens(ctx context.Context, sid string) ([]storage.SessionToken, error) {
	ts, err := list(ctx, q, qSessionTokens, scanToken, sid)
	if err != nil {
		return nil, fmt.Errorf("tokens of session %q: %w", sid, err)
	}
	return ts, nil
}

// ValidateSession marks sid validated by its token tokenHash. ErrNotFound if
// the session or the token is absent.
func (q *querier) ValidateSession(ctx context.Context, sid, tokenHash string, at int64) error {
	err := q.inTx(ctx, func(q *querier) error {
		if err := q.execOne(ctx, qMarkTokenUsed, at, sid, tokenHash); err != nil {
			return err
		}
		return q.execOne(ctx, qMarkSessionValidated, at, sid)
	})
	if err != nil {
		return fmt.Errorf("validate session %q: %w", sid, err)
	}
	return nil
}

// DeleteSession removes sid and its tokens, and reports whether a session was removed.
func (q *querier) DeleteSession(ctx context.Context, sid string) (bool, error) {
	n, err := q.deleteSessions(ctx, qDeleteSessionTokens, qDeleteSession, sid)
	if err != nil {
		return false, fmt.Errorf("delete session %q: %w", sid, err)
	}
	return n > 0, nil
}

// DeleteSessionsExpiredBefore removes the sessions whose expiry is before t,
// with their tokens.
func (q *querier) DeleteSessionsExpiredBefore(ctx context.Context, t int64) (int64, error) {
	n, err := q.deleteSessions(ctx, qDeleteExpiredTokens, qDeleteExpiredSession, t)
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return n, nil
}

// deleteSessions runs tokens then sessions, two deletions with the one
// argument arg, in one transaction, and returns how many sessions went.
func (q *querier) deleteSessions(ctx context.Context, tokens, sessions query, arg any) (int64, error) {
	var n int64
	err := q.inTx(ctx, func(q *querier) error {
		if _, err := q.exec(ctx, tokens, arg); err != nil {
			return err
		}
		var err error
		n, err = q.exec(ctx, sessions, arg)
		return err
	})
	return n, err
}
