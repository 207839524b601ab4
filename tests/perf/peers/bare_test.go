package peers

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/threepidd/threepidd/outbound"
)

// serveBareProxy serves Go's bare httputil.ReverseProxy in front of the
// homeserver at upstream, on a free port of 127.0.0.1, until the test ends,
// and returns its base URL. It is the yardstick of threepidd's /sync proxy:
// NewSingleHostReverseProxy as it comes (it adds X-Forwarded-For, drops the
// hop-by-hop headers and copies the body through a 32 KiB buffer), on the
// connection pool threepidd's proxy uses (outbound.NewPool: same idle
// connections per host, same dialer), served by a plain http.Server in the
// same process as threepidd, so both share GOMAXPROCS, the runtime and the
// garbage collector.
func serveBareProxy(t testing.TB, upstream string) string {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = outbound.NewPool()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String()
}
