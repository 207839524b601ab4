// Package instances holds the benchmarks of several threepidd instances on
// one Postgres: the throughput of one instance against two, behind the
// shipped nginx configuration and with the client balancing by itself, and
// the latency of a wake-up across instances. They are opt-in
// (THREEPIDD_TEST_INSTANCES_BENCH=1: they take minutes and load the
// machine) and write nothing; their figures and the command that reproduces
// them are in BENCHMARKS.md, "Several instances".
package instances

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// BenchEnv turns the benchmarks on.
const BenchEnv = "THREEPIDD_TEST_INSTANCES_BENCH"

// TestMain removes the threepidd binary BenchmarkInstancesThroughput builds.
func TestMain(m *testing.M) { os.Exit(support.RunTests(m)) }

// postgres returns a fresh Postgres backend, skipping the benchmark unless
// BenchEnv is set and Postgres is configured.
func postgres(b *testing.B) storagetest.Backend {
	if os.Getenv(BenchEnv) == "" {
		b.Skipf("set %s=1 to run (minutes, the machine loaded)", BenchEnv)
	}
	for _, be := range storagetest.Backends(b) {
		if be.Driver == backend.Postgres {
			return be
		}
	}
	b.Skipf("instances share a store only on Postgres: set %s", storagetest.PostgresEnv)
	return storagetest.Backend{}
}

// durationEnv is the duration in the environment variable name, or def.
func durationEnv(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return d
}

// sample is one measured round.
type sample struct {
	requests int64
	elapsed  time.Duration
	// cpu is the CPU time used during the round, by who.
	cpu map[string]time.Duration
	// busy and total are the machine's CPU time during the round.
	busy, total time.Duration
}

func (s sample) rps() float64 { return float64(s.requests) / s.elapsed.Seconds() }

// perRequest is who's CPU time per request, in microseconds.
func (s sample) perRequest(who ...string) float64 {
	var d time.Duration
	for _, w := range who {
		d += s.cpu[w]
	}
	return float64(d.Microseconds()) / float64(s.requests)
}

