package account

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
)

func TestWithUnbindResult(t *testing.T) {
	tests := []struct {
		name, body, ours, want string
	}{
		{"both success", `{"id_server_unbind_result":"success"}`, "success", `{"id_server_unbind_result":"success"}`},
		{"homeserver no-support", `{"id_server_unbind_result":"no-support"}`, "success", `{"id_server_unbind_result":"no-support"}`},
		{"threepidd no-support", `{"id_server_unbind_result":"success"}`, "no-support", `{"id_server_unbind_result":"no-support"}`},
		{"homeserver silent (Dendrite answers {})", `{}`, "success", `{"id_server_unbind_result":"no-support"}`},
		{"other members kept", `{"x":1,"id_server_unbind_result":"success"}`, "success", `{"x":1,"id_server_unbind_result":"success"}`},
		{"not JSON", `oops`, "success", `{"id_server_unbind_result":"no-support"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(withUnbindResult([]byte(tc.body), tc.ours)); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// cleaner is the Unbinder: it records UnbindAll calls (each DeactivateUser,
// the cleanup after a deactivation, makes one); it fails while failures > 0.
type cleaner struct {
	mu       sync.Mutex
	calls    []string
	failures int
	result   string
}

func (c *cleaner) UnbindAll(_ context.Context, userID string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, userID)
	if c.failures > 0 {
		c.failures--
		return "", errors.New("database went away")
	}
	return c.result, nil
}

func (c *cleaner) UnbindOnDelete(context.Context, string, string, string, string) (string, error) {
	panic("not called on deactivation")
}

func (c *cleaner) UnbindThreepidUnchecked(context.Context, string, string, string) (string, error) {
	panic("not called on deactivation")
}

func (c *cleaner) called() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

type fixture struct {
	t     *testing.T
	hs    *fakes.Homeserver
	store storage.Store
	users *cleaner
	svc   *Service
}

func newFixture(t *testing.T, store storage.Store, hsURL string) *fixture {
	t.Helper()
	f := &fixture{t: t, hs: fakes.NewHomeserver(t, "hs.test"), store: store, users: &cleaner{result: "success"}}
	f.hs.SetAdminToken("adm")
	if hsURL == "" {
		hsURL = f.hs.URL()
	}
	relay, err := homeserver.New(config.Homeserver{URL: hsURL, Kind: config.KindSynapse}, outbound.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := homeserver.New(config.Homeserver{URL: f.hs.URL(), Kind: config.KindSynapse}, outbound.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	f.svc = &Service{Homeserver: relay, HomeserverAdmin: admin.SynapseAdmin("adm"), Unbinder: f.users, Store: store}
	return f
}

// deactivate relays a deactivation for userID with token and body.
func (f *fixture) deactivate(userID, token, body string) (int, map[string]any, error) {
	f.t.Helper()
	status, resp, err := f.svc.Deactivate(context.Background(), homeserver.Caller{AccessToken: token}, userID,
		"/_matrix/client/r0/account/deactivate", []byte(body))
	if err != nil {
		return 0, nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(resp, &m); err != nil {
		f.t.Fatalf("answer %d is not JSON: %s", status, resp)
	}
	return status, m, nil
}

func (f *fixture) pending() int64 {
	f.t.Helper()
	n, err := f.store.CountOutbox(context.Background(), DeactivateKind)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// runWorker handles the due cleanups once the grace period is over.
func (f *fixture) runWorker() {
	w := f.svc.DeactivateWorker()
	w.Clock = func() time.Time { return time.Now().Add(grace + time.Second) }
	w.RunOnce(context.Background())
}

func passwordBody(userID, password string) string {
	return fmt.Sprintf(`{"auth":{"type":"m.login.password","identifier":{"type":"m.id.user","user":%q},"password":%q}}`, userID, password)
}

func TestDeactivate(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		f := newFixture(t, store, "")
		alice := f.hs.AddUser("alice", "pw")
		token, _ := f.hs.Login(alice)

		// UIA: the homeserver's 401 comes back as is; nothing is cleaned.
		status, body, err := f.deactivate(alice, token, `{}`)
		if err != nil || status != http.StatusUnauthorized || body["session"] == nil || body["flows"] == nil {
			t.Fatalf("first call: %d %v %v", status, body, err)
		}
		calls := f.hs.RelayCalls()
		if last := calls[len(calls)-1]; last.Path != "/_matrix/client/r0/account/deactivate" || string(last.Body) != `{}` {
			t.Fatalf("relayed %+v", last)
		}
		if len(f.users.called()) != 0 || f.pending() != 0 {
			t.Fatalf("cleaned %v, %d pending after a 401", f.users.called(), f.pending())
		}

		// Success: cleaned inline, the queued item dropped, results combined.
		f.hs.SetDeactivateUnbindResult("no-support")
		status, body, err = f.deactivate(alice, token, passwordBody(alice, "pw"))
		if err != nil || status != http.StatusOK || body["id_server_unbind_result"] != "no-support" {
			t.Fatalf("deactivate: %d %v %v", status, body, err)
		}
		if !f.hs.Deactivated(alice) || !slices.Equal(f.users.called(), []string{alice}) || f.pending() != 0 {
			t.Fatalf("deactivated %v, cleaned %v, %d pending", f.hs.Deactivated(alice), f.users.called(), f.pending())
		}

		// A retry: the token is gone, the homeserver's 401 passes through.
		status, body, err = f.deactivate(alice, token, passwordBody(alice, "pw"))
		if err != nil || status != http.StatusUnauthorized || body["errcode"] != "M_UNKNOWN_TOKEN" || len(f.users.called()) != 1 {
			t.Fatalf("retry: %d %v %v, cleaned %v", status, body, err, f.users.called())
		}

		// The cleanup fails inline: no-support now, the worker finishes it.
		f.hs.SetDeactivateUnbindResult("success")
		bob := f.hs.AddUser("bob", "pw")
		token, _ = f.hs.Login(bob)
		f.users.failures = 1
		status, body, err = f.deactivate(bob, token, passwordBody(bob, "pw"))
		if err != nil || status != http.StatusOK || body["id_server_unbind_result"] != "no-support" || f.pending() != 1 {
			t.Fatalf("failed cleanup: %d %v %v, %d pending", status, body, err, f.pending())
		}
		f.svc.DeactivateWorker().RunOnce(context.Background())
		if got := f.users.called(); len(got) != 2 {
			t.Fatalf("the worker ran the cleanup inside the grace period: %v", got)
		}
		f.runWorker()
		if got := f.users.called(); !slices.Equal(got[1:], []string{bob, bob}) || f.pending() != 0 {
			t.Fatalf("worker: cleaned %v, %d pending", got, f.pending())
		}
	})
}

// TestDeactivateAnswerLost: the homeserver's answer never arrives. A check
// is queued; the worker cleans up only an account the admin API shows
// deactivated.
func TestDeactivateAnswerLost(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		f := newFixture(t, store, dead.URL)
		active, gone := f.hs.AddUser("active", "pw"), f.hs.AddUser("gone", "pw")
		token, _ := f.hs.Login(gone)
		deactivateOnHomeserver(t, f.hs, token, gone)
		for _, u := range []string{active, gone} {
			if _, _, err := f.deactivate(u, "tok", passwordBody(u, "pw")); err == nil {
				t.Fatalf("%s: no error from an unreachable homeserver", u)
			}
		}
		if f.pending() != 2 || len(f.users.called()) != 0 {
			t.Fatalf("%d pending, cleaned %v", f.pending(), f.users.called())
		}
		f.runWorker()
		f.runWorker()
		if got := f.users.called(); !slices.Equal(got, []string{gone}) || f.pending() != 0 {
			t.Fatalf("cleaned %v (want only %s), %d pending", got, gone, f.pending())
		}
	})
}

// deactivateOnHomeserver deactivates userID directly on the fake.
func deactivateOnHomeserver(t *testing.T, hs *fakes.Homeserver, token, userID string) {
	t.Helper()
	c, err := homeserver.New(config.Homeserver{URL: hs.URL(), Kind: config.KindSynapse}, outbound.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	status, _, err := c.Forward(context.Background(), homeserver.Caller{AccessToken: token}, http.MethodPost,
		"/_matrix/client/v3/account/deactivate", []byte(passwordBody(userID, "pw")))
	if err != nil || status != http.StatusOK {
		t.Fatalf("deactivate %s on the homeserver: %d %v", userID, status, err)
	}
}
