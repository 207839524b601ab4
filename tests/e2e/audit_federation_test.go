package e2e

// Audit of the federation onupdate endpoint, the /sync proxy and the admin
// API against DESIGN.md, the onupdate proposal and issues 5-7: what a caller
// sees for hostile or unusual input (status, errcode, body), and that refused
// requests change nothing.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/tests/harness"
)

// onUpdateRequest is one raw onupdate request: uri is the path and query sent
// (the endpoint when empty); headers are Authorization values (none, one, or
// several); chunked hides the Content-Length.
type onUpdateRequest struct {
	method  string
	uri     string
	auth    []string
	body    []byte
	chunked bool
}

// sendOnUpdateRequest sends r to threepidd and checks the answer against the
// spec's error schema.
func sendOnUpdateRequest(t *testing.T, e *harness.Env, r onUpdateRequest) harness.Response {
	t.Helper()
	method, uri := r.method, r.uri
	if method == "" {
		method = http.MethodPost
	}
	if uri == "" {
		uri = onupdate.Path
	}
	var body io.Reader = bytes.NewReader(r.body)
	if r.chunked {
		body = io.MultiReader(bytes.NewReader(r.body)) // unknown length: sent chunked
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.URL+uri, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for _, a := range r.auth {
		req.Header.Add("Authorization", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, uri, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	harness.CheckResponse(t, method, onupdate.Path, resp.StatusCode, data)
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s: server error %d: %s", method, uri, resp.StatusCode, data)
	}
	return harness.Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// TestAuditOnUpdateBodies: body variants, validly signed by an identity
// server allowed to call. Refused bodies change nothing; accepted ones do
// exactly what DESIGN.md says.
func TestAuditOnUpdateBodies(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice, bob := e.NewUser("audit-alice"), e.NewUser("audit-bob")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "audit-alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "msisdn", "447700900999"), 200, "")
		is0 := e.IS[0]
		signed := func(body []byte) onUpdateRequest {
			return onUpdateRequest{auth: []string{signOnUpdate(t, is0.Key(), is0.Name(), harness.ServerName, body)}, body: body}
		}
		del := `"threepid":"audit-alice@example.org","deleted":true`
		// A deletion of alice's binding, padded with spaces to n bytes.
		padded := func(n int) []byte {
			body := []byte(`{` + del + `,"mxid":"` + alice.ID + `"}`)
			return append(body, bytes.Repeat([]byte(" "), n-len(body))...)
		}
		refused := []struct {
			name    string
			body    string
			status  int
			errcode string
		}{
			{"deleted as a string", `{` + strings.Replace(del, "true", `"true"`, 1) + `}`, 400, "M_BAD_JSON"},
			{"deleted as a number", `{` + strings.Replace(del, "true", `1`, 1) + `}`, 400, "M_BAD_JSON"},
			{"deleted null", `{"threepid":"audit-alice@example.org","deleted":null}`, 400, "M_MISSING_PARAM"},
			{"threepid missing", `{"deleted":true}`, 400, "M_MISSING_PARAM"},
			{"threepid a number", `{"threepid":447700900999,"deleted":true}`, 400, "M_BAD_JSON"},
			{"threepid empty", `{"threepid":"","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"threepid blank", `{"threepid":"   ","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"threepid neither email nor phone", `{"threepid":"audit-alice","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"mxid missing on an update", `{"threepid":"audit-alice@example.org","deleted":false}`, 400, "M_MISSING_PARAM"},
			{"mxid null on an update", `{"threepid":"audit-alice@example.org","deleted":false,"mxid":null}`, 400, "M_MISSING_PARAM"},
			{"mxid empty on an update", `{"threepid":"audit-alice@example.org","deleted":false,"mxid":""}`, 400, "M_INVALID_PARAM"},
			{"mxid a number", `{"threepid":"audit-alice@example.org","deleted":false,"mxid":1}`, 400, "M_BAD_JSON"},
			{"mxid without @", `{"threepid":"audit-alice@example.org","deleted":false,"mxid":"eve:other.tld"}`, 400, "M_INVALID_PARAM"},
			{"mxid without server", `{"threepid":"audit-alice@example.org","deleted":false,"mxid":"@eve"}`, 400, "M_INVALID_PARAM"},
			{"mxid empty localpart", `{"threepid":"audit-alice@example.org","deleted":false,"mxid":"@:other.tld"}`, 400, "M_INVALID_PARAM"},
			{"mxid with a space", `{"threepid":"audit-alice@example.org","deleted":false,"mxid":"@e ve:other.tld"}`, 400, "M_INVALID_PARAM"},
			{"mxid invalid on a deletion", `{` + del + `,"mxid":"audit-alice"}`, 400, "M_INVALID_PARAM"},
			{"medium msisdn for an e-mail address", `{` + del + `,"medium":"msisdn"}`, 400, "M_INVALID_PARAM"},
			{"medium email for a phone number", `{"threepid":"447700900999","deleted":true,"medium":"email"}`, 400, "M_INVALID_PARAM"},
			{"medium unknown", `{` + del + `,"medium":"phone"}`, 400, "M_INVALID_PARAM"},
			{"medium a number", `{` + del + `,"medium":1}`, 400, "M_BAD_JSON"},
			{"phone number with spaces", `{"threepid":"+44 7700 900999","deleted":true}`, 400, "M_INVALID_PARAM"},
			{"array", `[{` + del + `}]`, 400, "M_BAD_JSON"},
			{"string", `"audit-alice@example.org"`, 400, "M_BAD_JSON"},
			{"number", `1`, 400, "M_BAD_JSON"},
			{"null", `null`, 400, "M_BAD_JSON"},
			{"empty body", ``, 400, "M_NOT_JSON"},
			{"trailing garbage", `{` + del + `} x`, 400, "M_NOT_JSON"},
			{"form-encoded", `threepid=audit-alice%40example.org&deleted=true`, 400, "M_NOT_JSON"},
		}
		for _, c := range refused {
			t.Run(c.name, func(t *testing.T) {
				signedBody := []byte(c.body)
				if !json.Valid(signedBody) { // SignRequest signs JSON only: sign another body
					signedBody = []byte(`{` + del + `}`)
				}
				req := signed(signedBody)
				req.body = []byte(c.body)
				before := snapshot(t, e, alice, bob)
				harness.Expect(t, sendOnUpdateRequest(t, e, req), c.status, c.errcode)
				if after := snapshot(t, e, alice, bob); after != before {
					t.Fatalf("state changed:\n%s\nto\n%s", before, after)
				}
			})
		}

		t.Run("64 KiB + 1 is too large, with or without Content-Length", func(t *testing.T) {
			before := snapshot(t, e, alice, bob)
			for _, chunked := range []bool{false, true} {
				req := signed(padded(64<<10 + 1))
				req.chunked = chunked
				harness.Expect(t, sendOnUpdateRequest(t, e, req), 413, "M_TOO_LARGE")
			}
			if after := snapshot(t, e, alice, bob); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})

		t.Run("a deletion naming a remote user changes nothing", func(t *testing.T) {
			before := snapshot(t, e, alice, bob)
			expectApplied(t, sendOnUpdateRequest(t, e, signed([]byte(`{`+del+`,"mxid":"@audit-alice:other.tld"}`))))
			if after := snapshot(t, e, alice, bob); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})

		t.Run("an update naming the holder changes nothing", func(t *testing.T) {
			before := snapshot(t, e, alice, bob)
			expectApplied(t, sendOnUpdateRequest(t, e, signed([]byte(`{"threepid":"audit-alice@example.org","deleted":false,"mxid":"`+alice.ID+`"}`))))
			if after := snapshot(t, e, alice, bob); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})

		t.Run("non-canonical phone number, extra fields ignored", func(t *testing.T) {
			body := `{"threepid":" +447700900999 ","deleted":false,"mxid":"@eve:other.tld","medium":"msisdn","ts":1,"signatures":{},"extra":{"x":[1]}}`
			expectApplied(t, sendOnUpdateRequest(t, e, signed([]byte(body))))
			expectLost(t, e, bob, 0, "msisdn", "447700900999", false, "@eve:other.tld")
		})

		t.Run("exactly 64 KiB is accepted", func(t *testing.T) {
			expectApplied(t, sendOnUpdateRequest(t, e, signed(padded(64<<10))))
			expectLost(t, e, alice, 0, "email", "audit-alice@example.org", true, alice.ID)
		})
	})
}

// keyServer is an identity server's /_matrix/identity/v2/pubkey/ endpoint
// that answers each key ID as told and counts the requests for each.
type keyServer struct {
	srv  *httptest.Server
	mu   gosync.Mutex
	hits map[string]int
}

// Key IDs the keyServer misbehaves for; any other unknown ID is a 404.
const (
	keyGarbage   = "ed25519:garbage"   // 200, not JSON
	keyHuge      = "ed25519:huge"      // 200, a 1 MiB JSON body
	keyShort     = "ed25519:short"     // 200, a public key of 3 bytes
	keyNotBase64 = "ed25519:notbase64" // 200, a public key that is not base64
	keyFails     = "ed25519:fails"     // 500
	keyHangs     = "ed25519:hangs"     // never answers
)

// newKeyServer serves keys (by key ID) and the misbehaving IDs above.
func newKeyServer(t *testing.T, keys ...*signingkey.Key) *keyServer {
	t.Helper()
	ks := &keyServer{hits: map[string]int{}}
	stop := make(chan struct{})
	ks.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/identity/v2/pubkey/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		ks.mu.Lock()
		ks.hits[id]++
		ks.mu.Unlock()
		for _, k := range keys {
			if string(k.ID) == id {
				fmt.Fprintf(w, `{"public_key":%q}`, k.PublicBase64())
				return
			}
		}
		switch id {
		case keyGarbage:
			_, _ = io.WriteString(w, "<html>not a key</html>")
		case keyHuge:
			fmt.Fprintf(w, `{"public_key":"%s"}`, strings.Repeat("A", 1<<20))
		case keyShort:
			_, _ = io.WriteString(w, `{"public_key":"AAAA"}`)
		case keyNotBase64:
			_, _ = io.WriteString(w, `{"public_key":"!!!! not base64 !!!!"}`)
		case keyFails:
			http.Error(w, `{"errcode":"M_UNKNOWN"}`, http.StatusInternalServerError)
		case keyHangs:
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"The key was not found."}`)
		}
	}))
	t.Cleanup(func() {
		close(stop)
		ks.srv.Close()
	})
	return ks
}

// hitsOf returns how often key ID id was asked for.
func (ks *keyServer) hitsOf(id string) int {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.hits[id]
}

// signedHeader signs a request and returns its parsed X-Matrix header, so
// that tests can render it in other shapes.
func signedHeader(t *testing.T, key *signingkey.Key, origin, destination, method, uri string, body []byte) federation.XMatrix {
	t.Helper()
	auth, err := federation.SignRequest(key, origin, destination, federation.DestinationField, method, uri, body)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	x, err := federation.ParseXMatrix(auth)
	if err != nil {
		t.Fatalf("parse own header %q: %v", auth, err)
	}
	return x
}

// TestAuditOnUpdateXMatrix: X-Matrix header variants, origins named by
// server_name or signing_name, pinned keys and key endpoints that misbehave.
// A refused request changes nothing; an accepted one drops alice's binding on
// the identity server that sent it and notifies her.
func TestAuditOnUpdateXMatrix(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		good, err := signingkey.Generate("good")
		if err != nil {
			t.Fatal(err)
		}
		pin, err := signingkey.Generate("pin")
		if err != nil {
			t.Fatal(err)
		}
		impostor, err := signingkey.Generate("good") // same key ID, another key
		if err != nil {
			t.Fatal(err)
		}
		ks := newKeyServer(t, good, pin)
		const named, signing, pinned, quiet = "named.test", "sig.named.test", "pinned.test", "quiet.test"
		e := harness.Start(t, b, harness.Options{ExtraYAML: fmt.Sprintf("identity_servers:\n"+
			"  - {server_name: %s, signing_name: %s, base_url: %q, onupdate: true}\n"+
			"  - {server_name: %s, base_url: %q, onupdate: true, verify_keys: {%q: %q}}\n"+
			"  - {server_name: %s, base_url: %q, onupdate: false}\n",
			named, signing, ks.srv.URL, pinned, ks.srv.URL, pin.ID, pin.PublicBase64(), quiet, ks.srv.URL)})
		alice := e.NewUser("xm-alice")
		const address = "xm-alice@example.org"
		bindOn := func(servers ...string) {
			for _, is := range servers {
				if err := e.Server.Store.UpsertBinding(context.Background(), storage.Binding{
					UserID: alice.ID, Medium: "email", Address: address, IDServer: is, BoundAt: time.Now().UnixMilli(),
				}); err != nil {
					t.Fatal(err)
				}
			}
		}

		const post, path = http.MethodPost, onupdate.Path
		hs := harness.ServerName
		// quoted renders x with every parameter quoted, in this order.
		quoted := func(x federation.XMatrix) string {
			return fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="%s"`, x.Origin, x.Destination, x.KeyID, x.Signature)
		}
		// as signs body with key as origin and renders the header with render.
		type render func(x federation.XMatrix) []string
		one := func(f func(x federation.XMatrix) string) render {
			return func(x federation.XMatrix) []string { return []string{f(x)} }
		}
		standard := one(func(x federation.XMatrix) string { return x.String() })
		cases := []struct {
			name         string
			key          *signingkey.Key
			origin       string // signed as
			method, uri  string // signed for (default POST, the endpoint)
			dest         string // signed for (default this homeserver)
			sendURI      string // sent to (default uri)
			header       render
			alter        func(body []byte) []byte // applied after signing
			status       int
			errcode      string
			lostOn       string // the identity server whose record goes, when accepted
			notContacted string // a key ID the key server must not be asked for
		}{
			{name: "origin is server_name", key: good, origin: named, header: standard, status: 200, lostOn: named},
			{name: "origin is signing_name", key: good, origin: signing, header: standard, status: 200, lostOn: named},
			{name: "unquoted parameters", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf("X-Matrix origin=%s,destination=%s,key=%s,sig=%s", x.Origin, x.Destination, x.KeyID, x.Signature)
			})},
			{name: "spaces around commas and equals", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf(`X-Matrix  origin = "%s" ,  destination="%s" ,key= "%s",	sig="%s" `, x.Origin, x.Destination, x.KeyID, x.Signature)
			})},
			{name: "scheme and names in other cases, other order", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf(`x-matrix SIG="%s",Key="%s",Destination="%s",ORIGIN="%s"`, x.Signature, x.KeyID, x.Destination, x.Origin)
			})},
			{name: "unknown parameter ignored", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,org.example.extra="1"`
			})},
			{name: "no destination", key: good, origin: named, status: 200, lostOn: named, header: one(func(x federation.XMatrix) string {
				x.Destination = ""
				return x.String()
			})},
			{name: "reformatted body still verifies", key: good, origin: named, header: standard, status: 200, lostOn: named,
				alter: func(body []byte) []byte {
					var m map[string]any
					if err := json.Unmarshal(body, &m); err != nil {
						t.Fatal(err)
					}
					out, _ := json.MarshalIndent(m, "  ", "\t")
					return out
				}},
			{name: "query signed and sent", key: good, origin: named, uri: path + "?via=x", header: standard, status: 200, lostOn: named},
			{name: "pinned key", key: pin, origin: pinned, header: standard, status: 200, lostOn: pinned},

			{name: "destination of another server", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.Destination = "other.hs"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signed for another destination, sent without one", key: good, origin: named, dest: "other.hs", header: one(func(x federation.XMatrix) string {
				x.Destination = ""
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "empty destination", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return strings.Replace(quoted(x), `destination="`+hs+`"`, `destination=""`, 1)
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin repeated", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,origin="` + x.Origin + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin repeated with another server", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,origin="` + pinned + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "sig repeated", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,sig="` + x.Signature + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "two Authorization headers", key: good, origin: named, header: func(x federation.XMatrix) []string {
				return []string{x.String(), x.String()}
			}, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin missing", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return fmt.Sprintf(`X-Matrix destination="%s",key="%s",sig="%s"`, x.Destination, x.KeyID, x.Signature)
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "unterminated quote", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return strings.TrimSuffix(quoted(x), `"`)
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "scheme only", header: one(func(federation.XMatrix) string { return "X-Matrix" }), key: good, origin: named,
				status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "header over 4 KiB", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				return quoted(x) + `,pad="` + strings.Repeat("p", 4096) + `"`
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signing_name in the header, server_name signed", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.Origin = signing
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin not configured", key: good, origin: "stranger.test", header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "origin configured without onupdate", key: good, origin: quiet, header: standard, status: 403, errcode: "M_FORBIDDEN"},
			{name: "another key under the same ID", key: impostor, origin: named, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signature not base64", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.Signature = "not*base64"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "not an ed25519 key", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.KeyID = "curve25519:good"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key ID with a path", key: good, origin: named, header: one(func(x federation.XMatrix) string {
				x.KeyID = "ed25519:../../v2/pubkey/ed25519:good"
				return x.String()
			}), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key unknown to the identity server", key: good, origin: named, header: keyIDHeader("ed25519:nope"), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key answer not JSON", key: good, origin: named, header: keyIDHeader(keyGarbage), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key answer not JSON, again (cached)", key: good, origin: named, header: keyIDHeader(keyGarbage), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key answer of 1 MiB", key: good, origin: named, header: keyIDHeader(keyHuge), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key of 3 bytes", key: good, origin: named, header: keyIDHeader(keyShort), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key not base64", key: good, origin: named, header: keyIDHeader(keyNotBase64), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "key endpoint fails", key: good, origin: named, header: keyIDHeader(keyFails), status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "pinned server: unpinned key never fetched", key: pin, origin: pinned, header: keyIDHeader("ed25519:good"),
				status: 401, errcode: "M_UNAUTHORIZED", notContacted: "ed25519:good"},
			{name: "body altered after signing", key: good, origin: named, header: standard, status: 401, errcode: "M_UNAUTHORIZED",
				alter: func(body []byte) []byte {
					return bytes.Replace(body, []byte(`"deleted":true`), []byte(`"deleted":false`), 1)
				}},
			{name: "query added after signing", key: good, origin: named, header: standard, sendURI: path + "?via=x", status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "query removed after signing", key: good, origin: named, uri: path + "?via=x", sendURI: path, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signed for another method", key: good, origin: named, method: http.MethodPut, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "signed for another path", key: good, origin: named, uri: "/_matrix/federation/v1/send/1", sendURI: path, header: standard, status: 401, errcode: "M_UNAUTHORIZED"},
			{name: "Bearer token", key: good, origin: named, header: one(func(federation.XMatrix) string { return "Bearer " + alice.Token }), status: 401, errcode: "M_UNAUTHORIZED"},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				bindOn(named, pinned, quiet)
				before := snapshot(t, e, alice)
				notified := len(e.Notifications(t, alice))
				fetched := ks.hitsOf(c.notContacted)
				body := []byte(fmt.Sprintf(`{"threepid":%q,"deleted":true,"mxid":%q,"n":%d}`, address, alice.ID, i))
				method, uri, dest := c.method, c.uri, hs
				if method == "" {
					method = post
				}
				if uri == "" {
					uri = path
				}
				if c.dest != "" {
					dest = c.dest
				}
				x := signedHeader(t, c.key, c.origin, dest, method, uri, body)
				req := onUpdateRequest{uri: uri, auth: c.header(x), body: body}
				if c.sendURI != "" {
					req.uri = c.sendURI
				}
				if c.alter != nil {
					req.body = c.alter(body)
				}
				r := sendOnUpdateRequest(t, e, req)
				harness.Expect(t, r, c.status, c.errcode)
				if c.status != 200 {
					if after := snapshot(t, e, alice); after != before {
						t.Fatalf("state changed:\n%s\nto\n%s", before, after)
					}
					if c.notContacted != "" && ks.hitsOf(c.notContacted) != fetched {
						t.Fatalf("key %s was fetched", c.notContacted)
					}
					return
				}
				if string(r.Body) != "{}" {
					t.Fatalf("answer %s, want {}", r.Body)
				}
				ns := e.Notifications(t, alice)
				if len(ns) != notified+1 || ns[len(ns)-1].Origin != c.lostOn {
					t.Fatalf("notifications %+v, want one more from %s", ns, c.lostOn)
				}
				for _, is := range e.BindingsOf(t, alice, address) {
					if is == c.lostOn {
						t.Fatalf("the binding on %s survived", is)
					}
				}
			})
		}
		t.Run("a replay signed under the other name is still a replay", func(t *testing.T) {
			bindOn(named)
			body := []byte(fmt.Sprintf(`{"threepid":%q,"deleted":true,"mxid":%q,"n":"replay"}`, address, alice.ID))
			send := func(origin string) {
				x := signedHeader(t, good, origin, hs, post, path, body)
				expectApplied(t, sendOnUpdateRequest(t, e, onUpdateRequest{auth: []string{x.String()}, body: body}))
			}
			send(named)
			bindOn(named)
			before := snapshot(t, e, alice)
			send(signing)
			if after := snapshot(t, e, alice); after != before {
				t.Fatalf("the replay changed the state:\n%s\nto\n%s", before, after)
			}
		})
		// A key endpoint that failed is asked once, not on every request.
		if n := ks.hitsOf(keyGarbage); n != 1 {
			t.Fatalf("the failing key was fetched %d times, want 1", n)
		}
		// A key endpoint that never answers: refused in bounded time (the
		// fetch timeout, 10 s; once, as storage plays no part).
		t.Run("key endpoint hangs", func(t *testing.T) {
			if b.Driver != "sqlite" {
				t.Skip("run on SQLite only")
			}
			before := snapshot(t, e, alice)
			body := []byte(fmt.Sprintf(`{"threepid":%q,"deleted":true,"mxid":%q,"n":"hang"}`, address, alice.ID))
			x := signedHeader(t, good, named, hs, post, path, body)
			x.KeyID = keyHangs
			began := time.Now()
			harness.Expect(t, sendOnUpdateRequest(t, e, onUpdateRequest{auth: []string{x.String()}, body: body}), 401, "M_UNAUTHORIZED")
			if took := time.Since(began); took > 15*time.Second {
				t.Fatalf("refused after %v", took)
			}
			if after := snapshot(t, e, alice); after != before {
				t.Fatalf("state changed:\n%s\nto\n%s", before, after)
			}
		})
	})
}

