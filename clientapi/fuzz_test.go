package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/clientapi"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/delivery"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/identity"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/router"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"golang.org/x/net/html"
)

// Each Fuzz target below sends its input as the body of every endpoint that
// decodes one body struct (mxerr.UnmarshalObject into tokenBody, submitBody,
// addBody, threepidBody or bindBody), through the real router and handlers
// and services on a SQLite store, with the homeserver and the identity server
// answering in-process. Whatever the body, the answer is a 200 or a 4xx
// Matrix error: never a 5xx, a panic or a body that is not a JSON object.
// The seed corpora are in testdata/fuzz/.

const (
	fuzzUser     = "@fuzz:hs.test"
	fuzzIDServer = "id.test"
)

// roundTripper answers outbound requests in-process.
type roundTripper func(*http.Request) (status int, body string)

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		defer r.Body.Close()
	}
	status, body := rt(r)
	return &http.Response{
		StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/json"}},
		Body:    io.NopCloser(strings.NewReader(body)),
		Request: r,
	}, nil
}

// fakeHomeserver knows one token (of fuzzUser) and passes UIA once the
// client sends an auth dict, as Synapse's relay target answers.
func fakeHomeserver(r *http.Request) (int, string) {
	switch {
	case r.URL.Path == "/_matrix/client/v3/account/whoami":
		return 200, `{"user_id":"` + fuzzUser + `","device_id":"FUZZ"}`
	case r.URL.Path == "/_matrix/client/v3/account/3pid/add":
		var body struct {
			Auth json.RawMessage `json:"auth"`
		}
		data, _ := io.ReadAll(r.Body)
		if json.Unmarshal(data, &body) == nil && len(body.Auth) > 0 {
			return 400, `{"errcode":"M_THREEPID_AUTH_FAILED","error":"unknown sid"}`
		}
		return 401, `{"errcode":"M_UNAUTHORIZED","error":"auth needed","flows":[{"stages":["m.login.password"]}],"params":{},"session":"s"}`
	}
	return 404, `{"errcode":"M_UNRECOGNIZED","error":"not here"}`
}

// fakeIdentityServer knows no validation session and accepts every unbind.
func fakeIdentityServer(r *http.Request) (int, string) {
	switch r.URL.Path {
	case "/_matrix/identity/v2/3pid/getValidated3pid", "/_matrix/identity/v2/3pid/bind":
		return 404, `{"errcode":"M_NO_VALID_SESSION","error":"no such session"}`
	case "/_matrix/identity/v2/3pid/unbind":
		return 200, `{}`
	}
	return 404, `{"errcode":"M_UNRECOGNIZED","error":"not here"}`
}

// discard is an SMS sender that sends nothing, discardMail an e-mail sender.
type (
	discard     struct{}
	discardMail struct{}
)

func (discard) Send(context.Context, string, string, string) error { return nil }
func (discardMail) Send(context.Context, delivery.Message) error   { return nil }

// The validation session the fuzz store holds, whose link pages show a form.
const (
	fuzzSID    = "fuzzsid"
	fuzzSecret = "fuzzsecret"
)

// newFuzzHandler returns the client-server API as the server wires it, on a
// store that holds one validation session (fuzzSID).
func newFuzzHandler(f *testing.F) http.Handler {
	f.Helper()
	store := storagetest.SQLite(f)
	far := time.Now().Add(time.Hour).UnixMilli()
	err := store.CreateSession(context.Background(),
		storage.Session{SID: fuzzSID, ClientSecret: fuzzSecret, Medium: "email", Address: "fuzz@example.org", SendAttempt: 1, ExpiresAt: far},
		storage.SessionToken{SID: fuzzSID, TokenHash: "none", SendAttempt: 1, ExpiresAt: far})
	if err != nil {
		f.Fatal(err)
	}
	hs, err := homeserver.New(config.Homeserver{URL: "http://hs.test", Kind: "synapse", TokenCacheTTL: time.Hour}, roundTripper(fakeHomeserver))
	if err != nil {
		f.Fatal(err)
	}
	key, err := signingkey.Generate("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	authn := &auth.Auth{Homeserver: hs}
	idClient := &http.Client{Transport: roundTripper(fakeIdentityServer), Timeout: 5 * time.Second}
	binds := &bindings.Service{
		Store:    store,
		Identity: identity.NewClient("hs.test", key, federation.NewKeyRing(idClient), idClient),
		Servers:  []config.IdentityServer{{ServerName: fuzzIDServer, BaseURL: "http://" + fuzzIDServer}},
	}
	accounts := &account.Service{Store: store, Email: discardMail{}, SMS: discard{}, PublicBaseURL: "http://threepidd.test", Unbinder: binds}
	routes := router.NewRouter()
	(&clientapi.Account{Service: accounts, Auth: authn}).Register(routes)
	(&clientapi.Bindings{Service: binds, Auth: authn}).Register(routes)
	return router.Wrap(routes, nil)
}

// fuzzEndpoints sends body to each path and checks every answer.
func fuzzEndpoints(f *testing.F, paths ...string) {
	h := newFuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, path := range paths {
			req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer fuzz-token")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			checkAnswer(t, path, body, w)
		}
	})
}

