package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/threepid"
)

// TestBindUnbind: bind → the IS holds it and threepidd recorded it → unbind
// without id_server → success, the IS verified our signature, record gone.
func TestBindUnbind(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("binder")
		harness.Expect(t, e.Bind(t, u, 0, "email", "binder@example.org"), 200, "")
		if got := e.IS[0].Bindings()["binder@example.org"]; got != u.ID {
			t.Fatalf("IS binding = %q", got)
		}
		if got := e.BindingsOf(t, u, "binder@example.org"); len(got) != 1 || got[0] != e.IS[0].Name() {
			t.Fatalf("recorded bindings = %v", got)
		}
		r := e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "Binder@example.org"})
		harness.Expect(t, r, 200, "")
		if got := r.JSON(t)["id_server_unbind_result"]; got != "success" {
			t.Fatalf("result %v", got)
		}
		calls := e.IS[0].UnbindCalls()
		if len(calls) != 1 || !calls[0].Verified || calls[0].Origin != harness.ServerName {
			t.Fatalf("unbind calls %+v", calls)
		}
		if _, ok := e.IS[0].Bindings()["binder@example.org"]; ok {
			t.Fatal("the IS still holds the binding")
		}
		if got := e.BindingsOf(t, u, "binder@example.org"); len(got) != 0 {
			t.Fatalf("record left: %v", got)
		}
		// Nothing recorded and no id_server: no-support, nothing sent.
		r = e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "binder@example.org"})
		harness.Expect(t, r, 200, "")
		if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" || len(e.IS[0].UnbindCalls()) != 1 {
			t.Fatalf("result %v after %d calls", got, len(e.IS[0].UnbindCalls()))
		}
	})
}

// TestDeleteUnbindsBothAndOutbox: a 3PID bound on two IS is unbound from both
// on delete; with one down the client gets no-support, and once it is back
// (after a restart of threepidd in between) the outbox finishes the unbind.
func TestDeleteUnbindsBothAndOutbox(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 2})
		u := e.NewUser("twice")
		e.AddEmail(t, u, "twice@example.org")
		harness.Expect(t, e.Bind(t, u, 0, "email", "twice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, u, 1, "email", "twice@example.org"), 200, "")
		r := e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "twice@example.org"})
		harness.Expect(t, r, 200, "")
		if got := r.JSON(t)["id_server_unbind_result"]; got != "success" {
			t.Fatalf("result %v", got)
		}
		for i := 0; i < 2; i++ {
			if _, ok := e.IS[i].Bindings()["twice@example.org"]; ok {
				t.Fatalf("IS %d still holds the binding", i)
			}
		}

		e.AddEmail(t, u, "down@example.org")
		harness.Expect(t, e.Bind(t, u, 0, "email", "down@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, u, 1, "email", "down@example.org"), 200, "")
		e.IS[1].Stop()
		r = e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "down@example.org"})
		harness.Expect(t, r, 200, "")
		if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
			t.Fatalf("result %v with one IS down", got)
		}
		if len(e.Threepids(t, u)) != 0 {
			t.Fatal("delete kept the association")
		}
		if got := e.BindingsOf(t, u, "down@example.org"); len(got) != 1 || got[0] != e.IS[1].Name() {
			t.Fatalf("records after a failed unbind: %v", got)
		}
		e.Restart()
		e.IS[1].Start()
		deadline := time.Now().Add(45 * time.Second)
		for time.Now().Before(deadline) {
			if _, ok := e.IS[1].Bindings()["down@example.org"]; !ok {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, ok := e.IS[1].Bindings()["down@example.org"]; ok {
			t.Fatal("the outbox did not complete the unbind")
		}
		deadline = time.Now().Add(10 * time.Second)
		for len(e.BindingsOf(t, u, "down@example.org")) != 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := e.BindingsOf(t, u, "down@example.org"); len(got) != 0 {
			t.Fatalf("record left after the outbox unbind: %v", got)
		}
	})
}

