// Package ratelimit provides keyed token buckets (per IP, per address, per
// identity server) with a bounded memory footprint.
package ratelimit

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/time/rate"

	"github.com/threepidd/threepidd/config"
)

// maxKeys bounds how many keys a Limiter tracks; the least recently used go first.
const maxKeys = 100_000

// Limiter is a set of token buckets, one per key. The zero bucket config
// (per_second 0) turns limiting off.
type Limiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex // makes get-or-create atomic
	keys  *expirable.LRU[string, *rate.Limiter]
}

// New returns a limiter for b, or nil (which allows everything) when b.PerSecond is 0.
func New(b config.Bucket) *Limiter {
	if b.PerSecond <= 0 {
		return nil
	}
	burst := max(b.Burst, 1)
	// A bucket idle long enough to be full again can be forgotten.
	idle := time.Duration(float64(burst)/b.PerSecond*float64(time.Second)) + time.Minute
	return &Limiter{
		limit: rate.Limit(b.PerSecond),
		burst: burst,
		keys:  expirable.NewLRU[string, *rate.Limiter](maxKeys, nil, idle),
	}
}

// Allow takes one token for key. When none is left it returns false and how
// long until one is.
func (l *Limiter) Allow(_ context.Context, key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	lim, ok := l.keys.Get(key)
	if !ok {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.keys.Add(key, lim)
	}
	l.mu.Unlock()
	r := lim.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return false, d
	}
	return true, 0
}
