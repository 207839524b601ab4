package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
	"github.com/threepidd/threepidd/threepid"
)

// adminYAML turns the admin API on and points both webhooks at receivers:
// a policy that refuses every removal and unbind (administrators are never
// asked), and an events receiver that accepts everything.
func adminYAML(policyHook, eventsHook *hook) string {
	return fmt.Sprintf("admin_token: %s\npolicy: {webhook: {url: %q, secret: %q}, events_webhook: {url: %q, secret: %q}}\n",
		adminToken, policyHook.srv.URL, hookSecret, eventsHook.srv.URL, hookSecret)
}

// adminEnv starts threepidd with adminYAML and returns it with both receivers.
func adminEnv(t *testing.T, b storagetest.Backend, identityServers int) (e *harness.Env, policyHook, eventsHook *hook) {
	t.Helper()
	policyHook = newHook(t, func(_ context.Context, ev events.Event) (int, string) {
		if ev.Op == "add" || ev.Op == "bind" {
			return 200, `{"allow": true}`
		}
		return 200, `{"allow": false, "reason": "users may not let go"}`
	})
	eventsHook = newHook(t, allowAll)
	return harness.Start(t, b, harness.Options{IdentityServers: identityServers, ExtraYAML: adminYAML(policyHook, eventsHook)}), policyHook, eventsHook
}

// askedAbout lists the ops the policy webhook was asked about.
func askedAbout(h *hook) []string {
	var ops []string
	for _, c := range h.calls() {
		ops = append(ops, string(c.Event.Op))
	}
	return ops
}