// TestBindTakeover: when B binds a 3PID A was bound to on the same IS, A's
// record is dropped and A is notified.
func TestBindTakeover(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		a, bob := e.NewUser("holder"), e.NewUser("taker")
		harness.Expect(t, e.Bind(t, a, 0, "email", "shared@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "shared@example.org"), 200, "")
		if got := e.BindingsOf(t, a, "shared@example.org"); len(got) != 0 {
			t.Fatalf("the previous holder kept %v", got)
		}
		ns := e.Notifications(t, a)
		if len(ns) != 1 || ns[0].Deleted || ns[0].MXID != bob.ID || ns[0].Address != "shared@example.org" || ns[0].Origin != e.IS[0].Name() {
			t.Fatalf("notifications of the previous holder: %+v", ns)
		}
		if ns := e.Notifications(t, bob); len(ns) != 0 {
			t.Fatalf("the new holder was notified: %+v", ns)
		}
	})
}

// TestBindRefused: /3pid/bind and the deprecated POST /account/3pid with bad
// bodies and an untrusted id_server (nothing dialled), then every kind of
// identity-server failure, a bind answer with a bad or missing signature (or
// for another user) included: never a forwarded 401 or token errcode, nothing
// recorded.
func TestBindRefused(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("binder")
		is := e.IS[0]
		base := map[string]any{"client_secret": "bind-secret", "id_server": is.Name(), "id_access_token": "idtoken", "sid": "bindsid"}
		probes := append([]probe{}, nonObjects...)
		for _, f := range []string{"client_secret", "id_server", "id_access_token", "sid"} {
			probes = append(probes, fieldProbes(base, f, badStrings)...)
		}
		for _, s := range badSecrets {
			probes = append(probes,
				probe{"client_secret " + s.name, withField(base, "client_secret", s.value), 400, "M_INVALID_PARAM"},
				probe{"sid " + s.name, withField(base, "sid", s.value), 400, "M_INVALID_PARAM"})
		}
		probes = append(probes, probe{"id_access_token huge", withField(base, "id_access_token", strings.Repeat("t", 5000)), 400, "M_INVALID_PARAM"})
		// Not server names, or (unconfigured, so reached by name through the
		// outbound guard) at addresses the guard refuses before dialling.
		for _, v := range append(append(notServerNames(is), ""), guardRefused...) {
			probes = append(probes, probe{"id_server " + strconv.Quote(v), withField(base, "id_server", v), 400, "M_SERVER_NOT_TRUSTED"})
		}
		legacy := []probe{
			{"three_pid_creds absent", map[string]any{"bind": true}, 400, "M_MISSING_PARAM"},
			{"three_pid_creds null", map[string]any{"three_pid_creds": nil}, 400, "M_MISSING_PARAM"},
			{"three_pid_creds string", map[string]any{"three_pid_creds": "x"}, 400, "M_BAD_JSON"},
			{"three_pid_creds array", map[string]any{"three_pid_creds": []any{base}}, 400, "M_BAD_JSON"},
			{"inner sid number", map[string]any{"three_pid_creds": withField(base, "sid", 5)}, 400, "M_BAD_JSON"},
			{"inner id_access_token null", map[string]any{"three_pid_creds": withField(base, "id_access_token", nil)}, 400, "M_MISSING_PARAM"},
			{"inner untrusted", map[string]any{"three_pid_creds": withField(base, "id_server", "10.0.0.1")}, 400, "M_SERVER_NOT_TRUSTED"},
		}
		for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
			t.Run(prefix, func(t *testing.T) {
				runProbes(t, e, prefix+"/account/3pid/bind", u.Token, probes)
				runProbes(t, e, prefix+"/account/3pid", u.Token, legacy)
			})
		}
		if n := is.BindCalls() + is.ValidatedCalls(); n != 0 {
			t.Fatalf("refused binds reached the identity server %d times", n)
		}

		bind := func(t *testing.T, accessToken string, tamper func(sid, secret string) (string, string)) harness.Response {
			t.Helper()
			secret := "s-" + threepid.NewSID()[:8]
			sid := is.AddValidatedSession("email", "failing@example.org", secret, "good-token")
			sid, secret = tamper(sid, secret)
			return e.Do("POST", "/_matrix/client/v3/account/3pid/bind", u.Token, map[string]any{
				"client_secret": secret, "id_server": is.Name(), "id_access_token": accessToken, "sid": sid})
		}
		same := func(sid, secret string) (string, string) { return sid, secret }
		for _, c := range []struct {
			name        string
			mode        fakes.IdentityServerMode
			accessToken string
			tamper      func(sid, secret string) (string, string)
			// status 0: any error status with an errcode.
			status  int
			errcode string
		}{
			{"wrong id_access_token", fakes.IdentityServerNormal, "bad-token", same, 403, "M_FORBIDDEN"},
			{"empty id_access_token", fakes.IdentityServerNormal, "", same, 403, "M_FORBIDDEN"},
			{"unknown session", fakes.IdentityServerNormal, "good-token", func(string, string) (string, string) { return "nosuchsid", "x" }, 404, "M_NO_VALID_SESSION"},
			{"wrong secret", fakes.IdentityServerNormal, "good-token", func(sid, _ string) (string, string) { return sid, "wrong" }, 404, "M_NO_VALID_SESSION"},
			{"401 M_UNKNOWN_TOKEN", fakes.IdentityServerUnauthorized401, "good-token", same, 403, "M_FORBIDDEN"},
			{"403", fakes.IdentityServerMatrixForbidden, "good-token", same, 403, "M_FORBIDDEN"},
			{"500", fakes.IdentityServerFail500, "good-token", same, 500, "M_UNKNOWN"},
			{"501 plain", fakes.IdentityServerFail501Plain, "good-token", same, 502, "M_UNKNOWN"},
			{"bad signature", fakes.IdentityServerBadSignature, "good-token", same, 502, "M_UNKNOWN"},
			{"wrong mxid", fakes.IdentityServerWrongMXID, "good-token", same, 502, "M_UNKNOWN"},
			{"no signature", fakes.IdentityServerNoSignature, "good-token", same, 0, ""},
			{"expired", fakes.IdentityServerExpired, "good-token", same, 0, ""},
			{"timeout", fakes.IdentityServerHang, "good-token", same, 504, "M_UNKNOWN"},
		} {
			t.Run(c.name, func(t *testing.T) {
				is.SetMode(c.mode)
				defer is.SetMode(fakes.IdentityServerNormal)
				r := bind(t, c.accessToken, c.tamper)
				if c.status == 0 {
					if r.Status < 400 || r.ErrCode() == "" {
						t.Fatalf("got %d %s", r.Status, r.Body)
					}
				} else {
					expectAnswer(t, r, c.status, c.errcode)
				}
				if got := e.BindingsOf(t, u, "failing@example.org"); len(got) != 0 {
					t.Fatalf("recorded %v", got)
				}
			})
		}
		t.Run("unreachable", func(t *testing.T) {
			is.Stop()
			defer is.Start()
			expectAnswer(t, bind(t, "good-token", same), 502, "M_UNKNOWN")
			if got := e.BindingsOf(t, u, "failing@example.org"); len(got) != 0 {
				t.Fatalf("recorded %v", got)
			}
		})
		// An identity server that answers the address as the user typed it:
		// the binding is recorded under the canonical address, so that unbind
		// and delete (which canonicalise) find it.
		t.Run("non-canonical address from the identity server", func(t *testing.T) {
			expectAnswer(t, e.Bind(t, u, 0, "email", "Mixed.Case@Example.ORG"), 200, "")
			if got := e.BindingsOf(t, u, "mixed.case@example.org"); len(got) != 1 {
				t.Fatalf("binding records of the canonical address: %v", got)
			}
			calls := len(is.UnbindCalls())
			r := e.Do("POST", "/_matrix/client/v3/account/3pid/unbind", u.Token, map[string]any{"medium": "email", "address": "mixed.case@example.org"})
			if got := unbindResult(t, r); got != "success" || len(is.UnbindCalls()) != calls+1 {
				t.Fatalf("unbind: %s after %d calls", got, len(is.UnbindCalls())-calls)
			}
		})
	})
}

