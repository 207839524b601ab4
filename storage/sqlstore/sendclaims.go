package sqlstore

import (
	"context"
	"fmt"
)

var (
	// A claim is taken when absent, or over from a holder that claimed it
	// before the stale time; a live claim is left alone (no row changed).
	qClaimSend = defineQuery(`INSERT INTO send_claims (claim_key, claimed_at) VALUES (?, ?)
		ON CONFLICT (claim_key) DO UPDATE SET claimed_at = excluded.claimed_at
		WHERE send_claims.claimed_at < ?`)
	qReleaseSend            = defineQuery(`DELETE FROM send_claims WHERE claim_key = ?`)
	qForgetSendClaimsBefore = defineQuery(`DELETE FROM send_claims WHERE claimed_at < ?`)
)

// ClaimSend claims key at `at` unless someone holds it since staleBefore or
// later, and reports whether it got it. On Postgres a concurrent claim of the
// same key waits for the first to commit, then sees it.
func (q *querier) ClaimSend(ctx context.Context, key string, at, staleBefore int64) (bool, error) {
	n, err := q.exec(ctx, qClaimSend, key, at, staleBefore)
	if err != nil {
		return false, fmt.Errorf("claim send: %w", err)
	}
	return n > 0, nil
}

// ReleaseSend gives key up.
func (q *querier) ReleaseSend(ctx context.Context, key string) error {
	if _, err := q.exec(ctx, qReleaseSend, key); err != nil {
		return fmt.Errorf("release send claim: %w", err)
	}
	return nil
}

// ForgetSendClaimsBefore drops the claims made before t and returns how many.
func (q *querier) ForgetSendClaimsBefore(ctx context.Context, t int64) (int64, error) {
	n, err := q.exec(ctx, qForgetSendClaimsBefore, t)
	if err != nil {
		return 0, fmt.Errorf("forget send claims: %w", err)
	}
	return n, nil
}
