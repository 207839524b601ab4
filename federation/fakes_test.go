package federation

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/mxerr"
)

// fakeIdentityServer serves GET /_matrix/identity/v2/pubkey/{keyId} on
// 127.0.0.1 and counts the requests it gets.
type fakeIdentityServer struct {
	*httptest.Server
	hits atomic.Int64
	// arrived, if set, receives a value as each request comes in.
	arrived chan struct{}
	// gate, if set, holds every request until it is closed.
	gate chan struct{}

	mu     sync.Mutex
	keys   map[string]string // key ID -> unpadded base64
	status int               // non-zero: answer every request with this status
}

func newFakeIdentityServer(t *testing.T, keys ...*signingkey.Key) *fakeIdentityServer {
	t.Helper()
	f := &fakeIdentityServer{keys: make(map[string]string)}
	for _, k := range keys {
		f.keys[string(k.ID)] = k.PublicBase64()
	}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeIdentityServer) serve(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	if f.arrived != nil {
		f.arrived <- struct{}{}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-r.Context().Done():
			return
		}
	}
	keyID, ok := strings.CutPrefix(r.URL.Path, pubkeyPath)
	if r.Method != http.MethodGet || !ok {
		mxerr.Write(w, r, mxerr.Unrecognized)
		return
	}
	f.mu.Lock()
	status, key, found := f.status, f.keys[keyID], f.keys[keyID] != ""
	f.mu.Unlock()
	switch {
	case status != 0:
		mxerr.WriteJSON(w, status, map[string]string{"errcode": "M_UNKNOWN", "error": "broken"})
	case !found:
		mxerr.Write(w, r, mxerr.NotFound.WithMessage("The public key was not found"))
	default:
		mxerr.WriteJSON(w, http.StatusOK, map[string]string{"public_key": key})
	}
}

// setStatus makes every later request fail with status (0: serve keys again).
func (f *fakeIdentityServer) setStatus(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = status
}

// mustGenerate makes a key or fails the test.
func mustGenerate(t testing.TB, id string) *signingkey.Key {
	t.Helper()
	k, err := signingkey.Generate(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
