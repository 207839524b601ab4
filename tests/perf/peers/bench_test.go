//go:build realpeer

package peers

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/realpeer"
	"github.com/threepidd/threepidd/tests/support"
)

// benchEnv turns TestRealPeerBench on.
const benchEnv = "THREEPIDD_TEST_REALPEER_BENCH"

const (
	// requestTimeout bounds one request of the benchmark.
	requestTimeout = 30 * time.Second
	// benchWorkers is how many clients send requests at once.
	benchWorkers = 8
	// benchRound is how long one side of a pair is measured at a time;
	// benchRounds rounds alternate the sides, so background load on a shared
	// machine hits both alike.
	benchRound  = 2 * time.Second
	benchRounds = 3
	// benchRooms rooms with benchMessages messages each give the initial
	// sync something to carry.
	benchRooms    = 4
	benchMessages = 10
)

func TestMain(m *testing.M) {
	// threepidd runs in-process: its logs are noise in the test output
	// unless asked for.
	if os.Getenv("THREEPIDD_TEST_VERBOSE") == "" {
		slog.SetDefault(slog.New(slog.DiscardHandler))
	}
	os.Exit(m.Run())
}

// TestRealPeerBench measures threepidd against Dendrite on this machine, in
// one run, side by side, and logs two Markdown tables (BENCHMARKS.md, "Real
// peers"):
//
//   - GET /account/3pid answered by threepidd (token checked with Dendrite's
//     whoami, cached) and by Dendrite itself, for a user with no 3PID;
//   - /sync through threepidd's proxy and from Dendrite directly, initial
//     (no since) and incremental (since the latest, timeout=0), for a user
//     in benchRooms rooms.
//
// Both are called directly (no nginx), by benchWorkers clients for
// benchRounds rounds of benchRound per side, the sides alternating; once per
// storage backend of threepidd. Opt-in: THREEPIDD_TEST_REALPEER_BENCH=1.
func TestRealPeerBench(t *testing.T) {
	if os.Getenv(benchEnv) != "1" {
		t.Skipf("set %s=1 to run the side-by-side benchmark", benchEnv)
	}
	env, err := realpeer.Setup()
	if err != nil {
		t.Fatalf("realpeer setup: %v", err)
	}
	ctx := realpeer.ContextOf(t)
	d := realpeer.StartDendrite(ctx, t, env)
	alice, err := d.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	populateRooms(ctx, t, d, alice.AccessToken)
	var hsSince struct {
		NextBatch string `json:"next_batch"`
	}
	if err := realpeer.DoJSON(ctx, d.URL, http.MethodGet, "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil, &hsSince); err != nil {
		t.Fatal(err)
	}
	initial, err := support.Do(ctx, http.MethodGet, d.URL+"/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := support.Client{HTTP: &http.Client{
		Timeout:   requestTimeout,
		Transport: &http.Transport{MaxIdleConns: 4 * benchWorkers, MaxIdleConnsPerHost: 2 * benchWorkers},
	}}
	t.Cleanup(client.HTTP.CloseIdleConnections)

	var threepids, syncs strings.Builder
	threepids.WriteString("| threepidd backend | threepidd req/s | threepidd p99 | Dendrite req/s | Dendrite p99 | req/s ratio | p99 ratio |\n|---|---|---|---|---|---|---|\n")
	syncs.WriteString("| /sync | threepidd backend | via threepidd req/s | via threepidd p99 | Dendrite direct req/s | Dendrite direct p99 | req/s ratio | p99 ratio |\n|---|---|---|---|---|---|---|---|\n")
	for _, b := range storagetest.Backends(t) {
		tp := realpeer.StartThreepidd(ctx, t, realpeer.ThreepiddOptions{Backend: b, Dendrite: d})
		var tpSince struct {
			NextBatch string `json:"next_batch"`
		}
		if err := realpeer.DoJSON(ctx, tp.URL, http.MethodGet, "/_matrix/client/v3/sync?timeout=0", alice.AccessToken, nil, &tpSince); err != nil {
			t.Fatal(err)
		}
		get := func(base, path string) benchTarget {
			return benchTarget{client: client, url: base + path, token: alice.AccessToken}
		}
		tpRes, hsRes := comparePair(ctx, t, get(tp.URL, "/_matrix/client/v3/account/3pid"), get(d.URL, "/_matrix/client/v3/account/3pid"))
		fmt.Fprintf(&threepids, "| %s | %s | %s | %.2f | %.2f |\n", b.Name, tpRes.cells(), hsRes.cells(), tpRes.rate()/hsRes.rate(), ratio(tpRes.p99(), hsRes.p99()))
		for _, s := range []struct{ name, tpPath, hsPath string }{
			{"initial", "/_matrix/client/v3/sync?timeout=0", "/_matrix/client/v3/sync?timeout=0"},
			{"incremental", "/_matrix/client/v3/sync?timeout=0&since=" + tpSince.NextBatch, "/_matrix/client/v3/sync?timeout=0&since=" + hsSince.NextBatch},
		} {
			tpRes, hsRes := comparePair(ctx, t, get(tp.URL, s.tpPath), get(d.URL, s.hsPath))
			fmt.Fprintf(&syncs, "| %s | %s | %s | %s | %.2f | %.2f |\n", s.name, b.Name, tpRes.cells(), hsRes.cells(), tpRes.rate()/hsRes.rate(), ratio(tpRes.p99(), hsRes.p99()))
		}
	}
	t.Logf("%d CPUs (load average at the end: %s), %d clients, %d alternating rounds of %v per side; user in %d rooms (initial sync %d bytes from Dendrite)\n\nGET /_matrix/client/v3/account/3pid\n\n%s\n/sync\n\n%s",
		runtime.NumCPU(), support.LoadAverage(), benchWorkers, benchRounds, benchRound, benchRooms, len(initial.Body), threepids.String(), syncs.String())
}

