package e2e

import (
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
)

const unbindPath = "/_matrix/client/v3/account/3pid/unbind"
const deletePath = "/_matrix/client/v3/account/3pid/delete"

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

// TestUnbindAnswers: 501 plain → no-support; a Matrix error reaches the client
// on /unbind (and is no-support on /delete); an unconfigured id_server → 400
// M_SERVER_NOT_TRUSTED with no outgoing request.
func TestUnbindAnswers(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
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
		r = e.Do("POST", unbindPath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org", "id_server": "evil.example"})
		harness.Expect(t, r, 400, "M_SERVER_NOT_TRUSTED")
		r = e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "a1@example.org", "id_server": "127.0.0.1:1"})
		harness.Expect(t, r, 400, "M_SERVER_NOT_TRUSTED")
		e.IS[0].SetMode(fakes.IdentityServerNormal)
		r = e.Bind(t, u, 0, "email", "x@example.org")
		harness.Expect(t, r, 200, "")
		r = e.Do("POST", "/_matrix/client/v3/account/3pid/bind", u.Token, map[string]any{
			"client_secret": "x", "id_server": "evil.example", "id_access_token": "t", "sid": "s"})
		harness.Expect(t, r, 400, "M_SERVER_NOT_TRUSTED")
		if n := len(e.IS[0].UnbindCalls()); n != before {
			t.Fatalf("untrusted id_server caused %d calls", n-before)
		}
		r = e.Do("POST", "/_matrix/client/v3/account/3pid/bind", u.Token, map[string]any{
			"client_secret": "x", "id_server": e.IS[0].Name(), "id_access_token": nil, "sid": "s"})
		harness.Expect(t, r, 400, "M_MISSING_PARAM")
	})
}

// TestBindBadAssociation: a bind answer with a bad or missing signature (or for
// another user) records nothing and is an error.
func TestBindBadAssociation(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		u := e.NewUser("badsig")
		for _, mode := range []fakes.IdentityServerMode{fakes.IdentityServerBadSignature, fakes.IdentityServerNoSignature, fakes.IdentityServerWrongMXID, fakes.IdentityServerExpired} {
			e.IS[0].SetMode(mode)
			r := e.Bind(t, u, 0, "email", "badsig@example.org")
			if r.Status < 400 || r.ErrCode() == "" {
				t.Fatalf("%v: got %d %s", mode, r.Status, r.Body)
			}
			if got := e.BindingsOf(t, u, "badsig@example.org"); len(got) != 0 {
				t.Fatalf("%v: recorded %v", mode, got)
			}
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

// TestCannotTouchOthers: one user cannot unbind or delete another user's 3PID.
func TestCannotTouchOthers(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		owner, other := e.NewUser("owner"), e.NewUser("intruder")
		e.AddEmail(t, owner, "mine@example.org")
		harness.Expect(t, e.Bind(t, owner, 0, "email", "mine@example.org"), 200, "")
		r := e.Do("POST", deletePath, other.Token, map[string]any{"medium": "email", "address": "mine@example.org"})
		harness.Expect(t, r, 200, "")
		if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
			t.Fatalf("delete by another user: %v", got)
		}
		r = e.Do("POST", unbindPath, other.Token, map[string]any{"medium": "email", "address": "mine@example.org"})
		harness.Expect(t, r, 200, "")
		// Naming the IS sends an unbind for the intruder's own mxid, which the IS refuses to apply to the owner.
		e.Do("POST", unbindPath, other.Token, map[string]any{"medium": "email", "address": "mine@example.org", "id_server": e.IS[0].Name()})
		if len(e.Threepids(t, owner)) != 1 {
			t.Fatal("another user deleted the owner's 3PID")
		}
		if got := e.BindingsOf(t, owner, "mine@example.org"); len(got) != 1 {
			t.Fatalf("owner's binding record: %v", got)
		}
		if e.IS[0].Bindings()["mine@example.org"] != owner.ID {
			t.Fatal("the IS dropped the owner's binding")
		}
	})
}
