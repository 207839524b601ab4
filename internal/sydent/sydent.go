// Package sydent builds what an identity server such as Sydent answers a
// homeserver: the signed 3PID association of a bind and the public key of
// /pubkey, and reads the bind request. The test fake
// (tests/fakes.IdentityServer) and `threepidd demo`'s identity-server
// stand-in both use it, so it must not import package testing.
package sydent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/mxerr"
)

// AssociationLifetime is Sydent's THREEPID_ASSOCIATION_LIFETIME_MS: 100 years.
const AssociationLifetime = 100 * 365 * 24 * time.Hour

// MaxBody bounds the request bodies read.
const MaxBody = 64 << 10

// Association is the 3PID association an identity server answers a bind with.
type Association struct {
	Medium, Address, MXID   string
	TS, NotBefore, NotAfter time.Time
}

// NewAssociation is the association of address to mxid made at now, valid
// from now for AssociationLifetime.
func NewAssociation(medium, address, mxid string, now time.Time) Association {
	return Association{Medium: medium, Address: address, MXID: mxid, TS: now, NotBefore: now, NotAfter: now.Add(AssociationLifetime)}
}

// JSON is the unsigned association, times in milliseconds since the epoch.
func (a Association) JSON() ([]byte, error) {
	raw, err := json.Marshal(map[string]any{
		"medium":     a.Medium,
		"address":    a.Address,
		"mxid":       a.MXID,
		"ts":         a.TS.UnixMilli(),
		"not_before": a.NotBefore.UnixMilli(),
		"not_after":  a.NotAfter.UnixMilli(),
	})
	if err != nil {
		return nil, fmt.Errorf("encode association: %w", err)
	}
	return raw, nil
}

// Sign is the association signed by key as serverName.
func (a Association) Sign(serverName string, key *signingkey.Key) ([]byte, error) {
	raw, err := a.JSON()
	if err != nil {
		return nil, err
	}
	signed, err := gomatrixserverlib.SignJSON(serverName, key.ID, key.Private, raw)
	if err != nil {
		return nil, fmt.Errorf("sign association: %w", err)
	}
	return signed, nil
}

// BindRequest is the body of POST /_matrix/identity/v2/3pid/bind.
type BindRequest struct {
	SID          string `json:"sid"`
	ClientSecret string `json:"client_secret"`
	MXID         string `json:"mxid"`
}

// ReadBindRequest decodes the bind body of r (at most MaxBody bytes).
func ReadBindRequest(r *http.Request) (BindRequest, error) {
	var req BindRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, MaxBody)).Decode(&req); err != nil {
		return BindRequest{}, fmt.Errorf("decode bind request: %w", err)
	}
	return req, nil
}

// ServePubkey answers GET /_matrix/identity/v2/pubkey/{keyId} with key's
// public half, or 404 M_NOT_FOUND for another key ID; it reports whether the
// key was found.
func ServePubkey(w http.ResponseWriter, r *http.Request, key *signingkey.Key) bool {
	if r.PathValue("keyId") != string(key.ID) {
		mxerr.WriteJSON(w, http.StatusNotFound, map[string]string{"errcode": "M_NOT_FOUND", "error": "The public key was not found"})
		return false
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"public_key": key.PublicBase64()})
	return true
}
