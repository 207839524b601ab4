package sync

import (
	"context"
	"errors"
	"sync"
)

// ErrWoken is the cause of a watch context that ended because a notification
// for its user was appended.
var ErrWoken = errors.New("sync: woken by a 3PID notification")

// ErrDraining is the cause of a watch context that ended because its hub is
// draining (the server shuts down): the long-poll should answer now with
// what it has, so that the client's next request goes to another instance.
var ErrDraining = errors.New("sync: draining for a shutdown")

// Hub fans wake-ups out to the watchers of each user. Wake is meant to be the
// callback of one storage.Store.Subscribe; it never blocks. A watcher costs a
// cancellable context and a list node: no goroutine, no channel per watcher.
// The zero value is not usable; call NewHub.
type Hub struct {
	mu sync.Mutex
	// users maps a user ID to the head of its watchers' list.
	users map[string]*watcher
	// n counts the listed watchers.
	n int
	// draining is set by Drain: watches end at once.
	draining bool
}

// watcher is one Watch call, a node of its user's doubly linked list.
type watcher struct {
	user       string
	cancel     context.CancelCauseFunc
	prev, next *watcher
	// listed is false once the watcher left the list (woken or stopped).
	listed bool
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{users: make(map[string]*watcher)}
}

// Watch returns a context that ends with cause ErrWoken at the next Wake of
// userID, or when ctx ends, and the function that stops watching (it must be
// called; it cancels the returned context).
func (h *Hub) Watch(ctx context.Context, userID string) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancelCause(ctx)
	w := &watcher{user: userID, cancel: cancel, listed: true}
	h.mu.Lock()
	if h.draining {
		h.mu.Unlock()
		cancel(ErrDraining)
		return wctx, func() { cancel(context.Canceled) }
	}
	if head := h.users[userID]; head != nil {
		w.next, head.prev = head, w
	}
	h.users[userID] = w
	h.n++
	h.mu.Unlock()
	waiting.Inc()
	return wctx, func() {
		h.remove(w)
		cancel(context.Canceled)
	}
}

// remove unlinks w if it is still listed.
func (h *Hub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !w.listed {
		return
	}
	w.listed = false
	switch {
	case w.prev != nil:
		w.prev.next = w.next
	case w.next != nil:
		h.users[w.user] = w.next
	default:
		delete(h.users, w.user)
	}
	if w.next != nil {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
	h.n--
	waiting.Dec()
}

// Wake ends the watch contexts of every current watcher of userID. Watchers
// registered afterwards wait for the next Wake.
func (h *Hub) Wake(userID string) {
	h.mu.Lock()
	head, n := h.unlist(userID)
	h.mu.Unlock()
	if n == 0 {
		return
	}
	waiting.Sub(float64(n))
	wakeups.Add(float64(n))
	cancelAll(head, ErrWoken)
}

// Drain ends every watch context with cause ErrDraining, and every later
// one at once: a shutting-down server's long-polls answer instead of holding
// the shutdown up.
func (h *Hub) Drain() {
	h.mu.Lock()
	h.draining = true
	heads, total := make([]*watcher, 0, len(h.users)), 0
	for user := range h.users {
		head, n := h.unlist(user)
		heads, total = append(heads, head), total+n
	}
	h.mu.Unlock()
	waiting.Sub(float64(total))
	for _, head := range heads {
		cancelAll(head, ErrDraining)
	}
}

// unlist takes userID's watchers off the hub (h.mu held) and returns the
// head of their list and how many they are. Unlisted nodes are never
// modified again, so the list can be walked without the lock.
func (h *Hub) unlist(userID string) (*watcher, int) {
	head := h.users[userID]
	delete(h.users, userID)
	n := 0
	for w := head; w != nil; w = w.next {
		w.listed = false
		n++
	}
	h.n -= n
	return head, n
}

// cancelAll ends the watch contexts of the unlisted list at head with cause,
// outside the hub's lock (cancellation propagates to child contexts).
func cancelAll(head *watcher, cause error) {
	for w := head; w != nil; w = w.next {
		w.cancel(cause)
	}
}

// Waiting returns how many watchers are registered.
func (h *Hub) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}
