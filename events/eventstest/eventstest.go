// Package eventstest is an events.Sink for tests: it records the changes it
// is told about.
package eventstest

import (
	"context"
	"slices"
	"sync"

	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
)

// Recorder records every change applied. It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	changes []policy.Change
}

// Applied implements events.Sink.
func (r *Recorder) Applied(_ context.Context, _ storage.Querier, c policy.Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
	return nil
}

// Changes returns the changes recorded so far, oldest first.
func (r *Recorder) Changes() []policy.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.changes)
}

// Reset forgets the changes recorded.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = nil
}
