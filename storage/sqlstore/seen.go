package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/threepidd/threepidd/storage"
)

var (
	qUserSeen = defineQuery(`SELECT 1 FROM seen_users WHERE user_id = ?`)
)

// UserSeen reports whether userID was marked seen.
func (q *querier) UserSeen(ctx context.Context, userID string) (bool, error) {
	_, err := scalar[int](ctx, q, q.read, qUserSeen, userID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("seen %q: %w", userID, err)
	}
	return true, nil
}

// MarkUsersSeen marks every user of userIDs seen at `at`, in one transaction
// (the caller's, or its own).
func (q *querier) MarkUsersSeen(ctx context.Context, userIDs []string, at int64) error {
	_, err := insertRows(ctx, q, `INSERT INTO seen_users (user_id, seen_at)`, `ON CONFLICT DO NOTHING`, userIDs,
		func(u string) []any { return []any{u, at} })
	if err != nil {
		return fmt.Errorf("mark %d users seen: %w", len(userIDs), err)
	}
	return nil
}
