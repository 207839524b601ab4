package sqlstore

import (
	"context"
	"fmt"
)

var (
	qRememberRequest      = defineQuery(`INSERT INTO replays (hash, seen_at) VALUES (?, ?) ON CONFLICT DO NOTHING`)
	qForgetRequestsBefore = defineQuery(`DELETE FROM replays WHERE seen_at < ?`)
)

// RememberRequest stores hash and reports whether it was new. On Postgres a
// concurrent insert of the same hash waits for the first to commit or roll back.
func (q *querier) RememberRequest(ctx context.Context, hash string, at int64) (bool, error) {
	n, err := q.exec(ctx, qRememberRequest, hash, at)
	if err != nil {
		return false, fmt.Errorf("remember request: %w", err)
	}
	return n > 0, nil
}

// ForgetRequestsBefore drops remembered hashes seen before t and returns how many.
func (q *querier) ForgetRequestsBefore(ctx context.Context, t int64) (int64, error) {
	n, err := q.exec(ctx, qForgetRequestsBefore, t)
	if err != nil {
		return 0, fmt.Errorf("forget requests: %w", err)
	}
	return n, nil
}