// TestDeleteUnbindRefused: /3pid/delete and /3pid/unbind with bad bodies, an
// untrusted id_server and another user's 3PID. Nothing changes on a refusal
// (checked through GET /account/3pid, the binding records and the identity
// server), and another user's 3PID answers exactly as one nobody holds: one
// user cannot unbind or delete another's.
func TestDeleteUnbindRefused(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		owner, other := e.NewUser("owner"), e.NewUser("other")
		e.AddEmail(t, owner, "kept@example.org")
		expectAnswer(t, e.Bind(t, owner, 0, "email", "kept@example.org"), 200, "")
		unchanged := func(t *testing.T) {
			t.Helper()
			expectListed(t, e, owner, "email:kept@example.org")
			if got := e.BindingsOf(t, owner, "kept@example.org"); len(got) != 1 {
				t.Fatalf("the owner's binding records: %v", got)
			}
			if e.IS[0].Bindings()["kept@example.org"] != owner.ID {
				t.Fatal("the identity server lost the owner's binding")
			}
		}
		base := map[string]any{"medium": "email", "address": "kept@example.org", "id_server": e.IS[0].Name()}
		probes := append([]probe{}, nonObjects...)
		probes = append(probes, fieldProbes(base, "medium", badStrings)...)
		probes = append(probes, fieldProbes(base, "address", badStrings)...)
		for _, bt := range badStrings {
			probes = append(probes, probe{"id_server " + bt.name, withField(base, "id_server", bt.value), 400, "M_BAD_JSON"})
		}
		for _, v := range []jsonValue{{"fax", "fax"}, {"upper case", "EMAIL"}, {"empty", ""}} {
			probes = append(probes, probe{"medium " + v.name, withField(base, "medium", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, v := range []jsonValue{{"empty", ""}, {"no @", "kept.example.org"}, {"huge", strings.Repeat("k", 10000)}} {
			probes = append(probes, probe{"address " + v.name, withField(base, "address", v.value), 400, "M_INVALID_PARAM"})
		}
		msisdn := withField(base, "medium", "msisdn")
		for _, v := range []jsonValue{{"letters", "call me"}, {"e-mail", "kept@example.org"}, {"too long", strings.Repeat("4", 21)}, {"plus only", "+"}} {
			probes = append(probes, probe{"msisdn " + v.name, withField(msisdn, "address", v.value), 400, "M_INVALID_PARAM"})
		}
		for _, v := range append(notServerNames(e.IS[0]), guardRefused...) {
			probes = append(probes, probe{"id_server " + strconv.Quote(v), withField(base, "id_server", v), 400, "M_SERVER_NOT_TRUSTED"})
		}
		probes = append(probes, probe{"id_server too long", withField(base, "id_server", strings.Repeat("a", 300)), 400, "M_INVALID_PARAM"})
		for _, ep := range []string{"delete", "unbind"} {
			for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
				t.Run(ep+prefix, func(t *testing.T) {
					calls := len(e.IS[0].UnbindCalls())
					runProbes(t, e, prefix+"/account/3pid/"+ep, owner.Token, probes)
					if n := len(e.IS[0].UnbindCalls()) - calls; n != 0 {
						t.Fatalf("refused requests sent %d unbinds", n)
					}
					unchanged(t)
				})
			}
		}
		t.Run("another user's 3PID", func(t *testing.T) {
			for _, ep := range []string{"delete", "unbind"} {
				calls := len(e.IS[0].UnbindCalls())
				for _, address := range []string{"kept@example.org", "KEPT@Example.org", "nobody@example.org"} {
					r := e.Do("POST", "/_matrix/client/v3/account/3pid/"+ep, other.Token, map[string]any{"medium": "email", "address": address})
					if got := unbindResult(t, r); got != "no-support" {
						t.Fatalf("%s of %s by another user: %s", ep, address, got)
					}
				}
				if n := len(e.IS[0].UnbindCalls()) - calls; n != 0 {
					t.Fatalf("%s of another user's 3PID sent %d unbinds", ep, n)
				}
				unchanged(t)
			}
		})
		t.Run("another user's 3PID, the identity server named", func(t *testing.T) {
			r := e.Do("POST", deletePath, other.Token, map[string]any{"medium": "email", "address": "kept@example.org"})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
				t.Fatalf("delete by another user: %v", got)
			}
			r = e.Do("POST", unbindPath, other.Token, map[string]any{"medium": "email", "address": "kept@example.org"})
			harness.Expect(t, r, 200, "")
			// Naming the IS sends an unbind for the intruder's own mxid, which the IS refuses to apply to the owner.
			e.Do("POST", unbindPath, other.Token, map[string]any{"medium": "email", "address": "kept@example.org", "id_server": e.IS[0].Name()})
			unchanged(t)
		})
		t.Run("no token", func(t *testing.T) {
			expectAnswer(t, e.Do("POST", "/_matrix/client/v3/account/3pid/delete", "", base), 401, "M_MISSING_TOKEN")
			expectAnswer(t, e.Do("POST", "/_matrix/client/v3/account/3pid/unbind", "bogus", base), 401, "M_UNKNOWN_TOKEN")
			unchanged(t)
		})
	})
}

