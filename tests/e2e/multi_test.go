package e2e

// Several instances on one Postgres behind the shipped nginx configuration
// (harness.StartCluster): wake-ups, limits and the outbox hold across
// instances, and a rolling restart under load loses no acknowledged request.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
	"github.com/threepidd/threepidd/threepid"
)

// sendAll sends every request at once (from goroutines, which must not fail
// the test) and returns the answers in order; a transport error fails the
// test afterwards.
func sendAll(t *testing.T, reqs []support.Request) []support.Response {
	t.Helper()
	out := make([]support.Response, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out[i], errs[i] = support.Send(ctx, req)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s %s: %v", reqs[i].Method, reqs[i].URL, err)
		}
	}
	return out
}

// countStatus counts the answers of each status.
func countStatus(rs []support.Response) map[int]int {
	n := map[int]int{}
	for _, r := range rs {
		n[r.Status]++
	}
	return n
}

// TestClusterWake: a /sync long-poll held by one instance ends as soon as
// another instance accepts an onupdate for its user (Postgres LISTEN/NOTIFY),
// with the change in its section; both ways round.
func TestClusterWake(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		c := harness.StartCluster(t, b, 2, harness.Options{IdentityServers: 1})
		for _, tc := range []struct {
			name            string
			polled, updated int
		}{
			{"long-poll on A, onupdate on B", 0, 1},
			{"long-poll on B, onupdate on A", 1, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				polled, updated := c.Instances[tc.polled], c.Instances[tc.updated]
				u := polled.NewUser(fmt.Sprintf("wake%d", tc.polled))
				address := strings.ToLower(u.DeviceID) + "@example.org"
				harness.Expect(t, c.Do(t, "POST", "/_matrix/client/v3/account/3pid/bind", u.Token, bindBody(polled, u, address)), 200, "")
				first := doSync(t, polled, u, "")
				before := len(polled.HS.SyncRequests())
				done := syncAsync(polled.URL, u.Token, "timeout=30000&since="+url.QueryEscape(first.NextBatch))
				waitSyncRequests(t, polled, before+1)
				takeOver(t, updated, 0, address, "@mallory:evil.test")
				woken, raw := receive(t, done, 20*time.Second)
				if got := woken.Threepids[address]; got.MXID != "@mallory:evil.test" || got.Deleted || got.Medium != "email" {
					t.Fatalf("woken sync: %s", raw)
				}
			})
		}
	})
}

// bindBody validates address on e's first fake identity server and returns
// the /3pid/bind body that binds it to u.
func bindBody(e *harness.Env, u harness.User, address string) map[string]any {
	secret, idToken := "bind-"+threepid.NewSID()[:8], "idtok-"+threepid.NewSID()[:8]
	sid := e.IS[0].AddValidatedSession("email", address, secret, idToken)
	return map[string]any{"client_secret": secret, "id_server": e.IS[0].Name(), "id_access_token": idToken, "sid": sid}
}

