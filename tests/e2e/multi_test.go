package e2e

// Several instances on one Postgres behind the shipped nginx configuration
// (harness.StartCluster): wake-ups, limits and the outbox hold across
// instances, and a rolling restart under load loses no acknowledged request.

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
			RateLimitYAML:   "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0.001, burst: 8}, unbind_per_user: {per_second: 0}}",
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
			for i := range 16 {
				reqs = append(reqs, support.Request{Method: "POST", URL: on(i).URL + requestTokenPath,
					Body: map[string]any{"client_secret": fmt.Sprintf("burst-%d", i), "email": "burst@example.org", "send_attempt": 1}})
			}
			// One bucket for both instances: never more than its burst of 8
			// (a bucket per instance would let 16 through). The last token of
			// the burst may be refused: each request reads its own clock and
			// concurrent ones may commit out of that order, a few
			// microseconds apart (ratelimit's GCRA takes "now" from the caller).
			if got := countStatus(sendAll(t, reqs)); got[200] < 7 || got[200] > 8 || got[200]+got[429] != 16 {
				t.Fatalf("answers by status %v, want the burst of 8 × 200 (or 7) and the rest 429", got)
			}
		})

		t.Run("onupdate replayed through the other instance", func(t *testing.T) {
			expectReplayAppliedOnce(t, a, other, a.NewUser("replayed"), "replayed@example.org")
		})

		t.Run("one validation message for identical requests", func(t *testing.T) {
			// Within the address's burst (each counts against it), with room
			// to spare: see the rate-limit case.
			var reqs []support.Request
			for i := range 6 {
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

// TestClusterRollingRestart: clients keep calling through nginx while one
// instance, then the other, is shut down and started again. Every request
// gets an HTTP answer; a client retries a 502 (nginx could not reach an
// instance that was going away) with the same request, as clients do, and
// nothing else fails. Each validation session acknowledged with a 200 is in
// the store afterwards, with exactly one mail sent for it; a /sync long-poll
// held by the instance going away is answered (the drain), not cut off.
func TestClusterRollingRestart(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		c := harness.StartCluster(t, b, 2, harness.Options{})
		const clients, rounds = 4, 12
		type session struct{ sid, address string }
		var (
			progress atomic.Int32
			mu       sync.Mutex
			sessions []session
			retried  = map[int]int{} // status → retries
			failures []string
		)
		fail := func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		// call sends req until it gets an answer other than 502 (at most 10
		// tries) and returns that answer; ok is false after a failure.
		call := func(req support.Request, want int) (support.Response, bool) {
			for range 10 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				r, err := support.Send(ctx, req)
				cancel()
				switch {
				case err != nil:
					fail("%s %s: %v", req.Method, req.URL, err)
					return r, false
				case r.Status == 502:
					mu.Lock()
					retried[r.Status]++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
					continue
				case r.Status != want:
					fail("%s %s: %s", req.Method, req.URL, r)
					return r, false
				}
				return r, true
			}
			fail("%s %s: 502 ten times", req.Method, req.URL)
			return support.Response{}, false
		}
		users := make([]harness.User, clients)
		for i := range users {
			users[i] = c.Instances[0].NewUser(fmt.Sprintf("roller%d", i))
		}
		var wg sync.WaitGroup
		for i, u := range users {
			wg.Go(func() {
				since := ""
				for round := range rounds {
					address := fmt.Sprintf("roll%d-%d@example.org", i, round)
					r, ok := call(support.Request{Method: "POST", URL: c.URL + requestTokenPath,
						Body: map[string]any{"client_secret": fmt.Sprintf("roll-%d-%d", i, round), "email": address, "send_attempt": 1}}, 200)
					if !ok {
						return
					}
					obj, err := r.Object()
					sid, _ := obj["sid"].(string)
					if err != nil || sid == "" {
						fail("requestToken answer %s", r)
						return
					}
					mu.Lock()
					sessions = append(sessions, session{sid, address})
					mu.Unlock()
					if _, ok := call(support.Request{Method: "GET", URL: c.URL + "/_matrix/client/v3/account/3pid", Token: u.Token}, 200); !ok {
						return
					}
					query := "timeout=0"
					if since != "" {
						query = "timeout=300&since=" + url.QueryEscape(since)
					}
					r, ok = call(support.Request{Method: "GET", URL: c.URL + syncPath + "?" + query, Token: u.Token}, 200)
					if !ok {
						return
					}
					if obj, err = r.Object(); err != nil {
						fail("sync answer %s", r)
						return
					}
					since, _ = obj["next_batch"].(string)
					progress.Add(1)
				}
			})
		}
		// A rolling restart: one instance, then the other, each while the
		// clients are busy.
		for i, at := range []int32{clients * rounds / 4, clients * rounds / 2} {
			support.WaitFor(t, "the clients' progress", func() bool { return progress.Load() >= at || len(failures) > 0 }, time.Minute)
			// A 30 s long-poll held by the instance going away.
			e, u := c.Instances[i], users[0]
			first := doSync(t, e, u, "")
			before := len(e.HS.SyncRequests())
			held := syncAsync(e.URL, u.Token, "timeout=30000&since="+url.QueryEscape(first.NextBatch))
			support.WaitFor(t, "the long-poll to reach the homeserver", func() bool {
				for _, q := range e.HS.SyncRequests()[before:] {
					if q.Get("timeout") == "30000" {
						return true
					}
				}
				return false
			}, 10*time.Second)
			e.Restart()
			if drained, raw := receive(t, held, 10*time.Second); upstreamPart(t, drained.NextBatch) != upstreamPart(t, first.NextBatch) {
				t.Fatalf("the drained long-poll skipped upstream: %s", raw)
			}
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		t.Logf("%d requests retried after a 502", retried[502])
		if len(failures) > 0 {
			log, _ := support.Tail(filepath.Join(c.Nginx.Dir, "error.log"), 20)
			t.Fatalf("%d failures, the first: %s\nnginx's error log:\n%s", len(failures), failures[0], log)
		}
		if len(sessions) != clients*rounds {
			t.Fatalf("%d sessions acknowledged, want %d", len(sessions), clients*rounds)
		}
		store := c.Instances[1].Server.Store
		for _, s := range sessions {
			if _, err := store.SessionByID(context.Background(), s.sid); err != nil {
				t.Fatalf("session %s acknowledged for %s is not in the store: %v", s.sid, s.address, err)
			}
			if n := mailsTo(c.Instances[0].SMTP, s.address); n != 1 {
				t.Fatalf("%d mails to %s, want 1", n, s.address)
			}
		}
	})
}