// TestUnbindAnswers: how /3pid/unbind and /3pid/delete report each kind of
// identity-server answer (DESIGN.md, "Identity-server answers"): an identity
// server's 401 never reaches the client as a 401; a Matrix error reaches the
// client on /unbind and is no-support on /delete; 501 plain is no-support;
// transient failures keep the record and answer no-support; delete always
// removes the 3PID; an unconfigured id_server is 400 M_SERVER_NOT_TRUSTED with
// no outgoing request.
func TestUnbindAnswers(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		is := e.IS[0]
		// First, before the cases below queue unbinds for retry: it counts
		// the identity server's calls.
		t.Run("one binding: a Matrix error, a 401, a 501; untrusted id_servers", func(t *testing.T) {
			u := e.NewUser("answers")
			harness.Expect(t, e.Bind(t, u, 0, "email", "a1@example.org"), 200, "")
			e.IS[0].SetMode(fakes.IdentityServerMatrixForbidden)
			r := e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org"})
			harness.Expect(t, r, 403, "M_FORBIDDEN")
			r = e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org"})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
				t.Fatalf("delete with a Matrix error: %v", got)
			}
			e.IS[0].SetMode(fakes.IdentityServerUnauthorized401)
			r = e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org", "id_server": e.IS[0].Name()})
			harness.Expect(t, r, 403, "M_FORBIDDEN")
			e.IS[0].SetMode(fakes.IdentityServerFail501Plain)
			r = e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org", "id_server": e.IS[0].Name()})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
				t.Fatalf("501: %v", got)
			}
			if got := e.BindingsOf(t, u, "a1@example.org"); len(got) != 0 {
				t.Fatalf("501 kept the record: %v", got)
			}
			before := len(e.IS[0].UnbindCalls())
			r = e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org", "id_server": "10.0.0.1"})
			harness.Expect(t, r, 400, "M_SERVER_NOT_TRUSTED")
			r = e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org", "id_server": "127.0.0.1:1"})
			harness.Expect(t, r, 400, "M_SERVER_NOT_TRUSTED")
			e.IS[0].SetMode(fakes.IdentityServerNormal)
			r = e.Bind(t, u, 0, "email", "x@example.org")
			harness.Expect(t, r, 200, "")
			r = e.Do("POST", "/_matrix/client/v3/account/3pid/bind", u.Token, map[string]any{
				"client_secret": "x", "id_server": "192.168.0.1", "id_access_token": "t", "sid": "s"})
			harness.Expect(t, r, 400, "M_SERVER_NOT_TRUSTED")
			if n := len(e.IS[0].UnbindCalls()); n != before {
				t.Fatalf("untrusted id_server caused %d calls", n-before)
			}
			r = e.Do("POST", "/_matrix/client/v3/account/3pid/bind", u.Token, map[string]any{
				"client_secret": "x", "id_server": e.IS[0].Name(), "id_access_token": nil, "sid": "s"})
			harness.Expect(t, r, 400, "M_MISSING_PARAM")
		})
		for i, c := range []struct {
			name       string
			mode       fakes.IdentityServerMode
			down       bool
			unbind     string // result of /unbind, or an errcode
			status     int    // status of /unbind
			keptRecord bool   // after /unbind
		}{
			{"success", fakes.IdentityServerNormal, false, "success", 200, false},
			{"401 M_UNKNOWN_TOKEN", fakes.IdentityServerUnauthorized401, false, "M_FORBIDDEN", 403, true},
			{"403", fakes.IdentityServerMatrixForbidden, false, "M_FORBIDDEN", 403, true},
			{"501 plain", fakes.IdentityServerFail501Plain, false, "no-support", 200, false},
			{"500", fakes.IdentityServerFail500, false, "no-support", 200, true},
			{"refused", fakes.IdentityServerNormal, true, "no-support", 200, true},
		} {
			t.Run(c.name, func(t *testing.T) {
				u := e.NewUser("unbinder" + strconv.Itoa(i))
				address := "unbind" + strconv.Itoa(i) + "@example.org"
				e.AddEmail(t, u, address)
				expectAnswer(t, e.Bind(t, u, 0, "email", address), 200, "")
				is.SetMode(c.mode)
				if c.down {
					is.Stop()
				}
				defer func() {
					is.SetMode(fakes.IdentityServerNormal)
					if c.down {
						is.Start()
					}
				}()
				r := e.Do("POST", "/_matrix/client/v3/account/3pid/unbind", u.Token, map[string]any{"medium": "email", "address": address})
				if c.status == 200 {
					if got := unbindResult(t, r); got != c.unbind {
						t.Fatalf("/unbind: %s, want %s", got, c.unbind)
					}
				} else {
					expectAnswer(t, r, c.status, c.unbind)
				}
				if kept := len(e.BindingsOf(t, u, address)) == 1; kept != c.keptRecord {
					t.Fatalf("after /unbind the record kept = %t, want %t", kept, c.keptRecord)
				}
				r = e.Do("POST", "/_matrix/client/v3/account/3pid/delete", u.Token, map[string]any{"medium": "email", "address": address, "id_server": is.Name()})
				want := "no-support"
				if c.mode == fakes.IdentityServerNormal && !c.down {
					want = "success"
				}
				if got := unbindResult(t, r); got != want {
					t.Fatalf("/delete: %s, want %s", got, want)
				}
				expectListed(t, e, u)
			})
		}
	})
}