// keyIDHeader renders the header with its key ID replaced by id.
func keyIDHeader(id string) func(x federation.XMatrix) []string {
	return func(x federation.XMatrix) []string {
		x.KeyID = id
		return []string{x.String()}
	}
}

// upstreamRequests counts the requests the fake homeserver got on the
// endpoints that take sync tokens.
func upstreamRequests(e *harness.Env) int {
	return len(e.HS.SyncRequests()) + len(e.HS.KeyChangesRequests()) + len(e.HS.MessagesRequests())
}

// TestAuditSyncTokens: tokens on /sync, /keys/changes and /messages. Ours
// garbled in any part are 400 M_INVALID_PARAM without asking the homeserver;
// upstream parts of any shape reach the homeserver byte for byte; the other
// query parameters are kept.
func TestAuditSyncTokens(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("tok-alice")
		e.HS.PushEvent(alice.ID, json.RawMessage(`{"type":"m.room.message"}`))
		first := doSync(t, e, alice, "")
		upstream := upstreamPart(t, first.NextBatch)
		const room = "/_matrix/client/v3/rooms/%21fake:hs.test/messages"
		endpoints := []struct{ path, param, other string }{
			{syncPath, "since", "timeout=0"},
			{syncPath, "since", "timeout=30000"},
			{"/_matrix/client/v3/keys/changes", "from", "to=" + url.QueryEscape(first.NextBatch)},
			{"/_matrix/client/r0/keys/changes", "to", "from=" + url.QueryEscape(first.NextBatch)},
			{room, "from", "dir=b"},
			{room, "to", "dir=f&from=" + url.QueryEscape(first.NextBatch)},
		}

		t.Run("garbled", func(t *testing.T) {
			for _, garbled := range []string{
				"tpd1.", "tpd1..", "tpd1.1", "tpd1..czE", "tpd1.x.czE", "tpd1.-1.czE", "tpd1.+1.czE", "tpd1.01.czE",
				"tpd1.1e3.czE", "tpd1. 1.czE", "tpd1.1 .czE", "tpd1.9999999999999999999.czE", "tpd1.123456789012345678901234567890.czE",
				"tpd1.1.czE=", "tpd1.1.c", "tpd1.1.czF", "tpd1.1.cz E", "tpd1.1.cz+E", "tpd1.1.cz/E", "tpd1.1.czE\n", "tpd1.1.\nczE",
				"tpd1.1.czE.", "tpd1.1.czE%", "tpd1.1." + base64URL("s1") + "." + base64URL("s2"), "tpd1.1.\x00", "tpd1.1.ÿ",
			} {
				for _, ep := range endpoints {
					before := upstreamRequests(e)
					path := ep.path + "?" + ep.other + "&" + ep.param + "=" + url.QueryEscape(garbled)
					harness.Expect(t, e.Do("GET", path, alice.Token, nil), 400, "M_INVALID_PARAM")
					if upstreamRequests(e) != before {
						t.Fatalf("%s: the homeserver was asked", path)
					}
				}
			}
		})

		t.Run("any upstream token reaches the homeserver unchanged", func(t *testing.T) {
			for _, up := range []string{
				"s1_2.3~4", "a.b_c~d", "100%", "%41%", "a+b c", "a&since=b", "a=b", "a/b?c#d", "é☃", "tpd1", "TPD1.1.czE",
				strings.Repeat("x.~_%", 2000), "\x01\x7f",
			} {
				for _, composite := range []bool{false, true} {
					token := up
					if composite {
						token = tpsync.NewToken(up, 1).String()
					}
					if !composite && strings.HasPrefix(up, "tpd1.") {
						continue
					}
					for _, ep := range endpoints {
						before := upstreamRequests(e)
						r := e.Do("GET", ep.path+"?"+ep.param+"="+url.QueryEscape(token)+"&"+ep.other, alice.Token, nil)
						// The fake homeserver refuses tokens it did not issue (but
						// for /messages' to): its 400 comes back unchanged.
						if r.Status != 200 && (r.Status != 400 || r.ErrCode() != "M_UNKNOWN") {
							t.Fatalf("%s %q: %d %s", ep.path, token, r.Status, r.Body)
						}
						if upstreamRequests(e) != before+1 {
							t.Fatalf("%s %q: %d upstream requests, want 1", ep.path, token, upstreamRequests(e)-before)
						}
						if got := lastQuery(e, ep.path).Get(ep.param); got != up {
							t.Fatalf("%s: homeserver got %s=%q, want %q", ep.path, ep.param, got, up)
						}
					}
				}
			}
		})

		t.Run("other parameters kept", func(t *testing.T) {
			filter := `{"room":{"timeline":{"limit":1}},"event_fields":["type"]}`
			r := e.Do("GET", syncPath+"?filter="+url.QueryEscape(filter)+"&full_state=true&set_presence=offline&timeout=0&since="+
				url.QueryEscape(first.NextBatch)+"&use_state_after=true", alice.Token, nil)
			harness.Expect(t, r, 200, "")
			q := lastQuery(e, syncPath)
			if q.Get("filter") != filter || q.Get("full_state") != "true" || q.Get("set_presence") != "offline" ||
				q.Get("timeout") != "0" || q.Get("since") != upstream || q.Get("use_state_after") != "true" {
				t.Fatalf("homeserver got %v", q)
			}
			r = e.Do("GET", room+"?dir=f&limit=3&filter="+url.QueryEscape(`{"types":["m.room.message"]}`)+
				"&from="+url.QueryEscape(first.NextBatch)+"&to="+url.QueryEscape(first.NextBatch), alice.Token, nil)
			harness.Expect(t, r, 200, "")
			q = lastQuery(e, room)
			if q.Get("dir") != "f" || q.Get("limit") != "3" || q.Get("filter") != `{"types":["m.room.message"]}` ||
				q.Get("from") != upstream || q.Get("to") != upstream {
				t.Fatalf("homeserver got %v", q)
			}
		})

		t.Run("wrong methods", func(t *testing.T) {
			before := upstreamRequests(e)
			for _, path := range []string{syncPath, "/_matrix/client/v3/keys/changes", room, "/_matrix/client/v3/rooms/%21a%2Fb:hs.test/messages"} {
				harness.Expect(t, e.Do("POST", path+"?from=x", alice.Token, map[string]any{}), 405, "M_UNRECOGNIZED")
			}
			if upstreamRequests(e) != before {
				t.Fatal("the homeserver was asked")
			}
		})

		t.Run("a plain upstream token is accepted", func(t *testing.T) {
			for _, ep := range endpoints[2:] {
				r := e.Do("GET", ep.path+"?"+ep.param+"="+url.QueryEscape(upstream)+"&"+strings.ReplaceAll(ep.other, url.QueryEscape(first.NextBatch), upstream), alice.Token, nil)
				harness.Expect(t, r, 200, "")
			}
			got := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(upstream))
			if upstreamPart(t, got.NextBatch) != upstream || len(got.Threepids) != 0 {
				t.Fatalf("sync from a plain token: %+v", got)
			}
		})
	})
}

