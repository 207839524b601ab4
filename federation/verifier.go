package federation

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
)

// Verifier authenticates inbound POST /_matrix/federation/v1/3pid/onupdate
// requests: an X-Matrix request signed by a configured identity server, for
// this homeserver. Our own checks run first and the body is read bounded;
// gomatrixserverlib only checks the signature.
//
// A caller that has not proven who it is learns nothing: every
// authentication failure is the same 401 M_UNAUTHORIZED "Unauthorized",
// whether the origin is configured or not, the key could not be fetched or the
// signature is wrong; the reason is in the returned error's text, for the log.
type Verifier struct {
	serverName string
	servers    map[string]config.IdentityServer // by server_name and by signing name
	keys       *KeyRing
	proxies    httpapi.Proxies
}

// errUnauthorized is the only answer an unauthenticated caller gets.
var errUnauthorized = mxerr.Unauthorized.WithMessage("Unauthorized")

// unauthorized returns the generic 401, wrapped in the reason (for logs).
func unauthorized(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errUnauthorized)
}

// NewVerifier returns a Verifier for requests to serverName from servers,
// whose keys come from keys. An identity server is recognised as origin by its
// server_name or its signing_name; where two entries claim a name, the first
// wins. proxies are the trusted reverse proxies, through which the client
// address is found: key fetches are budgeted per client address (see
// KeyRing).
func NewVerifier(serverName string, servers []config.IdentityServer, keys *KeyRing, proxies httpapi.Proxies) *Verifier {
	v := &Verifier{serverName: serverName, servers: make(map[string]config.IdentityServer, 2*len(servers)), keys: keys, proxies: proxies}
	for _, is := range servers {
		for _, name := range []string{is.ServerName, is.Name()} {
			if _, taken := v.servers[name]; !taken {
				v.servers[name] = is
			}
		}
	}
	return v
}

// Verify authenticates r and returns the identity server that sent it and the
// request body, read up to maxBody bytes. Errors are *mxerr.Error values,
// possibly wrapped in a reason: 413 M_TOO_LARGE for a body over maxBody; 400
// M_NOT_JSON for a body that is not JSON (before anything else, so that the
// answer says nothing of the origin); 401 M_UNAUTHORIZED "Unauthorized" for a
// missing or garbled header, an unknown origin, a wrong destination, a key
// that cannot be found or a bad signature; then, once the signature is
// verified, 403 M_FORBIDDEN for an identity server not allowed to call
// onupdate and 400 M_BAD_JSON for JSON that is not an object. A failure to
// read the body is returned as is.
func (v *Verifier) Verify(r *http.Request, maxBody int64) (config.IdentityServer, []byte, error) {
	body, err := httpapi.ReadBody(r, maxBody)
	if err != nil {
		return config.IdentityServer{}, nil, err
	}
	if !json.Valid(body) {
		return config.IdentityServer{}, nil, mxerr.NotJSON.WithMessage("Content not JSON")
	}
	is, x, err := v.authorize(r)
	if err != nil {
		return config.IdentityServer{}, nil, err
	}
	key, err := v.keys.PublicKeyFor(r.Context(), is, x.KeyID, SourceOf(v.proxies.ClientIP(r)))
	if err != nil {
		return config.IdentityServer{}, nil, unauthorized("onupdate from %s: cannot get key %s: %v", x.Origin, x.KeyID, err)
	}
	signed := requestObject(r.Method, requestURI(r), x.Origin, DestinationField, v.serverName, body)
	signed["signatures"] = map[string]map[string]string{x.Origin: {x.KeyID: x.Signature}}
	raw, err := json.Marshal(signed)
	if err != nil {
		return config.IdentityServer{}, nil, fmt.Errorf("verify onupdate: %w", err)
	}
	if err := gomatrixserverlib.VerifyJSON(x.Origin, gomatrixserverlib.KeyID(x.KeyID), key, raw); err != nil {
		return config.IdentityServer{}, nil, unauthorized("onupdate from %s: invalid request signature with key %s: %v", x.Origin, x.KeyID, err)
	}
	if !is.OnUpdate {
		return config.IdentityServer{}, nil, mxerr.Forbidden.WithMessage("Identity server %s may not call onupdate", is.ServerName)
	}
	var obj map[string]json.RawMessage
	if err := mxerr.UnmarshalObject(body, &obj); err != nil {
		return config.IdentityServer{}, nil, err
	}
	return is, body, nil
}

// authorize runs the checks that need only the header: the X-Matrix header
// parses, its origin is a configured identity server, its destination is us
// and its key is an ed25519 key.
func (v *Verifier) authorize(r *http.Request) (config.IdentityServer, XMatrix, error) {
	headers := r.Header.Values("Authorization")
	switch len(headers) {
	case 0:
		return config.IdentityServer{}, XMatrix{}, unauthorized("onupdate: missing Authorization: X-Matrix header")
	case 1:
	default:
		return config.IdentityServer{}, XMatrix{}, unauthorized("onupdate: more than one Authorization header")
	}
	x, err := ParseXMatrix(headers[0])
	if err != nil {
		return config.IdentityServer{}, XMatrix{}, unauthorized("onupdate: bad Authorization header: %v", err)
	}
	is, ok := v.servers[x.Origin]
	if !ok {
		return config.IdentityServer{}, XMatrix{}, unauthorized("onupdate: origin %q is not a configured identity server", truncate(x.Origin, maxQuoted))
	}
	if x.Destination != "" && x.Destination != v.serverName {
		return config.IdentityServer{}, XMatrix{}, unauthorized("onupdate from %s: destination %q is not this server", x.Origin, truncate(x.Destination, maxQuoted))
	}
	if err := checkKeyID(x.KeyID); err != nil {
		return config.IdentityServer{}, XMatrix{}, unauthorized("onupdate from %s: bad key in Authorization header: %v", x.Origin, err)
	}
	return is, x, nil
}

// requestURI is the path and query the client sent, as signed.
func requestURI(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}
