package fakes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/federation/signingkey"
)

const (
	isTestName   = "id.example.org"
	isTestHS     = "hs.example.org"
	isTestUser   = "@alice:" + isTestHS
	isTestEmail  = "alice@example.com"
	isTestSecret = "s3cret"
	isTestToken  = "token"
	isUnbindPath = "/_matrix/identity/v2/3pid/unbind"
	isBindPath   = "/_matrix/identity/v2/3pid/bind"
)

// isDo sends a request and returns the status and the decoded JSON body (nil
// when the body is not JSON).
func isDo(t *testing.T, method, url string, header http.Header, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		m = nil
	}
	return resp.StatusCode, m
}

// isSign returns an X-Matrix header as Synapse writes it, over the object
// {method, uri, origin, <destField>: dest, content}; it is written here
// independently of package federation so the fake is checked against the
// protocol, not against our own signer.
func isSign(t *testing.T, key *signingkey.Key, origin, destField, dest string, content []byte) string {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"method": "POST", "uri": isUnbindPath, "origin": origin, destField: dest,
		"content": json.RawMessage(content),
	})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(origin, key.ID, key.Private, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &out); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`X-Matrix origin="%s",key="%s",sig="%s",destination="%s"`, origin, key.ID, out.Signatures[origin][string(key.ID)], dest)
}

