package load

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Round drives one operation against one target: Clients workers run Iterate
// back to back until Duration has passed or Max iterations have started.
type Round struct {
	Clients  int
	Duration time.Duration
	// Max bounds the iterations the round starts (0: only time bounds it).
	Max int64
	// Next hands out iteration numbers. Callers share it between rounds and
	// targets of one operation so that no number is used twice.
	Next *atomic.Int64
	// Steps is the number of measured steps an iteration has.
	Steps int
	// Iterate runs iteration n, timing its requests with w.Step. An error
	// ends the iteration and counts as a failed iteration.
	Iterate func(ctx context.Context, w *Worker, n int64) error
	// Seed seeds the workers' random sources (worker i gets Seed, i).
	Seed uint64
	// Rate, when above 0, paces the round in an open loop: iteration k of
	// the round is due k/Rate seconds after its start, whatever the answers
	// before it took, and a worker waits for its iteration's due time
	// (Clients must then be enough to keep up). 0: a closed loop, each
	// worker starting its next iteration as soon as its last one ended.
	Rate float64
}

// Outcome is what a round measured.
type Outcome struct {
	// Elapsed runs from the start until the last iteration ended.
	Elapsed time.Duration
	// Steps holds one Stats per step, then one for whole iterations.
	Steps []Stats
	// First and End bound the iteration numbers the round used: [First, End).
	First, End int64
}

// Worker is one client of a round.
type Worker struct {
	// ID numbers the workers of a round from 0.
	ID int
	// Rand is the worker's own random source.
	Rand  *rand.Rand
	stats []Stats
}

// Step runs fn as measured step i: its latency is recorded when it succeeds,
// its error counted when it fails. It returns fn's error.
func (w *Worker) Step(i int, fn func() error) error {
	start := time.Now()
	if err := fn(); err != nil {
		w.stats[i].fail(err)
		return err
	}
	w.stats[i].Latencies = append(w.stats[i].Latencies, time.Since(start))
	return nil
}

// wait sleeps until due; false when due is not before deadline or ctx ends first.
func (r Round) wait(ctx context.Context, due, deadline time.Time) bool {
	if !due.Before(deadline) {
		return false
	}
	t := time.NewTimer(time.Until(due))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Run runs the round. Iterations in flight when the time is up are waited
// for (ctx bounds them); none starts after it.
func (r Round) Run(ctx context.Context) Outcome {
	first := r.Next.Load()
	start := time.Now()
	deadline := start.Add(r.Duration)
	workers := make([]*Worker, r.Clients)
	var started atomic.Int64 // iterations the round has begun, for Rate
	var wg sync.WaitGroup
	for i := range workers {
		w := &Worker{ID: i, Rand: rand.New(rand.NewPCG(r.Seed, uint64(i))), stats: make([]Stats, r.Steps+1)}
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Paced, the due times end the round (a worker that wakes late
			// still starts the iterations due before the deadline).
			for ctx.Err() == nil && (r.Rate > 0 || time.Now().Before(deadline)) {
				if r.Rate > 0 && !r.wait(ctx, start.Add(time.Duration(float64(started.Add(1)-1)/r.Rate*float64(time.Second))), deadline) {
					return
				}
				n := r.Next.Add(1) - 1
				if r.Max > 0 && n-first >= r.Max {
					return
				}
				began := time.Now()
				if err := r.Iterate(ctx, w, n); err != nil {
					w.stats[r.Steps].fail(err)
					continue
				}
				w.stats[r.Steps].Latencies = append(w.stats[r.Steps].Latencies, time.Since(began))
			}
		}()
	}
	wg.Wait()
	out := Outcome{Elapsed: time.Since(start), Steps: make([]Stats, r.Steps+1), First: first, End: r.Next.Load()}
	if r.Max > 0 {
		out.End = min(out.End, first+r.Max)
	}
	for _, w := range workers {
		for i := range out.Steps {
			out.Steps[i].merge(w.stats[i])
		}
	}
	return out
}
