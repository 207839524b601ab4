package federationapi_test

import (
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/threepid"
)

// The seed corpora are in testdata/fuzz/.

// fuzzNow is the fuzzed endpoint's clock: the seeds' ts are around it.
var fuzzNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// FuzzHandler sends each input as a request body, signed by the identity
// server when it is JSON (else under a signature of "{}"), to the endpoint on
// a SQLite store holding two bindings, at fuzzNow. The answer is always 200 {}
// or a 4xx Matrix error, never a 5xx; it is 200 exactly when the body was
// signed, Parse accepts it and its ts, if any, is within the window.
func FuzzHandler(f *testing.F) {
	store := storagetest.Open(f, storagetest.Backend{Name: "sqlite", Driver: backend.SQLite, DSN: filepath.Join(f.TempDir(), "fuzz.db")})
	fx := newFixture(f, store, config.Bucket{})
	fx.service.Clock = func() time.Time { return fuzzNow }
	fx.service.MaxAge, fx.service.ClockSkew = config.DefaultOnUpdateMaxAge, config.DefaultOnUpdateClockSkew
	f.Fuzz(func(t *testing.T, body []byte) {
		fx.bind(t, "@alice:"+hsName, threepid.MediumEmail, "alice@example.org")
		fx.bind(t, "@bob:"+hsName, threepid.MediumMSISDN, "447700900123")
		signed := body
		if !json.Valid(body) {
			signed = []byte("{}")
		}
		auth, signErr := federation.SignRequest(fx.key, isName, hsName, federation.DestinationField, "POST", onupdate.Path, signed)
		if signErr != nil {
			// gomatrixserverlib refuses some JSON (e.g. invalid UTF-8 in
			// strings, numbers outside its range): send it under "{}".
			signed = []byte("{}")
			var err error
			if auth, err = federation.SignRequest(fx.key, isName, hsName, federation.DestinationField, "POST", onupdate.Path, signed); err != nil {
				t.Fatal(err)
			}
		}
		w := fx.postWithHeader(auth, body)
		checkAnswer(t, body, w)
		u, parseErr := onupdate.Parse(body)
		ts := time.UnixMilli(u.TS)
		inWindow := u.TS == 0 || !ts.Before(fuzzNow.Add(-config.DefaultOnUpdateMaxAge)) && !ts.After(fuzzNow.Add(config.DefaultOnUpdateClockSkew))
		wantOK := signErr == nil && string(signed) == string(body) && parseErr == nil && inWindow
		if (w.Code == 200) != wantOK {
			t.Fatalf("body %q (Parse: %v, signed: %v): answer %d %s", body, parseErr, signErr == nil, w.Code, w.Body)
		}
	})
}

// checkAnswer fails unless w is 200 {} or a 4xx {"errcode": "M_...", "error"}.
func checkAnswer(t testing.TB, body []byte, w *httptest.ResponseRecorder) {
	t.Helper()
	var answer map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
		t.Fatalf("body %q: answer %d is not a JSON object: %s", body, w.Code, w.Body)
	}
	if w.Code == 200 {
		if len(answer) != 0 {
			t.Fatalf("body %q: 200 with %s, want {}", body, w.Body)
		}
		return
	}
	code, _ := answer["errcode"].(string)
	_, hasMessage := answer["error"].(string)
	if w.Code < 400 || w.Code > 499 || len(code) < 3 || code[:2] != "M_" || !hasMessage {
		t.Fatalf("body %q: answer %d %s, want 200 or a 4xx Matrix error", body, w.Code, w.Body)
	}
}
