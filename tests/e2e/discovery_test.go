package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
)

// Discovery: the identity server a user chose (Element's Discovery settings)
// is named by the client as id_server and is not in threepidd's config:
// threepidd reaches it at https://<id_server> through the outbound guard.

// startDiscovery starts threepidd with one configured identity server (IS[0])
// and an HTTPS fake identity server that is not configured, which it returns;
// clients name it by its host:port, 127.0.0.1:<port>. threepidd trusts the
// fake's certificate (outbound.ca_files); with allowLoopback the guard lets
// 127.0.0.1 through (outbound.ip_range_allowlist), otherwise it keeps the
// default denylist, which refuses it. extraYAML is appended to the config.
func startDiscovery(t *testing.T, b storagetest.Backend, allowLoopback bool, extraYAML string) (*harness.Env, *fakes.IdentityServer) {
	t.Helper()
	named := fakes.NewIdentityServerTLS(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, named.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	outbound := fmt.Sprintf("outbound: {ca_files: [%q]}\n", ca)
	if allowLoopback {
		outbound = fmt.Sprintf("outbound: {ca_files: [%q], ip_range_allowlist: [127.0.0.1/32]}\n", ca)
	}
	e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: outbound + extraYAML})
	named.TrustHomeserver(harness.ServerName, string(e.Key.ID), e.Key.PublicKey())
	return e, named
}

// TestDiscovery: Share (bind), Revoke (unbind naming the identity server, as
// matrix-js-sdk always does) and the delete of a shared address (no id_server:
// the binding record leads to it) work with an identity server the client
// names; the association's signature is checked with the keys the named
// server publishes; deactivation unbinds there too; that server may not call
// onupdate.
func TestDiscovery(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e, named := startDiscovery(t, b, true, "admin_token: "+adminToken+"\n")
		alice := e.NewUser("discoverer")
		const address = "discoverer@example.org"
		e.AddEmail(t, alice, address)
		unbindBody := map[string]any{"medium": "email", "address": address, "id_server": named.Name()}

		share := func(t *testing.T) {
			t.Helper()
			r := e.BindOn(t, alice, named, "email", address)
			expectAnswer(t, r, 200, "")
			if string(r.Body) != "{}" {
				t.Fatalf("bind answered %s, want {}", r.Body)
			}
			if got := named.Bindings()[address]; got != alice.ID {
				t.Fatalf("the named identity server binds %s to %q, want %s", address, got, alice.ID)
			}
			if got := e.BindingsOf(t, alice, address); len(got) != 1 || got[0] != named.Name() {
				t.Fatalf("binding records %v, want [%s]", got, named.Name())
			}
		}
		revoked := func(t *testing.T, r harness.Response, calls int) {
			t.Helper()
			if got := unbindResult(t, r); got != "success" {
				t.Fatalf("id_server_unbind_result %q, want success", got)
			}
			if _, ok := named.Bindings()[address]; ok {
				t.Fatal("the named identity server still holds the binding")
			}
			if got := e.BindingsOf(t, alice, address); len(got) != 0 {
				t.Fatalf("binding records left: %v", got)
			}
			cs := named.UnbindCalls()
			if len(cs) != calls || !cs[calls-1].Verified || cs[calls-1].Origin != harness.ServerName || cs[calls-1].MXID != alice.ID {
				t.Fatalf("unbind calls %+v, want %d, the last verified from %s for %s", cs, calls, harness.ServerName, alice.ID)
			}
		}

		t.Run("share", share)
		t.Run("the named server may not call onupdate", func(t *testing.T) {
			body := onUpdateBody(t, address, true, alice.ID, "")
			r := postOnUpdate(t, e, signOnUpdate(t, named.Key(), named.Name(), harness.ServerName, body), body)
			harness.Expect(t, r, 401, "M_UNAUTHORIZED")
			if got := e.BindingsOf(t, alice, address); len(got) != 1 {
				t.Fatalf("binding records %v after a refused onupdate", got)
			}
		})
		t.Run("revoke", func(t *testing.T) {
			revoked(t, e.Do("POST", unbindPath, alice.Token, unbindBody), 1)
		})
		t.Run("delete of a shared address", func(t *testing.T) {
			share(t)
			revoked(t, e.Do("POST", deletePath, alice.Token, map[string]any{"medium": "email", "address": address}), 2)
			expectListed(t, e, alice)
		})
		t.Run("deactivation", func(t *testing.T) {
			e.AddEmail(t, alice, address)
			share(t)
			revoked(t, e.Do("POST", adminPrefix+"/users/"+url.PathEscape(alice.ID)+"/deactivate", adminToken, nil), 3)
		})
	})
}

