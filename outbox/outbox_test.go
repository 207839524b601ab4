package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/outbox"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

func TestWorker(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		now := time.UnixMilli(1_000_000)
		clock := func() time.Time { return now }

		// Enqueue with a key twice: one item.
		for i := 0; i < 2; i++ {
			if err := outbox.Enqueue(ctx, s, "work", "k", map[string]int{"n": 1}, now); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := s.CountOutbox(ctx, "work"); n != 1 {
			t.Fatalf("%d items after a duplicate key, want 1", n)
		}

		var calls atomic.Int32
		outcome := fmt.Errorf("down: %w", outbox.ErrRetry)
		w := &outbox.Worker{Store: s, Kind: "work", Clock: clock, BaseBackoff: time.Second, MaxBackoff: 4 * time.Second,
			GiveUpAfter: time.Hour, Do: func(context.Context, storage.OutboxItem) error { calls.Add(1); return outcome }}

		// Each failure backs off: 1s, 2s, 4s, then capped at 4s. The item's
		// age (since it was queued) and the depth are exported after each pass.
		queuedAt := now
		for i, wantDelay := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
			if n := w.RunOnce(ctx); n != 1 {
				t.Fatalf("attempt %d claimed %d", i, n)
			}
			age := metricstest.Value(t, "threepidd_outbox_oldest_age_seconds", "kind", "work")
			if want := now.Sub(queuedAt).Seconds(); age != want || metricstest.Value(t, "threepidd_outbox_pending", "kind", "work") != 1 {
				t.Fatalf("attempt %d: oldest age %v, want %v", i, age, want)
			}
			items, err := s.PendingOutbox(ctx, "work", "k")
			if err != nil || len(items) != 1 {
				t.Fatalf("pending: %v %v", items, err)
			}
			if got := time.UnixMilli(items[0].NextAttempt).Sub(now); got != wantDelay || items[0].Attempts != i+1 {
				t.Fatalf("attempt %d: next in %v with %d attempts, want %v", i, got, items[0].Attempts, wantDelay)
			}
			if w.RunOnce(ctx) != 0 {
				t.Fatal("an item was claimed before its backoff ended")
			}
			now = now.Add(wantDelay)
		}

		// Success removes it.
		outcome = nil
		if w.RunOnce(ctx) != 1 || calls.Load() != 5 {
			t.Fatalf("calls = %d", calls.Load())
		}
		if n, _ := s.CountOutbox(ctx, "work"); n != 0 {
			t.Fatalf("%d items left after success", n)
		}
		if age := metricstest.Value(t, "threepidd_outbox_oldest_age_seconds", "kind", "work"); age != 0 {
			t.Fatalf("oldest age %v with nothing waiting", age)
		}

		// Past the give-up age a retryable failure is abandoned, with OnGiveUp.
		if err := outbox.Enqueue(ctx, s, "work", "", "old", now); err != nil {
			t.Fatal(err)
		}
		var gaveUp atomic.Int32
		w.OnGiveUp = func(context.Context, storage.OutboxItem) { gaveUp.Add(1) }
		outcome = outbox.ErrRetry
		now = now.Add(2 * time.Hour)
		w.RunOnce(ctx)
		if n, _ := s.CountOutbox(ctx, "work"); n != 0 || gaveUp.Load() != 1 {
			t.Fatalf("items %d, gave up %d", n, gaveUp.Load())
		}

		// A permanent error drops the item at once.
		if err := outbox.Enqueue(ctx, s, "work", "", "bad", now); err != nil {
			t.Fatal(err)
		}
		outcome = errors.New("refused for good")
		w.RunOnce(ctx)
		if n, _ := s.CountOutbox(ctx, "work"); n != 0 || gaveUp.Load() != 2 {
			t.Fatalf("items %d, gave up %d", n, gaveUp.Load())
		}
	})
}

// TestEnqueueInTransaction: an item enqueued in a rolled-back transaction does not exist.
func TestEnqueueInTransaction(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		boom := errors.New("boom")
		err := s.WithTx(ctx, func(q storage.Querier) error {
			if err := outbox.Enqueue(ctx, q, "work", "", 1, time.Now()); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if n, _ := s.CountOutbox(ctx, "work"); n != 0 {
			t.Fatalf("%d items survived a rollback", n)
		}
	})
}

