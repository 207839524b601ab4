package federation

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/mxerr"
)

const (
	testServerName = "hs.example"
	// onUpdatePath is the endpoint whose requests the Verifier checks
	// (onupdate.Path; package onupdate imports this one).
	onUpdatePath = "/_matrix/federation/v1/3pid/onupdate"
	testMaxBody  = 64 << 10
)

// countingReader counts the bytes read through it.
type countingReader struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// zeros is an endless reader of '0' bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}

// onUpdateServer is an onupdate endpoint on 127.0.0.1 that runs a Verifier
// and answers 200 {"server_name", "body"} or the Verifier's error. bodyRead
// is how many body bytes the last request had read; accepted is the last body
// the Verifier accepted; refused is the text of its last error (what the
// handler logs).
type onUpdateServer struct {
	*httptest.Server
	bodyRead atomic.Int64
	accepted atomic.Pointer[string]
	refused  atomic.Pointer[string]
}

func newOnUpdateServer(t *testing.T, v *Verifier) *onUpdateServer {
	t.Helper()
	s := &onUpdateServer{}
	s.Server = httptest.NewServer(mxerr.Handler(func(w http.ResponseWriter, r *http.Request) error {
		body := &countingReader{ReadCloser: r.Body}
		r.Body = body
		is, content, err := v.Verify(r, testMaxBody)
		s.bodyRead.Store(body.n.Load())
		if err != nil {
			text := err.Error()
			s.refused.Store(&text)
			return err
		}
		accepted := string(content)
		s.accepted.Store(&accepted)
		mxerr.WriteJSON(w, http.StatusOK, map[string]any{"server_name": is.ServerName, "body": json.RawMessage(content)})
		return nil
	}))
	t.Cleanup(s.Close)
	return s
}

// verifierFixture is a homeserver's Verifier with four identity servers, all
// served keys by one fake identity server.
type verifierFixture struct {
	idKey, pinnedKey *signingkey.Key
	fake             *fakeIdentityServer
	server           *onUpdateServer
}

func newVerifierFixture(t *testing.T) *verifierFixture {
	t.Helper()
	f := &verifierFixture{idKey: mustGenerate(t, "0"), pinnedKey: mustGenerate(t, "pin")}
	f.fake = newFakeIdentityServer(t, f.idKey)
	servers := []config.IdentityServer{
		{ServerName: "id.example", BaseURL: f.fake.URL, OnUpdate: true},
		{ServerName: "matrix.example", SigningName: "vector.example", BaseURL: f.fake.URL, OnUpdate: true},
		{ServerName: "pinned.example", BaseURL: f.fake.URL, OnUpdate: true, VerifyKeys: map[string]string{"ed25519:pin": f.pinnedKey.PublicBase64()}},
		{ServerName: "quiet.example", BaseURL: f.fake.URL, OnUpdate: false},
	}
	f.server = newOnUpdateServer(t, NewVerifier(testServerName, servers, NewKeyRing(nil), nil))
	return f
}

// onUpdateRequest describes a request to send: what is signed and what is
// sent, which differ only where a case says so.
type onUpdateRequest struct {
	key                        *signingkey.Key
	origin, destination, field string
	method, signMethod         string
	uri, signURI               string
	body, signBody             []byte
	bodyReader                 io.Reader // overrides body when set
	header                     func(string) []string
}

