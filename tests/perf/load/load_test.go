package load

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

// loadEnv turns TestLoad on.
const loadEnv = "THREEPIDD_TEST_LOAD"

// p99Target is the bound on threepidd's p99 latency over the baseline's.
const p99Target = 1.3

// scaleTargets bound, per backend, how much threepidd's p99 may grow from
// the smallest run of THREEPIDD_TEST_LOAD_SIZES to the largest.
var scaleTargets = map[string]float64{"postgres": 1.2, "sqlite": 1.5}

// settings are the knobs of a run.
type settings struct {
	// duration is the measured time per operation and side, split in rounds.
	duration time.Duration
	// warmup is the unmeasured load per operation and side before the rounds.
	warmup          time.Duration
	clients, rounds int
	// sizes are the seeded user counts, one run each (THREEPIDD_TEST_LOAD_SIZES,
	// else THREEPIDD_TEST_LOAD_USERS).
	sizes []int
	// ops selects operations by key (nil: all).
	ops map[string]bool
}

// loadSettings reads the knobs from the environment.
func loadSettings(t *testing.T) settings {
	t.Helper()
	users := 10_000
	s := settings{duration: 20 * time.Second, warmup: 2 * time.Second, clients: 100, rounds: 10}
	for name, d := range map[string]*time.Duration{"THREEPIDD_TEST_LOAD_DURATION": &s.duration, "THREEPIDD_TEST_LOAD_WARMUP": &s.warmup} {
		if v := os.Getenv(name); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed < 0 {
				t.Fatalf("%s=%q: want a duration such as 20s", name, v)
			}
			*d = parsed
		}
	}
	for name, n := range map[string]*int{"THREEPIDD_TEST_LOAD_USERS": &users, "THREEPIDD_TEST_LOAD_CLIENTS": &s.clients, "THREEPIDD_TEST_LOAD_ROUNDS": &s.rounds} {
		if v := os.Getenv(name); v != "" {
			parsed, err := strconv.Atoi(v)
			if err != nil || parsed < 1 {
				t.Fatalf("%s=%q: want a positive integer", name, v)
			}
			*n = parsed
		}
	}
	s.sizes = []int{users}
	if v := os.Getenv("THREEPIDD_TEST_LOAD_SIZES"); v != "" {
		s.sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("THREEPIDD_TEST_LOAD_SIZES=%q: want positive integers, comma-separated", v)
			}
			s.sizes = append(s.sizes, n)
		}
	}
	if v := os.Getenv("THREEPIDD_TEST_LOAD_OPS"); v != "" {
		s.ops = map[string]bool{}
		for _, key := range strings.Split(v, ",") {
			s.ops[strings.TrimSpace(key)] = true
		}
	}
	return s
}

