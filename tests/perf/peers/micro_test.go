package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/server"
	"github.com/threepidd/threepidd/tests/support"
)

// leanSyncBody is what Dendrite v0.15.2 answers an incremental /sync with
// nothing new (TestProxyBench's user); leanSince is its token.
const (
	leanSince    = "s64_0_0_0_0_1_0_0_0"
	leanSyncBody = `{"next_batch":"` + leanSince + `","device_unused_fallback_key_types":[]}`
)

// leanUpstream is the cheapest possible homeserver: whoami for everyone and
// leanSyncBody for everything else, with a Content-Length, recording
// nothing, so that it costs the same whichever side calls it.
func leanUpstream(b *testing.B) *httptest.Server {
	whoami, sync := []byte(`{"user_id":"@alice:bench.test","device_id":"DEV"}`), []byte(leanSyncBody)
	whoamiLength, syncLength := []string{strconv.Itoa(len(whoami))}, []string{strconv.Itoa(len(sync))}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, length := sync, syncLength
		if strings.HasSuffix(r.URL.Path, "/account/whoami") {
			body, length = whoami, whoamiLength
		}
		w.Header()["Content-Type"] = []string{"application/json"}
		w.Header()["Content-Length"] = length
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// startThreepidd serves the real server (server.New, as the binary builds
// it: every route, the middleware, the whoami cache) on SQLite in front of
// the homeserver at upstream, until the benchmark ends, and returns its URL.
func startThreepidd(b *testing.B, upstream string) string {
	dir := b.TempDir()
	path := filepath.Join(dir, "threepidd.yaml")
	yaml := fmt.Sprintf("server_name: bench.test\nlisten: 127.0.0.1:0\ndatabase: {driver: sqlite, dsn: %q}\nhomeserver: {url: %q, kind: dendrite}\n",
		filepath.Join(dir, "threepidd.db"), upstream)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	b.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			b.Error(err)
		}
		cancel()
		<-done
	})
	return "http://" + srv.Addr()
}

// BenchmarkSyncProxy is the unit-level twin of TestProxyBench: an
// incremental /sync with nothing new (timeout=0, the client up to date)
// through the real threepidd server, through Go's bare ReverseProxy (on the
// same pool settings) and straight to the homeserver, here the cheapest one
// possible, so that what the proxies cost stands out. One client, one
// request at a time; B/op and allocs/op count client, proxy and upstream
// together, so the difference between two sides is what their proxies
// allocate. Profile one side with -cpuprofile, or count its instructions
// with callgrind.sh.
//
//	go test -run '^$' -bench BenchmarkSyncProxy -benchmem -count 5 ./tests/perf/peers
func BenchmarkSyncProxy(b *testing.B) {
	up := leanUpstream(b)
	tp := startThreepidd(b, up.URL)
	bare := serveBareProxy(b, up.URL)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	b.Cleanup(client.CloseIdleConnections)

	// The composite token threepidd gives a client up to date.
	const path = "/_matrix/client/v3/sync?timeout=0&since="
	var first struct {
		NextBatch string `json:"next_batch"`
	}
	resp, err := client.Get(tp + path + leanSince + "&access_token=tok-alice")
	if err != nil {
		b.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&first)
	resp.Body.Close()
	if err != nil || !strings.HasPrefix(first.NextBatch, "tpd1.") {
		b.Fatalf("first sync through threepidd: %v, next_batch %q", err, first.NextBatch)
	}

	buf := make([]byte, 32<<10)
	for _, side := range []struct{ name, url string }{
		{"threepidd", tp + path + first.NextBatch},
		{"bare", bare + path + leanSince},
		{"direct", up.URL + path + leanSince},
	} {
		b.Run(side.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := support.Drain(client, side.url, "tok-alice", buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