// send signs and sends r to the fixture's server and returns the status and
// decoded body.
func (f *verifierFixture) send(t *testing.T, r onUpdateRequest) (int, map[string]any) {
	t.Helper()
	if r.signBody == nil {
		r.signBody = r.body
	}
	if r.signMethod == "" {
		r.signMethod = r.method
	}
	if r.signURI == "" {
		r.signURI = r.uri
	}
	auth, err := SignRequest(r.key, r.origin, r.destination, r.field, r.signMethod, r.signURI, r.signBody)
	if err != nil {
		t.Fatal(err)
	}
	body := r.bodyReader
	if body == nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, f.server.URL+r.uri, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if r.header != nil {
		req.Header["Authorization"] = r.header(auth)
	} else {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("answer %d is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, out
}

func TestVerifier(t *testing.T) {
	f := newVerifierFixture(t)
	stranger := mustGenerate(t, "0")
	body := []byte(`{"threepid":"alice@example.org","deleted":false,"mxid":"@bob:bob.example"}`)
	// valid is a request id.example may send; each case changes one thing.
	valid := func(change func(*onUpdateRequest)) onUpdateRequest {
		r := onUpdateRequest{
			key: f.idKey, origin: "id.example", destination: testServerName, field: DestinationField,
			method: http.MethodPost, uri: onUpdatePath, body: body,
		}
		if change != nil {
			change(&r)
		}
		return r
	}
	headerOnly := func(h string) func(*onUpdateRequest) {
		return func(r *onUpdateRequest) { r.header = func(string) []string { return []string{h} } }
	}
	tests := []struct {
		name       string
		req        onUpdateRequest
		wantStatus int
		wantCode   string // errcode; "" for success
		// wantMsg is the server_name on success; else it is in the error
		// message, or for a 401 (whose message is always "Unauthorized") in
		// the error's text, which the handler logs.
		wantMsg string
		maxRead int64 // for M_TOO_LARGE: body bytes the handler may have read
	}{
		{"valid", valid(nil), 200, "", "id.example", 0},
		{"valid, origin is the signing name", valid(func(r *onUpdateRequest) { r.origin = "vector.example" }), 200, "", "matrix.example", 0},
		{"valid, pinned key", valid(func(r *onUpdateRequest) { r.origin, r.key = "pinned.example", f.pinnedKey }), 200, "", "pinned.example", 0},
		{"valid, query string signed", valid(func(r *onUpdateRequest) { r.uri = onUpdatePath + "?a=b%2Fc" }), 200, "", "id.example", 0},
		{"valid, no destination in header", valid(func(r *onUpdateRequest) {
			r.header = func(auth string) []string {
				x, _ := ParseXMatrix(auth)
				x.Destination = ""
				return []string{x.String()}
			}
		}), 200, "", "id.example", 0},
		{"no header", valid(func(r *onUpdateRequest) { r.header = func(string) []string { return nil } }), 401, "M_UNAUTHORIZED", "missing Authorization", 0},
		{"garbage header", valid(headerOnly(`X-Matrix origin="id.example",,key=="`)), 401, "M_UNAUTHORIZED", "bad Authorization header", 0},
		{"bearer token", valid(headerOnly("Bearer syt_token")), 401, "M_UNAUTHORIZED", "not X-Matrix", 0},
		{"duplicate parameter", valid(headerOnly(`X-Matrix origin="id.example",origin="id.example",key="ed25519:0",sig="x"`)), 401, "M_UNAUTHORIZED", "repeated", 0},
		{"two headers", valid(func(r *onUpdateRequest) { r.header = func(a string) []string { return []string{a, a} } }), 401, "M_UNAUTHORIZED", "more than one", 0},
		{"signature by another key", valid(func(r *onUpdateRequest) { r.key = stranger }), 401, "M_UNAUTHORIZED", "invalid request signature", 0},
		{"unknown key", valid(func(r *onUpdateRequest) { r.key = mustGenerate(t, "gone") }), 401, "M_UNAUTHORIZED", "cannot get key ed25519:gone", 0},
		{"pinned server, key not pinned", valid(func(r *onUpdateRequest) { r.origin = "pinned.example" }), 401, "M_UNAUTHORIZED", "not among its pinned", 0},
		{"origin not configured", valid(func(r *onUpdateRequest) { r.origin = "evil.example" }), 401, "M_UNAUTHORIZED", `origin "evil.example" is not a configured identity server`, 0},
		{"onupdate: false", valid(func(r *onUpdateRequest) { r.origin = "quiet.example" }), 403, "M_FORBIDDEN", "may not call onupdate", 0},
		{"onupdate: false, signature by another key", valid(func(r *onUpdateRequest) { r.origin, r.key = "quiet.example", stranger }), 401, "M_UNAUTHORIZED", "invalid request signature", 0},
		{"body changed after signing", valid(func(r *onUpdateRequest) {
			r.signBody = body
			r.body = []byte(`{"threepid":"alice@example.org","deleted":true,"mxid":"@bob:bob.example"}`)
		}), 401, "M_UNAUTHORIZED", "invalid request signature", 0},
		{"wrong destination", valid(func(r *onUpdateRequest) { r.destination = "other.example" }), 401, "M_UNAUTHORIZED", `destination "other.example" is not this server`, 0},
		{"signed as an unbind (destination_is)", valid(func(r *onUpdateRequest) { r.field = DestinationISField }), 401, "M_UNAUTHORIZED", "invalid request signature", 0},
		{"other method signed", valid(func(r *onUpdateRequest) { r.signMethod = http.MethodPut }), 401, "M_UNAUTHORIZED", "invalid request signature", 0},
		{"other URI signed", valid(func(r *onUpdateRequest) { r.signURI = "/_matrix/federation/v1/send/1" }), 401, "M_UNAUTHORIZED", "invalid request signature", 0},
		{"query string not signed", valid(func(r *onUpdateRequest) { r.signURI, r.uri = onUpdatePath, onUpdatePath+"?x=1" }), 401, "M_UNAUTHORIZED", "invalid request signature", 0},
		{"JSON that is not an object", valid(func(r *onUpdateRequest) { r.body = []byte(`["threepid"]`) }), 400, "M_BAD_JSON", "must be a JSON object", 0},
		{"null body", valid(func(r *onUpdateRequest) { r.body = []byte(`null`) }), 400, "M_BAD_JSON", "must be a JSON object", 0},
		{"body that is not JSON", valid(func(r *onUpdateRequest) { r.signBody, r.body = body, []byte(`threepid=a`) }), 400, "M_NOT_JSON", "not JSON", 0},
		{"empty body", valid(func(r *onUpdateRequest) { r.signBody, r.body = body, []byte{} }), 400, "M_NOT_JSON", "not JSON", 0},
		{"10 MB body, chunked", valid(func(r *onUpdateRequest) { r.bodyReader = io.LimitReader(zeros{}, 10<<20) }), 413, "M_TOO_LARGE", "larger than 65536 bytes", testMaxBody + 1},
		{"10 MB body, Content-Length", valid(func(r *onUpdateRequest) { r.signBody, r.body = body, bytes.Repeat([]byte("0"), 10<<20) }), 413, "M_TOO_LARGE", "larger than 65536 bytes", 0},
		{"body one byte over", valid(func(r *onUpdateRequest) { r.bodyReader = io.LimitReader(zeros{}, testMaxBody+1) }), 413, "M_TOO_LARGE", "larger than", testMaxBody + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := f.send(t, tt.req)
			if status != tt.wantStatus {
				t.Fatalf("status %d %v, want %d", status, out, tt.wantStatus)
			}
			if tt.wantCode == "" {
				if out["server_name"] != tt.wantMsg {
					t.Errorf("identity server = %v, want %s", out["server_name"], tt.wantMsg)
				}
				if got, _ := json.Marshal(out["body"]); !jsonEqual(t, got, tt.req.body) {
					t.Errorf("body = %s, want %s", got, tt.req.body)
				}
				return
			}
			if tt.wantStatus == http.StatusUnauthorized {
				// Nothing of the reason reaches the caller: it goes to the log.
				if len(out) != 2 || out["errcode"] != tt.wantCode || out["error"] != "Unauthorized" {
					t.Errorf("answer %v, want exactly {errcode: %s, error: Unauthorized}", out, tt.wantCode)
				}
				if got := f.server.refused.Load(); got == nil || !strings.Contains(*got, tt.wantMsg) {
					t.Errorf("error text %v, want one containing %q", got, tt.wantMsg)
				}
				return
			}
			if out["errcode"] != tt.wantCode || !strings.Contains(out["error"].(string), tt.wantMsg) {
				t.Errorf("answer %v, want errcode %s and an error containing %q", out, tt.wantCode, tt.wantMsg)
			}
			if read := f.server.bodyRead.Load(); tt.wantCode == "M_TOO_LARGE" && read > tt.maxRead {
				t.Errorf("handler read %d body bytes, want at most %d", read, tt.maxRead)
			}
		})
	}
}

// jsonEqual compares two JSON documents by value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

// TestVerifierAcceptsGomatrixserverlibRequest checks interoperability: a
// request signed by gomatrixserverlib (as Dendrite signs) is accepted.
func TestVerifierAcceptsGomatrixserverlibRequest(t *testing.T) {
	f := newVerifierFixture(t)
	fr := fclient.NewFederationRequest(http.MethodPost, "id.example", testServerName, onUpdatePath)
	if err := fr.SetContent(map[string]any{"threepid": "a@b.c", "deleted": true, "mxid": "@a:hs.example"}); err != nil {
		t.Fatal(err)
	}
	if err := fr.Sign("id.example", f.idKey.ID, f.idKey.Private); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host = "http", strings.TrimPrefix(f.server.URL, "http://")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %s, want 200", resp.StatusCode, answer)
	}
}