// TestUnbindOutboxOnlyForHeld: with the identity server down, an unbind of a
// binding the user holds is queued for retry, but an unbind (or a delete)
// naming it for an address the user never bound through threepidd is tried
// once and answers no-support without queueing anything, so nobody can fill
// the outbox with other people's addresses.
func TestUnbindOutboxOnlyForHeld(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("outboxer")
		harness.Expect(t, e.Bind(t, u, 0, "email", "held@example.org"), 200, "")
		e.IS[0].Stop()
		queued := func() int64 {
			t.Helper()
			n, err := e.Server.Store.CountOutbox(context.Background(), bindings.OutboxKind)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		for i := range 20 {
			for _, path := range []string{unbindPath, deletePath} {
				r := e.Do("POST", path, u.Token, map[string]any{"medium": "email", "address": fmt.Sprintf("stranger%d@example.org", i), "id_server": e.IS[0].Name()})
				if got := unbindResult(t, r); got != "no-support" {
					t.Fatalf("%s of a stranger's address: %q, want no-support", path, got)
				}
			}
		}
		if n := queued(); n != 0 {
			t.Fatalf("%d unbinds queued for addresses the user never bound, want 0", n)
		}
		r := e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "held@example.org", "id_server": e.IS[0].Name()})
		if got := unbindResult(t, r); got != "no-support" {
			t.Fatalf("unbind of the held binding: %q, want no-support", got)
		}
		if n := queued(); n != 1 {
			t.Fatalf("%d unbinds queued for the held binding, want 1", n)
		}
	})
}

