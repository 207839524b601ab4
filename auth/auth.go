// Package auth is the access-token middleware of the client-server API: it
// checks a request's token against the homeserver (whoami, cached by the
// homeserver client) and puts the user in the request's context.
package auth

import (
	"context"
	"net/http"

	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
)

// Auth checks access tokens against the homeserver and works out the real
// client address behind trusted proxies.
type Auth struct {
	Homeserver *homeserver.Client
	Proxies    httpapi.Proxies
	// Seen is told of every authenticated user before its request runs
	// (the read-through import); nil: nobody is told.
	Seen FirstSeen
}

// FirstSeen learns of the users making authenticated requests. It must cost
// next to nothing for a user it has seen before: /sync goes through it.
type FirstSeen interface {
	FirstSeen(ctx context.Context, userID string)
}

// ClientIP returns the real address of r's client.
func (a *Auth) ClientIP(r *http.Request) string { return a.Proxies.ClientIP(r) }

// Caller returns what the homeserver must see of r.
func (a *Auth) Caller(r *http.Request) homeserver.Caller {
	return homeserver.Caller{
		AccessToken: httpapi.AccessToken(r),
		AsUserID:    httpapi.QueryValue(r, "user_id"),
		ClientIP:    a.ClientIP(r),
		UserAgent:   r.UserAgent(),
	}
}

type userKey struct{}

// User is an authenticated caller.
type User struct {
	homeserver.Identity
	Caller homeserver.Caller
}

// UserFrom returns the user that [Auth.Require] put in ctx.
func UserFrom(ctx context.Context) User {
	u, _ := ctx.Value(userKey{}).(User)
	return u
}

// Require wraps h so that it only runs for a valid, non-guest access token:
// 401 M_MISSING_TOKEN without one, the homeserver's 401 for a bad one, 403
// M_GUEST_ACCESS_FORBIDDEN for guests.
func (a *Auth) Require(h mxerr.Handler) mxerr.Handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		caller := a.Caller(r)
		if caller.AccessToken == "" {
			return mxerr.MissingToken
		}
		id, err := a.Homeserver.WhoAmI(r.Context(), caller)
		if err != nil {
			return err
		}
		if id.IsGuest {
			return mxerr.GuestAccessForbidden
		}
		if a.Seen != nil {
			a.Seen.FirstSeen(r.Context(), id.UserID)
		}
		ctx := context.WithValue(r.Context(), userKey{}, User{Identity: id, Caller: caller})
		return h(w, r.WithContext(ctx))
	}
}