// TestClusterLimits: what one instance must refuse, the other refuses too:
// the 3PID limit per user, the rate limits, an onupdate replay, a second
// identical validation message, and an unbind from the outbox sent twice.
func TestClusterLimits(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		c := harness.StartCluster(t, b, 2, harness.Options{
			IdentityServers: 1,
			RateLimitYAML:   "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0.001, burst: 3}, unbind_per_user: {per_second: 0}}",
			ExtraYAML:       "policy: {max_threepids_per_user: 2}\n",
		})
		a, other := c.Instances[0], c.Instances[1]
		// on is the instance of request i: A and B in turn.
		on := func(i int) *harness.Env { return c.Instances[i%2] }

		t.Run("3PID limit per user", func(t *testing.T) {
			u := a.NewUser("limited")
			var reqs []support.Request
			for i := range 6 {
				secret, email := fmt.Sprintf("limit-%d", i), fmt.Sprintf("limit%d@example.org", i)
				sid := on(i).ValidateEmail(t, secret, email)
				r := on(i).Do("POST", "/_matrix/client/v3/account/3pid/add", u.Token, map[string]any{"sid": sid, "client_secret": secret})
				harness.Expect(t, r, 401, "")
				session, _ := r.JSON(t)["session"].(string)
				reqs = append(reqs, support.Request{Method: "POST", URL: on(i).URL + "/_matrix/client/v3/account/3pid/add", Token: u.Token,
					Body: map[string]any{"sid": sid, "client_secret": secret, "auth": u.PasswordAuth(session)}})
			}
			got := countStatus(sendAll(t, reqs))
			if got[200] != 2 || got[403] != 4 {
				t.Fatalf("answers by status %v, want 2 × 200 and 4 × 403", got)
			}
			for _, e := range c.Instances {
				if n := len(e.Threepids(t, u)); n != 2 {
					t.Fatalf("%s lists %d 3PIDs, want 2", e.URL, n)
				}
			}
		})

		t.Run("rate limit per address", func(t *testing.T) {
			var reqs []support.Request
			for i := range 8 {
				reqs = append(reqs, support.Request{Method: "POST", URL: on(i).URL + requestTokenPath,
					Body: map[string]any{"client_secret": fmt.Sprintf("burst-%d", i), "email": "burst@example.org", "send_attempt": 1}})
			}
			if got := countStatus(sendAll(t, reqs)); got[200] != 3 || got[429] != 5 {
				t.Fatalf("answers by status %v, want the burst of 3 × 200 and 5 × 429", got)
			}
		})

		t.Run("onupdate replayed through the other instance", func(t *testing.T) {
			u := a.NewUser("replayed")
			harness.Expect(t, a.Bind(t, u, 0, "email", "replayed@example.org"), 200, "")
			body := onUpdateBody(t, "replayed@example.org", true, u.ID, "")
			auth := signOnUpdate(t, a.IS[0].Key(), a.IS[0].Name(), harness.ServerName, body)
			expectApplied(t, postOnUpdate(t, a, auth, body))
			harness.Expect(t, a.Bind(t, u, 0, "email", "replayed@example.org"), 200, "")
			expectApplied(t, postOnUpdate(t, other, auth, body))
			if ns := other.Notifications(t, u); len(ns) != 1 {
				t.Fatalf("%d notifications after the replay on the other instance, want 1: %+v", len(ns), ns)
			}
			if got := other.BindingsOf(t, u, "replayed@example.org"); len(got) != 1 {
				t.Fatalf("the replay dropped the new binding: %v", got)
			}
		})

		t.Run("one validation message for identical requests", func(t *testing.T) {
			// As many as the address's burst: each counts against it.
			var reqs []support.Request
			for i := range 3 {
				reqs = append(reqs, support.Request{Method: "POST", URL: on(i).URL + requestTokenPath,
					Body: map[string]any{"client_secret": "same", "email": "once@example.org", "send_attempt": 1}})
			}
			rs := sendAll(t, reqs)
			sids := map[string]bool{}
			for _, r := range rs {
				if r.Status != 200 {
					t.Fatalf("requestToken: %s", r)
				}
				sid, _ := r.JSON(t)["sid"].(string)
				sids[sid] = true
			}
			if n := mailsTo(a.SMTP, "once@example.org"); n != 1 || len(sids) != 1 {
				t.Fatalf("%d mails and sids %v, want 1 mail and one sid", n, sids)
			}
		})

		t.Run("an unbind from the outbox is sent once", func(t *testing.T) {
			u := a.NewUser("outboxed")
			a.AddEmail(t, u, "outboxed@example.org")
			harness.Expect(t, a.Bind(t, u, 0, "email", "outboxed@example.org"), 200, "")
			a.IS[0].Stop()
			r := other.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "outboxed@example.org"})
			if got := unbindResult(t, r); got != "no-support" {
				t.Fatalf("result %v with the identity server down", got)
			}
			a.IS[0].Start()
			// Both instances' workers poll the outbox; the unbind leaves it
			// once the identity server answers (after its backoff).
			support.WaitFor(t, "the outbox to send the unbind", func() bool {
				n, err := a.Server.Store.CountOutbox(context.Background(), bindings.OutboxKind)
				return err == nil && n == 0
			}, 60*time.Second)
			calls := 0
			for _, call := range a.IS[0].UnbindCalls() {
				if call.Address == "outboxed@example.org" {
					calls++
				}
			}
			if calls != 1 {
				t.Fatalf("the identity server got %d unbinds of the address, want 1", calls)
			}
			if got := a.BindingsOf(t, u, "outboxed@example.org"); len(got) != 0 {
				t.Fatalf("binding records left after the outbox unbind: %v", got)
			}
		})
	})
}

// mailsTo counts the mails sink received for address.
func mailsTo(sink *fakes.SMTPSink, address string) int {
	n := 0
	for _, m := range sink.Mails() {
		for _, to := range m.To {
			if to == address {
				n++
			}
		}
	}
	return n
}