// base64URL is the encoding of the upstream part of a composite token.
func base64URL(s string) string {
	tok := tpsync.NewToken(s, 1).String()
	return tok[strings.LastIndexByte(tok, '.')+1:]
}

// lastQuery is the query of the last request the fake homeserver got on path's endpoint.
func lastQuery(e *harness.Env, path string) url.Values {
	var qs []url.Values
	switch {
	case strings.HasSuffix(path, "/sync"):
		qs = e.HS.SyncRequests()
	case strings.HasSuffix(path, "/keys/changes"):
		qs = e.HS.KeyChangesRequests()
	default:
		qs = e.HS.MessagesRequests()
	}
	if len(qs) == 0 {
		return nil
	}
	return qs[len(qs)-1]
}

// TestAuditSyncLongPoll: wake-ups reach exactly the user they are for,
// including a client still on a plain upstream token (its first sync through
// threepidd), and a client that leaves ends the upstream request.
func TestAuditSyncLongPoll(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice, bob := e.NewUser("lp-alice"), e.NewUser("lp-bob")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "lp-alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "email", "lp-bob@example.org"), 200, "")
		want := tpsync.Entry{Deleted: false, MXID: "@mallory:evil.test", Medium: "email"}

		t.Run("a plain upstream token is woken too", func(t *testing.T) {
			plain := upstreamPart(t, doSync(t, e, alice, "").NextBatch)
			n := len(e.HS.SyncRequests())
			done := syncAsync(e.URL, alice.Token, "timeout=30000&since="+url.QueryEscape(plain))
			waitSyncRequests(t, e, n+1)
			takeOver(t, e, 0, "lp-alice@example.org", want.MXID)
			woken, raw := receive(t, done, 10*time.Second)
			if woken.Threepids["lp-alice@example.org"] != want {
				t.Fatalf("woken sync: %s", raw)
			}
			if got := upstreamPart(t, woken.NextBatch); got != plain {
				t.Fatalf("next_batch carries %q, want the client's %q", got, plain)
			}
			if again := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(woken.NextBatch)); len(again.Threepids) != 0 {
				t.Fatalf("repeated: %+v", again.Threepids)
			}
		})

		t.Run("another user's notification wakes nobody else", func(t *testing.T) {
			aliceSince := doSync(t, e, alice, "timeout=0&since="+url.QueryEscape(doSync(t, e, alice, "").NextBatch)).NextBatch
			bobSince := doSync(t, e, bob, "").NextBatch
			if len(doSync(t, e, bob, "").Threepids) != 0 {
				t.Fatal("bob's first sync shows alice's notification")
			}
			n := len(e.HS.SyncRequests())
			bobDone := syncAsync(e.URL, bob.Token, "timeout=1500&since="+url.QueryEscape(bobSince))
			aliceDone := syncAsync(e.URL, alice.Token, "timeout=30000&since="+url.QueryEscape(aliceSince))
			waitSyncRequests(t, e, n+2)
			if err := e.Server.Store.UpsertBinding(context.Background(), storage.Binding{UserID: alice.ID, Medium: "email",
				Address: "lp-alice2@example.org", IDServer: e.IS[0].Name(), BoundAt: time.Now().UnixMilli()}); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			takeOver(t, e, 0, "lp-alice2@example.org", want.MXID)
			if woken, raw := receive(t, aliceDone, 10*time.Second); woken.Threepids["lp-alice2@example.org"] != want {
				t.Fatalf("alice's sync: %s", raw)
			}
			got, raw := receive(t, bobDone, 10*time.Second)
			if len(got.Threepids) != 0 || time.Since(began) < time.Second {
				t.Fatalf("bob's long-poll returned after %v: %s", time.Since(began), raw)
			}
		})

		t.Run("a client that leaves ends the upstream request", func(t *testing.T) {
			since := doSync(t, e, bob, "").NextBatch
			cancelled := e.HS.SyncCancellations()
			n := len(e.HS.SyncRequests())
			ctx, cancel := context.WithCancel(context.Background())
			req, err := http.NewRequestWithContext(ctx, "GET", e.URL+syncPath+"?timeout=30000&since="+url.QueryEscape(since), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+bob.Token)
			errc := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			waitSyncRequests(t, e, n+1)
			cancel()
			<-errc
			waitFor(t, "the upstream long-poll to be cancelled", func() bool { return e.HS.SyncCancellations() > cancelled }, 10*time.Second)
			// Still serving, and bob's next notification is delivered (a
			// long-poll, as the wake-up comes after the onupdate's answer).
			takeOver(t, e, 0, "lp-bob@example.org", want.MXID)
			if got := doSync(t, e, bob, "timeout=10000&since="+url.QueryEscape(since)); got.Threepids["lp-bob@example.org"] != want {
				t.Fatalf("after the cancel: %+v", got)
			}
		})
	})
}