// BenchmarkInstancesThroughput compares one threepidd instance with two on
// one Postgres: requests per second of GET /account/3pid (2 3PIDs a user)
// and of an incremental /sync (timeout=0, nothing new: the fake homeserver
// answers at once), 64 users, 32 concurrent keep-alive clients. The instances
// are threepidd binaries in processes of their own; the load generator and
// the fake homeserver run in the benchmark's process. Two front ends: nginx
// with the shipped configuration (one nginx per instance count, 2 workers),
// and the client balancing round-robin by itself ("direct"). Rounds
// alternate one and two instances; each lasts THREEPIDD_TEST_INSTANCES_ROUND
// (default 5s), THREEPIDD_TEST_INSTANCES_ROUNDS (default 3) of each. It logs
// every round and reports the medians, their ratio, and the CPU time per
// request of the threepidd processes (summed), Postgres, nginx and the
// benchmark's own process.
//
//	THREEPIDD_TEST_INSTANCES_BENCH=1 THREEPIDD_TEST_POSTGRES=... go test -run '^$' -bench BenchmarkInstancesThroughput -benchtime 1x -timeout 30m ./tests/perf/instances
func BenchmarkInstancesThroughput(b *testing.B) {
	be := postgres(b)
	round := durationEnv(b, "THREEPIDD_TEST_INSTANCES_ROUND", 5*time.Second)
	rounds := 3
	if v := os.Getenv("THREEPIDD_TEST_INSTANCES_ROUNDS"); v != "" {
		var err error
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			b.Fatalf("THREEPIDD_TEST_INSTANCES_ROUNDS=%q", v)
		}
	}
	const users, clients = 64, 32

	hs := fakes.NewHomeserver(b, harness.ServerName)
	store := storagetest.Open(b, be)
	ctx := context.Background()
	tokens := make([]string, users)
	for i := range tokens {
		id := hs.AddUser(fmt.Sprintf("bench%d", i), "pw")
		tokens[i], _ = hs.Login(id)
		for j := range 2 {
			if err := store.InsertAssociation(ctx, storage.Association{UserID: id, Medium: "email",
				Address: fmt.Sprintf("bench%d-%d@example.org", i, j), ValidatedAt: 1, AddedAt: 1}); err != nil {
				b.Fatal(err)
			}
		}
	}
	dir := b.TempDir()
	configPath := filepath.Join(dir, "threepidd.yaml")
	yaml := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:0\n"+
		"database: {driver: postgres, dsn: %q}\nhomeserver: {url: %q, token_cache_ttl: 10m, mirror: none}\n",
		harness.ServerName, be.DSN, hs.URL())
	if err := os.WriteFile(configPath, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	var procs []*support.Process
	var apis []string
	for range 2 {
		p, api, _ := support.StartThreepidd(b, configPath)
		procs, apis = append(procs, p), append(apis, api)
	}
	nginxBin := support.RequireNginx(b)
	front := map[int]string{}
	for _, n := range []int{1, 2} {
		var addrs []string
		for _, api := range apis[:n] {
			addrs = append(addrs, strings.TrimPrefix(api, "http://"))
		}
		ng, err := support.StartNginx(ctx, b, support.NginxOptions{Binary: nginxBin, Threepidd: addrs,
			Homeserver: strings.TrimPrefix(hs.URL(), "http://"), Workers: 2, WorkerConnections: 1024})
		if err != nil {
			b.Fatal(err)
		}
		front[n] = ng.URL
	}
	client := support.Client{HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * clients, MaxConnsPerHost: 2 * clients}}}

	// Each user's token for an incremental sync: a first sync's next_batch.
	since := make([]string, users)
	for i, tok := range tokens {
		r, err := client.Send(ctx, support.Request{Method: http.MethodGet, URL: apis[0] + "/_matrix/client/v3/sync?timeout=0", Token: tok})
		var body struct {
			NextBatch string `json:"next_batch"`
		}
		if err != nil || r.Status != 200 || json.Unmarshal(r.Body, &body) != nil {
			b.Fatalf("first sync: %v %s", err, r)
		}
		since[i] = url.QueryEscape(body.NextBatch)
	}
	endpoints := []struct {
		name string
		path func(user int) string
	}{
		{"3pid", func(int) string { return "/_matrix/client/v3/account/3pid" }},
		{"sync", func(u int) string { return "/_matrix/client/v3/sync?timeout=0&since=" + since[u] }},
	}
	fronts := []struct {
		name    string
		targets func(n int) []string
	}{
		{"nginx", func(n int) []string { return []string{front[n]} }},
		{"direct", func(n int) []string { return apis[:n] }},
	}

	for b.Loop() {
		b.Logf("machine load (1, 5, 15 min) before: %s", support.LoadAverage())
		for _, ep := range endpoints {
			for _, fr := range fronts {
				got := map[int][]sample{}
				for r := range rounds {
					for _, n := range []int{1, 2} {
						s := measure(b, client, procs, fr.targets(n), tokens, ep.path, clients, round)
						got[n] = append(got[n], s)
						b.Logf("%s via %s, round %d, %d instance(s): %.0f req/s; CPU µs/request: threepidd %.0f (A %.0f, B %.0f), postgres %.0f, nginx %.0f, bench process %.0f; machine busy %.0f%%",
							ep.name, fr.name, r+1, n, s.rps(), s.perRequest("A", "B"), s.perRequest("A"), s.perRequest("B"),
							s.perRequest("postgres"), s.perRequest("nginx"), s.perRequest("bench"), 100*float64(s.busy)/float64(s.total))
					}
				}
				one, two := median(got[1]), median(got[2])
				prefix := ep.name + "-" + fr.name
				b.ReportMetric(one.rps(), prefix+"-1-req/s")
				b.ReportMetric(two.rps(), prefix+"-2-req/s")
				b.ReportMetric(two.rps()/one.rps(), prefix+"-ratio")
				b.ReportMetric(one.perRequest("A", "B"), prefix+"-1-threepidd-cpu-µs/req")
				b.ReportMetric(two.perRequest("A", "B"), prefix+"-2-threepidd-cpu-µs/req")
			}
		}
		b.Logf("machine load (1, 5, 15 min) after: %s", support.LoadAverage())
	}
}

