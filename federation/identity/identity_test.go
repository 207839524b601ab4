package identity

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/tests/fakes"
)

const (
	hsName  = "hs.example.org"
	isName  = "id.example.org"
	alice   = "@alice:" + hsName
	email   = "alice@example.com"
	secret  = "s3cret"
	isToken = "id-access-token"
)

// testClient is a Client for hsName whose HTTP calls time out after timeout.
func testClient(t *testing.T, timeout time.Duration) (*Client, *signingkey.Key) {
	t.Helper()
	key, err := signingkey.Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: timeout}
	return NewClient(hsName, key, federation.NewKeyRing(hc), hc), key
}

// newIS starts a fake identity server that trusts the homeserver key.
func newIS(t *testing.T, hsKey *signingkey.Key) *fakes.IdentityServer {
	t.Helper()
	is := fakes.NewIdentityServer(t, isName)
	is.TrustHomeserver(hsName, string(hsKey.ID), hsKey.PublicKey())
	return is
}

// wantMatrixError checks that err carries a Matrix error with this status and
// errcode, and that its message contains msg.
func wantMatrixError(t *testing.T, err error, status int, errcode, msg string) {
	t.Helper()
	var me *mxerr.Error
	if !errors.As(err, &me) {
		t.Fatalf("error %v is not a Matrix error", err)
	}
	if me.Status != status || me.ErrCode != errcode || !strings.Contains(me.Message, msg) {
		t.Fatalf("got %d %s %q, want %d %s containing %q", me.Status, me.ErrCode, me.Message, status, errcode, msg)
	}
}

func TestBindOK(t *testing.T) {
	c, key := testClient(t, 5*time.Second)
	is := newIS(t, key)
	sid := is.AddValidatedSession("email", email, secret, isToken)
	before := time.Now().UnixMilli()

	a, err := c.Bind(context.Background(), is.Config(false), isToken, sid, secret, alice)
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	if a.Medium != "email" || a.Address != email || a.MXID != alice {
		t.Errorf("association %+v, want email %s for %s", a, email, alice)
	}
	if a.TS < before || a.NotBefore < before || a.NotAfter <= time.Now().UnixMilli() {
		t.Errorf("association times %+v, want ts/not_before ≥ %d and not_after in the future", a, before)
	}
	if got := is.Bindings()[email]; got != alice {
		t.Errorf("identity server binds %s to %q, want %q", email, got, alice)
	}
}

// TestBindSigningName checks that the association is verified under
// signing_name when it differs from the server_name clients send.
func TestBindSigningName(t *testing.T) {
	c, key := testClient(t, 5*time.Second)
	is := newIS(t, key)
	sid := is.AddValidatedSession("email", email, secret, isToken)
	cfg := is.Config(false)
	cfg.ServerName, cfg.SigningName = "alias.example.org", is.Name()
	if _, err := c.Bind(context.Background(), cfg, isToken, sid, secret, alice); err != nil {
		t.Fatalf("Bind with signing_name: %v", err)
	}
	cfg.SigningName = ""
	_, err := c.Bind(context.Background(), cfg, isToken, sid, secret, alice)
	wantMatrixError(t, err, http.StatusBadGateway, "M_UNKNOWN", "invalid association")
}

