package sqlstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// qTakeRateLimitToken is the GCRA step in one atomic upsert: a bucket whose
// theoretical arrival time (tat) is at most now + tolerance gives a token
// and moves its tat to max(tat, now) + interval; otherwise it is left as it
// is. taken_by is set to the caller's nonce only when a token was given, so
// that the caller can tell from the returned row whether it got one.
// Parameters: limiter, key, now + interval, nonce (the new row), then
// now + tolerance, now, now, interval, now + tolerance (the update).
var (
	qTakeRateLimitToken = defineQuery(`INSERT INTO ratelimit_buckets (limiter, bucket_key, tat, taken_by)
		VALUES (?, ?, ?, ?)
		ON CONFLICT (limiter, bucket_key) DO UPDATE SET
		tat = CASE WHEN ratelimit_buckets.tat <= ?
			THEN (CASE WHEN ratelimit_buckets.tat > ? THEN ratelimit_buckets.tat ELSE ? END) + ?
			ELSE ratelimit_buckets.tat END,
		taken_by = CASE WHEN ratelimit_buckets.tat <= ? THEN excluded.taken_by ELSE ratelimit_buckets.taken_by END
		RETURNING tat, taken_by`)
	qForgetFullRateLimits = defineQuery(`DELETE FROM ratelimit_buckets WHERE tat <= ?`)
)

// TakeRateLimitToken takes a token from the bucket (limiter, key), or reports
// the wait until one is there.
func (q *querier) TakeRateLimitToken(ctx context.Context, limiter, key string, now, interval, tolerance int64) (bool, int64, error) {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	nonce := int64(binary.BigEndian.Uint64(b[:]) >> 1)
	type row struct{ tat, takenBy int64 }
	r, err := one(ctx, q, q.write, qTakeRateLimitToken, func(s scanner) (r row, err error) {
		return r, s.Scan(&r.tat, &r.takenBy)
	}, limiter, key, now+interval, nonce, now+tolerance, now, now, interval, now+tolerance)
	if err != nil {
		return false, 0, fmt.Errorf("take a token of rate limit %s: %w", limiter, err)
	}
	if r.takenBy == nonce {
		return true, 0, nil
	}
	return false, r.tat - (now + tolerance), nil
}

// ForgetFullRateLimits drops the buckets that are full at now.
func (q *querier) ForgetFullRateLimits(ctx context.Context, now int64) (int64, error) {
	n, err := q.exec(ctx, qForgetFullRateLimits, now)
	if err != nil {
		return 0, fmt.Errorf("forget full rate-limit buckets: %w", err)
	}
	return n, nil
}
