package federationapi_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/federationapi"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/ratelimit"
	"github.com/threepidd/threepidd/router"
	"github.com/threepidd/threepidd/storage"
)

const (
	hsName = "hs.test"
	// isName and otherName may call onupdate; quietName is configured with
	// onupdate: false.
	isName, otherName, quietName = "id.test", "id2.test", "quiet.test"
)

// fixture is the onupdate endpoint of homeserver hs.test on a real store, with
// three identity servers whose keys are pinned (nothing is fetched).
type fixture struct {
	store    storage.Store
	service  *onupdate.Service
	handler  http.Handler
	key      *signingkey.Key // isName's key
	otherKey *signingkey.Key // otherName's key
	quietKey *signingkey.Key // quietName's key
}

// newFixture serves onupdate from store, limiting each identity server to
// limit (zero: unlimited).
func newFixture(t testing.TB, store storage.Store, limit config.Bucket) *fixture {
	t.Helper()
	f := &fixture{store: store, key: generateKey(t, "0"), otherKey: generateKey(t, "1"), quietKey: generateKey(t, "0")}
	pin := func(k *signingkey.Key) map[string]string { return map[string]string{string(k.ID): k.PublicBase64()} }
	servers := []config.IdentityServer{
		{ServerName: isName, OnUpdate: true, VerifyKeys: pin(f.key)},
		{ServerName: otherName, OnUpdate: true, VerifyKeys: pin(f.otherKey)},
		{ServerName: quietName, OnUpdate: false, VerifyKeys: pin(f.quietKey)},
	}
	f.service = &onupdate.Service{Store: store, Bindings: &bindings.Service{Store: store}}
	routes := router.NewRouter()
	(&federationapi.OnUpdate{
		Service:   f.service,
		Verifier:  federation.NewVerifier(hsName, servers, federation.NewKeyRing(nil), nil),
		PerServer: ratelimit.New(store, "onupdate_per_server", limit),
	}).Register(routes)
	f.handler = router.Wrap(routes, nil)
	return f
}

func generateKey(t testing.TB, id string) *signingkey.Key {
	t.Helper()
	k, err := signingkey.Generate(id)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return k
}

// post sends body to the endpoint with an Authorization header signing
// `signed` as origin with key (signed must be JSON).
func (f *fixture) post(t testing.TB, key *signingkey.Key, origin string, signed, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	auth, err := federation.SignRequest(key, origin, hsName, federation.DestinationField, http.MethodPost, onupdate.Path, signed)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return f.postWithHeader(auth, body)
}

// postWithHeader sends body with the given Authorization header ("" for none).
func (f *fixture) postWithHeader(auth string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, onupdate.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, req)
	return w
}

// bind records a binding on isName.
func (f *fixture) bind(t testing.TB, user, medium, address string) {
	t.Helper()
	if err := f.store.UpsertBinding(context.Background(), storage.Binding{UserID: user, Medium: medium, Address: address, IDServer: isName, BoundAt: 1}); err != nil {
		t.Fatalf("record binding: %v", err)
	}
}
