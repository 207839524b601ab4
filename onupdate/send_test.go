package onupdate_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/onupdate"
)

const hsName = "hs.example"

// receiver is a homeserver's onupdate endpoint: it verifies requests as
// threepidd does and records the body it accepted.
type receiver struct {
	*httptest.Server
	idKey    *signingkey.Key
	accepted atomic.Pointer[string]
}

// newReceiver serves the endpoint for three identity servers sharing idKey,
// pinned: id.example, matrix.example signing as vector.example, and
// quiet.example, which may not call onupdate.
func newReceiver(t *testing.T) *receiver {
	t.Helper()
	key, err := signingkey.Generate("0")
	if err != nil {
		t.Fatal(err)
	}
	pin := map[string]string{string(key.ID): key.PublicBase64()}
	v := federation.NewVerifier(hsName, []config.IdentityServer{
		{ServerName: "id.example", OnUpdate: true, VerifyKeys: pin},
		{ServerName: "matrix.example", SigningName: "vector.example", OnUpdate: true, VerifyKeys: pin},
		{ServerName: "quiet.example", OnUpdate: false, VerifyKeys: pin},
	}, federation.NewKeyRing(nil), nil)
	rc := &receiver{idKey: key}
	rc.Server = httptest.NewServer(mxerr.Handler(func(w http.ResponseWriter, r *http.Request) error {
		_, content, err := v.Verify(r, onupdate.MaxBody)
		if err != nil {
			return err
		}
		accepted := string(content)
		rc.accepted.Store(&accepted)
		mxerr.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}))
	t.Cleanup(rc.Close)
	return rc
}

func TestSend(t *testing.T) {
	f := newReceiver(t)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	t.Cleanup(broken.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name, origin, baseURL string
		u                     onupdate.Body
		wantBody              string        // what the Verifier accepted; "" when it must fail
		wantRemote            *mxerr.Remote // nil: no RemoteError expected
		wantErr               string        // in the error, when one is expected
	}{
		{"deletion without mxid", "id.example", f.URL, onupdate.Body{Threepid: "a@b.c", Deleted: true},
			`{"threepid":"a@b.c","deleted":true}`, nil, ""},
		{"takeover with medium, base URL with slash", "vector.example", f.URL + "/", onupdate.Body{Threepid: "a@b.c", Medium: "email", MXID: "@bob:bob.example"},
			`{"threepid":"a@b.c","medium":"email","deleted":false,"mxid":"@bob:bob.example"}`, nil, ""},
		{"forbidden origin", "quiet.example", f.URL, onupdate.Body{Threepid: "a@b.c", Deleted: true},
			"", &mxerr.Remote{Status: 403, ErrCode: "M_FORBIDDEN", Message: "Identity server quiet.example may not call onupdate"}, "403 Forbidden: M_FORBIDDEN"},
		{"unknown origin", "evil.example", f.URL, onupdate.Body{Threepid: "a@b.c", Deleted: true},
			"", &mxerr.Remote{Status: 401, ErrCode: "M_UNAUTHORIZED", Message: "Unauthorized"}, "401"},
		{"non-Matrix error", "id.example", broken.URL, onupdate.Body{Threepid: "a@b.c", Deleted: true},
			"", &mxerr.Remote{Status: 502}, "remote answered 502 Bad Gateway"},
		{"connection refused", "id.example", closed.URL, onupdate.Body{Threepid: "a@b.c", Deleted: true},
			"", nil, "send onupdate to hs.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.accepted.Store(nil)
			err := onupdate.Send(context.Background(), nil, f.idKey, tt.origin, hsName, tt.baseURL, tt.u)
			if tt.wantBody != "" {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				if got := f.accepted.Load(); got == nil || *got != tt.wantBody {
					t.Errorf("accepted body %v, want %s", got, tt.wantBody)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Send error = %v, want one containing %q", err, tt.wantErr)
			}
			var re *mxerr.Remote
			if got := errors.As(err, &re); got != (tt.wantRemote != nil) {
				t.Fatalf("error %v: Remote %v, want %v", err, got, tt.wantRemote != nil)
			}
			if tt.wantRemote != nil && *re != *tt.wantRemote {
				t.Errorf("Remote = %+v, want %+v", *re, *tt.wantRemote)
			}
			if f.accepted.Load() != nil {
				t.Error("the homeserver accepted a request that failed")
			}
		})
	}
}

// TestSendNoRedirect: a signed update goes to the URL it was signed for or
// nowhere: a redirect is the answer (an error), never followed, even with a
// client that follows redirects.
func TestSendNoRedirect(t *testing.T) {
	f := newReceiver(t)
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, f.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(moved.Close)
	for name, client := range map[string]*http.Client{"default client": nil, "client following redirects": http.DefaultClient} {
		t.Run(name, func(t *testing.T) {
			err := onupdate.Send(context.Background(), client, f.idKey, "id.example", hsName, moved.URL, onupdate.Body{Threepid: "a@b.c", Deleted: true})
			var re *mxerr.Remote
			if !errors.As(err, &re) || re.Status != http.StatusTemporaryRedirect {
				t.Fatalf("Send = %v, want the 307 as a Remote error", err)
			}
			if f.accepted.Load() != nil {
				t.Fatal("the redirect was followed to the homeserver")
			}
		})
	}
}
