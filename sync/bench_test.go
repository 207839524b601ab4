package sync

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
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
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer tok-alice")
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, err = io.CopyBuffer(io.Discard, resp.Body, buf)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
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
	store := sqliteStore(b)
	up := leanUpstream(b, syncBodyOf(size))
	proxyURL, _ := newProxy(b, store, up.URL)
	now, err := store.MaxStreamID(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	query := "/_matrix/client/v3/sync?timeout=0&since="
	pb := &proxyBench{
		direct:  up.URL + query + "s72594_4483_1934",
		proxied: proxyURL + query + NewToken("s72594_4483_1934", now).String(),
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
	sec := Section{"alice@example.org": {Deleted: true, MXID: "@alice:hs", Medium: "email"}}
	for _, s := range benchSizes {
		body := syncBodyOf(s.size)
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				out, err := SpliceSync(body, sec, 12345)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = out.WriteTo(io.Discard)
			}
		})
	}
}

// BenchmarkWakeLatency measures, in library mode, the time from a
// notification's append to the return of the Wait it wakes: from the call
// ("append") and from its return, the commit ("committed"; negative when Wait
// returned first). It reports p50 and p99; -benchtime 1000x gives 1000 wake-ups.
//
//	THREEPIDD_TEST_POSTGRES=... go test -run '^$' -bench BenchmarkWakeLatency -benchtime 1000x ./sync
func BenchmarkWakeLatency(b *testing.B) {
	for _, be := range storagetest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			store := storagetest.Open(b, be)
			st := New(store, Options{})
			defer st.Close()
			ctx := context.Background()
			pos, err := store.MaxStreamID(ctx)
			if err != nil {
				b.Fatal(err)
			}
			fromAppend := make([]time.Duration, 0, b.N)
			fromCommit := make([]time.Duration, 0, b.N)
			for i := 0; b.Loop(); i++ {
				done := make(chan time.Time, 1)
				go func(tok Token) {
					if _, _, err := st.Wait(ctx, "@alice:hs", tok); err != nil {
						b.Error(err)
					}
					done <- time.Now()
				}(NewToken("s", pos))
				for st.Hub().Waiting() == 0 {
					runtime.Gosched()
				}
				appended := time.Now()
				pos, err = store.AppendNotification(ctx, storage.Notification{UserID: "@alice:hs", Medium: "email",
					Address: fmt.Sprintf("a%d@example.org", i), Deleted: true, Origin: "id.test", At: time.Now().UnixMilli()})
				if err != nil {
					b.Fatal(err)
				}
				committed := time.Now()
				returned := <-done
				fromAppend = append(fromAppend, returned.Sub(appended))
				fromCommit = append(fromCommit, returned.Sub(committed))
			}
			reportPercentiles(b, "append", fromAppend)
			reportPercentiles(b, "committed", fromCommit)
		})
	}
}

// reportPercentiles reports the p50 and p99 of lat in milliseconds, as
// <name>-p50-ms and <name>-p99-ms.
func reportPercentiles(b *testing.B, name string, lat []time.Duration) {
	slices.Sort(lat)
	at := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(at(0.50), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
}

// BenchmarkWaiters measures the memory of 100,000 long-polls waiting in
// library mode (Stream.Wait, one goroutine each, as a homeserver's request
// handlers would), then wakes them all: first for nothing new (each reads
// again and waits on), then with a notification each. "hub" is the hub alone:
// 100,000 Watch contexts, no goroutines.
//
//	go test -run '^$' -bench BenchmarkWaiters -benchtime 1x ./sync
func BenchmarkWaiters(b *testing.B) {
	const n = 100_000
	store := sqliteStore(b)
	st := New(store, Options{})
	defer st.Close()
	ctx := context.Background()
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("@user%d:hs", i)
	}
	b.Run("hub", func(b *testing.B) {
		for b.Loop() {
			before := heapInUse()
			stops := make([]context.CancelFunc, n)
			for i, u := range users {
				_, stops[i] = st.Watch(ctx, u)
			}
			b.ReportMetric(float64(heapInUse()-before)/n, "bytes/watcher")
			for _, stop := range stops {
				stop()
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		for b.Loop() {
			now, err := store.MaxStreamID(ctx)
			if err != nil {
				b.Fatal(err)
			}
			before := heapInUse()
			done := make(chan struct{}, n)
			start := time.Now()
			for _, u := range users {
				go func() {
					if _, _, err := st.Wait(ctx, u, NewToken("s", now)); err != nil {
						b.Error(err)
					}
					done <- struct{}{}
				}()
			}
			for st.Hub().Waiting() < n {
				time.Sleep(10 * time.Millisecond)
			}
			b.ReportMetric(time.Since(start).Seconds(), "s-to-register")
			b.ReportMetric(float64(heapInUse()-before)/n, "bytes/waiter")
			for _, u := range users {
				st.Hub().Wake(u) // nothing new: each reads again and waits on
			}
			for st.Hub().Waiting() < n {
				time.Sleep(10 * time.Millisecond)
			}
			start = time.Now()
			for batch := range slices.Chunk(users, 1000) {
				if err := store.WithTx(ctx, func(q storage.Querier) error {
					for _, u := range batch {
						if _, err := q.AppendNotification(ctx, storage.Notification{UserID: u, Medium: "email",
							Address: "x@example.org", Deleted: true, Origin: "id.test", At: time.Now().UnixMilli()}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			for range users {
				<-done
			}
			b.ReportMetric(time.Since(start).Seconds(), "s-to-notify-all")
		}
	})
}

// heapInUse returns the bytes of heap and goroutine stacks in use, after a GC.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
