package sqlstore

import (
	"context"
	"fmt"

	"github.com/threepidd/threepidd/storage"
)

var (
	qCountTokenAttempts = defineQuery(`SELECT COUNT(*) FROM token_attempts
		WHERE medium = ? AND address = ? AND at >= ?`)
	qInsertTokenAttempt        = defineQuery(`INSERT INTO token_attempts (medium, address, at) VALUES (?, ?, ?)`)
	qForgetTokenAttemptsBefore = defineQuery(`DELETE FROM token_attempts WHERE at < ?`)
)

// RecordTokenAttempt records an attempt on (medium, address) unless a limit
// is reached. It holds a lock on the 3PID (the dialect's key lock; SQLite
// serialises writers anyway) from the counts to the insert.
func (q *querier) RecordTokenAttempt(ctx context.Context, medium, address string, at int64, limits ...storage.AttemptLimit) (bool, error) {
	recorded := false
	err := q.inTx(ctx, func(q *querier) error {
		if err := q.lockKey(ctx, "token attempts "+medium+" "+address); err != nil {
			return err
		}
		for _, l := range limits {
			n, err := scalar[int](ctx, q, q.write, qCountTokenAttempts, medium, address, l.Since)
			if err != nil {
				return err
			}
			if n >= l.Max {
				return nil
			}
		}
		if _, err := q.exec(ctx, qInsertTokenAttempt, medium, address, at); err != nil {
			return err
		}
		recorded = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record a token attempt: %w", err)
	}
	return recorded, nil
}

// ForgetTokenAttemptsBefore drops the attempts made before t.
func (q *querier) ForgetTokenAttemptsBefore(ctx context.Context, t int64) (int64, error) {
	n, err := q.exec(ctx, qForgetTokenAttemptsBefore, t)
	if err != nil {
		return 0, fmt.Errorf("forget token attempts: %w", err)
	}
	return n, nil
}