// TestLoad drives threepidd and the baseline side by side on each storage
// backend, once per size, and prints a Markdown table per backend and size
// (see the package comment) and, with several sizes, how each p99 grew from
// the smallest to the largest. It fails on any error; a p99 ratio over its
// target is marked in the tables.
func TestLoad(t *testing.T) {
	if os.Getenv(loadEnv) != "1" {
		t.Skipf("set %s=1 to run the load test (see the package comment)", loadEnv)
	}
	s := loadSettings(t)
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			runs := make([][]Row, len(s.sizes))
			for i, users := range s.sizes {
				t.Run(strconv.Itoa(users), func(t *testing.T) { runs[i] = runLoad(t, freshBackend(t, b.Name), users, s) })
			}
			if last := len(s.sizes) - 1; last > 0 {
				fmt.Printf("\n### %s: p99 at %d users over p99 at %d users\n\n", b.Name, s.sizes[last], s.sizes[0])
				if err := WriteScaleTable(os.Stdout, runs[0], runs[last], s.sizes[0], s.sizes[last], scaleTargets[b.Name]); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// freshBackend is a fresh, empty database of the backend called name.
func freshBackend(t *testing.T, name string) storagetest.Backend {
	for _, b := range storagetest.Backends(t) {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no %s backend", name)
	return storagetest.Backend{}
}

// runLoad seeds users users on backend b, measures every selected operation
// on both sides, prints the table and returns its rows.
func runLoad(t *testing.T, b storagetest.Backend, users int, s settings) []Row {
	before := support.LoadAverage()
	r := newRig(t, b, users, s.clients)
	var rows []Row
	var whoami []string
	onupdates := 0
	for _, op := range r.operations() {
		if s.ops != nil && !s.ops[op.key] {
			continue
		}
		m := r.measure(t.Context(), op, s)
		if op.reset != nil { // onupdate: each success took one binding over
			onupdates += m.rows[0].Threepidd.Count + m.rows[0].Baseline.Count
		}
		rows = append(rows, m.rows...)
		whoami = append(whoami, fmt.Sprintf("%s %.2f", op.key, m.whoamiPerIteration))
	}
	fmt.Printf("\n### %s: %d users × 1–3 3PIDs, %d clients, %v per operation and side (%d rounds, %v warm-up)\n\n",
		b.Name, users, s.clients, s.duration, s.rounds, s.warmup)
	fmt.Printf("%d CPUs, GOMAXPROCS %d, %s; load average (1, 5, 15 min) before: %s, after: %s\n\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), before, support.LoadAverage())
	if err := WriteTable(os.Stdout, rows, p99Target); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\nthreepidd's calls to the homeserver's whoami per iteration (token cache misses): %s\n\n", strings.Join(whoami, ", "))
	for _, row := range rows {
		for side, sum := range map[string]Summary{"threepidd": row.Threepidd, "baseline": row.Baseline} {
			if sum.Errors > 0 {
				t.Errorf("%s, %s: %d errors; first: %s", row.Name, side, sum.Errors, sum.FirstError)
			}
		}
	}
	if n := r.sink.Unexpected(); n > 0 {
		t.Errorf("%d e-mails nobody waited for", n)
	}
	if pos, err := r.store.MaxStreamID(t.Context()); err != nil || pos < int64(onupdates) {
		t.Errorf("notification stream at %d (%v), want at least one notification per onupdate (%d)", pos, err, onupdates)
	}
	return rows
}

// measurement is what measure found for one operation.
type measurement struct {
	// rows holds a row per step and, for several steps, one for whole iterations.
	rows []Row
	// whoamiPerIteration is the number of whoami calls threepidd made to the
	// homeserver during its measured rounds, per iteration.
	whoamiPerIteration float64
}

// measure runs op on both sides: a warm-up each, then s.rounds rounds each,
// alternating which side goes first.
func (r *rig) measure(ctx context.Context, op operation, s settings) measurement {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*(s.warmup+s.duration)+5*time.Minute)
	defer cancel()
	var next atomic.Int64
	type side struct {
		iterate iteration
		stats   []Stats
		elapsed time.Duration
		whoami  int
	}
	sides := []*side{
		{iterate: op.threepidd, stats: make([]Stats, len(op.steps)+1)},
		{iterate: op.baseline, stats: make([]Stats, len(op.steps)+1)},
	}
	run := func(sd *side, d time.Duration, measured bool) {
		whoami := r.hs.WhoamiCalls()
		out := Round{
			Clients: s.clients, Duration: d, Max: op.max, Next: &next, Steps: len(op.steps),
			Iterate: sd.iterate, Seed: uint64(next.Load()),
		}.Run(ctx)
		if op.reset != nil {
			op.reset(ctx, out.First, out.End)
		}
		for i := range out.Steps {
			if !measured { // warm-up errors count, latencies do not
				out.Steps[i].Latencies = nil
			}
			sd.stats[i].merge(out.Steps[i])
		}
		if measured {
			sd.elapsed += out.Elapsed
			sd.whoami += r.hs.WhoamiCalls() - whoami
		}
	}
	for _, sd := range sides {
		run(sd, s.warmup, false)
	}
	for i := range s.rounds {
		for j := range sides {
			run(sides[(i+j)%2], s.duration/time.Duration(s.rounds), true)
		}
	}
	var m measurement
	for i := range len(op.steps) + 1 {
		if i == len(op.steps) && len(op.steps) == 1 {
			break // the step is the whole iteration
		}
		name := op.name
		if i < len(op.steps) {
			name = op.steps[i]
		}
		m.rows = append(m.rows, Row{Name: name,
			Threepidd: sides[0].stats[i].Summarize(sides[0].elapsed),
			Baseline:  sides[1].stats[i].Summarize(sides[1].elapsed),
		})
	}
	if whole := sides[0].stats[len(op.steps)]; len(whole.Latencies)+whole.Errors > 0 {
		m.whoamiPerIteration = float64(sides[0].whoami) / float64(len(whole.Latencies)+whole.Errors)
	}
	return m
}