// waitEvents waits until the events receiver accepted want (as "op user
// address id_server" lines, in any order) and nothing else.
func waitEvents(t *testing.T, h *hook, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	support.WaitFor(t, "the events "+strings.Join(want, ", "), func() bool {
		got = got[:0]
		for _, ev := range distinct(h.calls(), 200) {
			got = append(got, strings.Join([]string{string(ev.Op), ev.UserID, ev.Address, ev.IDServer}, " "))
		}
		slices.Sort(got)
		return len(got) >= len(want)
	}, 30*time.Second)
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestAdminRequests: the admin API's auth (and its absence without an
// admin_token), user IDs and addresses in paths, and idempotent deactivation.
// Refused requests change nothing.
func TestAdminRequests(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: "admin_token: " + adminToken + "\n"})
		alice, bob := e.NewUser("adm-alice"), e.NewUser("adm-bob")
		e.AddEmail(t, alice, "adm-alice@example.org")
		e.AddEmail(t, bob, "adm-bob@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "adm-alice@example.org"), 200, "")
		carol := e.NewUser("alice")
		e.AddEmail(t, carol, "alice@example.org")
		aliceAt := adminPrefix + "/users/%40adm-alice%3Ahs.test"
		state := func() string {
			return fmt.Sprint(e.Threepids(t, alice), e.Threepids(t, bob), e.BindingsOf(t, alice, "adm-alice@example.org"), e.Threepids(t, carol))
		}
		routes := []struct{ method, path string }{
			{"GET", aliceAt + "/threepids"},
			{"GET", adminPrefix + "/threepids/email/adm-alice%40example.org"},
			{"DELETE", aliceAt + "/threepids/email/adm-alice%40example.org"},
			{"POST", aliceAt + "/deactivate"},
			{"GET", adminPrefix + "/users/%40alice%3Ahs.test/threepids"},
			{"GET", adminPrefix + "/threepids/email/alice%40example.org"},
			{"DELETE", adminPrefix + "/users/%40alice%3Ahs.test/threepids/email/alice%40example.org"},
			{"POST", adminPrefix + "/users/%40alice%3Ahs.test/deactivate"},
		}

		t.Run("auth", func(t *testing.T) {
			before := state()
			for _, h := range []struct {
				header  string
				status  int
				errcode string
			}{
				{"", 401, "M_MISSING_TOKEN"},
				{"Bearer", 401, "M_MISSING_TOKEN"},
				{"Bearer ", 401, "M_MISSING_TOKEN"},
				{"Basic " + adminToken, 401, "M_MISSING_TOKEN"},
				{adminToken, 401, "M_MISSING_TOKEN"},
				{"Bearer " + adminToken + "x", 403, "M_FORBIDDEN"},
				{"Bearer " + strings.ToUpper(adminToken), 403, "M_FORBIDDEN"},
				{"Bearer " + adminToken[:len(adminToken)-1], 403, "M_FORBIDDEN"},
				{"Bearer not-" + adminToken, 403, "M_FORBIDDEN"},
				// A user's access token is no admin token either.
				{"Bearer " + alice.Token, 403, "M_FORBIDDEN"},
				{"Bearer " + carol.Token, 403, "M_FORBIDDEN"},
			} {
				for _, rt := range routes {
					headers := map[string]string{}
					if h.header != "" {
						headers["Authorization"] = h.header
					}
					harness.Expect(t, harness.DoHeaders(t, rt.method, e.URL+rt.path, "", headers), h.status, h.errcode)
				}
			}
			if after := state(); after != before {
				t.Fatalf("state changed: %s -> %s", before, after)
			}
		})

		t.Run("off without an admin token", func(t *testing.T) {
			off := harness.Start(t, b, harness.Options{})
			for _, rt := range routes {
				harness.Expect(t, off.Do(rt.method, rt.path, adminToken, nil), 404, "M_UNRECOGNIZED")
			}
		})

		t.Run("bad paths", func(t *testing.T) {
			before := state()
			for _, c := range []struct {
				method, path string
				status       int
				errcode      string
			}{
				{"GET", "/users/adm-alice/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40adm-alice/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40%3Ahs.test/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%2540adm-alice%253Ahs.test/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40adm-alice%3Ahs.test%3A8448/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40adm-alice%3Aother.test/threepids", 400, "M_INVALID_PARAM"},
				{"POST", "/users/%40adm-alice%3Aother.test/deactivate", 400, "M_INVALID_PARAM"},
				{"DELETE", "/users/%40adm-bob%3Aother.test/threepids/email/adm-bob%40example.org", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/phone/447700900123", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/EMAIL/adm-alice%40example.org", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/email/adm-alice", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/msisdn/%2B44%20abc", 400, "M_INVALID_PARAM"},
				{"DELETE", "/users/%40adm-alice%3Ahs.test/threepids/phone/adm-alice%40example.org", 400, "M_INVALID_PARAM"},
				{"DELETE", "/users/%40adm-bob%3Ahs.test/threepids/email/adm-alice%40example.org", 404, "M_NOT_FOUND"},
				{"DELETE", "/users/%40adm-alice%3Ahs.test/threepids/email/adm-alice%40example.org.evil", 404, "M_NOT_FOUND"},
				{"GET", "/threepids/email/nobody%40example.org", 404, "M_NOT_FOUND"},
				{"POST", "/users/%40adm-alice%3Ahs.test/threepids", 405, "M_UNRECOGNIZED"},
				{"GET", "/users/%40adm-alice%3Ahs.test/deactivate", 405, "M_UNRECOGNIZED"},
				{"GET", "/users/%40adm-alice%3Ahs.test/threepids/", 404, "M_UNRECOGNIZED"},
				{"GET", "/users/%40adm-alice%3Ahs.test/threepids/email", 404, "M_UNRECOGNIZED"},
			} {
				harness.Expect(t, e.Do(c.method, adminPrefix+c.path, adminToken, nil), c.status, c.errcode)
			}
			if after := state(); after != before {
				t.Fatalf("state changed: %s -> %s", before, after)
			}
		})

		t.Run("user IDs and addresses in any encoding", func(t *testing.T) {
			for _, path := range []string{"/users/%40adm-alice%3Ahs.test/threepids", "/users/@adm-alice:hs.test/threepids", "/users/%40adm-alice:hs.test/threepids"} {
				r := e.Do("GET", adminPrefix+path, adminToken, nil)
				harness.Expect(t, r, 200, "")
				if tps, _ := r.JSON(t)["threepids"].([]any); len(tps) != 1 {
					t.Fatalf("%s: %s", path, r.Body)
				}
			}
			// A user ID with an encoded "/" is one path segment; a user
			// unknown to threepidd simply holds nothing.
			r := e.Do("GET", adminPrefix+"/users/%40a%2Fb%3Ahs.test/threepids", adminToken, nil)
			harness.Expect(t, r, 200, "")
			if string(r.Body) != `{"bindings":[],"threepids":[]}` {
				t.Fatalf("unknown user: %s", r.Body)
			}
			for _, address := range []string{"adm-alice%40example.org", "ADM-Alice%40EXAMPLE.ORG", "%20adm-alice%40example.org%20", "adm-alice@Example.org"} {
				r := e.Do("GET", adminPrefix+"/threepids/email/"+address, adminToken, nil)
				harness.Expect(t, r, 200, "")
				if got := r.JSON(t)["user_id"]; got != alice.ID {
					t.Fatalf("%s: owner %v", address, got)
				}
			}
		})

		t.Run("delete with a non-canonical address", func(t *testing.T) {
			r := e.Do("DELETE", adminPrefix+"/users/%40adm-bob%3Ahs.test/threepids/email/%20ADM-BOB%40Example.Org", adminToken, nil)
			harness.Expect(t, r, 200, "")
			if string(r.Body) != "{}" || len(e.Threepids(t, bob)) != 0 {
				t.Fatalf("answer %s, bob holds %v", r.Body, e.Threepids(t, bob))
			}
		})

		t.Run("deactivate is idempotent", func(t *testing.T) {
			for i, want := range []string{"success", "success"} {
				r := e.Do("POST", aliceAt+"/deactivate", adminToken, nil)
				if got := unbindResult(t, r); got != want {
					t.Fatalf("deactivate #%d: %s", i+1, got)
				}
				if len(e.Threepids(t, alice)) != 0 || len(e.BindingsOf(t, alice, "adm-alice@example.org")) != 0 {
					t.Fatalf("after deactivate #%d alice holds %v", i+1, e.Threepids(t, alice))
				}
			}
			if calls := e.IS[0].UnbindCalls(); len(calls) != 1 {
				t.Fatalf("%d unbind calls, want 1", len(calls))
			}
			r := e.Do("POST", adminPrefix+"/users/%40never%3Ahs.test/deactivate", adminToken, []byte(`not json`))
			if got := unbindResult(t, r); got != "success" {
				t.Fatalf("deactivate of an unknown user: %s", got)
			}
		})
	})
}

