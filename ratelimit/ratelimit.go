// Package ratelimit provides keyed token buckets (per IP, per address, per
// identity server) kept in the store, so that every instance on one database
// shares them. The buckets that are full again are forgotten by the store's
// expiry (storage.RateLimits.ForgetFullRateLimits, run by server).
package ratelimit

import (
	"context"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/storage"
)

// Limiter is a set of token buckets, one per key, under one name in the
// store. A nil *Limiter allows everything.
type Limiter struct {
	store storage.RateLimits
	name  string
	// interval is how long a token takes to come back, tolerance how far
	// ahead of now the bucket may be spent (burst-1 intervals); both in µs.
	interval, tolerance int64
	// now is the clock (time.Now except in tests).
	now func() time.Time
}

var (
	limited = metrics.Factory.NewCounterVec(metrics.CounterOpts("ratelimit_limited_total",
		"Requests refused by a rate limit."), []string{"limiter"})
	storeFailures = metrics.Factory.NewCounterVec(metrics.CounterOpts("ratelimit_store_errors_total",
		"Rate-limit checks that could not reach the store and let the request through."), []string{"limiter"})
)

// New returns the limiter name for b, with its buckets in store, or nil
// (which allows everything) when b.PerSecond is 0. Limiters of one name
// share their buckets, also across instances.
func New(store storage.RateLimits, name string, b config.Bucket) *Limiter {
	if b.PerSecond <= 0 {
		return nil
	}
	interval := max(int64(math.Round(float64(time.Second/time.Microsecond)/b.PerSecond)), 1)
	limited.WithLabelValues(name)
	storeFailures.WithLabelValues(name)
	return &Limiter{
		store:     store,
		name:      name,
		interval:  interval,
		tolerance: int64(max(b.Burst, 1)-1) * interval,
		now:       time.Now,
	}
}

// Allow takes one token for key. When none is left it returns false and how
// long until one is. A store that cannot be reached lets the request through
// (logged and counted in threepidd_ratelimit_store_errors_total): the limits
// shed load, while the defences that must hold (token attempts) fail closed.
func (l *Limiter) Allow(ctx context.Context, key string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	ok, wait, err := l.store.TakeRateLimitToken(ctx, l.name, key, l.now().UnixMicro(), l.interval, l.tolerance)
	if err != nil {
		storeFailures.WithLabelValues(l.name).Inc()
		slog.WarnContext(ctx, "rate limit not checked: the store failed; the request goes through", "limiter", l.name, "err", err)
		return true, 0
	}
	if !ok {
		limited.WithLabelValues(l.name).Inc()
		return false, time.Duration(wait) * time.Microsecond
	}
	return true, 0
}

// IPKey is the key of a client address for per-IP limits: an IPv4 address
// (also written IPv4-mapped) is itself, an IPv6 address its /64, the block a
// single client typically holds. Anything else is returned as it is.
func IPKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	return netip.PrefixFrom(addr.WithZone(""), 64).Masked().String()
}
