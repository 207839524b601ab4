package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/mxerr"
)

// UnbindOutcome is what an unbind attempt means for the local record.
type UnbindOutcome int

const (
	// Success: the identity server removed the binding (2xx); drop the record.
	Success UnbindOutcome = iota
	// NoSupport: the identity server does not support unbinding (400, 404 or
	// 501 without a Matrix error body); drop the record, answer no-support.
	NoSupport
	// MatrixError: the identity server refused with a Matrix error (Err);
	// /unbind passes it on, /delete answers no-support.
	MatrixError
	// Transient: no usable answer (timeout, refused connection, 5xx other than
	// 501, 429, or an unexpected status); keep the record and retry later.
	Transient
	// Refused: the outbound guard refused the identity server's address;
	// nothing was sent, and retrying would not help.
	Refused
)

// String names the outcome for logs and metrics.
func (o UnbindOutcome) String() string {
	switch o {
	case Success:
		return "success"
	case NoSupport:
		return "no-support"
	case MatrixError:
		return "matrix-error"
	case Transient:
		return "transient"
	case Refused:
		return "refused"
	}
	return fmt.Sprintf("UnbindOutcome(%d)", int(o))
}

// UnbindResult is the outcome of one unbind attempt.
type UnbindResult struct {
	Outcome UnbindOutcome
	// Err is the identity server's error to pass on, for MatrixError (a 401
	// or token error is already mapped to 403 M_FORBIDDEN), or 400
	// M_SERVER_NOT_TRUSTED for Refused.
	Err *mxerr.Error
	// Detail says what happened, for logs: the HTTP status (and errcode) or the
	// network error. It never contains the 3PID address.
	Detail string
}

// unbindRequest is the body of POST /_matrix/identity/v2/3pid/unbind.
type unbindRequest struct {
	MXID     string         `json:"mxid"`
	ThreePID unbindThreePID `json:"threepid"`
}

type unbindThreePID struct {
	Medium  string `json:"medium"`
	Address string `json:"address"`
}

// Unbind asks is to remove the binding of medium/address to mxid, in a request
// signed with the homeserver key as Synapse signs it and Sydent checks it: the
// signed object is {method, uri, origin, destination_is, content} with
// destination_is the identity server's signing name, and the X-Matrix header
// carries destination="<signing name>".
func (c *Client) Unbind(ctx context.Context, is config.IdentityServer, mxid, medium, address string) UnbindResult {
	content, err := json.Marshal(unbindRequest{MXID: mxid, ThreePID: unbindThreePID{Medium: medium, Address: address}})
	if err != nil {
		return UnbindResult{Outcome: Transient, Detail: fmt.Sprintf("encode unbind request: %v", err)}
	}
	authorization, err := federation.SignRequest(c.key, c.serverName, is.Name(), federation.DestinationISField, http.MethodPost, unbindPath, content)
	if err != nil {
		return UnbindResult{Outcome: Transient, Detail: fmt.Sprintf("sign unbind request: %v", err)}
	}
	a, err := c.do(ctx, http.MethodPost, is, unbindPath, content, authorization)
	if err != nil {
		if refusedByGuard(err) {
			return UnbindResult{Outcome: Refused, Err: transportError(is, err), Detail: err.Error()}
		}
		return UnbindResult{Outcome: Transient, Detail: err.Error()}
	}
	return classifyUnbind(is, a)
}

// classifyUnbind maps an unbind answer to its outcome, as DESIGN.md's
// "Identity-server answers" asks. A 5xx other than 501 is transient even with
// a Matrix body (Sydent answers 500 M_UNKNOWN when it cannot fetch our keys),
// and so is 429; a status the spec does not describe (a redirect, a 403
// without a Matrix body) is transient too, as Synapse keeps the record then.
func classifyUnbind(is config.IdentityServer, a answer) UnbindResult {
	detail := fmt.Sprintf("HTTP %d", a.status)
	switch {
	case a.status/100 == 2:
		return UnbindResult{Outcome: Success, Detail: detail}
	case a.status == http.StatusTooManyRequests, a.status >= 500 && a.status != http.StatusNotImplemented:
		return UnbindResult{Outcome: Transient, Detail: detail}
	}
	if me := matrixError(is, a); me != nil {
		return UnbindResult{Outcome: MatrixError, Err: me, Detail: detail + " " + me.ErrCode}
	}
	switch a.status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusNotImplemented:
		return UnbindResult{Outcome: NoSupport, Detail: detail}
	}
	return UnbindResult{Outcome: Transient, Detail: detail}
}
