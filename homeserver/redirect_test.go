package homeserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
)

// TestNoRedirect: a homeserver answering a redirect gets no request to the
// redirect's target (which would carry the user's access token and password):
// whoami and the UIA relay count the 3xx as no answer; a forwarded call and
// the /sync proxy's round trip get the 3xx itself.
func TestNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		mxerr.WriteJSON(w, http.StatusOK, map[string]string{"user_id": "@mallory:example.org"})
	}))
	defer target.Close()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer hs.Close()
	c, err := homeserver.New(config.Homeserver{URL: hs.URL, Kind: config.KindSynapse}, outbound.NewTransport())
	if err != nil {
		t.Fatal(err)
	}
	caller := homeserver.Caller{AccessToken: "syt_secret"}
	if _, err := c.WhoAmI(context.Background(), caller); !isStatus(err, http.StatusBadGateway) {
		t.Errorf("whoami: %v, want 502", err)
	}
	if err := c.RelayUIA(context.Background(), caller, "@alice:example.org", json.RawMessage(`{"type":"m.login.password","password":"pw"}`)); !isStatus(err, http.StatusBadGateway) {
		t.Errorf("UIA relay: %v, want 502", err)
	}
	status, _, err := c.Forward(context.Background(), caller, http.MethodPost, "/_matrix/client/v3/account/deactivate", []byte(`{}`))
	if err != nil || status != http.StatusTemporaryRedirect {
		t.Errorf("forward: %d, %v; want the 307 itself", status, err)
	}
	req, err := http.NewRequest(http.MethodGet, c.URL("/_matrix/client/v3/sync?timeout=0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	caller.SetHeaders(req)
	resp, err := c.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("round trip (the /sync proxy): %v, %v; want the 307 itself", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}

func isStatus(err error, status int) bool {
	var me *mxerr.Error
	return errors.As(err, &me) && me.Status == status
}
