package security

import (
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
)

// TestRevokedTokenWithinTTL: a revoked access token is still served from the
// whoami cache (no whoami call), but never for longer than token_cache_ttl
// after the answer that filled the cache: no request sent later than that
// (plus a margin) is served.
func TestRevokedTokenWithinTTL(t *testing.T) {
	// margin covers the cache's expiry granularity (TTL/100) and the time a
	// request takes to reach the cache.
	const margin = 250 * time.Millisecond
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		ttl := e.Config.Homeserver.TokenCacheTTL
		if ttl <= 0 || ttl > 10*time.Second {
			t.Fatalf("the harness configures token_cache_ttl %v", ttl)
		}
		u := e.NewUser("leaver")
		began := time.Now()
		harness.Expect(t, e.Do("GET", threepidPath, u.Token, nil), 200, "")
		filled := time.Now() // the cache was filled between began and now
		whoami := e.HS.WhoamiCalls()
		e.HS.RevokeToken(u.Token)

		expiry := filled.Add(ttl + margin)
		for cached := 0; ; cached++ {
			sent := time.Now()
			r := e.Do("GET", threepidPath, u.Token, nil)
			if r.Status == 401 {
				harness.Expect(t, r, 401, "M_UNKNOWN_TOKEN")
				if cached == 0 {
					t.Fatal("the revoked token was refused at once: the answer did not come from the cache")
				}
				t.Logf("served %d times from the cache after revocation; refused a request sent %v after the filling one (TTL %v)",
					cached, sent.Sub(began).Round(time.Millisecond), ttl)
				return
			}
			harness.Expect(t, r, 200, "")
			if n := e.HS.WhoamiCalls(); n != whoami {
				t.Fatalf("a request answered 200 after asking whoami (%d calls, was %d): not from the cache", n, whoami)
			}
			if sent.After(expiry) {
				t.Fatalf("the revoked token was accepted for a request sent %v after the cache was filled; token_cache_ttl is %v",
					sent.Sub(filled).Round(time.Millisecond), ttl)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
