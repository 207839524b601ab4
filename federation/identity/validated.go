package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/threepid"
)

const validatedPath = "/_matrix/identity/v2/3pid/getValidated3pid"

// Validated3PID asks is which 3PID the session (sid, clientSecret) validated
// (GET /_matrix/identity/v2/3pid/getValidated3pid), so that policies can judge a
// bind before it is made. It returns the medium and the canonical address.
// Errors are mapped like Bind's (401 and token errors become 403).
func (c *Client) Validated3PID(ctx context.Context, is config.IdentityServer, idAccessToken, sid, clientSecret string) (medium, address string, err error) {
	q := url.Values{"sid": {sid}, "client_secret": {clientSecret}}
	a, err := c.do(ctx, http.MethodGet, is, validatedPath+"?"+q.Encode(), nil, "Bearer "+idAccessToken)
	if err != nil {
		return "", "", fmt.Errorf("getValidated3pid on %s: %v: %w", is.ServerName, err, transportError(is, err))
	}
	if a.status/100 != 2 {
		if me := matrixError(is, a); me != nil {
			return "", "", fmt.Errorf("getValidated3pid on %s: HTTP %d: %w", is.ServerName, a.status, me)
		}
		return "", "", mxerr.Unavailable.WithMessage("identity server %s answered HTTP %d without a Matrix error", is.ServerName, a.status)
	}
	var v struct {
		Medium  string `json:"medium"`
		Address string `json:"address"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil || v.Medium == "" || v.Address == "" {
		return "", "", mxerr.Unavailable.WithMessage("identity server %s gave an unreadable getValidated3pid answer", is.ServerName)
	}
	canonical, err := threepid.CanonicalAddress(v.Medium, v.Address)
	if err != nil {
		return "", "", mxerr.Unavailable.WithMessage("identity server %s validated an invalid %s address", is.ServerName, v.Medium)
	}
	return v.Medium, canonical, nil
}
