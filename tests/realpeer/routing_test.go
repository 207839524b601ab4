//go:build realpeer

package realpeer

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

// seenRequest is what the stand-in for threepidd saw of one request.
type seenRequest struct {
	Method, RequestURI, Host, XForwardedFor string
}

// recorder stands in for threepidd behind nginx: it records each request
// and passes it on to the homeserver, so that every answer is a real one.
type recorder struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

func newRecorder(t *testing.T, homeserverURL string) *recorder {
	t.Helper()
	target, err := url.Parse(homeserverURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, seenRequest{req.Method, req.RequestURI, req.Host, req.Header.Get("X-Forwarded-For")})
		r.mu.Unlock()
		proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// addr is host:port, for the nginx upstream.
func (r *recorder) addr() string { return r.srv.Listener.Addr().String() }

// take returns the requests seen since the last call and forgets them.
func (r *recorder) take() []seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := r.seen
	r.seen = nil
	return seen
}

// routingCase is a request and whether nginx must send it to threepidd.
type routingCase struct {
	method, path string
	toThreepidd  bool
}

// routeListCases are the requests of every route of testdata/routes (both
// homeserver kinds, every prefix), with where each must go.
func routeListCases(t *testing.T) []routingCase {
	t.Helper()
	reqs, err := support.RouteRequests()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]routingCase, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, routingCase{r.Method, r.Path, r.Route.To == support.ToThreepidd})
	}
	return out
}

// TestNginxRouting sends requests through nginx configured with
// deploy/nginx/threepidd.conf and checks which upstream each one reaches,
// with its URI unchanged and the forwarding headers set: every route of the
// route lists (testdata/routes, Synapse's and Dendrite's, every prefix) and
// near misses around them.
func TestNginxRouting(t *testing.T) {
	ctx := ContextOf(t)
	d := StartDendrite(ctx, t, env)
	alice := mustRegister(ctx, t, d, "alice", "alice-password")
	threepidd := newRecorder(t, d.URL)
	n := StartNginx(ctx, t, env, threepidd.addr(), d.Addr)

	tests := append(routeListCases(t), []routingCase{
		{http.MethodGet, "/_matrix/client/v3/account/3pid", true},
		{http.MethodGet, "/_matrix/client/r0/account/3pid", true},
		{http.MethodPost, "/_matrix/client/v3/account/3pid/add", true},
		{http.MethodPost, "/_matrix/client/v3/account/3pid/bind", true},
		{http.MethodPost, "/_matrix/client/r0/account/3pid/delete", true},
		{http.MethodPost, "/_matrix/client/v3/account/3pid/unbind", true},
		{http.MethodPost, "/_matrix/client/v3/account/3pid/email/requestToken", true},
		{http.MethodPost, "/_matrix/client/v3/account/3pid/msisdn/requestToken", true},
		{http.MethodGet, "/_matrix/client/unstable/add_threepid/email/submit_token?sid=1&client_secret=s&token=t", true},
		{http.MethodPost, "/_matrix/client/unstable/add_threepid/msisdn/submit_token", true},
		{http.MethodGet, "/_matrix/client/v3/sync?timeout=0", true},
		{http.MethodGet, "/_matrix/client/r0/sync?timeout=0", true},
		{http.MethodPost, "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", true},
		{http.MethodGet, "/_matrix/client/v3/keys/changes?from=s0&to=s1", true},
		{http.MethodGet, "/_matrix/client/v3/rooms/%21room%3Alocalhost/messages?dir=b", true},
		{http.MethodGet, "/_matrix/client/r0/rooms/!room:localhost/messages", true},
		{http.MethodGet, "/_matrix/client/v3/rooms/%21room%3Alocalhost/members?at=s1", true},
		{http.MethodGet, "/_matrix/client/r0/rooms/!room:localhost/members", true},
		{http.MethodGet, "/_matrix/client/v1/rooms/%21room%3Alocalhost/relations/%24ev", true},
		{http.MethodGet, "/_matrix/client/v1/rooms/%21room%3Alocalhost/relations/%24ev/m.thread?from=s1", true},
		{http.MethodGet, "/_matrix/client/v1/rooms/%21room%3Alocalhost/relations/%24ev/m.annotation/m.reaction", true},
		{http.MethodPost, "/_matrix/client/v3/account/deactivate", true},
		{http.MethodGet, "/_threepidd/admin/v1/users/%40alice%3Alocalhost/threepids", true},
		{http.MethodPost, "/_matrix/federation/v1/3pid/onupdate", true},

		{http.MethodGet, "/_matrix/client/versions", false},
		{http.MethodGet, "/_matrix/client/v3/account/whoami", false},
		{http.MethodPost, "/_matrix/client/v3/account/password", false},
		{http.MethodGet, "/_matrix/client/v3/account/3pidx", false},
		{http.MethodGet, "/_matrix/client/v3/devices", false},
		{http.MethodGet, "/_matrix/client/v3/rooms/%21room%3Alocalhost/state", false},
		{http.MethodGet, "/_matrix/client/v3/rooms/%21room%3Alocalhost/messages/extra", false},
		{http.MethodGet, "/_matrix/client/v3/rooms/%21room%3Alocalhost/joined_members", false},
		{http.MethodGet, "/_matrix/client/v1/rooms/%21room%3Alocalhost/relations/%24ev/a/b/c", false},
		{http.MethodGet, "/_matrix/client/v3/rooms/%21room%3Alocalhost/relations/%24ev", false},
		{http.MethodGet, "/_matrix/client/v1/rooms/%21room%3Alocalhost/hierarchy", false},
		{http.MethodGet, "/_matrix/client/v3/sync/extra", false},
		{http.MethodPut, "/_matrix/federation/v1/3pid/onbind", false},
		{http.MethodPost, "/_matrix/federation/v1/3pid/onupdate/extra", false},
		{http.MethodGet, "/_matrix/client/unstable/add_threepidx", false},
		{http.MethodGet, "/_synapse/admin/v1/register", false},
		{http.MethodGet, "/_matrix/client/unstable/account/3pidx", false},
		{http.MethodGet, "/_matrix/client/api/v1/sync", false},
		{http.MethodGet, "/_matrix/client/unstable/capabilities/extra", false},
	}...)
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			threepidd.take()
			var body any
			if tt.method == http.MethodPost || tt.method == http.MethodPut {
				body = json.RawMessage(`{}`)
			}
			resp, err := peers.Do(ctx, tt.method, n.URL+tt.path, alice.AccessToken, body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status == http.StatusBadGateway || resp.Status == http.StatusGatewayTimeout {
				t.Fatalf("nginx answered %d: no upstream reached", resp.Status)
			}
			seen := threepidd.take()
			if !tt.toThreepidd {
				if len(seen) != 0 {
					t.Fatalf("threepidd got %+v, want the homeserver to", seen)
				}
				return
			}
			if len(seen) != 1 {
				t.Fatalf("threepidd got %d requests, want 1: %+v", len(seen), seen)
			}
			got := seen[0]
			if got.Method != tt.method || got.RequestURI != tt.path {
				t.Errorf("threepidd got %s %s, want %s %s unchanged", got.Method, got.RequestURI, tt.method, tt.path)
			}
			if got.XForwardedFor != "127.0.0.1" {
				t.Errorf("X-Forwarded-For %q, want 127.0.0.1", got.XForwardedFor)
			}
			if want := strings.TrimPrefix(n.URL, "http://"); !strings.HasPrefix(want, got.Host+":") {
				t.Errorf("Host %q, want the host clients asked for (%s)", got.Host, want)
			}
		})
	}
}

