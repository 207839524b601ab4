// Package longpoll holds threepidd's /sync long-poll benchmarks: the real
// server against the fakes of package fakes. They write nothing; their
// figures and the commands that reproduce them are in BENCHMARKS.md.
package longpoll

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

const syncPath = "/_matrix/client/v3/sync"

// TestMain removes the threepidd binary BenchmarkSyncIdleLongPolls builds.
func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }

// BenchmarkSyncWakeLatency measures, through the real server and the fake
// homeserver, the time from an identity server's onupdate to the return of
// the long-poll it wakes, on one instance ([harness.BenchWake]).
//
//	THREEPIDD_TEST_POSTGRES=... go test -run '^$' -bench BenchmarkSyncWakeLatency -benchtime 1000x ./tests/perf/longpoll
func BenchmarkSyncWakeLatency(b *testing.B) {
	for _, be := range storagetest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			e := harness.Start(b, be, harness.Options{IdentityServers: 1, RateLimitYAML: harness.WakeRateLimits})
			harness.BenchWake(b, e, e)
		})
	}
}

// BenchmarkSyncIdleLongPolls measures threepidd's memory with 5,000 idle
// long-polls through the proxy: the threepidd binary runs in a process of its own (the
// 5,000 client connections, its 5,000 upstream ones and the fake homeserver's
// 5,000 would pass 20,000 open files in one), on SQLite, in front of the fake
// homeserver, which holds each /sync for 30 s. It reports threepidd's
// resident memory, heap and goroutines per waiting long-poll.
//
//	go test -run '^$' -bench BenchmarkSyncIdleLongPolls -benchtime 1x ./tests/perf/longpoll
func BenchmarkSyncIdleLongPolls(b *testing.B) {
	const n = 5000
	hs := fakes.NewHomeserver(b, harness.ServerName)
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i], _ = hs.Login(hs.AddUser(fmt.Sprintf("idle%d", i), "pw"))
	}
	dir := b.TempDir()
	configPath := filepath.Join(dir, "threepidd.yaml")
	yaml := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:0\nmetrics_listen: 127.0.0.1:0\n"+
		"database: {driver: sqlite, dsn: %q}\nhomeserver: {url: %q, token_cache_ttl: 10m, mirror: none}\n",
		harness.ServerName, filepath.Join(dir, "threepidd.db"), hs.URL())
	if err := os.WriteFile(configPath, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	_, api, metricsURL := support.StartThreepidd(b, configPath)
	metricsURL += "/metrics"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for b.Loop() {
		before := scrape(b, metricsURL)
		ctx, cancel := context.WithCancel(context.Background())
		var wg gosync.WaitGroup
		start := time.Now()
		for _, token := range tokens {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+syncPath+"?timeout=30000&since=s0_34~x.0", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		var after map[string]float64
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			after = scrape(b, metricsURL)
			if after["threepidd_sync_waiting_long_polls"] >= n {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%v long-polls waiting after 20 s, want %d", after["threepidd_sync_waiting_long_polls"], n)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "s-to-establish")
		perPoll := func(metric string) float64 { return (after[metric] - before[metric]) / n }
		b.ReportMetric(after["process_resident_memory_bytes"]/(1<<20), "rss-MB")
		b.ReportMetric(perPoll("process_resident_memory_bytes")/1024, "rss-KB/poll")
		b.ReportMetric(perPoll("go_memstats_heap_inuse_bytes")/1024, "heap-KB/poll")
		b.ReportMetric(perPoll("go_memstats_stack_inuse_bytes")/1024, "stack-KB/poll")
		b.ReportMetric(perPoll("go_goroutines"), "goroutines/poll")
		b.ReportMetric(after["process_open_fds"], "open-fds")
		cancel()
		wg.Wait()
	}
}

// scrape reads the unlabelled samples of a Prometheus text endpoint.
func scrape(b *testing.B, url string) map[string]float64 {
	r, err := support.Do(context.Background(), http.MethodGet, url, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out
}
