package federation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/config"
)

// fakeClock is a settable time source for the KeyRing's expiries.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestKeyRing returns a KeyRing whose clock the test drives.
func newTestKeyRing() (*KeyRing, *fakeClock) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	k := NewKeyRing(nil)
	k.now = clock.Now
	return k, clock
}

func TestKeyRingPinned(t *testing.T) {
	pinned := mustGenerate(t, "0")
	fake := newFakeIdentityServer(t, pinned, mustGenerate(t, "1"))
	is := config.IdentityServer{
		ServerName: "id.example",
		BaseURL:    fake.URL,
		VerifyKeys: map[string]string{"ed25519:0": pinned.PublicBase64(), "ed25519:bad": "AAAA"},
	}
	k, _ := newTestKeyRing()
	got, err := k.PublicKey(context.Background(), is, "ed25519:0")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pinned.PublicKey()) {
		t.Error("pinned key: got another key")
	}
	if _, err := k.PublicKey(context.Background(), is, "ed25519:1"); err == nil || !strings.Contains(err.Error(), "not among its pinned verify_keys") {
		t.Errorf("key outside the pins: err = %v, want not among its pinned verify_keys", err)
	}
	if _, err := k.PublicKey(context.Background(), is, "ed25519:bad"); err == nil || !strings.Contains(err.Error(), "3 bytes") {
		t.Errorf("malformed pin: err = %v", err)
	}
	if n := fake.hits.Load(); n != 0 {
		t.Errorf("identity server got %d requests, want none with pins", n)
	}
}

func TestKeyRingFetchesOnceAndCaches(t *testing.T) {
	key := mustGenerate(t, "0")
	fake := newFakeIdentityServer(t, key)
	fake.arrived = make(chan struct{}, 100)
	fake.gate = make(chan struct{})
	is := config.IdentityServer{ServerName: "id.example", BaseURL: fake.URL + "/"}
	k, clock := newTestKeyRing()

	const callers = 20
	start := make(chan struct{})
	errs := make(chan error, callers)
	for range callers {
		go func() {
			<-start
			got, err := k.PublicKey(context.Background(), is, "ed25519:0")
			if err == nil && !got.Equal(key.PublicKey()) {
				err = errors.New("wrong key")
			}
			errs <- err
		}()
	}
	close(start)
	<-fake.arrived // the one fetch is under way; hold it until every caller had its chance to miss
	close(fake.gate)
	for range callers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := fake.hits.Load(); n != 1 {
		t.Fatalf("%d concurrent misses made %d fetches, want 1", callers, n)
	}

	if _, err := k.PublicKey(context.Background(), is, "ed25519:0"); err != nil {
		t.Fatal(err)
	}
	if n := fake.hits.Load(); n != 1 {
		t.Errorf("cached key fetched again: %d fetches", n)
	}
	clock.Advance(keyTTL + time.Second)
	if _, err := k.PublicKey(context.Background(), is, "ed25519:0"); err != nil {
		t.Fatal(err)
	}
	if n := fake.hits.Load(); n != 2 {
		t.Errorf("after the key TTL: %d fetches, want 2", n)
	}
}

func TestKeyRingNegativeCache(t *testing.T) {
	key := mustGenerate(t, "0")
	tests := []struct {
		name    string
		status  int // identity server failure, 0 for none
		keyID   string
		wantErr string
	}{
		{"server error", http.StatusBadGateway, "ed25519:0", "502"},
		{"unknown key", 0, "ed25519:unknown", "M_NOT_FOUND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFakeIdentityServer(t, key)
			fake.setStatus(tt.status)
			is := config.IdentityServer{ServerName: "id.example", BaseURL: fake.URL}
			k, clock := newTestKeyRing()
			for range 3 {
				if _, err := k.PublicKey(context.Background(), is, tt.keyID); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
			}
			if n := fake.hits.Load(); n != 1 {
				t.Fatalf("3 lookups of a failing key made %d fetches, want 1", n)
			}
			fake.setStatus(0)
			clock.Advance(negativeTTL - time.Second)
			if _, err := k.PublicKey(context.Background(), is, tt.keyID); err == nil {
				t.Fatal("failure forgotten before the negative TTL")
			}
			clock.Advance(2 * time.Second)
			_, err := k.PublicKey(context.Background(), is, tt.keyID)
			if n := fake.hits.Load(); n != 2 {
				t.Errorf("after the negative TTL: %d fetches, want 2", n)
			}
			if wantOK := tt.keyID == string(key.ID); (err == nil) != wantOK {
				t.Errorf("after the negative TTL: err = %v, want success %v", err, wantOK)
			}
		})
	}
}