// TestUnbindRateLimit: /3pid/unbind and /3pid/delete share a bucket per user
// (ratelimit.unbind_per_user): over it, 429 M_LIMIT_EXCEEDED with Retry-After
// and nothing sent; another user has a bucket of their own.
func TestUnbindRateLimit(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1,
			RateLimitYAML: "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, unbind_per_user: {per_second: 0.001, burst: 3}}"})
		u, other := e.NewUser("scripted"), e.NewUser("patient")
		body := map[string]any{"medium": "email", "address": "target@example.org", "id_server": e.IS[0].Name()}
		for _, path := range []string{unbindPath, deletePath, unbindPath} {
			expectAnswer(t, e.Do("POST", path, u.Token, body), 200, "")
		}
		calls := len(e.IS[0].UnbindCalls())
		for _, path := range []string{unbindPath, deletePath} {
			r := e.Do("POST", path, u.Token, body)
			expectAnswer(t, r, 429, "M_LIMIT_EXCEEDED")
			if secs, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || secs < 1 {
				t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
			}
		}
		if n := len(e.IS[0].UnbindCalls()) - calls; n != 0 {
			t.Fatalf("limited requests sent %d unbinds", n)
		}
		expectAnswer(t, e.Do("POST", unbindPath, other.Token, body), 200, "")
	})
}