func TestBindErrors(t *testing.T) {
	tests := []struct {
		name    string
		mode    fakes.IdentityServerMode
		token   string
		sid     string
		status  int
		errcode string
		msg     string
	}{
		{"bad signature", fakes.IdentityServerBadSignature, isToken, "", 502, "M_UNKNOWN", "invalid association"},
		{"no signature", fakes.IdentityServerNoSignature, isToken, "", 502, "M_UNKNOWN", "invalid association"},
		{"wrong mxid", fakes.IdentityServerWrongMXID, isToken, "", 502, "M_UNKNOWN", "invalid association"},
		{"expired", fakes.IdentityServerExpired, isToken, "", 502, "M_UNKNOWN", "invalid association"},
		{"401 unknown token becomes 403", fakes.IdentityServerUnauthorized401, isToken, "", 403, "M_FORBIDDEN", "Unrecognised access token"},
		{"wrong token: Sydent's 401 M_UNAUTHORIZED becomes 403", fakes.IdentityServerNormal, "other-token", "", 403, "M_FORBIDDEN", "identity server " + isName},
		{"403 passed through", fakes.IdentityServerMatrixForbidden, isToken, "", 403, "M_FORBIDDEN", "This request is forbidden"},
		{"404 no session passed through", fakes.IdentityServerNormal, isToken, "no-such-sid", 404, "M_NO_VALID_SESSION", "No valid session"},
		{"500 Matrix error passed through", fakes.IdentityServerFail500, isToken, "", 500, "M_UNKNOWN", "Internal Server Error"},
		{"501 plain text", fakes.IdentityServerFail501Plain, isToken, "", 502, "M_UNKNOWN", "without a Matrix error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, key := testClient(t, 5*time.Second)
			is := newIS(t, key)
			sid := is.AddValidatedSession("email", email, secret, isToken)
			if tt.sid != "" {
				sid = tt.sid
			}
			is.SetMode(tt.mode)
			a, err := c.Bind(context.Background(), is.Config(false), tt.token, sid, secret, alice)
			if err == nil {
				t.Fatalf("Bind succeeded with %+v", a)
			}
			if a != (Association{}) {
				t.Errorf("failed Bind returned association %+v", a)
			}
			wantMatrixError(t, err, tt.status, tt.errcode, tt.msg)
			if is.BindCalls() != 1 {
				t.Errorf("identity server saw %d bind calls, want 1", is.BindCalls())
			}
		})
	}
}

func TestBindTransportErrors(t *testing.T) {
	t.Run("hang times out: 504", func(t *testing.T) {
		c, key := testClient(t, 200*time.Millisecond)
		is := newIS(t, key)
		is.SetMode(fakes.IdentityServerHang)
		_, err := c.Bind(context.Background(), is.Config(false), isToken, "1", secret, alice)
		wantMatrixError(t, err, http.StatusGatewayTimeout, "M_UNKNOWN", "did not answer in time")
	})
	t.Run("refused: 502", func(t *testing.T) {
		c, key := testClient(t, 5*time.Second)
		is := newIS(t, key)
		is.Stop()
		_, err := c.Bind(context.Background(), is.Config(false), isToken, "1", secret, alice)
		wantMatrixError(t, err, http.StatusBadGateway, "M_UNKNOWN", "refused the connection")
	})
}

// boundIS returns a fake identity server on which alice has bound email, and
// a client whose key it trusts.
func boundIS(t *testing.T, timeout time.Duration) (*Client, *fakes.IdentityServer) {
	t.Helper()
	c, key := testClient(t, timeout)
	is := newIS(t, key)
	sid := is.AddValidatedSession("email", email, secret, isToken)
	if _, err := c.Bind(context.Background(), is.Config(false), isToken, sid, secret, alice); err != nil {
		t.Fatalf("Bind: %v", err)
	}
	return c, is
}

func TestUnbindVerifiedBySydentRules(t *testing.T) {
	c, is := boundIS(t, 5*time.Second)
	cfg := is.Config(false)
	// Clients name the server by an alias; Sydent checks destination_is
	// against its own name, the signing name.
	cfg.ServerName, cfg.SigningName = "alias.example.org", is.Name()

	res := c.Unbind(context.Background(), cfg, alice, "email", email)
	if res.Outcome != Success || res.Err != nil {
		t.Fatalf("Unbind = %+v, want success", res)
	}
	calls := is.UnbindCalls()
	if len(calls) != 1 || !calls[0].Verified || calls[0].Origin != hsName || calls[0].MXID != alice || calls[0].Address != email {
		t.Fatalf("identity server saw %+v, want one verified call from %s", calls, hsName)
	}
	if _, ok := is.Bindings()[email]; ok {
		t.Errorf("binding of %s still on the identity server", email)
	}
	if strings.Contains(res.Detail, email) {
		t.Errorf("Detail %q contains the address", res.Detail)
	}
}

