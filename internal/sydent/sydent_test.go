package sydent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/federation/signingkey"
)

func TestAssociationSign(t *testing.T) {
	key, err := signingkey.Generate("0")
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1700000000000)
	signed, err := NewAssociation("email", "a@x.test", "@a:hs.test", now).Sign("id.test", key)
	if err != nil {
		t.Fatal(err)
	}
	if err := gomatrixserverlib.VerifyJSON("id.test", key.ID, key.PublicKey(), signed); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(signed, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"medium": "email", "address": "a@x.test", "mxid": "@a:hs.test",
		"ts": float64(now.UnixMilli()), "not_before": float64(now.UnixMilli()), "not_after": float64(now.Add(AssociationLifetime).UnixMilli())}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestReadBindRequest(t *testing.T) {
	tests := []struct {
		body    string
		want    BindRequest
		wantErr bool
	}{
		{`{"sid":"1","client_secret":"s","mxid":"@a:hs.test"}`, BindRequest{SID: "1", ClientSecret: "s", MXID: "@a:hs.test"}, false},
		{`{"sid":`, BindRequest{}, true},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/_matrix/identity/v2/3pid/bind", strings.NewReader(tt.body))
		got, err := ReadBindRequest(r)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ReadBindRequest(%s) = %+v, %v", tt.body, got, err)
		}
	}
}

func TestServePubkey(t *testing.T) {
	key, err := signingkey.Generate("0")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		keyID     string
		found     bool
		status    int
		bodyValue string
	}{
		{string(key.ID), true, http.StatusOK, key.PublicBase64()},
		{"ed25519:other", false, http.StatusNotFound, "M_NOT_FOUND"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/_matrix/identity/v2/pubkey/"+tt.keyID, nil)
		r.SetPathValue("keyId", tt.keyID)
		w := httptest.NewRecorder()
		if found := ServePubkey(w, r, key); found != tt.found || w.Code != tt.status || !strings.Contains(w.Body.String(), tt.bodyValue) {
			t.Errorf("ServePubkey(%s) = %v, %d %s", tt.keyID, found, w.Code, w.Body)
		}
	}
}
