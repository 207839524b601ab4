package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

func TestIPKey(t *testing.T) {
	for _, tt := range []struct{ ip, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:DB8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		{"not an address", "not an address"},
		{"", ""},
	} {
		if got := IPKey(tt.ip); got != tt.want {
			t.Errorf("IPKey(%q) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}

// TestLimiter: the buckets live in the store, so that two limiters of one
// name (two instances) share them; limiters of other names do not.
func TestLimiter(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		now := time.Unix(1_700_000_000, 0)
		clock := func() time.Time { return now }
		b := config.Bucket{PerSecond: 0.5, Burst: 2}
		one, two, other := New(s, "requesttoken_per_ip", b), New(s, "requesttoken_per_ip", b), New(s, "onupdate_per_server", b)
		for _, l := range []*Limiter{one, two, other} {
			l.now = clock
		}
		for i, l := range []*Limiter{one, two} {
			if ok, _ := l.Allow(ctx, "k"); !ok {
				t.Fatalf("token %d of the burst refused", i+1)
			}
		}
		if ok, wait := one.Allow(ctx, "k"); ok || wait != 2*time.Second {
			t.Fatalf("over the burst: %v, wait %v; want refused for 2s", ok, wait)
		}
		if ok, _ := other.Allow(ctx, "k"); !ok {
			t.Fatal("another limiter shares the bucket")
		}
		if ok, _ := two.Allow(ctx, "other key"); !ok {
			t.Fatal("another key shares the bucket")
		}
		now = now.Add(2 * time.Second)
		if ok, _ := two.Allow(ctx, "k"); !ok {
			t.Fatal("no token after the refill time")
		}
		if ok, _ := one.Allow(ctx, "k"); ok {
			t.Fatal("two tokens after one refill time")
		}
	})
}

func TestLimiterOff(t *testing.T) {
	l := New(nil, "off", config.Bucket{PerSecond: 0, Burst: 5})
	if l != nil {
		t.Fatal("a rate of 0 gave a limiter")
	}
	for range 100 {
		if ok, _ := l.Allow(context.Background(), "k"); !ok {
			t.Fatal("a nil limiter refused")
		}
	}
}

// failingStore is a store whose rate-limit table cannot be reached.
type failingStore struct{ storage.RateLimits }

func (failingStore) TakeRateLimitToken(context.Context, string, string, int64, int64, int64) (bool, int64, error) {
	return false, 0, errors.New("connection refused")
}

// TestLimiterFailsOpen: a store failure lets the request through and is counted.
func TestLimiterFailsOpen(t *testing.T) {
	l := New(failingStore{}, "failing", config.Bucket{PerSecond: 1, Burst: 1})
	for range 3 {
		if ok, _ := l.Allow(context.Background(), "k"); !ok {
			t.Fatal("refused while the store failed")
		}
	}
	if got := metricstest.Value(t, "threepidd_ratelimit_store_errors_total", "limiter", "failing"); got != 3 {
		t.Fatalf("threepidd_ratelimit_store_errors_total{limiter=\"failing\"} = %v, want 3", got)
	}
}
