package httpapi

import (
	"io"
	"net/http"
	"strings"

	"github.com/threepidd/threepidd/mxerr"
)

// ClientPrefixes are the client-server API versions threepidd serves its
// endpoints under: every one a homeserver kind serves them under, so that no
// path reaches the homeserver around threepidd. Synapse's client_patterns
// registers each endpoint under r0, v3 and unstable (testdata/routes).
var ClientPrefixes = []string{"/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/unstable"}

// LegacyPrefix is the client-server API's api/v1, under which Synapse still
// serves a few endpoints (of threepidd's, /rooms/{roomId}/messages).
const LegacyPrefix = "/_matrix/client/api/v1"

// MaxBodyBytes bounds client request bodies (DESIGN.md: 64 KiB).
const MaxBodyBytes = 64 << 10

// ReadBody reads a request body of at most limit bytes: 413 M_TOO_LARGE past
// it, without reading more than limit+1 bytes (none when Content-Length
// already says it is too large).
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	tooLarge := mxerr.TooLarge.WithMessage("Request body larger than %d bytes", limit)
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, mxerr.BadJSON.WithMessage("Could not read the request body")
	}
	if int64(len(body)) > limit {
		return nil, tooLarge
	}
	return body, nil
}

// DecodeJSON reads a JSON object body into v: 413 M_TOO_LARGE over
// MaxBodyBytes, M_NOT_JSON if it is not JSON, M_BAD_JSON if it is JSON but not
// an object (as Synapse answers) or when a field has the wrong type (naming
// the field).
func DecodeJSON(r *http.Request, v any) error {
	body, err := ReadBody(r, MaxBodyBytes)
	if err != nil {
		return err
	}
	return mxerr.UnmarshalObject(body, v)
}

// AccessToken returns the token from the Authorization header or ?access_token=.
func AccessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		return bearer(h)
	}
	return QueryValue(r, "access_token")
}

// QueryValue is r.URL.Query().Get(name) for a name without spaces or
// escapes, but skips parsing the query (a map and strings per parameter) when
// the name cannot be in it: in a query without "%", a parameter name is
// spelled out as it is. The access token and an appservice's user_id are
// looked for on every request, and are seldom there.
func QueryValue(r *http.Request, name string) string {
	if raw := r.URL.RawQuery; !strings.Contains(raw, name) && !strings.Contains(raw, "%") {
		return ""
	}
	return r.URL.Query().Get(name)
}

// BearerToken returns the token of an "Authorization: Bearer" header only.
func BearerToken(r *http.Request) string { return bearer(r.Header.Get("Authorization")) }

// bearer is the token of an Authorization header value, "" when it is not
// "Bearer <token>".
func bearer(h string) string {
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}