// TestWorkerGrouped: a grouped worker takes one item per group per pass and
// handles them side by side, so a group whose items hang (an identity server
// that does not answer) holds up no other group; a retry defers its whole
// group until the backoff ends.
func TestWorkerGrouped(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		now := time.UnixMilli(1_000_000)
		const dead, live = "dead.example", "live.example"
		for i := range 10 {
			if err := outbox.EnqueueGrouped(ctx, s, "grouped", dead, fmt.Sprint("d", i), i, now.Add(time.Duration(i)*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}
		if err := outbox.EnqueueGrouped(ctx, s, "grouped", live, "l", 0, now.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		liveDone := make(chan struct{})
		var deadCalls, liveCalls atomic.Int32
		w := &outbox.Worker{Store: s, Kind: "grouped", Grouped: true, BaseBackoff: time.Minute,
			Clock: func() time.Time { return now.Add(2 * time.Second) },
			Do: func(_ context.Context, item storage.OutboxItem) error {
				if item.Group == live {
					liveCalls.Add(1)
					close(liveDone)
					return nil
				}
				deadCalls.Add(1)
				// The dead server answers only once the live one has been
				// served: a worker that handled groups one after the other
				// would never get there (bounded: the test fails instead).
				select {
				case <-liveDone:
				case <-time.After(10 * time.Second):
					t.Error("the live group was not handled while the dead one hung")
				}
				return fmt.Errorf("no answer: %w", outbox.ErrRetry)
			}}
		if n := w.RunOnce(ctx); n != 2 {
			t.Fatalf("first pass claimed %d items, want one per group", n)
		}
		if liveCalls.Load() != 1 || deadCalls.Load() != 1 {
			t.Fatalf("first pass: %d live and %d dead attempts, want 1 and 1", liveCalls.Load(), deadCalls.Load())
		}
		if n, _ := s.CountOutbox(ctx, "grouped"); n != 10 {
			t.Fatalf("%d items left, want the 10 of the dead group", n)
		}
		// The failure deferred the whole dead group: nothing is due until the
		// backoff ends.
		if n := w.RunOnce(ctx); n != 0 || deadCalls.Load() != 1 {
			t.Fatalf("second pass claimed %d items (%d dead attempts), want none before the backoff ends", n, deadCalls.Load())
		}
		w.Clock = func() time.Time { return now.Add(2*time.Second + time.Minute) }
		if n := w.RunOnce(ctx); n != 1 || deadCalls.Load() != 2 {
			t.Fatalf("after the backoff: claimed %d, %d dead attempts; want one probe of the dead group", n, deadCalls.Load())
		}
	})
}

// TestWorkerFinishesOnShutdown: an item being handled when the worker's
// context ends (a shutdown) is finished and recorded, not cut off to be
// repeated by another instance once its lease expires; the items of its
// batch not yet begun are released, due again at once for another instance.
func TestWorkerFinishesOnShutdown(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		now := time.Now()
		for _, key := range []string{"k1", "k2", "k3"} {
			if err := outbox.Enqueue(context.Background(), s, "work", key, map[string]int{"n": 1}, now); err != nil {
				t.Fatal(err)
			}
		}
		ctx, stop := context.WithCancel(context.Background())
		var calls atomic.Int32
		var cutOff atomic.Bool
		w := &outbox.Worker{Store: s, Kind: "work", Do: func(ctx context.Context, _ storage.OutboxItem) error {
			calls.Add(1)
			stop() // the shutdown, while the call is in flight
			time.Sleep(10 * time.Millisecond)
			cutOff.Store(ctx.Err() != nil)
			return nil
		}}
		w.Run(ctx)
		if cutOff.Load() || calls.Load() != 1 {
			t.Fatalf("%d calls; the call's context ended with the worker's: %v", calls.Load(), cutOff.Load())
		}
		released, err := s.ClaimOutbox(context.Background(), "work", time.Now().UnixMilli(), time.Now().Add(time.Minute).UnixMilli(), 10)
		if err != nil || len(released) != 2 {
			t.Fatalf("due after the shutdown: %+v (%v), want the 2 items not begun", released, err)
		}
		for _, item := range released {
			if item.Attempts != 0 {
				t.Fatalf("released item %+v counts an attempt", item)
			}
		}
	})
}
