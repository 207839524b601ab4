package federation

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestSendOnUpdate(t *testing.T) {
	f := newVerifierFixture(t)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	t.Cleanup(broken.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name, origin, baseURL string
		u                     OnUpdate
		wantBody              string       // what the Verifier accepted; "" when it must fail
		wantRemote            *RemoteError // nil: no RemoteError expected
		wantErr               string       // in the error, when one is expected
	}{
		{"deletion without mxid", "id.example", f.server.URL, OnUpdate{Threepid: "a@b.c", Deleted: true},
			`{"threepid":"a@b.c","deleted":true}`, nil, ""},
		{"takeover with medium, base URL with slash", "vector.example", f.server.URL + "/", OnUpdate{Threepid: "a@b.c", Medium: "email", MXID: "@bob:bob.example"},
			`{"threepid":"a@b.c","medium":"email","deleted":false,"mxid":"@bob:bob.example"}`, nil, ""},
		{"forbidden origin", "quiet.example", f.server.URL, OnUpdate{Threepid: "a@b.c", Deleted: true},
			"", &RemoteError{Status: 403, ErrCode: "M_FORBIDDEN", Message: "Identity server quiet.example may not call onupdate"}, "403 Forbidden: M_FORBIDDEN"},
		{"unknown origin", "evil.example", f.server.URL, OnUpdate{Threepid: "a@b.c", Deleted: true},
			"", &RemoteError{Status: 401, ErrCode: "M_UNAUTHORIZED", Message: `Origin "evil.example" is not a configured identity server`}, "401"},
		{"non-Matrix error", "id.example", broken.URL, OnUpdate{Threepid: "a@b.c", Deleted: true},
			"", &RemoteError{Status: 502}, "remote answered 502 Bad Gateway"},
		{"connection refused", "id.example", closed.URL, OnUpdate{Threepid: "a@b.c", Deleted: true},
			"", nil, "send onupdate to hs.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.server.accepted.Store(nil)
			err := SendOnUpdate(context.Background(), nil, f.idKey, tt.origin, testServerName, tt.baseURL, tt.u)
			if tt.wantBody != "" {
				if err != nil {
					t.Fatalf("SendOnUpdate: %v", err)
				}
				if got := f.server.accepted.Load(); got == nil || *got != tt.wantBody {
					t.Errorf("accepted body %v, want %s", got, tt.wantBody)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SendOnUpdate error = %v, want one containing %q", err, tt.wantErr)
			}
			var re *RemoteError
			if got := errors.As(err, &re); got != (tt.wantRemote != nil) {
				t.Fatalf("error %v: RemoteError %v, want %v", err, got, tt.wantRemote != nil)
			}
			if tt.wantRemote != nil && *re != *tt.wantRemote {
				t.Errorf("RemoteError = %+v, want %+v", *re, *tt.wantRemote)
			}
			if f.server.accepted.Load() != nil {
				t.Error("the homeserver accepted a request that failed")
			}
		})
	}
}
