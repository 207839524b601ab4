// Package longpoll holds threepidd's /sync long-poll benchmarks: the real
// server against the fakes of package fakes. They write nothing; their
// figures and the commands that reproduce them are in BENCHMARKS.md.
package longpoll

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

const syncPath = "/_matrix/client/v3/sync"

// TestMain removes the threepidd binary BenchmarkSyncIdleLongPolls builds.
func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }

// result is the outcome of a sync made in the background.
type result struct {
	at   time.Time
	body []byte
	err  error
}

// getSync sends GET url with token and user agent, and reports the answer on done.
func getSync(client support.Client, url, token, agent string, done chan<- result) {
	r, err := client.Send(context.Background(), support.Request{Method: http.MethodGet, URL: url, Token: token,
		Header: http.Header{"User-Agent": {agent}}})
	if err == nil && r.Status != http.StatusOK {
		err = fmt.Errorf("status %d: %s", r.Status, r.Body)
	}
	done <- result{time.Now(), r.Body, err}
}

// BenchmarkSyncWakeLatency measures, through the real server and the fake
// homeserver, the time from an identity server's onupdate (signed, sent with
// federation.SendOnUpdate) to the return of the long-poll it wakes: one
// iteration is one wake-up. It reports p50 and p99 from the send and from the
// onupdate's 200 (negative when the client had its answer first).
//
//	THREEPIDD_TEST_POSTGRES=... go test -run '^$' -bench BenchmarkSyncWakeLatency -benchtime 1000x ./tests/perf/longpoll
func BenchmarkSyncWakeLatency(b *testing.B) {
	for _, be := range storagetest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			e := harness.Start(b, be, harness.Options{IdentityServers: 1,
				// onupdate_per_server off: this is more than its default 50/s.
				RateLimitYAML: "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, onupdate_per_server: {per_second: 0}}"})
			// The function runs more than once on one database: a fresh user and
			// fresh addresses keep earlier runs' notifications and onupdates out.
			run := strconv.FormatInt(time.Now().UnixNano(), 36)
			alice := e.NewUser("alice" + run)
			is := e.IS[0]
			ctx := context.Background()
			address := func(i int) string { return fmt.Sprintf("r%s-a%d@example.org", run, i) }
			for i := range b.N {
				if err := e.Server.Store.UpsertBinding(ctx, storage.Binding{UserID: alice.ID, Medium: "email",
					Address: address(i), IDServer: is.Name(), BoundAt: time.Now().UnixMilli()}); err != nil {
					b.Fatal(err)
				}
			}
			client := support.Client{HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
			isClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
			done := make(chan result, 1)
			getSync(client, e.URL+syncPath, alice.Token, "bench", done)
			next := nextBatch(b, <-done)
			fromSend := make([]time.Duration, 0, b.N)
			fromAccept := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				agent := "bench-" + strconv.Itoa(i)
				go getSync(client, e.URL+syncPath+"?timeout=30000&since="+url.QueryEscape(next), alice.Token, agent, done)
				// The homeserver sees the request once threepidd watches for alice.
				for e.HS.LastHeaders(syncPath).Get("User-Agent") != agent {
					time.Sleep(50 * time.Microsecond)
				}
				sent := time.Now()
				if err := onupdate.Send(ctx, isClient, is.Key(), is.Name(), harness.ServerName, e.URL,
					onupdate.Body{Threepid: address(i), MXID: "@mallory:evil.test"}); err != nil {
					b.Fatal(err)
				}
				accepted := time.Now()
				r := <-done
				next = nextBatch(b, r)
				if !strings.Contains(string(r.body), `"`+address(i)+`"`) {
					b.Fatalf("woken without the section: %.300s", r.body)
				}
				fromSend = append(fromSend, r.at.Sub(sent))
				fromAccept = append(fromAccept, r.at.Sub(accepted))
			}
			b.StopTimer()
			support.ReportPercentiles(b, "sent", fromSend)
			support.ReportPercentiles(b, "accepted", fromAccept)
		})
	}
}

// nextBatch returns the next_batch of a sync answer.
func nextBatch(b *testing.B, r result) string {
	b.Helper()
	var body struct {
		NextBatch string `json:"next_batch"`
	}
	if r.err != nil || json.Unmarshal(r.body, &body) != nil || body.NextBatch == "" {
		b.Fatalf("sync: %v: %.300s", r.err, r.body)
	}
	return body.NextBatch
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