func TestAdminLookup(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: "admin_token: " + adminToken + "\n"})
		alice := e.NewUser("alice")
		e.AddEmail(t, alice, "alice@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")

		r := e.Do("GET", adminPrefix+"/users/%40alice%3Ahs.test/threepids", adminToken, nil)
		harness.Expect(t, r, 200, "")
		body := r.JSON(t)
		tps, _ := body["threepids"].([]any)
		bs, _ := body["bindings"].([]any)
		if len(tps) != 1 || len(bs) != 1 {
			t.Fatalf("answer %s", r.Body)
		}
		tp, bd := tps[0].(map[string]any), bs[0].(map[string]any)
		if tp["medium"] != "email" || tp["address"] != "alice@example.org" || tp["validated_at"].(float64) <= 0 || tp["added_at"].(float64) <= 0 {
			t.Fatalf("threepid %v", tp)
		}
		if bd["medium"] != "email" || bd["address"] != "alice@example.org" || bd["id_server"] != e.IS[0].Name() || bd["bound_at"].(float64) <= 0 {
			t.Fatalf("binding %v", bd)
		}
		// The same list as the user's own GET /account/3pid.
		if own := e.Threepids(t, alice); fmt.Sprint(own[0]) != fmt.Sprint(tp) {
			t.Fatalf("admin %v, user %v", tp, own[0])
		}

		r = e.Do("GET", adminPrefix+"/threepids/email/alice%40EXAMPLE.org", adminToken, nil)
		harness.Expect(t, r, 200, "")
		if got := r.JSON(t)["user_id"]; got != alice.ID {
			t.Fatalf("owner %v", got)
		}
		harness.Expect(t, e.Do("GET", adminPrefix+"/threepids/email/nobody%40example.org", adminToken, nil), 404, "M_NOT_FOUND")
		harness.Expect(t, e.Do("GET", adminPrefix+"/threepids/email/nobody", adminToken, nil), 400, "M_INVALID_PARAM")
		harness.Expect(t, e.Do("GET", adminPrefix+"/users/%40alice%3Aelsewhere.test/threepids", adminToken, nil), 400, "M_INVALID_PARAM")
	})
}

