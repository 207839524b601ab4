package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
)

// TestCallBound checks that a homeserver that accepts the connection and never
// answers gets every kind of call a 504 M_UNKNOWN once the call bound passes,
// and that the hanging request is abandoned (its context is cancelled). The
// bound is shortened from CallTimeout here; the fake answers 200 after 10 s, so
// a missing bound shows as a success, not as a hung test.
func TestCallBound(t *testing.T) {
	abandoned := make(chan struct{}, 8)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Go's server notices a closed connection only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			abandoned <- struct{}{}
		case <-time.After(10 * time.Second):
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"user_id":"@alice:example.org"}`))
		}
	}))
	defer hs.Close()

	for _, kind := range []string{config.KindSynapse, config.KindDendrite} {
		c, err := New(config.Homeserver{URL: hs.URL, Kind: kind}, outbound.NewTransport())
		if err != nil {
			t.Fatal(err)
		}
		c.callTimeout = 200 * time.Millisecond
		caller := Caller{AccessToken: "tok"}
		calls := []struct {
			name string
			call func() error
		}{
			{"whoami", func() error { _, err := c.WhoAmI(context.Background(), caller); return err }},
			{"UIA relay", func() error {
				return c.RelayUIA(context.Background(), caller, "@alice:example.org", json.RawMessage(`{"type":"m.login.password"}`))
			}},
			{"forward", func() error {
				_, _, err := c.Forward(context.Background(), caller, http.MethodPost, "/_matrix/client/v3/account/deactivate", []byte(`{}`))
				return err
			}},
		}
		for _, tc := range calls {
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				err := tc.call()
				var mx *mxerr.Error
				if !errors.As(err, &mx) {
					t.Fatalf("err = %v, want a Matrix error", err)
				}
				if mx.Status != http.StatusGatewayTimeout || mx.ErrCode != "M_UNKNOWN" {
					t.Fatalf("got %d %s (%s), want 504 M_UNKNOWN", mx.Status, mx.ErrCode, mx.Message)
				}
				select {
				case <-abandoned:
				case <-time.After(5 * time.Second):
					t.Fatal("the homeserver request was not abandoned")
				}
			})
		}
	}
}
