// Package outbox runs durable background work stored in the database: unbinds
// to retry, after-events to deliver, homeserver mirror calls. Items survive
// restarts; every instance sharing the database may run workers (claims are
// leases, so one item is handled by one worker at a time).
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/storage"
)

var (
	queued    = metrics.Factory.NewCounterVec(metrics.CounterOpts("outbox_queued_total", "Outbox items queued, by kind."), []string{"kind"})
	retried   = metrics.Factory.NewCounterVec(metrics.CounterOpts("outbox_retried_total", "Outbox attempts that failed and were rescheduled, by kind."), []string{"kind"})
	succeeded = metrics.Factory.NewCounterVec(metrics.CounterOpts("outbox_succeeded_total", "Outbox items completed, by kind."), []string{"kind"})
	givenUp   = metrics.Factory.NewCounterVec(metrics.CounterOpts("outbox_given_up_total", "Outbox items abandoned after the give-up age, by kind."), []string{"kind"})
	pending   = metrics.Factory.NewGaugeVec(metrics.GaugeOpts("outbox_pending", "Outbox items waiting, by kind."), []string{"kind"})
	oldestAge = metrics.Factory.NewGaugeVec(metrics.GaugeOpts("outbox_oldest_age_seconds",
		"Age of the oldest waiting outbox item, by kind (0 when none waits)."), []string{"kind"})
)

// ErrRetry, returned (wrapped) by a Handler, asks for another attempt later.
// Any other error is logged and the item dropped as permanently failed.
var ErrRetry = errors.New("outbox: retry later")

// Enqueue stores an item of kind with a JSON payload, due now, in q (which may
// be a transaction, so the item commits with the change it belongs to). A
// non-empty key makes it unique: if an item of that kind and key is already
// pending, nothing is added.
func Enqueue(ctx context.Context, q storage.Querier, kind, key string, payload any, now time.Time) error {
	return EnqueueGrouped(ctx, q, kind, "", key, payload, now)
}

// EnqueueGrouped is Enqueue for an item of a group (see Worker.Grouped).
func EnqueueGrouped(ctx context.Context, q storage.Querier, kind, group, key string, payload any, now time.Time) error {
	data, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode %s outbox item: %w", kind, err)
	}
	_, err = q.EnqueueOutbox(ctx, storage.OutboxItem{Kind: kind, Key: key, Group: group, Payload: data, NextAttempt: now.UnixMilli(), CreatedAt: now.UnixMilli()})
	if errors.Is(err, storage.ErrConflict) {
		return nil // the same work is already pending
	}
	if err != nil {
		return fmt.Errorf("queue %s: %w", kind, err)
	}
	queued.WithLabelValues(kind).Inc()
	return nil
}

// Handler performs one item. nil: done. An error wrapping ErrRetry: try again
// after a backoff. Another error: drop the item.
type Handler func(ctx context.Context, item storage.OutboxItem) error

// Worker runs the items of one kind.
type Worker struct {
	Store storage.Store
	Kind  string
	Do    Handler
	// Poll is how often due items are looked for (default 2s).
	Poll time.Duration
	// BaseBackoff doubles per attempt up to MaxBackoff (defaults 5s, 1h).
	BaseBackoff, MaxBackoff time.Duration
	// GiveUpAfter is the age at which a failing item is abandoned (default 7 days).
	GiveUpAfter time.Duration
	// OnGiveUp is called for an abandoned item (for a log line naming it).
	OnGiveUp func(ctx context.Context, item storage.OutboxItem)
	// Batch is how many items one pass claims (default 20).
	Batch int
	// Lease is how long a claimed item is hidden from other workers (default 2m).
	Lease time.Duration
	// Grouped makes each pass claim at most one item per group
	// (storage.OutboxItem.Group) and handle the items of a pass side by side;
	// an item asking for a retry defers its whole group until its backoff
	// ends. One group that keeps failing (an identity server that is down)
	// then costs one attempt per backoff and never holds up another group.
	// Do must be safe for concurrent use.
	Grouped bool
	Clock   clock.Func
}

func (w *Worker) defaults() {
	if w.Poll == 0 {
		w.Poll = 2 * time.Second
	}
	if w.BaseBackoff == 0 {
		w.BaseBackoff = 5 * time.Second
	}
	if w.MaxBackoff == 0 {
		w.MaxBackoff = time.Hour
	}
	if w.GiveUpAfter == 0 {
		w.GiveUpAfter = 7 * 24 * time.Hour
	}
	if w.Batch == 0 {
		w.Batch = 20
	}
	if w.Lease == 0 {
		w.Lease = 2 * time.Minute
	}
}