// TestAdminRemoveThreepid: the admin removes a 3PID the policy would keep:
// unbound from its identity server, gone from the account, both events sent,
// the policy never asked.
func TestAdminRemoveThreepid(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e, policyHook, eventsHook := adminEnv(t, b, 1)
		alice, bob := e.NewUser("alice"), e.NewUser("bob")
		e.AddEmail(t, alice, "alice@example.org")
		e.AddEmail(t, bob, "bob@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		// The user cannot.
		harness.Expect(t, e.Do("POST", deletePath, alice.Token, map[string]any{"medium": "email", "address": "alice@example.org"}), 403, "M_FORBIDDEN")

		path := adminPrefix + "/users/%40alice%3Ahs.test/threepids/email/alice%40example.org"
		r := e.Do("DELETE", path, adminToken, nil)
		harness.Expect(t, r, 200, "")
		if string(r.Body) != "{}" {
			t.Fatalf("answer %s", r.Body)
		}
		if list := e.Threepids(t, alice); len(list) != 0 {
			t.Fatalf("alice kept %v", list)
		}
		calls := e.IS[0].UnbindCalls()
		if len(calls) != 1 || !calls[0].Verified || calls[0].MXID != alice.ID {
			t.Fatalf("unbind calls %+v", calls)
		}
		if _, ok := e.IS[0].Bindings()["alice@example.org"]; ok || len(e.BindingsOf(t, alice, "alice@example.org")) != 0 {
			t.Fatal("the binding survived")
		}
		// Asked once: about the user's own delete.
		if ops := askedAbout(policyHook); slices.Contains(ops, "unbind") || strings.Count(strings.Join(ops, " "), "remove") != 1 {
			t.Fatalf("the policy was asked about %v", ops)
		}

		harness.Expect(t, e.Do("DELETE", path, adminToken, nil), 404, "M_NOT_FOUND")
		harness.Expect(t, e.Do("DELETE", adminPrefix+"/users/%40alice%3Ahs.test/threepids/email/bob%40example.org", adminToken, nil), 404, "M_NOT_FOUND")
		if list := e.Threepids(t, bob); len(list) != 1 {
			t.Fatalf("bob lost %v", list)
		}
		waitEvents(t, eventsHook,
			"add @alice:hs.test alice@example.org ",
			"add @bob:hs.test bob@example.org ",
			"bind @alice:hs.test alice@example.org id1.test",
			"unbind @alice:hs.test alice@example.org id1.test",
			"remove @alice:hs.test alice@example.org ",
		)
	})
}

// TestAdminDeactivate: everything unbound (an identity server that fails is
// queued and makes the answer no-support) and removed, events sent, the
// policy never asked; a user whose unbinds all succeed gets success.
func TestAdminDeactivate(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e, policyHook, eventsHook := adminEnv(t, b, 2)
		alice, bob := e.NewUser("alice"), e.NewUser("bob")
		e.AddEmail(t, alice, "alice@example.org")
		e.AddEmail(t, alice, "alice@work.example")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, alice, 1, "email", "alice@work.example"), 200, "")
		e.AddEmail(t, bob, "bob@example.org")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "bob@example.org"), 200, "")

		e.IS[1].SetMode(fakes.IdentityServerFail500)
		r := e.Do("POST", adminPrefix+"/users/%40alice%3Ahs.test/deactivate", adminToken, map[string]any{})
		if got := unbindResult(t, r); got != threepid.UnbindNoSupport {
			t.Fatalf("deactivate with an identity server failing: %s", got)
		}
		if list := e.Threepids(t, alice); len(list) != 0 {
			t.Fatalf("alice kept %v", list)
		}
		if _, ok := e.IS[0].Bindings()["alice@example.org"]; ok {
			t.Fatal("id1 still binds alice")
		}
		if got := e.BindingsOf(t, alice, "alice@work.example"); len(got) != 1 {
			t.Fatalf("the failed unbind's record: %v", got)
		}
		if n, err := e.Server.Store.CountOutbox(context.Background(), bindings.OutboxKind); err != nil || n != 1 {
			t.Fatalf("%d unbinds queued (%v), want 1", n, err)
		}

		r = e.Do("POST", adminPrefix+"/users/%40bob%3Ahs.test/deactivate", adminToken, nil)
		if got := unbindResult(t, r); got != threepid.UnbindSuccess {
			t.Fatalf("deactivate: %s", got)
		}
		if list := e.Threepids(t, bob); len(list) != 0 || e.IS[0].Bindings()["bob@example.org"] != "" {
			t.Fatalf("bob kept %v, IS binds %v", list, e.IS[0].Bindings())
		}
		// Nothing left: success again, nothing sent.
		before := len(e.IS[0].UnbindCalls())
		if got := unbindResult(t, e.Do("POST", adminPrefix+"/users/%40bob%3Ahs.test/deactivate", adminToken, nil)); got != threepid.UnbindSuccess || len(e.IS[0].UnbindCalls()) != before {
			t.Fatalf("second deactivate: %s", got)
		}
		if ops := askedAbout(policyHook); slices.Contains(ops, "unbind") || slices.Contains(ops, "remove") {
			t.Fatalf("the policy was asked about %v", ops)
		}
		waitEvents(t, eventsHook,
			"add @alice:hs.test alice@example.org ",
			"add @alice:hs.test alice@work.example ",
			"add @bob:hs.test bob@example.org ",
			"bind @alice:hs.test alice@example.org id1.test",
			"bind @alice:hs.test alice@work.example id2.test",
			"bind @bob:hs.test bob@example.org id1.test",
			"unbind @alice:hs.test alice@example.org id1.test",
			"unbind @bob:hs.test bob@example.org id1.test",
			"remove @alice:hs.test alice@example.org ",
			"remove @alice:hs.test alice@work.example ",
			"remove @bob:hs.test bob@example.org ",
		)
	})
}
