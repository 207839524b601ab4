package security

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"

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

// TestWhoamiCacheUserID: a user's token with ?user_id= naming anyone (which
// the homeserver ignores for tokens that are not an appservice's) is served
// from the whoami cache: varying user_id cannot force a whoami per request,
// and the user only ever sees their own 3PIDs. An appservice still acts as
// each user it names, each cached on its own.
func TestWhoamiCacheUserID(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice, bob := e.NewUser("cache-alice"), e.NewUser("cache-bob")
		for _, u := range []harness.User{alice, bob} {
			if err := e.Server.Store.InsertAssociation(context.Background(), storage.Association{
				UserID: u.ID, Medium: "email", Address: u.ID[1:strings.Index(u.ID, ":")] + "@example.org", ValidatedAt: 1, AddedAt: 1,
			}); err != nil {
				t.Fatal(err)
			}
		}
		listed := func(t *testing.T, token, userID string) string {
			t.Helper()
			path := threepidPath
			if userID != "" {
				path += "?user_id=" + url.QueryEscape(userID)
			}
			r := e.Do("GET", path, token, nil)
			harness.Expect(t, r, 200, "")
			var body struct {
				Threepids []struct {
					Address string `json:"address"`
				} `json:"threepids"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil || len(body.Threepids) != 1 {
				t.Fatalf("GET /account/3pid: %s", r.Body)
			}
			return body.Threepids[0].Address
		}

		t.Run("a user's token", func(t *testing.T) {
			before := e.HS.WhoamiCalls()
			for i := range 20 {
				userID := fmt.Sprintf("@someone%d:%s", i, harness.ServerName)
				if i%10 == 0 {
					userID = bob.ID
				}
				if got := listed(t, alice.Token, userID); got != "cache-alice@example.org" {
					t.Fatalf("alice's token with user_id %s listed %s", userID, got)
				}
			}
			if n := e.HS.WhoamiCalls() - before; n != 1 {
				t.Fatalf("20 requests with varying user_id made %d whoami calls, want 1", n)
			}
		})

		t.Run("an appservice", func(t *testing.T) {
			e.HS.AddAppservice("as_token_cache", "cache-bridge")
			before := e.HS.WhoamiCalls()
			for range 3 {
				if got := listed(t, "as_token_cache", alice.ID); got != "cache-alice@example.org" {
					t.Fatalf("the appservice as alice listed %s", got)
				}
				if got := listed(t, "as_token_cache", bob.ID); got != "cache-bob@example.org" {
					t.Fatalf("the appservice as bob listed %s", got)
				}
			}
			if n := e.HS.WhoamiCalls() - before; n != 2 {
				t.Fatalf("the appservice acting as two users made %d whoami calls, want 2 (one per user)", n)
			}
			r := e.Do("GET", threepidPath+"?user_id="+url.QueryEscape("@ghost:"+harness.ServerName), "as_token_cache", nil)
			harness.Expect(t, r, 403, "M_FORBIDDEN")
		})
	})
}
