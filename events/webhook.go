package events

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/outbox"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
)

// OutboxKind is the outbox kind of events waiting for delivery.
const OutboxKind = "event"

// Delivery tuning: one attempt is bounded by DeliveryTimeout; a claimed batch
// is hidden from other instances for long enough to try every item in it.
const (
	DeliveryTimeout = 5 * time.Second
	batch           = 10
	lease           = batch*DeliveryTimeout + 30*time.Second
	poll            = time.Second
	baseBackoff     = time.Second
	maxBackoff      = 10 * time.Minute
)

// Event is the body the events webhook receives.
type Event struct {
	// ID is unique per event and the same on every delivery attempt.
	ID string `json:"event_id"`
	policy.Change
	// At is when the change was applied, in Unix milliseconds.
	At int64 `json:"at"`
}

// Webhook is the events webhook. It tells an HTTP service (policy.events_webhook) about every
// 3PID change after it was applied: add, remove, bind, unbind, and lost (a
// binding taken over or deleted on an identity server).
//
// [Webhook.Applied] stores the event in the outbox inside the transaction that
// made the change, and the outbox worker ([Webhook.Worker]) delivers it later,
// retrying with backoff until the receiver answers 2xx (or for 7 days).
// Delivery is at least once and not strictly ordered: receivers deduplicate on
// event_id and order by at.
//
// Each delivery is POST JSON {"event_id", "callback", "op", "user_id",
// "medium", "address", "id_server", "at"} (at in Unix milliseconds), signed
// like the policy webhook: the header X-Threepidd-Signature holds the hex
// HMAC-SHA256 of the body under the secret (check it with
// policy.VerifySignature).
//
// With an empty URL it is off: Applied queues nothing.
type Webhook struct {
	URL, Secret string
	// Client delivers the events. It must not follow redirects (a 301/302
	// would turn the POST into a GET whose 2xx would drop the event
	// undelivered); NewWebhook sees to that.
	Client *http.Client
	Store  storage.Store
	Clock  clock.Func
}

// NewWebhook returns the events webhook of cfg, queueing in store and
// delivering with (a copy of) client that does not follow redirects.
func NewWebhook(cfg config.EventsWebhook, store storage.Store, client *http.Client) *Webhook {
	return &Webhook{URL: cfg.URL, Secret: cfg.Secret, Client: outbound.WithoutRedirects(client), Store: store}
}

// Enabled reports whether events are queued at all.
func (w *Webhook) Enabled() bool { return w.URL != "" }

// Applied queues the event of change c in q, the transaction that applied it.
func (w *Webhook) Applied(ctx context.Context, q storage.Querier, c policy.Change) error {
	if !w.Enabled() {
		return nil
	}
	now := w.Clock.Now()
	if err := outbox.Enqueue(ctx, q, OutboxKind, "", Event{ID: rand.Text(), Change: c, At: now.UnixMilli()}, now); err != nil {
		return fmt.Errorf("queue %s event: %w", c.Op, err)
	}
	return nil
}

// Worker returns the outbox worker that delivers queued events.
func (w *Webhook) Worker() *outbox.Worker {
	return &outbox.Worker{
		Store:       w.Store,
		Kind:        OutboxKind,
		Do:          w.deliver,
		Poll:        poll,
		BaseBackoff: baseBackoff,
		MaxBackoff:  maxBackoff,
		Batch:       batch,
		Lease:       lease,
		OnGiveUp: outbox.LogGiveUp("event abandoned after the give-up age", func(ev Event) []any {
			return []any{"event_id", ev.ID, "op", ev.Op}
		}),
	}
}

// deliver posts one event; anything but a 2xx answer (a redirect included)
// is retried.
func (w *Webhook) deliver(ctx context.Context, item storage.OutboxItem) error {
	ctx, cancel := context.WithTimeout(ctx, DeliveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(item.Payload))
	if err != nil {
		return fmt.Errorf("build event request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(policy.SignatureHeader, policy.Sign(w.Secret, item.Payload))
	resp, err := w.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: deliver event: %v", outbox.ErrRetry, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: events webhook answered HTTP %d", outbox.ErrRetry, resp.StatusCode)
	}
	return nil
}
