package load

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRoundMaxBoundsIterations(t *testing.T) {
	var next atomic.Int64
	next.Store(100) // numbers continue from an earlier round
	var mu sync.Mutex
	seen := map[int64]bool{}
	errOdd := errors.New("odd")
	out := Round{
		Clients: 8, Duration: time.Minute, Max: 50, Next: &next, Steps: 2,
		Iterate: func(_ context.Context, w *Worker, n int64) error {
			mu.Lock()
			seen[n] = true
			mu.Unlock()
			if err := w.Step(0, func() error { return nil }); err != nil {
				return err
			}
			return w.Step(1, func() error {
				if n%2 == 1 {
					return errOdd
				}
				return nil
			})
		},
	}.Run(t.Context())

	if len(seen) != 50 {
		t.Errorf("ran %d iterations, want Max = 50", len(seen))
	}
	for n := range seen {
		if n < 100 || n >= 150 {
			t.Errorf("ran iteration %d, want numbers in [100, 150)", n)
		}
	}
	if out.First != 100 || out.End != 150 {
		t.Errorf("range [%d, %d), want [100, 150)", out.First, out.End)
	}
	checks := []struct {
		step           int
		count, errors  int
		wantFirstError string
	}{
		{0, 50, 0, ""},
		{1, 25, 25, "odd"},
		{2, 25, 25, "odd"}, // whole iterations
	}
	for _, c := range checks {
		s := out.Steps[c.step]
		if len(s.Latencies) != c.count || s.Errors != c.errors || s.FirstError != c.wantFirstError {
			t.Errorf("step %d: %d ok, %d errors (%q), want %d, %d (%q)", c.step, len(s.Latencies), s.Errors, s.FirstError, c.count, c.errors, c.wantFirstError)
		}
	}
}

func TestRoundDurationBoundsTime(t *testing.T) {
	var next atomic.Int64
	start := time.Now()
	out := Round{
		Clients: 4, Duration: 100 * time.Millisecond, Next: &next, Steps: 1,
		Iterate: func(ctx context.Context, w *Worker, _ int64) error {
			return w.Step(0, func() error {
				select {
				case <-time.After(5 * time.Millisecond):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		},
	}.Run(t.Context())
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("round took %v, want about 100ms", took)
	}
	if n := len(out.Steps[0].Latencies); n == 0 || out.Steps[0].Errors != 0 {
		t.Errorf("%d iterations, %d errors; want some, none failed", n, out.Steps[0].Errors)
	}
	if out.Elapsed < 100*time.Millisecond {
		t.Errorf("elapsed %v, want at least the duration", out.Elapsed)
	}
}

// TestRoundRate: an open-loop round starts Rate iterations a second, however
// many workers are free, and none after its duration.
func TestRoundRate(t *testing.T) {
	var next atomic.Int64
	out := Round{
		Clients: 8, Duration: 500 * time.Millisecond, Next: &next, Steps: 1, Rate: 20,
		Iterate: func(_ context.Context, w *Worker, _ int64) error {
			return w.Step(0, func() error { return nil })
		},
	}.Run(t.Context())
	// Due at 0, 50, ..., 450 ms: ten iterations; a closed loop of 8 idle
	// workers would start thousands.
	if got := out.End - out.First; got != 10 || len(out.Steps[1].Latencies) != 10 {
		t.Fatalf("%d iterations started, %d ended, want 10", got, len(out.Steps[1].Latencies))
	}
}