// TestFakeChecksDestinationIS proves the fake checks what Sydent checks: the
// same request signed over "destination" instead of "destination_is" is
// refused and the binding stays.
func TestFakeChecksDestinationIS(t *testing.T) {
	_, is := boundIS(t, 5*time.Second)
	key, err := signingkey.Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	is.TrustHomeserver(hsName, string(key.ID), key.PublicKey())
	content := []byte(`{"mxid":"` + alice + `","threepid":{"medium":"email","address":"` + email + `"}}`)

	for _, tt := range []struct {
		field  string
		status int
	}{
		{federation.DestinationField, http.StatusUnauthorized},
		{federation.DestinationISField, http.StatusOK},
	} {
		t.Run(tt.field, func(t *testing.T) {
			authz, err := federation.SignRequest(key, hsName, is.Name(), tt.field, http.MethodPost, unbindPath, content)
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodPost, is.URL()+unbindPath, bytes.NewReader(content))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", authz)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("signed over %q: HTTP %d, want %d", tt.field, resp.StatusCode, tt.status)
			}
			calls := is.UnbindCalls()
			if last := calls[len(calls)-1]; last.Verified != (tt.status == http.StatusOK) {
				t.Errorf("call recorded as %+v", last)
			}
			if _, bound := is.Bindings()[email]; bound != (tt.status != http.StatusOK) {
				t.Errorf("after HTTP %d the binding exists = %v", resp.StatusCode, bound)
			}
		})
	}
}

func TestUnbindOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		mode    fakes.IdentityServerMode
		stop    bool
		want    UnbindOutcome
		errcode string
		detail  string
	}{
		{"501 plain: no support", fakes.IdentityServerFail501Plain, false, NoSupport, "", "HTTP 501"},
		{"500: transient", fakes.IdentityServerFail500, false, Transient, "", "HTTP 500"},
		{"403 Matrix error", fakes.IdentityServerMatrixForbidden, false, MatrixError, "M_FORBIDDEN", "HTTP 403"},
		{"401 becomes 403", fakes.IdentityServerUnauthorized401, false, MatrixError, "M_FORBIDDEN", "HTTP 401"},
		{"hang: transient", fakes.IdentityServerHang, false, Transient, "", "Timeout"},
		{"refused: transient", fakes.IdentityServerNormal, true, Transient, "", "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, is := boundIS(t, 200*time.Millisecond)
			is.SetMode(tt.mode)
			if tt.stop {
				is.Stop()
			}
			res := c.Unbind(context.Background(), is.Config(false), alice, "email", email)
			if res.Outcome != tt.want || !strings.Contains(res.Detail, tt.detail) {
				t.Fatalf("Unbind = %v (%q), want %v with detail containing %q", res.Outcome, res.Detail, tt.want, tt.detail)
			}
			switch {
			case tt.errcode == "" && res.Err != nil:
				t.Errorf("Err = %v, want none", res.Err)
			case tt.errcode != "" && (res.Err == nil || res.Err.Status != http.StatusForbidden || res.Err.ErrCode != tt.errcode):
				t.Errorf("Err = %v, want 403 %s", res.Err, tt.errcode)
			}
			if got := is.Bindings()[email]; got != alice {
				t.Errorf("binding changed to %q by a failed unbind", got)
			}
		})
	}
}

