// Package events hands every applied 3PID change to the sinks that want to
// know: the events webhook ([Webhook], policy.events_webhook) and the mirror
// that writes account 3PIDs back to a Synapse homeserver ([Mirror],
// homeserver.mirror). The services (account, bindings, onupdate) call a
// [Sink] inside the transaction that applied the change; each sink stores its
// work in the durable outbox there, so the work exists exactly when the change
// committed, and an outbox worker does it later without holding up the
// user's request.
package events

import (
	"context"

	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
)

// Sink receives each applied change inside the transaction q that applied it.
// An error rolls the change back.
type Sink interface {
	Applied(ctx context.Context, q storage.Querier, c policy.Change) error
}

// Sinks hands each change to every sink in order; the first error stops.
type Sinks []Sink

// Applied implements Sink.
func (s Sinks) Applied(ctx context.Context, q storage.Querier, c policy.Change) error {
	for _, sink := range s {
		if err := sink.Applied(ctx, q, c); err != nil {
			return err
		}
	}
	return nil
}

// Apply hands c to sink, which may be nil (no sink: nothing to do).
func Apply(ctx context.Context, sink Sink, q storage.Querier, c policy.Change) error {
	if sink == nil {
		return nil
	}
	return sink.Applied(ctx, q, c)
}
