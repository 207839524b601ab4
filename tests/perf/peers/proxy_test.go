//go:build realpeer

package peers

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/realpeer"
	"github.com/threepidd/threepidd/tests/support"
)

// proxyBenchEnv turns TestProxyBench on; the other two tune it.
const (
	proxyBenchEnv         = "THREEPIDD_TEST_PROXY_BENCH"
	proxyBenchRoundsEnv   = "THREEPIDD_TEST_PROXY_BENCH_ROUNDS"
	proxyBenchDurationEnv = "THREEPIDD_TEST_PROXY_BENCH_DURATION"
)

// TestProxyBench measures an incremental /sync with nothing new
// (timeout=0, since = the latest token) three ways, side by side, with wrk
// (BENCHMARKS.md, "/sync proxy vs bare ReverseProxy"):
//
//   - direct: Dendrite itself;
//   - bare: Go's bare httputil.ReverseProxy in front of the same Dendrite
//     (serveBareProxy);
//   - threepidd: threepidd's /sync proxy in front of it (the real server,
//     whoami cached, the notification position remembered).
//
// threepidd and the bare proxy run in this process, so they share
// GOMAXPROCS, the runtime and the garbage collector; both reach Dendrite on
// the same pool settings, and wrk (16 connections) loads each in turn with
// the same flags. Each round measures the three sides one after the other,
// in an order that rotates from round to round, so that load on the machine
// that comes and goes hits every side alike; the ratios are taken within
// each round, and the medians over the rounds are reported. Besides wrk's
// requests/s and p99, the CPU time this process spent per request while a
// proxy was loaded (getrusage: the proxy, its share of the kernel's socket
// work, the garbage collector, and threepidd's idle background work, which
// runs under both) compares what the two proxies cost, which the machine's
// load disturbs less than it does latencies. Once per storage backend of
// threepidd (an up-to-date sync makes no query, so they should agree).
//
// Opt-in: THREEPIDD_TEST_PROXY_BENCH=1; THREEPIDD_TEST_PROXY_BENCH_ROUNDS
// (default 9, at least 5) and THREEPIDD_TEST_PROXY_BENCH_DURATION (per side
// and round, default 7s).
func TestProxyBench(t *testing.T) {
	if os.Getenv(proxyBenchEnv) != "1" {
		t.Skipf("set %s=1 to run the /sync proxy benchmark", proxyBenchEnv)
	}
	rounds, duration := 9, 7*time.Second
	if v := os.Getenv(proxyBenchRoundsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 {
			t.Fatalf("%s=%q: want a whole number, at least 5", proxyBenchRoundsEnv, v)
		}
		rounds = n
	}
	if v := os.Getenv(proxyBenchDurationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			t.Fatalf("%s=%q: want a duration of at least 1s", proxyBenchDurationEnv, v)
		}
		duration = d
	}
	ctx := realpeer.ContextOf(t)
	wrk, err := installWrk(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env, err := realpeer.Setup()
	if err != nil {
		t.Fatalf("realpeer setup: %v", err)
	}
	d := realpeer.StartDendrite(ctx, t, env)
	alice, err := d.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	populateRooms(ctx, t, d, alice.AccessToken)
	bare := serveBareProxy(t, d.URL)

	var report strings.Builder
	fmt.Fprintf(&report, "%d CPUs, GOMAXPROCS %d, %s; wrk %d threads, %d connections; %d rounds of %v per side\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), wrkThreads, wrkConnections, rounds, duration)
	for _, b := range storagetest.Backends(t) {
		tp := realpeer.StartThreepidd(ctx, t, realpeer.ThreepiddOptions{Backend: b, Dendrite: d})
		const path = "/_matrix/client/v3/sync?timeout=0&since="
		hsSince, tpSince := latestToken(t, d.URL, alice.AccessToken), latestToken(t, tp.URL, alice.AccessToken)
		sides := []proxySide{
			{name: "direct", url: d.URL + path + hsSince},
			{name: "bare", url: bare + path + hsSince},
			{name: "threepidd", url: tp.URL + path + tpSince},
		}
		for _, s := range sides {
			r, err := support.Do(ctx, http.MethodGet, s.url, alice.AccessToken, nil)
			if err != nil || r.Status != http.StatusOK {
				t.Fatalf("%s: incremental sync: %v %v", s.name, r, err)
			}
			if s.name == "direct" {
				fmt.Fprintf(&report, "\n%s: Dendrite's incremental sync body %d bytes; load average before: %s\n\n", b.Name, len(r.Body), support.LoadAverage())
			}
			if _, err := runWrk(ctx, wrk, s.url, alice.AccessToken, 2*time.Second); err != nil { // warm-up
				t.Fatal(err)
			}
		}
		report.WriteString("| round | order | direct req/s | direct p99 | bare req/s | bare p99 | bare CPU/req | threepidd req/s | threepidd p99 | threepidd CPU/req | threepidd/bare req/s | threepidd/bare p99 | threepidd/bare CPU/req |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		results := make([][]wrkResult, len(sides)) // by side, then round
		var rateRatios, p99Ratios, cpuRatios []float64
		for round := range rounds {
			var order []string
			for i := range sides {
				s := (i + round) % len(sides)
				before := processCPU(t)
				r, err := runWrk(ctx, wrk, sides[s].url, alice.AccessToken, duration)
				if err != nil {
					t.Fatal(err)
				}
				r.cpu = (processCPU(t) - before) / time.Duration(r.requests)
				results[s] = append(results[s], r)
				order = append(order, sides[s].name[:1])
			}
			direct, bare, tp := results[0][round], results[1][round], results[2][round]
			rateRatios = append(rateRatios, tp.rate/bare.rate)
			p99Ratios = append(p99Ratios, float64(tp.p99)/float64(bare.p99))
			cpuRatios = append(cpuRatios, float64(tp.cpu)/float64(bare.cpu))
			fmt.Fprintf(&report, "| %d | %s | %.0f | %s | %.0f | %s | %s | %.0f | %s | %s | %.3f | %.3f | %.3f |\n", round+1, strings.Join(order, ""),
				direct.rate, fmtDuration(direct.p99), bare.rate, fmtDuration(bare.p99), fmtMicros(bare.cpu), tp.rate, fmtDuration(tp.p99), fmtMicros(tp.cpu),
				tp.rate/bare.rate, float64(tp.p99)/float64(bare.p99), float64(tp.cpu)/float64(bare.cpu))
		}
		med := func(side int, f func(wrkResult) float64) float64 {
			var xs []float64
			for _, r := range results[side] {
				xs = append(xs, f(r))
			}
			return median(xs)
		}
		rate := func(r wrkResult) float64 { return r.rate }
		p99 := func(r wrkResult) float64 { return float64(r.p99) }
		cpu := func(r wrkResult) float64 { return float64(r.cpu) }
		fmt.Fprintf(&report, "| median | | %.0f | %s | %.0f | %s | %s | %.0f | %s | %s | **%.3f** | **%.3f** | **%.3f** |\n",
			med(0, rate), fmtDuration(time.Duration(med(0, p99))), med(1, rate), fmtDuration(time.Duration(med(1, p99))), fmtMicros(time.Duration(med(1, cpu))),
			med(2, rate), fmtDuration(time.Duration(med(2, p99))), fmtMicros(time.Duration(med(2, cpu))), median(rateRatios), median(p99Ratios), median(cpuRatios))
		fmt.Fprintf(&report, "\nload average after: %s; bare/direct req/s %.3f, threepidd/direct req/s %.3f (medians of the rounds' ratios)\n",
			support.LoadAverage(), median(ratiosOf(results[1], results[0])), median(ratiosOf(results[2], results[0])))
		fmt.Fprintf(&report, "target req/s ≥ 1.0× bare: %s; target p99 ≤ 1.05× bare: %s\n",
			verdict(median(rateRatios) >= 1.0), verdict(median(p99Ratios) <= 1.05))
	}
	t.Logf("order: d direct, b bare, t threepidd\n%s", report.String())
}

// proxySide is one way to the homeserver: its URL for an incremental sync.
type proxySide struct{ name, url string }

// latestToken is the next_batch of a first sync at base: the latest token.
func latestToken(t *testing.T, base, token string) string {
	t.Helper()
	var first struct {
		NextBatch string `json:"next_batch"`
	}
	if err := realpeer.DoJSON(realpeer.ContextOf(t), base, http.MethodGet, "/_matrix/client/v3/sync?timeout=0", token, nil, &first); err != nil || first.NextBatch == "" {
		t.Fatalf("first sync at %s: %v (next_batch %q)", base, err, first.NextBatch)
	}
	return first.NextBatch
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func fmtMicros(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// ratiosOf is the rates of as over those of bs, round by round.
func ratiosOf(as, bs []wrkResult) []float64 {
	out := make([]float64, len(as))
	for i := range as {
		out[i] = as[i].rate / bs[i].rate
	}
	return out
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "missed"
}