// populateRooms gives the token's user benchRooms rooms of benchMessages messages.
func populateRooms(ctx context.Context, t *testing.T, d *realpeer.Dendrite, token string) {
	t.Helper()
	for i := range benchRooms {
		var room struct {
			RoomID string `json:"room_id"`
		}
		if err := realpeer.DoJSON(ctx, d.URL, http.MethodPost, "/_matrix/client/v3/createRoom", token, map[string]any{"name": fmt.Sprintf("bench %d", i)}, &room); err != nil {
			t.Fatal(err)
		}
		for j := range benchMessages {
			path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/bench-%d-%d", room.RoomID, i, j)
			var sent map[string]any
			if err := realpeer.DoJSON(ctx, d.URL, http.MethodPut, path, token, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", j)}, &sent); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// benchTarget is one GET with a bearer token.
type benchTarget struct {
	client support.Client
	url    string
	token  string
}

// once sends the request and reads the whole answer, which must be a 200.
func (b benchTarget) once(ctx context.Context) error {
	r, err := b.client.Do(ctx, http.MethodGet, b.url, b.token, nil)
	if err != nil {
		return err
	}
	if r.Status != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", b.url, r.Status)
	}
	return nil
}

// benchResult is what a load run measured.
type benchResult struct {
	elapsed   time.Duration
	latencies []time.Duration // sorted once the run ends
}

func (r benchResult) rate() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

func (r benchResult) p99() time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[(len(r.latencies)*99)/100]
}

// cells is "req/s | p99" for a table.
func (r benchResult) cells() string {
	return fmt.Sprintf("%.0f | %s", r.rate(), fmtDuration(r.p99()))
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func fmtDuration(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// comparePair warms both targets up, then measures them in alternating
// rounds and returns their merged results.
func comparePair(ctx context.Context, t *testing.T, a, b benchTarget) (benchResult, benchResult) {
	t.Helper()
	for _, target := range []benchTarget{a, b} {
		if _, err := load(ctx, target, benchRound/4); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	var ra, rb benchResult
	for range benchRounds {
		for _, side := range []struct {
			target benchTarget
			into   *benchResult
		}{{a, &ra}, {b, &rb}} {
			r, err := load(ctx, side.target, benchRound)
			if err != nil {
				t.Fatal(err)
			}
			side.into.elapsed += r.elapsed
			side.into.latencies = append(side.into.latencies, r.latencies...)
		}
	}
	slices.Sort(ra.latencies)
	slices.Sort(rb.latencies)
	return ra, rb
}

// load sends requests to target from benchWorkers clients for d and returns
// every latency; the first failed request ends the run with its error.
func load(ctx context.Context, target benchTarget, d time.Duration) (benchResult, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	deadline := time.Now().Add(d)
	var (
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range benchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := target.once(ctx); err != nil {
					cancel(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return benchResult{}, err
	}
	return benchResult{elapsed: time.Since(start), latencies: latencies}, nil
}