// TestUnbindUntrustedKey: Sydent refuses a signature by a key it does not
// know with 401 M_FORBIDDEN, which reaches the client as 403.
func TestUnbindUntrustedKey(t *testing.T) {
	_, is := boundIS(t, 5*time.Second)
	stranger, _ := testClient(t, 5*time.Second) // same server name, unknown key
	res := stranger.Unbind(context.Background(), is.Config(false), alice, "email", email)
	if res.Outcome != MatrixError || res.Err.Status != http.StatusForbidden || res.Err.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("Unbind = %+v, want MatrixError 403 M_FORBIDDEN", res)
	}
	if calls := is.UnbindCalls(); len(calls) != 1 || calls[0].Verified {
		t.Errorf("identity server saw %+v, want one unverified call", calls)
	}
}

func TestClassifyUnbind(t *testing.T) {
	is := config.IdentityServer{ServerName: isName}
	matrix := func(code string) []byte { return []byte(`{"errcode":"` + code + `","error":"text"}`) }
	tests := []struct {
		status     int
		body       []byte
		want       UnbindOutcome
		wantStatus int
	}{
		{200, []byte(`{}`), Success, 0},
		{204, nil, Success, 0},
		{400, []byte("Bad Request"), NoSupport, 0},
		{404, nil, NoSupport, 0},
		{404, []byte(`{"error":"no errcode"}`), NoSupport, 0},
		{501, []byte("<html>"), NoSupport, 0},
		{400, matrix("M_INVALID_PARAM"), MatrixError, 400},
		{404, matrix("M_NOT_FOUND"), MatrixError, 404},
		{501, matrix("M_UNRECOGNIZED"), MatrixError, 501},
		{403, matrix("M_TERMS_NOT_SIGNED"), MatrixError, 403},
		{400, matrix("M_MISSING_TOKEN"), MatrixError, 403},
		{401, matrix("M_FORBIDDEN"), MatrixError, 403},
		{500, matrix("M_UNKNOWN"), Transient, 0},
		{502, []byte("Bad Gateway"), Transient, 0},
		{503, nil, Transient, 0},
		{429, matrix("M_LIMIT_EXCEEDED"), Transient, 0},
		{302, nil, Transient, 0},
		{403, []byte("Forbidden"), Transient, 0},
	}
	for _, tt := range tests {
		res := classifyUnbind(is, answer{status: tt.status, body: tt.body})
		if res.Outcome != tt.want {
			t.Errorf("HTTP %d %q: %v, want %v", tt.status, tt.body, res.Outcome, tt.want)
			continue
		}
		if (res.Err != nil) != (tt.wantStatus != 0) || res.Err != nil && res.Err.Status != tt.wantStatus {
			t.Errorf("HTTP %d %q: Err %v, want status %d", tt.status, tt.body, res.Err, tt.wantStatus)
		}
	}
}

// TestOddServers covers answers the fake does not give: a redirect to another
// host is not followed, and an oversized answer is not parsed.
func TestOddServers(t *testing.T) {
	var elsewhereHits atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhereHits.Add(1) }))
	t.Cleanup(elsewhere.Close)
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		bindStatus int
		unbind     UnbindOutcome
	}{
		{"redirect to another host", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
		}, http.StatusBadGateway, Transient},
		{"oversized answer", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(bytes.Repeat([]byte(" "), maxAnswer+1))
		}, http.StatusBadGateway, Success},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			t.Cleanup(srv.Close)
			c, _ := testClient(t, 5*time.Second)
			cfg := config.IdentityServer{ServerName: isName, BaseURL: srv.URL}
			_, err := c.Bind(context.Background(), cfg, isToken, "1", secret, alice)
			wantMatrixError(t, err, tt.bindStatus, "M_UNKNOWN", "identity server")
			if res := c.Unbind(context.Background(), cfg, alice, "email", email); res.Outcome != tt.unbind {
				t.Errorf("Unbind = %+v, want %v", res, tt.unbind)
			}
		})
	}
	if n := elsewhereHits.Load(); n != 0 {
		t.Errorf("the redirect target was called %d times", n)
	}
}