// TestAuditSyncUpstreamAnswers: the homeserver's refusals pass through;
// gzip bodies come back decoded with the right length.
func TestAuditSyncUpstreamAnswers(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("up-alice")
		// Appended before any sync of alice: wake-ups are delivered after the
		// commit, asynchronously, and a sync made meanwhile may not see it yet.
		pos, err := e.Server.Store.AppendNotification(context.Background(), storage.Notification{UserID: alice.ID,
			Medium: "email", Address: "up-alice@example.org", Deleted: true, Origin: "id1.test", At: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		next := doSync(t, e, alice, "").NextBatch

		t.Run("gzip", func(t *testing.T) {
			e.HS.SetSyncGzip(true)
			defer e.HS.SetSyncGzip(false)
			for _, withSection := range []bool{false, true} {
				since := next
				if withSection {
					since = tpsync.NewToken(upstreamPart(t, next), pos-1).String()
				}
				r := harness.DoHeaders(t, "GET", e.URL+syncPath+"?timeout=0&since="+url.QueryEscape(since), alice.Token,
					map[string]string{"Accept-Encoding": "gzip"})
				harness.Expect(t, r, 200, "")
				var got syncBody
				if err := json.Unmarshal(r.Body, &got); err != nil || r.Header.Get("Content-Encoding") != "" {
					t.Fatalf("section %v: %v %v: %q", withSection, err, r.Header, r.Body)
				}
				if cl := r.Header.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(r.Body)) {
					t.Fatalf("Content-Length %s for %d bytes", cl, len(r.Body))
				}
				if upstreamPart(t, got.NextBatch) == "" || (len(got.Threepids) == 1) != withSection {
					t.Fatalf("section %v: %s", withSection, r.Body)
				}
			}
		})

		t.Run("refusals pass through", func(t *testing.T) {
			soft := e.NewUser("up-soft")
			e.HS.SoftLogout(soft.Token)
			gone := e.NewUser("up-gone")
			e.HS.RevokeToken(gone.Token)
			for _, path := range []string{
				"/_matrix/client/v3/keys/changes?from=" + url.QueryEscape(next),
				"/_matrix/client/v3/rooms/%21fake:hs.test/messages?dir=b&from=" + url.QueryEscape(next),
				syncPath + "?timeout=0&since=" + url.QueryEscape(next),
			} {
				harness.Expect(t, e.Do("GET", path, gone.Token, nil), 401, "M_UNKNOWN_TOKEN")
				r := e.Do("GET", path, soft.Token, nil)
				harness.Expect(t, r, 401, "M_UNKNOWN_TOKEN")
				if r.JSON(t)["soft_logout"] != true {
					t.Fatalf("%s: soft_logout lost: %s", path, r.Body)
				}
				harness.Expect(t, e.Do("GET", path, "", nil), 401, "M_MISSING_TOKEN")
			}
		})
	})
}

