package onupdate_test

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/onupdate"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/threepid"
)

// The seed corpora are in testdata/fuzz/.

// FuzzParse checks that Parse never panics, refuses with a 400 Matrix error,
// and accepts only canonical updates: a non-empty address that is a fixed
// point of canonicalisation, medium email or msisdn, a valid mxid whenever
// one is set (always for an update). An accepted update survives a round trip
// through the wire form, with and without medium.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := onupdate.Parse(data)
		if err != nil {
			var me *mxerr.Error
			if !errors.As(err, &me) || me.Status != 400 || me.ErrCode == "" {
				t.Fatalf("Parse(%q) failed with %#v, want a 400 Matrix error", data, err)
			}
			return
		}
		if u.Medium != threepid.MediumEmail && u.Medium != threepid.MediumMSISDN {
			t.Fatalf("Parse(%q): medium %q", data, u.Medium)
		}
		if u.Address == "" {
			t.Fatalf("Parse(%q): empty address", data)
		}
		if again, err := threepid.CanonicalAddress(u.Medium, u.Address); err != nil || again != u.Address {
			t.Fatalf("Parse(%q): address %q is not canonical (%q, %v)", data, u.Address, again, err)
		}
		if (!u.Deleted || u.MXID != "") && !threepid.ValidUserID(u.MXID) {
			t.Fatalf("Parse(%q): mxid %q with deleted=%v", data, u.MXID, u.Deleted)
		}
		for _, medium := range []string{u.Medium, ""} {
			wire, err := json.Marshal(federation.OnUpdate{Threepid: u.Address, Medium: medium, Deleted: u.Deleted, MXID: u.MXID})
			if err != nil {
				t.Fatal(err)
			}
			if back, err := onupdate.Parse(wire); err != nil || back != u {
				t.Fatalf("Parse(%q) = %+v, but its wire form %s parses to %+v, %v", data, u, wire, back, err)
			}
		}
	})
}

// FuzzHandler sends each input as a request body, signed by the identity
// server when it is JSON (else under a signature of "{}"), to the endpoint on
// a SQLite store holding two bindings. The answer is always 200 {} or a 4xx
// Matrix error, never a 5xx; it is 200 exactly when the body was signed and
// Parse accepts it.
func FuzzHandler(f *testing.F) {
	store := storagetest.Open(f, storagetest.Backend{Name: "sqlite", Driver: backend.SQLite, DSN: filepath.Join(f.TempDir(), "fuzz.db")})
	fx := newFixture(f, store, config.Bucket{})
	f.Fuzz(func(t *testing.T, body []byte) {
		fx.bind(t, "@alice:"+hsName, threepid.MediumEmail, "alice@example.org")
		fx.bind(t, "@bob:"+hsName, threepid.MediumMSISDN, "447700900123")
		signed := body
		if !json.Valid(body) {
			signed = []byte("{}")
		}
		auth, signErr := federation.SignRequest(fx.key, isName, hsName, federation.DestinationField, "POST", federation.OnUpdatePath, signed)
		if signErr != nil {
			// gomatrixserverlib refuses some JSON (e.g. invalid UTF-8 in
			// strings, numbers outside its range): send it under "{}".
			signed = []byte("{}")
			var err error
			if auth, err = federation.SignRequest(fx.key, isName, hsName, federation.DestinationField, "POST", federation.OnUpdatePath, signed); err != nil {
				t.Fatal(err)
			}
		}
		w := fx.postWithHeader(auth, body)
		checkAnswer(t, body, w)
		_, parseErr := onupdate.Parse(body)
		wantOK := signErr == nil && string(signed) == string(body) && parseErr == nil
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