func isKey(t *testing.T) *signingkey.Key {
	t.Helper()
	k, err := signingkey.Generate("k1")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIdentityServerPubkey(t *testing.T) {
	is := NewIdentityServer(t, isTestName)
	base := is.URL() + "/_matrix/identity/v2/pubkey/"
	tests := []struct {
		path   string
		status int
		field  string
		want   any
	}{
		{is.KeyID(), 200, "public_key", is.PublicKeyBase64()},
		{"ed25519%3A0", 200, "public_key", is.PublicKeyBase64()},
		{"ed25519:1", 404, "errcode", "M_NOT_FOUND"},
		{"isvalid?public_key=" + url.QueryEscape(is.PublicKeyBase64()), 200, "valid", true},
		{"isvalid?public_key=AAAA", 200, "valid", false},
		{"isvalid", 400, "errcode", "M_MISSING_PARAMS"},
	}
	for _, tt := range tests {
		status, body := isDo(t, http.MethodGet, base+tt.path, nil, nil)
		if status != tt.status || body[tt.field] != tt.want {
			t.Errorf("GET pubkey/%s: %d %v, want %d with %s=%v", tt.path, status, body, tt.status, tt.field, tt.want)
		}
	}
	if is.KeyID() != "ed25519:0" {
		t.Errorf("KeyID %q, want Sydent's ed25519:0", is.KeyID())
	}
}

func TestIdentityServerBindRequests(t *testing.T) {
	is := NewIdentityServer(t, isTestName)
	sid := is.AddValidatedSession("email", isTestEmail, isTestSecret, isTestToken)
	bearer := http.Header{"Authorization": {"Bearer " + isTestToken}}
	body := func(sid, secret string) []byte {
		return []byte(fmt.Sprintf(`{"sid":%q,"client_secret":%q,"mxid":%q}`, sid, secret, isTestUser))
	}
	tests := []struct {
		name    string
		header  http.Header
		body    []byte
		status  int
		errcode string
	}{
		{"no token", nil, body(sid, isTestSecret), 401, "M_UNAUTHORIZED"},
		{"bad JSON", bearer, []byte("{"), 400, "M_BAD_JSON"},
		{"missing mxid", bearer, []byte(`{"sid":"1","client_secret":"x"}`), 400, "M_MISSING_PARAMS"},
		{"unknown sid", bearer, body("999", isTestSecret), 404, "M_NO_VALID_SESSION"},
		{"wrong secret", bearer, body(sid, "wrong"), 404, "M_NO_VALID_SESSION"},
		{"wrong token", http.Header{"Authorization": {"Bearer other"}}, body(sid, isTestSecret), 401, "M_UNAUTHORIZED"},
		{"token in query string", nil, nil, 200, ""},
	}
	for _, tt := range tests {
		url := is.URL() + isBindPath
		if tt.body == nil {
			url += "?access_token=" + isTestToken
			tt.body = body(sid, isTestSecret)
		}
		status, resp := isDo(t, http.MethodPost, url, tt.header, tt.body)
		if status != tt.status || tt.errcode != "" && resp["errcode"] != tt.errcode {
			t.Errorf("%s: %d %v, want %d %s", tt.name, status, resp, tt.status, tt.errcode)
		}
	}
	if got := is.BindCalls(); got != len(tests) {
		t.Errorf("BindCalls = %d, want %d", got, len(tests))
	}
	if got := is.Bindings(); len(got) != 1 || got[isTestEmail] != isTestUser {
		t.Errorf("Bindings = %v, want %s → %s", got, isTestEmail, isTestUser)
	}
}

// TestIdentityServerAssociations checks the bind answer in each mode against
// the server's published key.
func TestIdentityServerAssociations(t *testing.T) {
	now := time.Now().UnixMilli()
	tests := []struct {
		mode     IdentityServerMode
		verifies bool
		signed   bool
		mxid     string
		expired  bool
	}{
		{IdentityServerNormal, true, true, isTestUser, false},
		{IdentityServerBadSignature, false, true, isTestUser, false},
		{IdentityServerNoSignature, false, false, isTestUser, false},
		{IdentityServerWrongMXID, true, true, "@someone-else:" + isTestName, false},
		{IdentityServerExpired, true, true, isTestUser, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.mode), func(t *testing.T) {
			is := NewIdentityServer(t, isTestName)
			sid := is.AddValidatedSession("email", isTestEmail, isTestSecret, isTestToken)
			is.SetMode(tt.mode)
			req, err := http.NewRequest(http.MethodPost, is.URL()+isBindPath,
				strings.NewReader(fmt.Sprintf(`{"sid":%q,"client_secret":%q,"mxid":%q}`, sid, isTestSecret, isTestUser)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+isTestToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("bind: %d %s %v", resp.StatusCode, raw, err)
			}
			pub := is.Key().PublicKey()
			if err := gomatrixserverlib.VerifyJSON(isTestName, gomatrixserverlib.KeyID(is.KeyID()), pub, raw); (err == nil) != tt.verifies {
				t.Errorf("signature check: %v, want verifies=%v", err, tt.verifies)
			}
			var a struct {
				Medium, Address, MXID string
				NotBefore             int64 `json:"not_before"`
				NotAfter              int64 `json:"not_after"`
				TS                    int64
				Signatures            map[string]any
			}
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatal(err)
			}
			if a.Medium != "email" || a.Address != isTestEmail || a.MXID != tt.mxid || a.TS < now {
				t.Errorf("association %+v", a)
			}
			if (a.Signatures != nil) != tt.signed {
				t.Errorf("signatures %v, want present=%v", a.Signatures, tt.signed)
			}
			if expired := a.NotAfter < time.Now().UnixMilli(); expired != tt.expired || a.NotBefore > a.NotAfter {
				t.Errorf("validity %d..%d, want expired=%v", a.NotBefore, a.NotAfter, tt.expired)
			}
		})
	}
}

