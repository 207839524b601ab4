package sqlstore

import (
	"context"
	"sync"
)

// hub fans wake-ups out to the subscriptions of one Store. Publishing never
// blocks: each subscription queues the user IDs (coalescing repeats) and calls
// its callback from its own goroutine.
type hub struct {
	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed chan struct{}
}

func newHub() *hub {
	return &hub{subs: map[*subscription]struct{}{}, closed: make(chan struct{})}
}

// subscription is one Subscribe call.
type subscription struct {
	fn     func(userID string)
	signal chan struct{} // capacity 1: "pending is not empty"

	mu      sync.Mutex
	pending []string
	queued  map[string]struct{}
}

// subscribe registers fn until ctx ends or the hub closes.
func (h *hub) subscribe(ctx context.Context, fn func(userID string)) {
	sub := &subscription{fn: fn, signal: make(chan struct{}, 1), queued: map[string]struct{}{}}
	h.mu.Lock()
	select {
	case <-h.closed:
		h.mu.Unlock()
		return
	default:
	}
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	go h.run(ctx, sub)
}

// run delivers sub's wake-ups until ctx ends or the hub closes.
func (h *hub) run(ctx context.Context, sub *subscription) {
	defer func() {
		h.mu.Lock()
		delete(h.subs, sub)
		h.mu.Unlock()
	}()
	var batch []string
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.closed:
			return
		case <-sub.signal:
		}
		sub.mu.Lock()
		batch, sub.pending = sub.pending, batch[:0]
		clear(sub.queued)
		sub.mu.Unlock()
		for _, userID := range batch {
			// Once ctx has ended (or Close began), nothing more is delivered.
			if ctx.Err() != nil || h.isClosed() {
				return
			}
			sub.fn(userID)
		}
	}
}

// publish wakes every subscription for each of userIDs.
func (h *hub) publish(userIDs []string) {
	if len(userIDs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		sub.add(userIDs)
	}
}

// publishOne wakes every subscription for userID.
func (h *hub) publishOne(userID string) {
	h.publish([]string{userID})
}

func (sub *subscription) add(userIDs []string) {
	sub.mu.Lock()
	for _, id := range userIDs {
		if _, ok := sub.queued[id]; !ok {
			sub.queued[id] = struct{}{}
			sub.pending = append(sub.pending, id)
		}
	}
	sub.mu.Unlock()
	select {
	case sub.signal <- struct{}{}:
	default:
	}
}

func (h *hub) isClosed() bool {
	select {
	case <-h.closed:
		return true
	default:
		return false
	}
}

// close ends every subscription.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.isClosed() {
		close(h.closed)
	}
}
