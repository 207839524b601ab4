// Package outbound builds the HTTP clients threepidd talks to other servers
// with: the homeserver, identity servers, the policy and events webhooks and
// the SMS gateway. Every client uses a pooled transport and never follows a
// redirect, so a request (and the token or signature it carries) only ever
// reaches the URL it was made for.
package outbound

import (
	"net"
	"net/http"
	"time"

	"github.com/threepidd/threepidd/internal/requestid"
)

// UserAgent is sent on every request threepidd makes on its own behalf (a
// request relayed for a client carries the client's User-Agent instead).
const UserAgent = "threepidd"

// NewTransport returns a pooled transport. Go's default keeps 2 idle
// connections per host, which under load leaves thousands of sockets in
// TIME_WAIT and costs a third of the throughput (DESIGN.md, "Sync"). It sets
// User-Agent on requests that have none, X-Request-ID on requests whose
// context carries one (package requestid), and never uses a proxy from the
// environment. Response headers are not bounded here: /sync long-polls wait
// for minutes, so callers bound requests with contexts or client timeouts.
func NewTransport() http.RoundTripper {
	return userAgent{NewPool()}
}

// NewPool returns the connection pool under [NewTransport], without the
// headers it adds: a bare *http.Transport with its pool settings (what the
// side-by-side benchmark of the /sync proxy gives Go's bare
// httputil.ReverseProxy, so that both proxies reach the homeserver alike).
func NewPool() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
}

// NewClient returns a client on transport that never follows redirects, each
// request bounded by timeout (0: only by its context).
func NewClient(transport http.RoundTripper, timeout time.Duration) *http.Client {
	return &http.Client{Transport: transport, Timeout: timeout, CheckRedirect: noRedirects}
}

// WithoutRedirects returns a copy of client that does not follow redirects:
// a server's answer is the configured URL's own, and a 3xx is not a 2xx.
// Following one would turn a POST into a GET (301, 302, 303), or send a token
// or a signed request to another host.
func WithoutRedirects(client *http.Client) *http.Client {
	c := *client
	c.CheckRedirect = noRedirects
	return &c
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// userAgent sets User-Agent on requests without one, and X-Request-ID on
// those made on behalf of a client request (its context carries the ID).
type userAgent struct{ next *http.Transport }

// RoundTrip implements http.RoundTripper. A RoundTripper must not change the
// request it is given, so one that lacks a header is cloned first; callers on
// a hot path (the /sync proxy) call [SetHeaders] on the requests they build
// and spare that clone.
func (t userAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	if lacksHeaders(r) {
		r = r.Clone(r.Context())
		SetHeaders(r)
	}
	return t.next.RoundTrip(r)
}

// SetHeaders gives a request threepidd is about to send the headers the
// transports of [NewTransport] add: User-Agent when it has none, and
// X-Request-ID when its context carries a request ID and it has none.
func SetHeaders(r *http.Request) {
	if first(r.Header, userAgentKey) == "" {
		r.Header[userAgentKey] = userAgentValue
	}
	if id := requestid.FromContext(r.Context()); id != "" && first(r.Header, requestIDKey) == "" {
		r.Header[requestIDKey] = []string{id}
	}
}

// lacksHeaders reports whether SetHeaders would change r.
func lacksHeaders(r *http.Request) bool {
	return first(r.Header, userAgentKey) == "" ||
		(first(r.Header, requestIDKey) == "" && requestid.FromContext(r.Context()) != "")
}

// first is h.Get(key) for a key already in canonical form.
func first(h http.Header, key string) string {
	if vs := h[key]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// The header keys in their canonical form (http.CanonicalHeaderKey), so that
// the map is indexed without canonicalising them on every request; and the
// User-Agent value, shared by every request (header values are never written
// in place).
var (
	userAgentKey   = http.CanonicalHeaderKey("User-Agent")
	requestIDKey   = http.CanonicalHeaderKey(requestid.Header)
	userAgentValue = []string{UserAgent}
)

// CloseIdleConnections closes the pool's idle connections.
func (t userAgent) CloseIdleConnections() { t.next.CloseIdleConnections() }

// Pooled reports whether rt is a transport made by [NewTransport].
func Pooled(rt http.RoundTripper) bool {
	_, ok := rt.(userAgent)
	return ok
}