// median is the sample of median throughput.
func median(ss []sample) sample {
	ss = slices.Clone(ss)
	slices.SortFunc(ss, func(a, b sample) int {
		switch {
		case a.rps() < b.rps():
			return -1
		case a.rps() > b.rps():
			return 1
		}
		return 0
	})
	return ss[len(ss)/2]
}

// measure runs clients goroutines for d, each sending GET path(user) with
// that user's token to the targets in turn, and returns the throughput and
// the CPU each party used meanwhile. Any answer but 200 fails the benchmark.
func measure(b *testing.B, client support.Client, procs []*support.Process, targets, tokens []string, path func(int) string, clients int, d time.Duration) sample {
	cpu := func() map[string]time.Duration {
		m := map[string]time.Duration{
			"postgres": support.CommandCPU("postgres"),
			"nginx":    support.CommandCPU("nginx"),
		}
		for i, p := range procs {
			c, err := support.ProcessCPU(p.Pid())
			if err != nil {
				b.Fatal(err)
			}
			m[string(rune('A'+i))] = c
		}
		self, err := support.ProcessCPU(os.Getpid())
		if err != nil {
			b.Fatal(err)
		}
		m["bench"] = self
		return m
	}
	before := cpu()
	busy0, total0, err := support.MachineCPU()
	if err != nil {
		b.Fatal(err)
	}
	var (
		count  atomic.Int64
		failed atomic.Pointer[string]
		wg     sync.WaitGroup
	)
	start := time.Now()
	stop := start.Add(d)
	for c := range clients {
		wg.Go(func() {
			for i := c; time.Now().Before(stop); i += clients {
				u := i % len(tokens)
				r, err := client.Send(context.Background(), support.Request{Method: http.MethodGet,
					URL: targets[i%len(targets)] + path(u), Token: tokens[u]})
				if err != nil || r.Status != 200 {
					msg := fmt.Sprintf("%v %s", err, r)
					failed.CompareAndSwap(nil, &msg)
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if msg := failed.Load(); msg != nil {
		b.Fatalf("a request failed: %s", *msg)
	}
	after := cpu()
	busy1, total1, err := support.MachineCPU()
	if err != nil {
		b.Fatal(err)
	}
	s := sample{requests: count.Load(), elapsed: elapsed, cpu: map[string]time.Duration{}, busy: busy1 - busy0, total: total1 - total0}
	for k, v := range after {
		s.cpu[k] = v - before[k]
	}
	return s
}

// BenchmarkInstancesWake measures a wake-up across instances: alice
// long-polls /sync (timeout=30000) on instance A, a fake identity server
// sends a signed onupdate taking one of her bindings over to instance B, and
// A answers with the section once Postgres's NOTIFY reaches it. One
// iteration is one wake-up. "accepted" is from B's 200 to A's answer, "sent"
// from the onupdate's send. Both instances run in the benchmark's process
// (harness.StartCluster), each with its own store and LISTEN connection.
//
//	THREEPIDD_TEST_INSTANCES_BENCH=1 THREEPIDD_TEST_POSTGRES=... go test -run '^$' -bench BenchmarkInstancesWake -benchtime 1000x ./tests/perf/instances
func BenchmarkInstancesWake(b *testing.B) {
	c := harness.StartCluster(b, postgres(b), 2, harness.Options{IdentityServers: 1, RateLimitYAML: harness.WakeRateLimits})
	harness.BenchWake(b, c.Instances[0], c.Instances[1])
}
