package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"strconv"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/storage/storagetest"
	tpsync "github.com/threepidd/threepidd/sync"
	"github.com/threepidd/threepidd/tests/support"
)

// benchSizes are the body sizes of the proxy benchmarks.
var benchSizes = []struct {
	name string
	size int
}{{"1KB", 1 << 10}, {"1MB", 1 << 20}, {"20MB", 20 << 20}}

// syncBodyOf returns a /sync body of about size bytes.
func syncBodyOf(size int) []byte {
	head := `{"next_batch":"s72594_4483_1934","rooms":{"join":{}},"pad":"`
	return []byte(head + strings.Repeat("x", max(0, size-len(head)-2)) + `"}`)
}

// leanUpstream is a homeserver answering whoami and, on any other path, body:
// it records nothing, so that it costs the same for direct and proxied requests.
func leanUpstream(b *testing.B, body []byte) *httptest.Server {
	length := strconv.Itoa(len(body))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/account/whoami") {
			mxerr.WriteJSON(w, http.StatusOK, map[string]string{"user_id": "@alice:hs"})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", length)
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	return srv
}

// benchGet fetches url and discards the body, failing on anything but 200.
func benchGet(b *testing.B, client *http.Client, url string, buf []byte) {
	if err := support.Drain(client, url, "tok-alice", buf); err != nil {
		b.Fatal(err)
	}
}

// proxyBench is a proxy on SQLite in front of a lean upstream, and the URLs
// of a steady-state sync (a client up to date) through it and directly.
type proxyBench struct {
	direct, proxied string
	client          *http.Client
	buf             []byte
}

func newProxyBench(b *testing.B, size int) *proxyBench {
	store := storagetest.SQLite(b)
	up := leanUpstream(b, syncBodyOf(size))
	proxyURL, _ := newProxy(b, store, up.URL, nil)
	now, err := store.MaxStreamID(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	query := "/_matrix/client/v3/sync?timeout=0&since="
	pb := &proxyBench{
		direct:  up.URL + query + "s72594_4483_1934",
		proxied: proxyURL + query + tpsync.NewToken("s72594_4483_1934", now).String(),
		client:  &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}},
		buf:     make([]byte, 32<<10),
	}
	benchGet(b, pb.client, pb.proxied, pb.buf) // warm the whoami cache and the pools
	return pb
}

// BenchmarkProxy measures a sync through the proxy and directly, one
// sub-benchmark each, for B/op and allocs/op.
//
//	go test -run '^$' -bench 'BenchmarkProxy$' -benchmem ./sync
func BenchmarkProxy(b *testing.B) {
	for _, s := range benchSizes {
		pb := newProxyBench(b, s.size)
		for _, way := range []string{"direct", "proxy"} {
			url := pb.direct
			if way == "proxy" {
				url = pb.proxied
			}
			b.Run(s.name+"/"+way, func(b *testing.B) {
				b.SetBytes(int64(s.size))
				b.ReportAllocs()
				for b.Loop() {
					benchGet(b, pb.client, url, pb.buf)
				}
			})
		}
	}
}

// BenchmarkProxyRatio alternates direct and proxied syncs, so both see the
// same machine load, and reports each one's latency and their ratio.
//
//	go test -run '^$' -bench 'BenchmarkProxyRatio' -benchtime 2000x ./sync
func BenchmarkProxyRatio(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			pb := newProxyBench(b, s.size)
			var direct, proxied time.Duration
			for b.Loop() {
				t0 := time.Now()
				benchGet(b, pb.client, pb.direct, pb.buf)
				t1 := time.Now()
				benchGet(b, pb.client, pb.proxied, pb.buf)
				direct, proxied = direct+t1.Sub(t0), proxied+time.Since(t1)
			}
			b.ReportMetric(float64(direct.Nanoseconds())/float64(b.N), "direct-ns/op")
			b.ReportMetric(float64(proxied.Nanoseconds())/float64(b.N), "proxy-ns/op")
			b.ReportMetric(float64(proxied)/float64(direct), "ratio")
		})
	}
}

// BenchmarkSplice measures splicing alone.
func BenchmarkSplice(b *testing.B) {
	sec := tpsync.Section{"alice@example.org": {Deleted: true, MXID: "@alice:hs", Medium: "email"}}
	for _, s := range benchSizes {
		body := syncBodyOf(s.size)
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				out, err := tpsync.SpliceSync(body, sec, 12345)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = out.WriteTo(io.Discard)
			}
		})
	}
}

// BenchmarkProxySpliceConcurrent sends 50 concurrent syncs of a 20 MB body,
// each with a section pending, through a proxy with the default splice
// budget, and reports the share of sections deferred to the next sync and
// the peak of the heap's live objects (sampled every 5 ms): the budget, not
// the number of clients, bounds it.
//
//	go test -run '^$' -bench 'BenchmarkProxySpliceConcurrent' -benchtime 5x ./sync/proxy
func BenchmarkProxySpliceConcurrent(b *testing.B) {
	const clients, size = 50, 20 << 20
	store := storagetest.SQLite(b)
	up := leanUpstream(b, syncBodyOf(size))
	proxyURL, _ := newProxy(b, store, up.URL, nil)
	pos := storagetest.Notify(b, store, "@alice:hs", "a@example.org", true, "", time.Now())
	url := proxyURL + "/_matrix/client/v3/sync?timeout=0&since=" + tpsync.NewToken("s72594_4483_1934", pos-1).String()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: clients}}

	var peak atomic.Uint64
	done := make(chan struct{})
	defer close(done)
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for tick := time.NewTicker(5 * time.Millisecond); ; {
			select {
			case <-done:
				tick.Stop()
				return
			case <-tick.C:
			}
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
		}
	}()
	deferred := metricstest.Value(b, "threepidd_sync_sections_deferred_total", "endpoint", "sync")
	b.SetBytes(clients * size)
	for b.Loop() {
		var wg gosync.WaitGroup
		for range clients {
			wg.Go(func() {
				if err := support.Drain(client, url, "tok-alice", make([]byte, 32<<10)); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	deferred = metricstest.Value(b, "threepidd_sync_sections_deferred_total", "endpoint", "sync") - deferred
	b.ReportMetric(deferred/float64(b.N*clients), "deferred/sync")
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
}