func TestIdentityServerUnbind(t *testing.T) {
	hsKey, otherKey := isKey(t), isKey(t)
	content := []byte(fmt.Sprintf(`{"mxid":%q,"threepid":{"medium":"email","address":%q}}`, isTestUser, isTestEmail))
	good := isSign(t, hsKey, isTestHS, "destination_is", isTestName, content)
	tests := []struct {
		name     string
		auth     []string
		body     []byte
		status   int
		errcode  string
		unbound  bool
		verified bool
	}{
		{"valid", []string{good}, content, 200, "", true, true},
		{"valid among other headers", []string{"Bearer x", good}, content, 200, "", true, true},
		{"signed over destination", []string{isSign(t, hsKey, isTestHS, "destination", isTestName, content)}, content, 401, "M_FORBIDDEN", false, false},
		{"destination_is of another server", []string{isSign(t, hsKey, isTestHS, "destination_is", "other.example.org", content)}, content, 401, "M_FORBIDDEN", false, false},
		{"other body than signed", []string{good}, []byte(strings.Replace(string(content), "alice@", "bob@", 1)), 401, "M_FORBIDDEN", false, false},
		{"unknown key", []string{isSign(t, otherKey, isTestHS, "destination_is", isTestName, content)}, content, 401, "M_FORBIDDEN", false, false},
		{"untrusted origin", []string{isSign(t, hsKey, "stranger.example.org", "destination_is", isTestName, content)}, content, 500, "M_UNKNOWN", false, false},
		{"space in a value", []string{`X-Matrix origin="a b",key="ed25519:k1",sig="x"`}, content, 401, "M_FORBIDDEN", false, false},
		{"origin not a server name", []string{`X-Matrix origin="a/b",key="ed25519:k1",sig="x"`}, content, 400, "M_INVALID_PARAM", false, false},
		{"spaces after commas, as Sydent cannot parse", []string{strings.ReplaceAll(good, `",`, `", `)}, content, 401, "M_FORBIDDEN", false, false},
		{"no Authorization", nil, content, 401, "M_FORBIDDEN", false, false},
		{"no X-Matrix", []string{"Bearer x"}, content, 401, "M_FORBIDDEN", false, false},
		{"bad JSON", []string{good}, []byte("{"), 400, "M_BAD_JSON", false, false},
		{"no threepid", []string{good}, []byte(`{"mxid":"` + isTestUser + `"}`), 400, "M_MISSING_PARAMS", false, false},
		{"threepid lacks address", []string{good}, []byte(`{"mxid":"` + isTestUser + `","threepid":{"medium":"email"}}`), 400, "M_MISSING_PARAMS", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := NewIdentityServer(t, isTestName)
			is.TrustHomeserver(isTestHS, string(hsKey.ID), hsKey.PublicKey())
			is.bindForTest(isTestEmail, isTestUser)
			status, resp := isDo(t, http.MethodPost, is.URL()+isUnbindPath, http.Header{"Authorization": tt.auth}, tt.body)
			if status != tt.status || tt.errcode != "" && resp["errcode"] != tt.errcode {
				t.Fatalf("HTTP %d %v, want %d %s", status, resp, tt.status, tt.errcode)
			}
			if _, bound := is.Bindings()[isTestEmail]; bound == tt.unbound {
				t.Errorf("bound = %v after HTTP %d", bound, status)
			}
			calls := is.UnbindCalls()
			if len(calls) != 1 || calls[0].Verified != tt.verified || calls[0].Status != status {
				t.Errorf("UnbindCalls = %+v, want one with verified=%v status %d", calls, tt.verified, status)
			}
		})
	}
}

// TestIdentityServerUnbindRules covers Sydent's checks after the signature:
// the mxid must be on the origin, and removal is idempotent and exact.
func TestIdentityServerUnbindRules(t *testing.T) {
	hsKey := isKey(t)
	tests := []struct {
		name, mxid, medium string
		status             int
		unbound            bool
	}{
		{"mxid on another server", "@alice:elsewhere.org", "email", 403, false},
		{"mxid that does not hold the binding", "@bob:" + isTestHS, "email", 200, false},
		{"other medium", isTestUser, "msisdn", 200, false},
		{"exact", isTestUser, "email", 200, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := NewIdentityServer(t, isTestName)
			is.TrustHomeserver(isTestHS, string(hsKey.ID), hsKey.PublicKey())
			is.bindForTest(isTestEmail, isTestUser)
			content := []byte(fmt.Sprintf(`{"mxid":%q,"threepid":{"medium":%q,"address":%q}}`, tt.mxid, tt.medium, isTestEmail))
			auth := isSign(t, hsKey, isTestHS, "destination_is", isTestName, content)
			status, _ := isDo(t, http.MethodPost, is.URL()+isUnbindPath, http.Header{"Authorization": {auth}}, content)
			if status != tt.status {
				t.Fatalf("HTTP %d, want %d", status, tt.status)
			}
			if _, bound := is.Bindings()[isTestEmail]; bound == tt.unbound {
				t.Errorf("bound = %v, want unbound=%v", bound, tt.unbound)
			}
		})
	}
}

