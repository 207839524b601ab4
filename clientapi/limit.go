package clientapi

import (
	"net/http"

	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/ratelimit"
)

// perUser wraps h, which runs behind auth.Require, so that each user's calls
// take a token of l first: over the limit, 429 M_LIMIT_EXCEEDED with
// Retry-After and nothing done. A nil l allows everything.
func perUser(l *ratelimit.Limiter, h mxerr.Handler) mxerr.Handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		if ok, wait := l.Allow(r.Context(), auth.UserFrom(r.Context()).UserID); !ok {
			return mxerr.LimitExceeded.WithRetryAfter(wait)
		}
		return h(w, r)
	}
}
