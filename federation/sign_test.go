package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/threepidd/threepidd/federation/signingkey"
)

// signedObject rebuilds by hand, from a header parsed by gomatrixserverlib's
// own parser, the object a request signature must cover.
func signedObject(t *testing.T, header, destinationField, method, uri string, content []byte) []byte {
	t.Helper()
	scheme, origin, destination, keyID, sig := fclient.ParseAuthorization(header)
	if scheme != "X-Matrix" || origin == "" || destination == "" || keyID == "" || sig == "" {
		t.Fatalf("gomatrixserverlib cannot parse header %s", header)
	}
	obj := map[string]any{
		"method":         method,
		"uri":            uri,
		"origin":         origin,
		destinationField: destination,
		"signatures":     map[spec.ServerName]map[gomatrixserverlib.KeyID]string{origin: {keyID: sig}},
	}
	if content != nil {
		obj["content"] = json.RawMessage(content)
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSignRequest(t *testing.T) {
	key := mustGenerate(t, "a_Test")
	other := mustGenerate(t, "a_Test")
	body := []byte(`{"threepid":"alice@example.org","deleted":false,"mxid":"@bob:bob.example"}`)
	tests := []struct {
		name             string
		destinationField string
		uri              string
		content          []byte
	}{
		{"unbind, destination_is", DestinationISField, "/_matrix/identity/v2/3pid/unbind", []byte(`{"mxid":"@a:hs.example","threepid":{"medium":"email","address":"a@b.c"}}`)},
		{"onupdate, destination", DestinationField, onUpdatePath, body},
		{"no content", DestinationField, "/_matrix/federation/v1/version?x=1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, err := SignRequest(key, "hs.example", "id.example", tt.destinationField, http.MethodPost, tt.uri, tt.content)
			if err != nil {
				t.Fatal(err)
			}
			x, err := ParseXMatrix(header)
			if err != nil {
				t.Fatal(err)
			}
			if want := (XMatrix{Origin: "hs.example", Destination: "id.example", KeyID: "ed25519:a_Test", Signature: x.Signature}); x != want {
				t.Errorf("header params = %+v, want %+v", x, want)
			}
			if strings.Count(header, " ") != 1 {
				t.Errorf("header %q has spaces between parameters (Sydent splits on spaces)", header)
			}
			obj := signedObject(t, header, tt.destinationField, http.MethodPost, tt.uri, tt.content)
			if err := gomatrixserverlib.VerifyJSON("hs.example", key.ID, key.PublicKey(), obj); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
			if err := gomatrixserverlib.VerifyJSON("hs.example", key.ID, other.PublicKey(), obj); err == nil {
				t.Error("signature verifies with another key")
			}
			otherField := map[string]string{DestinationField: DestinationISField, DestinationISField: DestinationField}[tt.destinationField]
			if err := gomatrixserverlib.VerifyJSON("hs.example", key.ID, key.PublicKey(), signedObject(t, header, otherField, http.MethodPost, tt.uri, tt.content)); err == nil {
				t.Errorf("a %s signature verifies as a %s signature", tt.destinationField, otherField)
			}
			if err := gomatrixserverlib.VerifyJSON("hs.example", key.ID, key.PublicKey(), signedObject(t, header, tt.destinationField, http.MethodPut, tt.uri, tt.content)); err == nil {
				t.Error("signature verifies for another method")
			}
		})
	}
}

func TestSignRequestErrors(t *testing.T) {
	key := mustGenerate(t, "0")
	tests := []struct {
		name, origin, destination, field string
		content                          []byte
		wantErr                          string
	}{
		{"unknown destination field", "hs.example", "id.example", "dest", nil, `"dest" is neither`},
		{"empty origin", "", "id.example", DestinationField, nil, "origin"},
		{"quote in destination", "hs.example", `id"x`, DestinationField, nil, "destination"},
		{"space in origin", "hs example", "id.example", DestinationField, nil, "origin"},
		{"content not JSON", "hs.example", "id.example", DestinationField, []byte("{nope"), "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SignRequest(key, tt.origin, tt.destination, tt.field, http.MethodPost, "/x", tt.content)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SignRequest error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// staticVerifier is a gomatrixserverlib.JSONVerifier over one known key, so
// that gomatrixserverlib's own request verification can judge our headers.
type staticVerifier struct {
	key *signingkey.Key
}

func (v staticVerifier) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	res := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		res[i].Error = gomatrixserverlib.VerifyJSON(string(r.ServerName), v.key.ID, v.key.PublicKey(), r.Message)
	}
	return res, nil
}

// TestSignRequestAcceptedByGomatrixserverlib has fclient.VerifyHTTPRequest,
// which Dendrite uses, check a request we signed.
func TestSignRequestAcceptedByGomatrixserverlib(t *testing.T) {
	key := mustGenerate(t, "0")
	body := []byte(`{"threepid":"a@b.c","deleted":true}`)
	for _, tt := range []struct {
		name        string
		destination string
		wantCode    int
	}{
		{"right destination", "hs.example", http.StatusOK},
		{"other destination", "elsewhere.example", http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			header, err := SignRequest(key, "id.example", tt.destination, DestinationField, http.MethodPost, onUpdatePath, body)
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1"+onUpdatePath, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", header)
			req.Header.Set("Content-Type", "application/json")
			_, resp := fclient.VerifyHTTPRequest(req, time.Now(), "hs.example", nil, staticVerifier{key: key})
			if resp.Code != tt.wantCode {
				t.Errorf("VerifyHTTPRequest answered %d %v, want %d", resp.Code, resp.JSON, tt.wantCode)
			}
		})
	}
}