func TestIdentityServerFaultModes(t *testing.T) {
	tests := []struct {
		mode        IdentityServerMode
		status      int
		errcode     string
		contentType string
	}{
		{IdentityServerFail500, 500, "M_UNKNOWN", "application/json"},
		{IdentityServerFail501Plain, 501, "", "text/plain"},
		{IdentityServerMatrixForbidden, 403, "M_FORBIDDEN", "application/json"},
		{IdentityServerUnauthorized401, 401, "M_UNKNOWN_TOKEN", "application/json"},
	}
	is := NewIdentityServer(t, isTestName)
	for _, tt := range tests {
		is.SetMode(tt.mode)
		for _, path := range []string{isBindPath, isUnbindPath} {
			resp, err := http.Post(is.URL()+path, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ ErrCode string }
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_ = json.Unmarshal(raw, &body)
			if resp.StatusCode != tt.status || body.ErrCode != tt.errcode || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.contentType) {
				t.Errorf("mode %v %s: %d %s %q", tt.mode, path, resp.StatusCode, resp.Header.Get("Content-Type"), raw)
			}
		}
		// The pubkey endpoint is never faulty, so key fetches keep working.
		if status, _ := isDo(t, http.MethodGet, is.URL()+"/_matrix/identity/v2/pubkey/"+is.KeyID(), nil, nil); status != 200 {
			t.Errorf("mode %v: pubkey HTTP %d", tt.mode, status)
		}
	}
	if is.BindCalls() != len(tests) || len(is.UnbindCalls()) != len(tests) {
		t.Errorf("BindCalls %d, UnbindCalls %d, want %d each", is.BindCalls(), len(is.UnbindCalls()), len(tests))
	}
}

// TestIdentityServerStopStart checks that a stopped server refuses
// connections, a restarted one answers on the same URL with its state kept,
// and a hanging request is dropped (not answered 200) by Stop.
func TestIdentityServerStopStart(t *testing.T) {
	is := NewIdentityServer(t, isTestName)
	url := is.URL()
	is.bindForTest(isTestEmail, isTestUser)
	is.SetMode(IdentityServerHang)

	done := make(chan error, 1)
	go func() {
		resp, err := http.Post(url+isBindPath, "application/json", strings.NewReader(`{}`))
		if err != nil {
			done <- nil // dropped, as wanted
			return
		}
		resp.Body.Close()
		done <- fmt.Errorf("hanging request answered HTTP %d", resp.StatusCode)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for is.BindCalls() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if is.BindCalls() != 1 {
		t.Fatal("the hanging request never arrived")
	}
	is.Stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	if _, err := http.Get(url + "/_matrix/identity/v2/pubkey/isvalid?public_key=x"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("stopped server: %v, want connection refused", err)
	}
	is.Start()
	is.SetMode(IdentityServerNormal)
	if is.URL() != url {
		t.Fatalf("URL %s after restart, want %s", is.URL(), url)
	}
	if status, _ := isDo(t, http.MethodGet, url+"/_matrix/identity/v2/pubkey/"+is.KeyID(), nil, nil); status != 200 {
		t.Fatalf("restarted server: HTTP %d", status)
	}
	if is.Bindings()[isTestEmail] != isTestUser {
		t.Errorf("bindings lost across restart: %v", is.Bindings())
	}
}

// bindForTest stores a binding directly.
func (is *IdentityServer) bindForTest(address, mxid string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.bindings[address] = isBinding{medium: "email", mxid: mxid}
}