func TestKeyRingBadAnswersAndKeyIDs(t *testing.T) {
	mux := http.NewServeMux()
	answers := map[string]string{
		"ed25519:notjson": `nope`,
		"ed25519:short":   `{"public_key":"AAAA"}`,
		"ed25519:notb64":  `{"public_key":"!!!"}`,
		"ed25519:empty":   `{}`,
		"ed25519:big":     `{"x":"` + strings.Repeat("a", maxPubkeyBody) + `"}`,
	}
	var hits atomic.Int64
	mux.HandleFunc("GET "+pubkeyPath+"{keyID}", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(answers[r.PathValue("keyID")]))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	is := config.IdentityServer{ServerName: "id.example", BaseURL: srv.URL}
	k, _ := newTestKeyRing()
	for _, tt := range []struct{ keyID, wantErr string }{
		{"ed25519:notjson", "invalid character"},
		{"ed25519:short", "3 bytes, want 32"},
		{"ed25519:notb64", "not base64"},
		{"ed25519:empty", "0 bytes, want 32"},
		{"ed25519:big", "larger than"},
		{"curve25519:0", "not an ed25519 key ID"},
		{"ed25519:", "not an ed25519 key ID"},
		{"ed25519:a/../b", "not an ed25519 key ID"},
		{"ed25519:" + strings.Repeat("a", maxKeyIDLen), "not an ed25519 key ID"},
	} {
		t.Run(tt.keyID, func(t *testing.T) {
			if _, err := k.PublicKey(context.Background(), is, tt.keyID); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if n := hits.Load(); n != int64(len(answers)) {
		t.Errorf("identity server got %d requests, want %d (none for malformed key IDs)", n, len(answers))
	}
}

func TestKeyRingCallerGivesUp(t *testing.T) {
	key := mustGenerate(t, "0")
	fake := newFakeIdentityServer(t, key)
	fake.arrived = make(chan struct{}, 10)
	fake.gate = make(chan struct{})
	is := config.IdentityServer{ServerName: "id.example", BaseURL: fake.URL}
	k, _ := newTestKeyRing()

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := k.PublicKey(ctx, is, "ed25519:0")
		first <- err
	}()
	<-fake.arrived
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	second := make(chan error, 1)
	go func() {
		_, err := k.PublicKey(context.Background(), is, "ed25519:0")
		second <- err
	}()
	close(fake.gate)
	if err := <-second; err != nil {
		t.Fatalf("the fetch the first caller started failed for the second: %v", err)
	}
	if n := fake.hits.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

func TestKeyRingVerifyJSON(t *testing.T) {
	isKey := mustGenerate(t, "0")
	stranger := mustGenerate(t, "0")
	fake := newFakeIdentityServer(t, isKey)
	is := config.IdentityServer{ServerName: "matrix.example", SigningName: "vector.im", BaseURL: fake.URL}
	assoc := []byte(`{"address":"a@b.c","medium":"email","mxid":"@a:hs.example","not_before":1,"not_after":2,"ts":1}`)
	signWith := func(name string, id gomatrixserverlib.KeyID, priv []byte) []byte {
		t.Helper()
		out, err := gomatrixserverlib.SignJSON(name, id, priv, assoc)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name        string
		obj         []byte
		signingName string
		wantErr     string
	}{
		{"signed by the identity server", signWith("vector.im", isKey.ID, isKey.Private), "vector.im", ""},
		{"signed by a stranger", signWith("vector.im", stranger.ID, stranger.Private), "vector.im", "Bad signature"},
		{"signed under another name", signWith("matrix.example", isKey.ID, isKey.Private), "vector.im", "no ed25519 signature by vector.im"},
		{"unknown key", signWith("vector.im", "ed25519:1", isKey.Private), "vector.im", "M_NOT_FOUND"},
		{"other algorithm only", signWith("vector.im", "curve25519:0", isKey.Private), "vector.im", "no ed25519 signature"},
		{"unsigned", assoc, "vector.im", "no ed25519 signature"},
		{"not an object", []byte(`[1]`), "vector.im", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := newTestKeyRing()
			err := k.VerifyJSON(context.Background(), is, tt.signingName, tt.obj)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyJSON: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("VerifyJSON error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestKeyRingFetchBudget: key IDs come from an unauthenticated header, so
// lookups of keys nobody has must not turn into unbounded fetches, nor push a
// good key out of the cache.
func TestKeyRingFetchBudget(t *testing.T) {
	key := mustGenerate(t, "0")
	fake := newFakeIdentityServer(t, key)
	is := config.IdentityServer{ServerName: "id.example", BaseURL: fake.URL}
	k, clock := newTestKeyRing()
	ctx := context.Background()

	for i := range 2 * fetchBurst {
		_, err := k.PublicKey(ctx, is, fmt.Sprintf("ed25519:made_up_%d", i))
		if err == nil {
			t.Fatalf("made-up key %d: no error", i)
		}
		if i >= fetchBurst && !strings.Contains(err.Error(), "too many key fetches") {
			t.Fatalf("lookup %d over the budget: err = %v", i, err)
		}
	}
	if n := fake.hits.Load(); n != fetchBurst {
		t.Fatalf("%d lookups of made-up keys made %d fetches, want %d", 2*fetchBurst, n, fetchBurst)
	}
	if _, err := k.PublicKey(ctx, is, "ed25519:0"); err == nil || !strings.Contains(err.Error(), "too many key fetches") {
		t.Fatalf("real key with the budget spent: err = %v", err)
	}
	clock.Advance(time.Second)
	if got, err := k.PublicKey(ctx, is, "ed25519:0"); err != nil || !got.Equal(key.PublicKey()) {
		t.Fatalf("real key once the budget refilled: %v", err)
	}

	// More failures than the cache holds do not evict the good key.
	hits := fake.hits.Load()
	for i := range keyCacheSize + 100 {
		clock.Advance(time.Second)
		if _, err := k.PublicKey(ctx, is, fmt.Sprintf("ed25519:flood_%d", i)); err == nil {
			t.Fatalf("flood key %d: no error", i)
		}
	}
	if _, err := k.PublicKey(ctx, is, "ed25519:0"); err != nil {
		t.Fatal(err)
	}
	if n := fake.hits.Load() - hits; n != keyCacheSize+100 {
		t.Fatalf("good key fetched again after a flood of failures (%d fetches for %d failures)", n, keyCacheSize+100)
	}

	// Past its TTL, with the budget spent, the key we had still verifies.
	clock.Advance(keyTTL)
	for i := range fetchBurst {
		_, _ = k.PublicKey(ctx, is, fmt.Sprintf("ed25519:again_%d", i))
	}
	if got, err := k.PublicKey(ctx, is, "ed25519:0"); err != nil || !got.Equal(key.PublicKey()) {
		t.Fatalf("stale key with the budget spent: %v", err)
	}
}

// TestKeyRingFetchBudgetPerSource: lookups of made-up keys from one source
// spend that source's budget only, so another source (the identity server
// itself, after a key rotation) still gets its key fetched; all sources
// together stop at the identity server's own ceiling.
func TestKeyRingFetchBudgetPerSource(t *testing.T) {
	rotated := mustGenerate(t, "rotated")
	fake := newFakeIdentityServer(t, rotated)
	is := config.IdentityServer{ServerName: "id.example", BaseURL: fake.URL}
	k, clock := newTestKeyRing()
	ctx := context.Background()
	const forger, genuine = "192.0.2.66", "198.51.100.7"

	for i := range 10 * fetchBurst {
		if _, err := k.PublicKeyFor(ctx, is, fmt.Sprintf("ed25519:forged_%d", i), forger); err == nil {
			t.Fatalf("made-up key %d: no error", i)
		}
	}
	if n := fake.hits.Load(); n != fetchBurst {
		t.Fatalf("%d lookups from one source made %d fetches, want %d", 10*fetchBurst, n, fetchBurst)
	}
	if got, err := k.PublicKeyFor(ctx, is, string(rotated.ID), genuine); err != nil || !got.Equal(rotated.PublicKey()) {
		t.Fatalf("the rotated key from another source while the forger's budget is spent: %v", err)
	}

	// Many sources together reach the identity server's ceiling, and then
	// every source is refused until it refills.
	hits := fake.hits.Load()
	for i := range serverFetchBurst {
		_, _ = k.PublicKeyFor(ctx, is, fmt.Sprintf("ed25519:spread_%d", i), fmt.Sprintf("203.0.113.%d", i))
	}
	if n := fake.hits.Load() - hits; n >= serverFetchBurst {
		t.Fatalf("%d sources made %d fetches, want fewer than the ceiling of %d", serverFetchBurst, n, serverFetchBurst)
	}
	if _, err := k.PublicKeyFor(ctx, is, "ed25519:late", "192.0.2.200"); err == nil || !strings.Contains(err.Error(), "too many key fetches") {
		t.Fatalf("a fresh source over the identity server's ceiling: err = %v", err)
	}
	clock.Advance(time.Second)
	if _, err := k.PublicKeyFor(ctx, is, "ed25519:later", "192.0.2.200"); err == nil || strings.Contains(err.Error(), "too many key fetches") {
		t.Fatalf("once the ceiling refilled: err = %v, want the identity server's 404", err)
	}
}

func TestSourceOf(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":            "192.0.2.1",
		"::ffff:192.0.2.1":     "192.0.2.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
		"not an address":       "not an address",
		"":                     "",
	} {
		if got := SourceOf(in); got != want {
			t.Errorf("SourceOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestKeyRingNoRedirect: a key comes from the identity server's own URL or
// not at all; a redirect (to an internal URL, say) is not followed, whatever
// client the KeyRing was given.
func TestKeyRingNoRedirect(t *testing.T) {
	key := mustGenerate(t, "0")
	elsewhere := newFakeIdentityServer(t, key)
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(moved.Close)
	is := config.IdentityServer{ServerName: "id.example", BaseURL: moved.URL}
	for name, client := range map[string]*http.Client{"default client": nil, "client following redirects": {Timeout: 5 * time.Second}} {
		t.Run(name, func(t *testing.T) {
			k := NewKeyRing(client)
			if _, err := k.PublicKey(context.Background(), is, "ed25519:0"); err == nil || !strings.Contains(err.Error(), "302") {
				t.Fatalf("err = %v, want the 302 as the answer", err)
			}
		})
	}
	if n := elsewhere.hits.Load(); n != 0 {
		t.Fatalf("the redirect target got %d requests", n)
	}
}
