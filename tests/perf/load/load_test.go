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
	// active is how many users the operations draw from at every size.
	active int
	// sizes are the seeded user counts, one run each (THREEPIDD_TEST_LOAD_SIZES,
	// else THREEPIDD_TEST_LOAD_USERS).
	sizes []int
	// ops selects operations by key (nil: all).
	ops map[string]bool
	// rate, when above 0, paces every round in an open loop at this many
	// iterations a second (THREEPIDD_TEST_LOAD_RATE; see Round.Rate).
	rate float64
}

// loadSettings reads the knobs from the environment.
func loadSettings(t *testing.T) settings {
	t.Helper()
	users := 10_000
	s := settings{duration: 20 * time.Second, warmup: 2 * time.Second, clients: 100, rounds: 10, active: 10_000}
	for name, d := range map[string]*time.Duration{"THREEPIDD_TEST_LOAD_DURATION": &s.duration, "THREEPIDD_TEST_LOAD_WARMUP": &s.warmup} {
		if v := os.Getenv(name); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed < 0 {
				t.Fatalf("%s=%q: want a duration such as 20s", name, v)
			}
			*d = parsed
		}
	}
	for name, n := range map[string]*int{"THREEPIDD_TEST_LOAD_USERS": &users, "THREEPIDD_TEST_LOAD_CLIENTS": &s.clients, "THREEPIDD_TEST_LOAD_ROUNDS": &s.rounds, "THREEPIDD_TEST_LOAD_ACTIVE": &s.active} {
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
	if v := os.Getenv("THREEPIDD_TEST_LOAD_RATE"); v != "" {
		rate, err := strconv.ParseFloat(v, 64)
		if err != nil || rate <= 0 {
			t.Fatalf("THREEPIDD_TEST_LOAD_RATE=%q: want iterations per second above 0", v)
		}
		s.rate = rate
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
// backend, at each size (a rig of its own, all alive at once, measured in
// alternating rounds so that background load hits every size alike), and
// prints a Markdown table per backend and size (see the package comment)
// and, with several sizes, how each p99 grew from the smallest to the
// largest. It fails on any error; a ratio over its target is marked.
func TestLoad(t *testing.T) {
	if os.Getenv(loadEnv) != "1" {
		t.Skipf("set %s=1 to run the load test (see the package comment)", loadEnv)
	}
	s := loadSettings(t)
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			before := support.LoadAverage()
			rigs := make([]*rig, len(s.sizes))
			for i, users := range s.sizes {
				rigs[i] = newRig(t, storagetest.Fresh(t, b.Name), users, s.active, s.clients)
			}
			runs := runLoad(t, rigs, s)
			for i, users := range s.sizes {
				pace := "closed loop"
				if s.rate > 0 {
					pace = fmt.Sprintf("open loop at %g iterations/s", s.rate)
				}
				fmt.Printf("\n### %s: %d users × 1–3 3PIDs, %d clients (%s), %v per operation and side (%d rounds, %v warm-up)\n\n",
					b.Name, users, s.clients, pace, s.duration, s.rounds, s.warmup)
				fmt.Printf("%d CPUs, GOMAXPROCS %d, %s; load average (1, 5, 15 min) before: %s, after: %s\n\n",
					runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), before, support.LoadAverage())
				if err := WriteTable(os.Stdout, runs[i].rows, p99Target); err != nil {
					t.Fatal(err)
				}
				fmt.Printf("\nthreepidd's calls to the homeserver's whoami per iteration (token cache misses): %s\n\n", strings.Join(runs[i].whoami, ", "))
			}
			if last := len(s.sizes) - 1; last > 0 {
				fmt.Printf("\n### %s: p99 at %d users over p99 at %d users\n\n", b.Name, s.sizes[last], s.sizes[0])
				if err := WriteScaleTable(os.Stdout, runs[0].rows, runs[last].rows, s.sizes[0], s.sizes[last], scaleTargets[b.Name]); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// run is what runLoad measured on one rig.
type run struct {
	rows []Row
	// whoami is the whoami calls per iteration, by operation.
	whoami []string
}

// runLoad measures every selected operation on every rig, both sides, and
// checks that nothing failed.
func runLoad(t *testing.T, rigs []*rig, s settings) []run {
	runs := make([]run, len(rigs))
	onupdates := make([]int, len(rigs))
	opsOf := make([][]operation, len(rigs))
	for i, r := range rigs {
		opsOf[i] = r.operations()
	}
	for k, op := range opsOf[0] {
		if s.ops != nil && !s.ops[op.key] {
			continue
		}
		ops := make([]operation, len(rigs))
		for i := range rigs {
			ops[i] = opsOf[i][k]
		}
		for i, m := range measure(t, rigs, ops, s) {
			if op.reset != nil { // onupdate: each success took one binding over
				onupdates[i] += m.rows[0].Threepidd.Count + m.rows[0].Baseline.Count
			}
			runs[i].rows = append(runs[i].rows, m.rows...)
			runs[i].whoami = append(runs[i].whoami, fmt.Sprintf("%s %.2f", op.key, m.whoamiPerIteration))
		}
	}
	for i, r := range rigs {
		for _, row := range runs[i].rows {
			for side, sum := range map[string]Summary{"threepidd": row.Threepidd, "baseline": row.Baseline} {
				if sum.Errors > 0 {
					t.Errorf("%d users: %s, %s: %d errors; first: %s", r.pop.Users, row.Name, side, sum.Errors, sum.FirstError)
				}
			}
		}
		if n := r.sink.Unexpected(); n > 0 {
			t.Errorf("%d users: %d e-mails nobody waited for", r.pop.Users, n)
		}
		if pos, err := r.store.MaxStreamID(t.Context()); err != nil || pos < int64(onupdates[i]) {
			t.Errorf("%d users: notification stream at %d (%v), want at least one notification per onupdate (%d)", r.pop.Users, pos, err, onupdates[i])
		}
	}
	return runs
}

// measurement is what measure found for one operation on one rig.
type measurement struct {
	// rows holds a row per step and, for several steps, one for whole iterations.
	rows []Row
	// whoamiPerIteration is the number of whoami calls threepidd made to the
	// homeserver during its measured rounds, per iteration.
	whoamiPerIteration float64
}

// measure runs ops[i] on both sides of rigs[i], for every i: a warm-up
// each, then s.rounds rounds each, rotating which side goes first.
func measure(t *testing.T, rigs []*rig, ops []operation, s settings) []measurement {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(len(rigs))*(2*(s.warmup+s.duration)+5*time.Minute))
	defer cancel()
	type side struct {
		r       *rig
		op      operation
		next    *atomic.Int64
		iterate iteration
		stats   []Stats
		elapsed time.Duration
		whoami  int
	}
	var sides []*side
	for i, r := range rigs {
		next := new(atomic.Int64) // one counter per rig: its sides never reuse an n
		op := ops[i]
		sides = append(sides,
			&side{r: r, op: op, next: next, iterate: op.threepidd, stats: make([]Stats, len(op.steps)+1)},
			&side{r: r, op: op, next: next, iterate: op.baseline, stats: make([]Stats, len(op.steps)+1)})
	}
	run := func(sd *side, d time.Duration, measured bool) {
		whoami := sd.r.hs.WhoamiCalls()
		out := Round{
			Clients: s.clients, Duration: d, Max: sd.op.max, Next: sd.next, Steps: len(sd.op.steps),
			Iterate: sd.iterate, Seed: uint64(sd.next.Load()), Rate: s.rate,
		}.Run(ctx)
		if sd.op.reset != nil {
			sd.op.reset(ctx, out.First, out.End)
		}
		for i := range out.Steps {
			if !measured { // warm-up errors count, latencies do not
				out.Steps[i].Latencies = nil
			}
			sd.stats[i].merge(out.Steps[i])
		}
		if measured {
			sd.elapsed += out.Elapsed
			sd.whoami += sd.r.hs.WhoamiCalls() - whoami
		}
	}
	for _, sd := range sides {
		run(sd, s.warmup, false)
	}
	for i := range s.rounds {
		for j := range sides {
			run(sides[(i+j)%len(sides)], s.duration/time.Duration(s.rounds), true)
		}
	}
	ms := make([]measurement, len(rigs))
	for k := range rigs {
		threepidd, baseline := sides[2*k], sides[2*k+1]
		op := ops[k]
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
				Threepidd: threepidd.stats[i].Summarize(threepidd.elapsed),
				Baseline:  baseline.stats[i].Summarize(baseline.elapsed),
			})
		}
		if whole := threepidd.stats[len(op.steps)]; len(whole.Latencies)+whole.Errors > 0 {
			m.whoamiPerIteration = float64(threepidd.whoami) / float64(len(whole.Latencies)+whole.Errors)
		}
		ms[k] = m
	}
	return ms
}