// Run handles due items until ctx ends: at once, then every Poll.
func (w *Worker) Run(ctx context.Context) {
	w.defaults()
	for _, c := range []*prometheus.CounterVec{queued, retried, succeeded, givenUp} {
		c.WithLabelValues(w.Kind) // the kind's series exist from the start, at zero
	}
	t := time.NewTicker(w.Poll)
	defer t.Stop()
	for {
		for w.more(w.RunOnce(ctx)) && ctx.Err() == nil {
			// More may be due.
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// more reports whether, after a pass that claimed n items, another pass may
// find due items at once: after a full batch, or (grouped) after any item,
// since a group's next item is only claimed by the next pass.
func (w *Worker) more(n int) bool {
	if w.Grouped {
		return n > 0
	}
	return n == w.Batch
}

// RunOnce handles one batch of due items and returns how many it claimed.
func (w *Worker) RunOnce(ctx context.Context) int {
	w.defaults()
	now := w.Clock.Now()
	claim := w.Store.ClaimOutbox
	if w.Grouped {
		claim = w.Store.ClaimOutboxGroups
	}
	items, err := claim(ctx, w.Kind, now.UnixMilli(), now.Add(w.Lease).UnixMilli(), w.Batch)
	if err != nil {
		if ctx.Err() == nil {
			slog.WarnContext(ctx, "outbox: claim failed", "kind", w.Kind, "err", err)
		}
		return 0
	}
	if w.Grouped {
		var wg sync.WaitGroup
		for _, item := range items {
			wg.Go(func() { w.handle(ctx, item) })
		}
		wg.Wait()
	} else {
		for i, item := range items {
			if ctx.Err() != nil {
				w.release(ctx, items[i:]) // shutting down: another instance takes them now
				break
			}
			w.handle(ctx, item)
		}
	}
	if n, err := w.Store.CountOutbox(ctx, w.Kind); err == nil {
		pending.WithLabelValues(w.Kind).Set(float64(n))
	}
	if at, err := w.Store.OldestOutbox(ctx, w.Kind); err == nil {
		age := 0.0
		if at > 0 {
			age = max(0, w.Clock.Now().Sub(time.UnixMilli(at)).Seconds())
		}
		oldestAge.WithLabelValues(w.Kind).Set(age)
	}
	return len(items)
}

// handle does item and records the outcome. An item begun is finished even
// when ctx ends (a shutdown, a rolling restart): its call completes and is
// recorded once, rather than being cut off and repeated by another instance
// after the lease. It is bounded by half the lease, so that nobody else
// claims the item while it is handled.
func (w *Worker) handle(ctx context.Context, item storage.OutboxItem) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.Lease/2)
	defer cancel()
	err := w.Do(ctx, item)
	if ctx.Err() != nil {
		return // out of time: the lease expires and the item is retried
	}
	now := w.Clock.Now()
	switch {
	case err == nil:
		succeeded.WithLabelValues(w.Kind).Inc()
		w.remove(ctx, item)
	case isRetry(err) && now.Sub(time.UnixMilli(item.CreatedAt)) < w.GiveUpAfter:
		retried.WithLabelValues(w.Kind).Inc()
		delay := w.BaseBackoff << min(item.Attempts, 30)
		if delay <= 0 || delay > w.MaxBackoff {
			delay = w.MaxBackoff
		}
		next := now.Add(delay).UnixMilli()
		if rerr := w.Store.RescheduleOutbox(ctx, item.ID, next, err.Error()); rerr != nil {
			slog.WarnContext(ctx, "outbox: reschedule failed", "kind", w.Kind, "id", item.ID, "err", rerr)
		}
		if w.Grouped && item.Group != "" {
			if _, derr := w.Store.DeferOutboxGroup(ctx, w.Kind, item.Group, next); derr != nil {
				slog.WarnContext(ctx, "outbox: defer group failed", "kind", w.Kind, "group", item.Group, "err", derr)
			}
		}
	default:
		givenUp.WithLabelValues(w.Kind).Inc()
		if w.OnGiveUp != nil {
			w.OnGiveUp(ctx, item)
		}
		slog.WarnContext(ctx, "outbox: giving up", "kind", w.Kind, "id", item.ID, "attempts", item.Attempts+1, "err", err)
		w.remove(ctx, item)
	}
}

// release makes claimed items that were not attempted due again at once,
// for another worker (another instance) to take before their lease ends.
func (w *Worker) release(ctx context.Context, items []storage.OutboxItem) {
	ctx = context.WithoutCancel(ctx)
	now := w.Clock.Now().UnixMilli()
	for _, item := range items {
		if err := w.Store.ReleaseOutbox(ctx, item.ID, now); err != nil {
			slog.WarnContext(ctx, "outbox: release failed", "kind", w.Kind, "id", item.ID, "err", err)
		}
	}
}

func (w *Worker) remove(ctx context.Context, item storage.OutboxItem) {
	if err := w.Store.DeleteOutbox(ctx, item.ID); err != nil {
		slog.WarnContext(ctx, "outbox: delete failed", "kind", w.Kind, "id", item.ID, "err", err)
	}
}

func isRetry(err error) bool { return errors.Is(err, ErrRetry) }

// LogGiveUp returns an OnGiveUp that logs msg as a warning with the attempts
// made and the attributes attrs picks from the item's payload, decoded as a J
// (never the 3PID address: logs are not the place for it).
func LogGiveUp[J any](msg string, attrs func(J) []any) func(context.Context, storage.OutboxItem) {
	return func(ctx context.Context, item storage.OutboxItem) {
		var job J
		_ = json.Unmarshal(item.Payload, &job)
		slog.WarnContext(ctx, msg, append(attrs(job), "attempts", item.Attempts+1)...)
	}
}