// TestDiscoveryPolicy: policy.bind_identity_servers_allowed still restricts
// binds, to named servers too: refused before anything is dialled.
func TestDiscoveryPolicy(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e, named := startDiscovery(t, b, true, "policy: {bind_identity_servers_allowed: [id1.test]}\n")
		alice := e.NewUser("restricted")
		expectAnswer(t, e.BindOn(t, alice, named, "email", "restricted@example.org"), 403, "M_FORBIDDEN")
		if n := named.Connections(); n != 0 {
			t.Fatalf("the named identity server got %d connections", n)
		}
		if got := e.BindingsOf(t, alice, "restricted@example.org"); len(got) != 0 {
			t.Fatalf("binding records %v", got)
		}
		expectAnswer(t, e.Bind(t, alice, 0, "email", "restricted@example.org"), 200, "")
	})
}

// TestDiscoveryGuard: without an allowlist the guard refuses a loopback
// identity server a client names, by address or by a name resolving to it:
// bind, unbind and delete answer 400 M_SERVER_NOT_TRUSTED, nothing changes,
// and no connection ever reaches the server. A binding recorded on a server
// the guard now refuses is forgotten on delete, again without a connection.
func TestDiscoveryGuard(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e, named := startDiscovery(t, b, false, "")
		alice := e.NewUser("guarded")
		const address = "guarded@example.org"
		e.AddEmail(t, alice, address)
		_, port, err := net.SplitHostPort(named.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{named.Name(), "localhost:" + port} {
			t.Run(name, func(t *testing.T) {
				secret, token := "guard-secret", "guard-token"
				sid := named.AddValidatedSession("email", address, secret, token)
				expectAnswer(t, e.Do("POST", "/_matrix/client/v3/account/3pid/bind", alice.Token, map[string]any{
					"client_secret": secret, "id_server": name, "id_access_token": token, "sid": sid}), 400, "M_SERVER_NOT_TRUSTED")
				body := map[string]any{"medium": "email", "address": address, "id_server": name}
				expectAnswer(t, e.Do("POST", unbindPath, alice.Token, body), 400, "M_SERVER_NOT_TRUSTED")
				expectAnswer(t, e.Do("POST", deletePath, alice.Token, body), 400, "M_SERVER_NOT_TRUSTED")
				expectListed(t, e, alice, "email:"+address)
			})
		}
		t.Run("recorded binding", func(t *testing.T) {
			if err := e.Server.Store.UpsertBinding(context.Background(), storage.Binding{
				UserID: alice.ID, Medium: "email", Address: address, IDServer: named.Name(), BoundAt: time.Now().UnixMilli(),
			}); err != nil {
				t.Fatal(err)
			}
			r := e.Do("POST", deletePath, alice.Token, map[string]any{"medium": "email", "address": address})
			if got := unbindResult(t, r); got != "no-support" {
				t.Fatalf("delete: %q, want no-support", got)
			}
			expectListed(t, e, alice)
			if got := e.BindingsOf(t, alice, address); len(got) != 0 {
				t.Fatalf("binding records left: %v", got)
			}
			if n, err := e.Server.Store.CountOutbox(context.Background(), "unbind"); err != nil || n != 0 {
				t.Fatalf("%d unbinds queued (%v), want none: a refused address is not retried", n, err)
			}
		})
		if n := named.Connections(); n != 0 {
			t.Fatalf("the refused identity server got %d connections", n)
		}
		if n := named.BindCalls() + named.ValidatedCalls() + len(named.UnbindCalls()); n != 0 {
			t.Fatalf("the refused identity server got %d requests", n)
		}
	})
}
