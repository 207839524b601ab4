package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/mxerr"
)

// clockSkew is how far our clock and the identity server's may disagree when
// we check an association's validity window.
const clockSkew = 5 * time.Minute

// errInvalidAssociation is what the client sees when an identity server's bind
// answer cannot be trusted; the reason is in the wrapping error, for logs.
var errInvalidAssociation = mxerr.Unavailable.WithMessage("identity server returned an invalid association")

// Association is a verified bind answer: the identity server signed that
// Medium/Address belongs to MXID between NotBefore and NotAfter (ms since the
// epoch); TS is when it verified the 3PID.
type Association struct {
	Medium, Address, MXID string
	NotBefore, NotAfter   int64
	TS                    int64
}

// bindRequest is the body of POST /_matrix/identity/v2/3pid/bind.
type bindRequest struct {
	SID          string `json:"sid"`
	ClientSecret string `json:"client_secret"`
	MXID         string `json:"mxid"`
}

// Bind asks is to bind the 3PID validated in session sid to mxid,
// authenticating with the user's idAccessToken, and checks the signed
// association it answers. Errors are *mxerr.Error (possibly wrapped) ready for
// the client: the identity server's Matrix errors keep their status and body,
// except 401 and token errors, which become 403 M_FORBIDDEN; an answer that is
// not a Matrix error is 502; a timeout 504, an unreachable server 502; an
// association that is unsigned, badly signed, for another user, incomplete or
// outside its validity window is 502 and must not be recorded.
func (c *Client) Bind(ctx context.Context, is config.IdentityServer, idAccessToken, sid, clientSecret, mxid string) (Association, error) {
	body, err := json.Marshal(bindRequest{SID: sid, ClientSecret: clientSecret, MXID: mxid})
	if err != nil {
		return Association{}, fmt.Errorf("bind on %s: encode request: %w", is.ServerName, err)
	}
	a, err := c.do(ctx, http.MethodPost, is, bindPath, body, "Bearer "+idAccessToken)
	if err != nil {
		return Association{}, fmt.Errorf("bind on %s: %v: %w", is.ServerName, err, transportError(is, err))
	}
	if a.status/100 != 2 {
		if me := matrixError(is, a); me != nil {
			return Association{}, fmt.Errorf("bind on %s: HTTP %d: %w", is.ServerName, a.status, me)
		}
		return Association{}, fmt.Errorf("bind on %s: %w", is.ServerName,
			mxerr.Unavailable.WithMessage("identity server %s answered HTTP %d without a Matrix error", is.ServerName, a.status))
	}
	assoc, err := c.verifyAssociation(ctx, is, mxid, a.body, time.Now())
	if err != nil {
		return Association{}, fmt.Errorf("bind on %s: %v: %w", is.ServerName, err, errInvalidAssociation)
	}
	return assoc, nil
}

// verifyAssociation checks a bind answer: a JSON object signed by is under its
// signing name, naming mxid, with a medium and an address, whose validity
// window contains now (give or take clockSkew).
func (c *Client) verifyAssociation(ctx context.Context, is config.IdentityServer, mxid string, body []byte, now time.Time) (Association, error) {
	var v struct {
		Medium    string `json:"medium"`
		Address   string `json:"address"`
		MXID      string `json:"mxid"`
		NotBefore *int64 `json:"not_before"`
		NotAfter  *int64 `json:"not_after"`
		TS        *int64 `json:"ts"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return Association{}, fmt.Errorf("association is not a valid JSON object: %w", err)
	}
	if err := c.keys.VerifyJSON(ctx, is, is.Name(), body); err != nil {
		return Association{}, fmt.Errorf("association signature by %s: %w", is.Name(), err)
	}
	switch {
	case v.MXID != mxid:
		return Association{}, fmt.Errorf("association names mxid %q, want %q", v.MXID, mxid)
	case v.Medium == "" || v.Address == "":
		return Association{}, errors.New("association lacks medium or address")
	case v.NotBefore == nil || v.NotAfter == nil || v.TS == nil:
		return Association{}, errors.New("association lacks not_before, not_after or ts")
	}
	skew := clockSkew.Milliseconds()
	if ms := now.UnixMilli(); *v.NotBefore > ms+skew || *v.NotAfter < ms-skew {
		return Association{}, fmt.Errorf("association valid from %d to %d, not now (%d)", *v.NotBefore, *v.NotAfter, ms)
	}
	return Association{
		Medium: v.Medium, Address: v.Address, MXID: v.MXID,
		NotBefore: *v.NotBefore, NotAfter: *v.NotAfter, TS: *v.TS,
	}, nil
}
