package api

import (
	"io"
	"net/http"

	"github.com/threepidd/threepidd/mxerr"
)

// MaxBodyBytes bounds client request bodies (DESIGN.md: 64 KiB).
const MaxBodyBytes = 64 << 10

// ReadBody reads a request body of at most limit bytes: 413 M_TOO_LARGE past it.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, mxerr.TooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, mxerr.BadJSON.WithMessage("Could not read the request body")
	}
	if int64(len(body)) > limit {
		return nil, mxerr.TooLarge
	}
	return body, nil
}

// DecodeJSON reads a JSON object body into v: 413 M_TOO_LARGE over the limit,
// M_NOT_JSON if it is not JSON, M_BAD_JSON if it is JSON but not an object
// (as Synapse answers) or when a field has the wrong type (naming the field).
func DecodeJSON(r *http.Request, v any) error {
	body, err := ReadBody(r, MaxBodyBytes)
	if err != nil {
		return err
	}
	return mxerr.UnmarshalObject(body, v)
}

// Required returns M_MISSING_PARAM naming the first absent parameter.
// Pairs are (name, present).
func Required(pairs ...any) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if present, _ := pairs[i+1].(bool); !present {
			return mxerr.MissingParam.WithMessage("Missing parameter: %s", pairs[i])
		}
	}
	return nil
}

// str returns *p or "".
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// checkString rejects a string parameter longer than max.
func checkString(name, v string, max int) error {
	if len(v) > max {
		return mxerr.InvalidParam.WithMessage("%s is too long", name)
	}
	return nil
}
