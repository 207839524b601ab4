package api

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/mxerr"
)

// Auth checks access tokens against the homeserver and works out the real
// client address behind trusted proxies.
type Auth struct {
	Homeserver     *homeserver.Client
	TrustedProxies []netip.Prefix
}

// ParsePrefixes parses CIDRs or bare IPs (as trusted_proxies holds them).
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (a *Auth) trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range a.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ClientIP returns the address of the client: the peer, unless the peer is a
// trusted proxy, in which case the right-most X-Forwarded-For entry that is
// not itself a trusted proxy.
func (a *Auth) ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !a.trusted(peer) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	client := peer.Unmap().String()
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		client = h.Unmap().String()
		if !a.trusted(h) {
			break
		}
	}
	return client
}

// Caller returns what the homeserver must see of r.
func (a *Auth) Caller(r *http.Request) homeserver.Caller {
	return homeserver.Caller{
		AccessToken: AccessToken(r),
		AsUserID:    r.URL.Query().Get("user_id"),
		ClientIP:    a.ClientIP(r),
		UserAgent:   r.UserAgent(),
	}
}

// AccessToken returns the token from the Authorization header or ?access_token=.
func AccessToken(r *http.Request) string {
	if r.Header.Get("Authorization") != "" {
		return BearerToken(r)
	}
	return r.URL.Query().Get("access_token")
}

// BearerToken returns the token of an "Authorization: Bearer" header only.
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
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
		ctx := context.WithValue(r.Context(), userKey{}, User{Identity: id, Caller: caller})
		return h(w, r.WithContext(ctx))
	}
}
