package security

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
)

const (
	threepidPath = "/_matrix/client/v3/account/3pid"
	deletePath   = threepidPath + "/delete"
	unbindPath   = threepidPath + "/unbind"
	syncPath     = "/_matrix/client/v3/sync"
	adminToken   = "security-admin-token"
)

// addresses lists the addresses of GET /account/3pid for u.
func addresses(t *testing.T, e *harness.Env, u harness.User) []string {
	t.Helper()
	var out []string
	for _, tp := range e.Threepids(t, u) {
		out = append(out, tp["address"].(string))
	}
	return out
}

// syncThreepids returns the threepids section of an initial /sync of u.
func syncThreepids(t *testing.T, e *harness.Env, u harness.User) map[string]json.RawMessage {
	t.Helper()
	r := e.Do("GET", syncPath+"?timeout=0", u.Token, nil)
	harness.Expect(t, r, 200, "")
	var body struct {
		Threepids map[string]json.RawMessage `json:"threepids"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("sync body: %v: %s", err, r.Body)
	}
	return body.Threepids
}

// TestUserIsolation: bob cannot read, delete or unbind alice's 3PIDs, cannot
// spend her validation session, does not see her notifications in /sync, and
// his access token is no admin token.
func TestUserIsolation(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: "admin_token: " + adminToken + "\n"})
		is := e.IS[0]
		alice, bob := e.NewUser("alice"), e.NewUser("bob")
		e.AddEmail(t, alice, "alice@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		e.AddEmail(t, bob, "bob@example.org")

		// Reading: each sees only their own.
		if got := addresses(t, e, bob); len(got) != 1 || got[0] != "bob@example.org" {
			t.Fatalf("bob lists %v", got)
		}
		aliceIntact := func(when string) {
			t.Helper()
			if got := addresses(t, e, alice); len(got) != 1 || got[0] != "alice@example.org" {
				t.Fatalf("%s: alice lists %v", when, got)
			}
			if got := e.BindingsOf(t, alice, "alice@example.org"); len(got) != 1 {
				t.Fatalf("%s: alice's binding records: %v", when, got)
			}
			if got := is.Bindings()["alice@example.org"]; got != alice.ID {
				t.Fatalf("%s: the identity server binds alice@example.org to %q", when, got)
			}
		}

		// Deleting and unbinding, without and with id_server: bob's requests
		// never touch alice's rows, and any unbind sent names bob.
		for _, c := range []struct{ path, idServer string }{
			{deletePath, ""}, {deletePath, is.Name()}, {unbindPath, ""}, {unbindPath, is.Name()},
		} {
			body := map[string]any{"medium": "email", "address": "Alice@Example.org"}
			if c.idServer != "" {
				body["id_server"] = c.idServer
			}
			harness.Expect(t, e.Do("POST", c.path, bob.Token, body), 200, "")
			aliceIntact("after bob's " + c.path + " with id_server " + c.idServer)
		}
		for _, call := range is.UnbindCalls() {
			if call.MXID != bob.ID {
				t.Errorf("an unbind on bob's behalf named %s", call.MXID)
			}
		}

		// Her validation session: without her client_secret it is nobody's.
		secret := "alice-secret"
		sid := e.ValidateEmail(t, secret, "alice2@example.org")
		harness.Expect(t, e.AddThreepid(t, bob, sid, "bob-guess"), 400, "M_THREEPID_AUTH_FAILED")
		harness.Expect(t, e.Do("POST", emailSubmitPath, "", map[string]any{"sid": sid, "client_secret": "bob-guess", "token": "x"}), 400, "M_INVALID_PARAM")
		harness.Expect(t, e.AddThreepid(t, alice, sid, secret), 200, "")

		// Notifications: the identity server gives alice's address to someone
		// else; alice sees it, bob does not.
		err := onupdate.Send(context.Background(), nil, is.Key(), is.Name(), harness.ServerName, e.URL,
			onupdate.Body{Threepid: "alice@example.org", MXID: "@mallory:evil.test"})
		if err != nil {
			t.Fatalf("onupdate: %v", err)
		}
		if got := syncThreepids(t, e, alice); len(got) != 1 || got["alice@example.org"] == nil {
			t.Fatalf("alice's threepids section: %v", got)
		}
		if got := syncThreepids(t, e, bob); len(got) != 0 {
			t.Fatalf("bob's threepids section shows alice's notification: %v", got)
		}
		if ns := e.Notifications(t, bob); len(ns) != 0 {
			t.Fatalf("bob's notification stream: %+v", ns)
		}

		// The admin API is not for users.
		adminPath := "/_threepidd/admin/v1/users/" + url.PathEscape(alice.ID) + "/threepids"
		harness.Expect(t, e.Do("GET", adminPath, bob.Token, nil), 403, "M_FORBIDDEN")
		harness.Expect(t, e.Do("GET", adminPath, "", nil), 401, "M_MISSING_TOKEN")
		harness.Expect(t, e.Do("GET", adminPath, adminToken[:len(adminToken)-1], nil), 403, "M_FORBIDDEN")
		harness.Expect(t, e.Do("GET", adminPath, adminToken+"x", nil), 403, "M_FORBIDDEN")
		harness.Expect(t, e.Do("GET", adminPath, adminToken, nil), 200, "")
	})
}