// TestAuditAdmin: the admin API's auth, user IDs and addresses in paths, and
// idempotent deactivation. Refused requests change nothing.
func TestAuditAdmin(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, ExtraYAML: "admin_token: " + adminToken + "\n"})
		alice, bob := e.NewUser("adm-alice"), e.NewUser("adm-bob")
		e.AddEmail(t, alice, "adm-alice@example.org")
		e.AddEmail(t, bob, "adm-bob@example.org")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "adm-alice@example.org"), 200, "")
		aliceAt := adminPrefix + "/users/%40adm-alice%3Ahs.test"
		state := func() string {
			return fmt.Sprint(e.Threepids(t, alice), e.Threepids(t, bob), e.BindingsOf(t, alice, "adm-alice@example.org"))
		}

		t.Run("auth", func(t *testing.T) {
			before := state()
			for _, h := range []struct {
				header  string
				status  int
				errcode string
			}{
				{"", 401, "M_MISSING_TOKEN"},
				{"Bearer", 401, "M_MISSING_TOKEN"},
				{"Bearer ", 401, "M_MISSING_TOKEN"},
				{"Basic " + adminToken, 401, "M_MISSING_TOKEN"},
				{adminToken, 401, "M_MISSING_TOKEN"},
				{"Bearer " + adminToken + "x", 403, "M_FORBIDDEN"},
				{"Bearer " + strings.ToUpper(adminToken), 403, "M_FORBIDDEN"},
				{"Bearer " + adminToken[:len(adminToken)-1], 403, "M_FORBIDDEN"},
				{"Bearer " + alice.Token, 403, "M_FORBIDDEN"},
			} {
				for _, rt := range []struct{ method, path string }{
					{"GET", aliceAt + "/threepids"},
					{"GET", adminPrefix + "/threepids/email/adm-alice%40example.org"},
					{"DELETE", aliceAt + "/threepids/email/adm-alice%40example.org"},
					{"POST", aliceAt + "/deactivate"},
				} {
					headers := map[string]string{}
					if h.header != "" {
						headers["Authorization"] = h.header
					}
					harness.Expect(t, harness.DoHeaders(t, rt.method, e.URL+rt.path, "", headers), h.status, h.errcode)
				}
			}
			if after := state(); after != before {
				t.Fatalf("state changed: %s -> %s", before, after)
			}
		})

		t.Run("bad paths", func(t *testing.T) {
			before := state()
			for _, c := range []struct {
				method, path string
				status       int
				errcode      string
			}{
				{"GET", "/users/adm-alice/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40adm-alice/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40%3Ahs.test/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%2540adm-alice%253Ahs.test/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40adm-alice%3Ahs.test%3A8448/threepids", 400, "M_INVALID_PARAM"},
				{"GET", "/users/%40adm-alice%3Aother.test/threepids", 400, "M_INVALID_PARAM"},
				{"POST", "/users/%40adm-alice%3Aother.test/deactivate", 400, "M_INVALID_PARAM"},
				{"DELETE", "/users/%40adm-bob%3Aother.test/threepids/email/adm-bob%40example.org", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/phone/447700900123", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/EMAIL/adm-alice%40example.org", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/email/adm-alice", 400, "M_INVALID_PARAM"},
				{"GET", "/threepids/msisdn/%2B44%20abc", 400, "M_INVALID_PARAM"},
				{"DELETE", "/users/%40adm-alice%3Ahs.test/threepids/phone/adm-alice%40example.org", 400, "M_INVALID_PARAM"},
				{"DELETE", "/users/%40adm-bob%3Ahs.test/threepids/email/adm-alice%40example.org", 404, "M_NOT_FOUND"},
				{"DELETE", "/users/%40adm-alice%3Ahs.test/threepids/email/adm-alice%40example.org.evil", 404, "M_NOT_FOUND"},
				{"GET", "/threepids/email/nobody%40example.org", 404, "M_NOT_FOUND"},
				{"POST", "/users/%40adm-alice%3Ahs.test/threepids", 405, "M_UNRECOGNIZED"},
				{"GET", "/users/%40adm-alice%3Ahs.test/deactivate", 405, "M_UNRECOGNIZED"},
				{"GET", "/users/%40adm-alice%3Ahs.test/threepids/", 404, "M_UNRECOGNIZED"},
				{"GET", "/users/%40adm-alice%3Ahs.test/threepids/email", 404, "M_UNRECOGNIZED"},
			} {
				harness.Expect(t, e.Do(c.method, adminPrefix+c.path, adminToken, nil), c.status, c.errcode)
			}
			if after := state(); after != before {
				t.Fatalf("state changed: %s -> %s", before, after)
			}
		})

		t.Run("user IDs and addresses in any encoding", func(t *testing.T) {
			for _, path := range []string{"/users/%40adm-alice%3Ahs.test/threepids", "/users/@adm-alice:hs.test/threepids", "/users/%40adm-alice:hs.test/threepids"} {
				r := e.Do("GET", adminPrefix+path, adminToken, nil)
				harness.Expect(t, r, 200, "")
				if tps, _ := r.JSON(t)["threepids"].([]any); len(tps) != 1 {
					t.Fatalf("%s: %s", path, r.Body)
				}
			}
			// A user ID with an encoded "/" is one path segment; a user
			// unknown to threepidd simply holds nothing.
			r := e.Do("GET", adminPrefix+"/users/%40a%2Fb%3Ahs.test/threepids", adminToken, nil)
			harness.Expect(t, r, 200, "")
			if string(r.Body) != `{"bindings":[],"threepids":[]}` {
				t.Fatalf("unknown user: %s", r.Body)
			}
			for _, address := range []string{"adm-alice%40example.org", "ADM-Alice%40EXAMPLE.ORG", "%20adm-alice%40example.org%20", "adm-alice@Example.org"} {
				r := e.Do("GET", adminPrefix+"/threepids/email/"+address, adminToken, nil)
				harness.Expect(t, r, 200, "")
				if got := r.JSON(t)["user_id"]; got != alice.ID {
					t.Fatalf("%s: owner %v", address, got)
				}
			}
		})

		t.Run("delete with a non-canonical address", func(t *testing.T) {
			r := e.Do("DELETE", adminPrefix+"/users/%40adm-bob%3Ahs.test/threepids/email/%20ADM-BOB%40Example.Org", adminToken, nil)
			harness.Expect(t, r, 200, "")
			if string(r.Body) != "{}" || len(e.Threepids(t, bob)) != 0 {
				t.Fatalf("answer %s, bob holds %v", r.Body, e.Threepids(t, bob))
			}
		})

		t.Run("deactivate is idempotent", func(t *testing.T) {
			for i, want := range []string{"success", "success"} {
				r := e.Do("POST", aliceAt+"/deactivate", adminToken, nil)
				if got := unbindResult(t, r); got != want {
					t.Fatalf("deactivate #%d: %s", i+1, got)
				}
				if len(e.Threepids(t, alice)) != 0 || len(e.BindingsOf(t, alice, "adm-alice@example.org")) != 0 {
					t.Fatalf("after deactivate #%d alice holds %v", i+1, e.Threepids(t, alice))
				}
			}
			if calls := e.IS[0].UnbindCalls(); len(calls) != 1 {
				t.Fatalf("%d unbind calls, want 1", len(calls))
			}
			r := e.Do("POST", adminPrefix+"/users/%40never%3Ahs.test/deactivate", adminToken, []byte(`not json`))
			if got := unbindResult(t, r); got != "success" {
				t.Fatalf("deactivate of an unknown user: %s", got)
			}
		})
	})
}
