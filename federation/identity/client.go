// Package identity is threepidd's client of identity servers: it binds a
// validated 3PID to a user (POST /_matrix/identity/v2/3pid/bind, checking the
// signed association that comes back) and unbinds it with a request signed by
// the homeserver key, as Synapse sends it and Sydent checks it
// (POST /_matrix/identity/v2/3pid/unbind).
package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
)

const (
	bindPath   = "/_matrix/identity/v2/3pid/bind"
	unbindPath = "/_matrix/identity/v2/3pid/unbind"
	// maxAnswer bounds what we read of an identity server's answer; a signed
	// association or an error is well under 1 KiB.
	maxAnswer = 64 << 10
)

// Client talks to identity servers on behalf of the homeserver: the
// configured ones, or (with a client on a guarded transport) those clients
// name.
type Client struct {
	serverName string
	key        *signingkey.Key
	keys       *federation.KeyRing
	http       *http.Client
}

// NewClient returns a client for the homeserver serverName. key signs unbind
// requests; keys checks the identity servers' signatures on associations.
// httpClient (required) carries the caller's timeouts; the client uses a copy
// of it that never follows redirects, so neither an access token nor a signed
// request is ever sent to a host other than the configured one.
func NewClient(serverName string, key *signingkey.Key, keys *federation.KeyRing, httpClient *http.Client) *Client {
	return &Client{serverName: serverName, key: key, keys: keys, http: outbound.WithoutRedirects(httpClient)}
}

// answer is an identity server's HTTP answer. body is nil when the answer was
// larger than maxAnswer, so that it parses as nothing.
type answer struct {
	status int
	body   []byte
}

// do sends a request to pathAndQuery on is with the given Authorization header
// (a POST carries body as JSON; a GET has none) and reads the answer. An error
// means no complete answer arrived.
func (c *Client) do(ctx context.Context, method string, is config.IdentityServer, pathAndQuery string, body []byte, authorization string) (answer, error) {
	url := is.URL() + pathAndQuery
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return answer{}, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", authorization)
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return answer{}, fmt.Errorf("read answer of %s: %w", url, err)
	}
	if len(data) > maxAnswer {
		data = nil
	}
	return answer{status: resp.StatusCode, body: data}, nil
}

// matrixError returns the Matrix error an error answer carries, ready to pass
// on to the client, or nil when the answer is not one (a success, a redirect,
// or a body that is not {"errcode": "...", ...}). An identity server's 401 or
// token error becomes 403 M_FORBIDDEN with the server's text: passed on as is,
// it would make clients such as matrix-js-sdk log the user out of the
// homeserver.
func matrixError(is config.IdentityServer, a answer) *mxerr.Error {
	if a.status < 400 {
		return nil
	}
	e := mxerr.DecodeRemote(a.status, a.body)
	if e.ErrCode == "" {
		return nil
	}
	switch {
	case a.status == http.StatusUnauthorized, e.ErrCode == "M_UNKNOWN_TOKEN", e.ErrCode == "M_MISSING_TOKEN", e.ErrCode == "M_UNAUTHORIZED":
		return mxerr.Forbidden.WithMessage("identity server %s refused: %s (%s)", is.ServerName, e.Message, e.ErrCode)
	}
	return &mxerr.Error{Status: a.status, ErrCode: e.ErrCode, Message: e.Message}
}

// isTimeout reports whether a transport error is a timeout: the caller's
// context deadline or the http.Client's own.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// refusedByGuard reports whether err is the outbound guard's refusal of the
// identity server's address: nothing was sent.
func refusedByGuard(err error) bool {
	var denied *outbound.DeniedError
	return errors.As(err, &denied)
}

// transportError maps a failure to get an answer to the error the client sees:
// 400 M_SERVER_NOT_TRUSTED when the outbound guard refused the address, 504
// for a timeout, 502 for anything else (refused connection, reset, DNS).
func transportError(is config.IdentityServer, err error) *mxerr.Error {
	switch {
	case refusedByGuard(err):
		return mxerr.ServerNotTrusted.WithMessage("Identity server %s is at an address this homeserver does not connect to", is.ServerName)
	case isTimeout(err):
		return mxerr.Timeout.WithMessage("identity server %s did not answer in time", is.ServerName)
	case errors.Is(err, syscall.ECONNREFUSED):
		return mxerr.Unavailable.WithMessage("identity server %s refused the connection", is.ServerName)
	}
	return mxerr.Unavailable.WithMessage("identity server %s is unreachable", is.ServerName)
}
