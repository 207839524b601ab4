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