// checkAnswer fails unless w is a 200 with a JSON object, or a 4xx
// {"errcode": "M_...", "error": "..."}.
func checkAnswer(t *testing.T, path string, body []byte, w *httptest.ResponseRecorder) {
	t.Helper()
	var answer map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil || answer == nil {
		t.Fatalf("POST %s %q: answer %d is not a JSON object: %s", path, body, w.Code, w.Body)
	}
	if w.Code == http.StatusOK {
		return
	}
	code, _ := answer["errcode"].(string)
	_, hasMessage := answer["error"].(string)
	if w.Code < 400 || w.Code > 499 || !strings.HasPrefix(code, "M_") || !hasMessage {
		t.Fatalf("POST %s %q: answer %d %s, want 200 or a 4xx Matrix error", path, body, w.Code, w.Body)
	}
}

// FuzzTokenBody: tokenBody, at both requestToken endpoints.
func FuzzTokenBody(f *testing.F) {
	fuzzEndpoints(f, "/_matrix/client/v3/account/3pid/email/requestToken", "/_matrix/client/v3/account/3pid/msisdn/requestToken")
}

// FuzzSubmitBody: submitBody, at both submit_token endpoints.
func FuzzSubmitBody(f *testing.F) {
	fuzzEndpoints(f, account.EmailSubmitPath, account.MSISDNSubmitPath)
}

// FuzzSubmitForm: the form of a validation link's page (POSTed
// form-encoded) and the link itself (its query), at both submit_token
// endpoints. Whatever the input, the answer is an HTML page with a 200 or a
// 4xx, under a Content-Security-Policy, made only of the page's own elements
// (no markup from the input).
func FuzzSubmitForm(f *testing.F) {
	h := newFuzzHandler(f)
	f.Fuzz(func(t *testing.T, input string) {
		for _, path := range []string{account.EmailSubmitPath, account.MSISDNSubmitPath} {
			post := httptest.NewRequest(http.MethodPost, path, strings.NewReader(input))
			post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			get := httptest.NewRequest(http.MethodGet, path, nil)
			get.URL.RawQuery = input
			for _, req := range []*http.Request{post, get} {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK && (w.Code < 400 || w.Code > 499) ||
					!strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") ||
					!strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'none'") {
					t.Fatalf("%s %s %q: answer %d %v: %s", req.Method, path, input, w.Code, w.Header(), w.Body)
				}
				if bad := foreignMarkup(w.Body.String()); bad != "" {
					t.Fatalf("%s %s %q: the page holds %s: %s", req.Method, path, input, bad, w.Body)
				}
			}
		}
	})
}

// pageElements are the elements the validation pages are made of.
var pageElements = map[string]bool{"html": true, "head": true, "meta": true, "title": true, "body": true,
	"h1": true, "p": true, "strong": true, "form": true, "input": true, "button": true, "a": true}

// foreignMarkup returns what in page is not the pages' own markup (an
// element, an event handler or a script URL), or "".
func foreignMarkup(page string) string {
	z := html.NewTokenizer(strings.NewReader(page))
	for {
		switch z.Next() {
		case html.ErrorToken:
			return ""
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			if !pageElements[tok.Data] {
				return "element " + tok.Data
			}
			for _, a := range tok.Attr {
				if strings.HasPrefix(a.Key, "on") || strings.HasPrefix(strings.ToLower(strings.TrimSpace(a.Val)), "javascript:") {
					return "attribute " + a.Key + "=" + a.Val
				}
			}
		}
	}
}

// FuzzAddBody: addBody, at /3pid/add (UIA relayed to the fake homeserver).
func FuzzAddBody(f *testing.F) {
	fuzzEndpoints(f, "/_matrix/client/v3/account/3pid/add")
}

// FuzzThreepidBody: threepidBody, at /3pid/delete and /3pid/unbind.
func FuzzThreepidBody(f *testing.F) {
	fuzzEndpoints(f, "/_matrix/client/v3/account/3pid/delete", "/_matrix/client/v3/account/3pid/unbind")
}

// FuzzBindBody: bindBody, at /3pid/bind and inside three_pid_creds of the
// deprecated POST /account/3pid.
func FuzzBindBody(f *testing.F) {
	fuzzEndpoints(f, "/_matrix/client/v3/account/3pid/bind", "/_matrix/client/v3/account/3pid")
}
