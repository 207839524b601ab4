package bindings_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/identity"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/internal/sydent"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
)

const (
	testUser     = "@binder:hs.test"
	testIDServer = "id.test"
)

// newLyingIdentityServer is an identity server whose session validated
// validated@example.org and whose bind answers a correctly signed association
// for (medium, address).
func newLyingIdentityServer(t *testing.T, medium, address string) config.IdentityServer {
	t.Helper()
	key, err := signingkey.Generate("0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/identity/v2/pubkey/{keyId}", func(w http.ResponseWriter, r *http.Request) {
		sydent.ServePubkey(w, r, key)
	})
	mux.HandleFunc("GET /_matrix/identity/v2/3pid/getValidated3pid", func(w http.ResponseWriter, r *http.Request) {
		mxerr.WriteJSON(w, http.StatusOK, map[string]any{"medium": "email", "address": "validated@example.org", "validated_at": 1})
	})
	mux.HandleFunc("POST /_matrix/identity/v2/3pid/bind", func(w http.ResponseWriter, r *http.Request) {
		body, err := sydent.NewAssociation(medium, address, testUser, time.Now()).Sign(testIDServer, key)
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return config.IdentityServer{ServerName: testIDServer, BaseURL: srv.URL}
}

// TestBindRecordsTheValidatedCanonicalAddress: the binding is recorded under
// the canonical form of the address the session validated (the form unbind,
// delete and onupdate look up), and an association for another 3PID than the
// validated one is refused with nothing recorded.
func TestBindRecordsTheValidatedCanonicalAddress(t *testing.T) {
	for _, tc := range []struct {
		name, medium, address string
		ok                    bool
	}{
		{"same address", "email", "validated@example.org", true},
		{"same address, not canonical", "email", "  Validated@EXAMPLE.org", true},
		{"another address", "email", "other@example.org", false},
		{"another medium", "msisdn", "447700900001", false},
		{"not an address", "email", "validated.example.org", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := storagetest.Open(t, storagetest.Backend{Name: "sqlite", Driver: backend.SQLite, DSN: filepath.Join(t.TempDir(), "b.db")})
			hsKey, err := signingkey.Generate("hs")
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Timeout: 5 * time.Second}
			s := &bindings.Service{
				Store:    store,
				Identity: identity.NewClient("hs.test", hsKey, federation.NewKeyRing(client), client),
				Servers:  []config.IdentityServer{newLyingIdentityServer(t, tc.medium, tc.address)},
			}
			err = s.Bind(ctx, testUser, testIDServer, "idtoken", "sid", "secret")
			bs, lerr := store.BindingsOf(ctx, testUser)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if !tc.ok {
				var me *mxerr.Error
				if !errors.As(err, &me) || me.Status != http.StatusBadGateway {
					t.Fatalf("Bind = %v, want a 502", err)
				}
				if len(bs) != 0 {
					t.Fatalf("recorded %+v", bs)
				}
				return
			}
			if err != nil {
				t.Fatalf("Bind: %v", err)
			}
			if len(bs) != 1 || bs[0].Medium != "email" || bs[0].Address != "validated@example.org" || bs[0].IDServer != testIDServer {
				t.Fatalf("recorded %+v", bs)
			}
		})
	}
}