// unrecognized reports whether a server answered that it has no such
// endpoint (Dendrite and threepidd: 404 M_UNRECOGNIZED; 405 for another
// method).
func unrecognized(r support.Response) bool {
	return r.Status == http.StatusNotFound && r.ErrCode() == "M_UNRECOGNIZED" || r.Status == http.StatusMethodNotAllowed
}

// TestDendriteRoutes proves testdata/routes/dendrite.json against the real
// Dendrite and the shipped nginx file: Dendrite serves each listed route
// under exactly the listed prefixes (r0, v3; nothing under unstable), and
// every 3PID route it serves, under every prefix, is answered by threepidd
// (in front of Dendrite, kind dendrite) through nginx, never by Dendrite
// directly.
func TestDendriteRoutes(t *testing.T) {
	ctx := ContextOf(t)
	d := StartDendrite(ctx, t, env)
	alice := mustRegister(ctx, t, d, "alice", "alice-password")
	b := storagetest.Backends(t)[0]
	tp := StartThreepidd(ctx, t, ThreepiddOptions{Backend: b, Dendrite: d})
	threepidd := newRecorder(t, tp.URL)
	n := StartNginx(ctx, t, env, threepidd.addr(), d.Addr)
	list, err := support.LoadRoutes("dendrite")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range list.Routes {
		for _, prefix := range []string{"r0", "v3", "unstable"} {
			route := r
			route.Prefixes = []string{prefix}
			path := route.URLs()[0]
			t.Run(r.Method+" "+path, func(t *testing.T) {
				var body any
				if r.Method != http.MethodGet {
					body = json.RawMessage(`{}`)
				}
				direct, err := peers.Do(ctx, r.Method, d.URL+path, alice.AccessToken, body)
				if err != nil {
					t.Fatal(err)
				}
				listed := slices.Contains(r.Prefixes, prefix)
				if served := !unrecognized(direct); served != listed {
					t.Fatalf("Dendrite serves it: %t (%d %s); %s says %t", served, direct.Status, direct.Body, list.Version, listed)
				}
				threepidd.take()
				viaNginx, err := peers.Do(ctx, r.Method, n.URL+path, alice.AccessToken, body)
				if err != nil {
					t.Fatal(err)
				}
				seen := threepidd.take()
				switch {
				// Where Dendrite serves it, threepidd must answer it; under
				// other prefixes the endpoints threepidd forwards (sync,
				// deactivation, capabilities) get Dendrite's 404, as
				// without threepidd.
				case r.To == support.ToThreepidd && (len(seen) != 1 || listed && unrecognized(viaNginx)):
					t.Fatalf("through nginx: threepidd saw %d requests and answered %d %s", len(seen), viaNginx.Status, viaNginx.Body)
				case r.To == support.ToHomeserver && len(seen) != 0:
					t.Fatalf("through nginx: threepidd got %+v, want Dendrite to", seen)
				}
			})
		}
	}
}
