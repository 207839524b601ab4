package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/identity"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/internal/sydent"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
)

const (
	testUser     = "@binder:hs.test"
	testIDServer = "id.test"
)

// newLyingIdentityServer is an identity server whose session validated
// validated@example.org and whose bind answers a correctly signed association
// for (medium, address). It counts the getValidated3pid calls in *asked.
func newLyingIdentityServer(t *testing.T, medium, address string, asked *atomic.Int32) config.IdentityServer {
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
		asked.Add(1)
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
// the canonical form of the bound address (the form unbind, delete and
// onupdate look up). With a policy that judges addresses, threepidd first asks
// which 3PID the session validated, and an association for another 3PID than
// that one is refused with nothing recorded; without one, it does not ask, and
// records the 3PID the identity server signed.
func TestBindRecordsTheValidatedCanonicalAddress(t *testing.T) {
	judging, err := policy.New(config.Policy{EmailDomainsDenied: []string{"spam.example"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, medium, address string
		judged                bool
		recorded              string // medium:address recorded, "" for a 502
	}{
		{"same address", "email", "validated@example.org", true, "email:validated@example.org"},
		{"same address, not canonical", "email", "  Validated@EXAMPLE.org", true, "email:validated@example.org"},
		{"another address", "email", "other@example.org", true, ""},
		{"another medium", "msisdn", "447700900001", true, ""},
		{"not an address", "email", "validated.example.org", true, ""},
		{"no address policy, not canonical", "email", "  Other@EXAMPLE.org", false, "email:other@example.org"},
		{"no address policy, a phone number", "msisdn", "447700900001", false, "msisdn:447700900001"},
		{"no address policy, not an address", "email", "validated.example.org", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			store := storagetest.Open(t, storagetest.Backend{Name: "sqlite", Driver: backend.SQLite, DSN: filepath.Join(t.TempDir(), "b.db")})
			hsKey, err := signingkey.Generate("hs")
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Timeout: 5 * time.Second}
			var asked atomic.Int32
			s := &bindings.Service{
				Store:    store,
				Identity: identity.NewClient("hs.test", hsKey, federation.NewKeyRing(client), client),
				Servers:  []config.IdentityServer{newLyingIdentityServer(t, tc.medium, tc.address, &asked)},
				Policy:   policy.AllowAll{},
			}
			if tc.judged {
				s.Policy = judging
			}
			err = s.Bind(ctx, testUser, testIDServer, "idtoken", "sid", "secret")
			if want := map[bool]int32{true: 1, false: 0}[tc.judged]; asked.Load() != want {
				t.Errorf("getValidated3pid asked %d times, want %d", asked.Load(), want)
			}
			bs, lerr := store.BindingsOf(ctx, testUser)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if tc.recorded == "" {
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
			if len(bs) != 1 || bs[0].Medium+":"+bs[0].Address != tc.recorded || bs[0].IDServer != testIDServer {
				t.Fatalf("recorded %+v, want %s", bs, tc.recorded)
			}
		})
	}
}

// TestUnbindWorkerDeadServer: many unbinds queued for an identity server that
// hangs do not delay the unbind queued for a live one: the worker's first
// pass delivers it, while the dead server gets a single attempt, after which
// its whole queue waits for the backoff.
func TestUnbindWorkerDeadServer(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		ctx := context.Background()
		hsKey, err := signingkey.Generate("hs")
		if err != nil {
			t.Fatal(err)
		}
		dead, live := fakes.NewIdentityServer(t, "dead.test"), fakes.NewIdentityServer(t, "live.test")
		for _, is := range []*fakes.IdentityServer{dead, live} {
			is.TrustHomeserver("hs.test", string(hsKey.ID), hsKey.PublicKey())
		}
		client := &http.Client{Timeout: 300 * time.Millisecond}
		s := &bindings.Service{
			Store:    store,
			Identity: identity.NewClient("hs.test", hsKey, federation.NewKeyRing(client), client),
			Servers:  []config.IdentityServer{dead.Config(false), live.Config(false)},
		}
		record := func(user, address, idServer string) {
			t.Helper()
			if err := store.UpsertBinding(ctx, storage.Binding{UserID: user, Medium: "email", Address: address, IDServer: idServer, BoundAt: 1}); err != nil {
				t.Fatal(err)
			}
		}
		// Queue the unbinds while both servers refuse connections (quickly).
		dead.Stop()
		live.Stop()
		const deadQueued = 10
		for i := range deadQueued {
			user := fmt.Sprintf("@user%d:hs.test", i)
			record(user, "dead@example.org", dead.Name())
			if r, err := s.UnbindAll(ctx, user); err != nil || r != "no-support" {
				t.Fatalf("UnbindAll = %q, %v", r, err)
			}
		}
		record("@late:hs.test", "live@example.org", live.Name())
		if r, err := s.UnbindAll(ctx, "@late:hs.test"); err != nil || r != "no-support" {
			t.Fatalf("UnbindAll = %q, %v", r, err)
		}
		if n, _ := store.CountOutbox(ctx, bindings.OutboxKind); n != deadQueued+1 {
			t.Fatalf("%d unbinds queued, want %d", n, deadQueued+1)
		}
		// Now the dead server accepts connections and never answers; the
		// live one answers.
		dead.SetMode(fakes.IdentityServerHang)
		dead.Start()
		live.Start()
		w := s.Worker()
		for pass := 1; ; pass++ {
			w.RunOnce(ctx)
			if bs, _ := store.BindingsOf(ctx, "@late:hs.test"); len(bs) == 0 {
				break
			}
			if pass == deadQueued+1 {
				t.Fatalf("the live server's unbind is still pending after %d passes", pass)
			}
		}
		if n := len(dead.UnbindCalls()); n > 1 {
			t.Fatalf("the dead server got %d attempts before the live server's unbind was delivered, want at most 1", n)
		}
		if calls := live.UnbindCalls(); len(calls) != 1 || !calls[0].Verified {
			t.Fatalf("live server unbind calls %+v, want one verified", calls)
		}
		w.RunOnce(ctx)
		if n := len(dead.UnbindCalls()); n > 1 {
			t.Fatalf("the dead server got %d attempts within its backoff, want 1", n)
		}
	})
}
