package events

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

var change = policy.Change{Callback: policy.CallbackUserThreepid, Op: policy.OpAdd, UserID: "@a:hs", Medium: "email", Address: "a@example.org"}

// TestApplied: an event commits and rolls back with its transaction, and a
// webhook without a URL queues nothing.
func TestApplied(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		at := time.UnixMilli(1_700_000_000_000)
		w := NewWebhook(config.EventsWebhook{URL: "http://127.0.0.1:1/events", Secret: "s"}, s, http.DefaultClient)
		w.Clock = func() time.Time { return at }
		rollback := errors.New("rollback")
		if err := s.WithTx(ctx, func(q storage.Querier) error {
			if err := w.Applied(ctx, q, change); err != nil {
				t.Fatal(err)
			}
			return rollback
		}); !errors.Is(err, rollback) {
			t.Fatalf("WithTx = %v", err)
		}
		off := NewWebhook(config.EventsWebhook{}, s, http.DefaultClient)
		if off.Enabled() {
			t.Fatal("a webhook without URL is enabled")
		}
		if err := s.WithTx(ctx, func(q storage.Querier) error { return off.Applied(ctx, q, change) }); err != nil {
			t.Fatal(err)
		}
		if n, err := s.CountOutbox(ctx, OutboxKind); err != nil || n != 0 {
			t.Fatalf("%d events queued after a rollback and a disabled webhook (%v)", n, err)
		}
		if err := s.WithTx(ctx, func(q storage.Querier) error { return w.Applied(ctx, q, change) }); err != nil {
			t.Fatal(err)
		}
		items, err := s.ClaimOutbox(ctx, OutboxKind, at.UnixMilli(), at.Add(time.Minute).UnixMilli(), 10)
		if err != nil || len(items) != 1 {
			t.Fatalf("claimed %d events (%v), want 1", len(items), err)
		}
		var ev Event
		if err := json.Unmarshal(items[0].Payload, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Change != change || ev.At != at.UnixMilli() || len(ev.ID) < 16 {
			t.Fatalf("queued event %+v", ev)
		}
	})
}

// TestDelivery: the worker posts each event signed, keeps it while the
// receiver fails, retries after the backoff, and sends the same body again.
func TestDelivery(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		var down atomic.Bool
		down.Store(true)
		bodies := make(chan []byte, 10)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if !policy.VerifySignature("s3cret", body, r.Header.Get(policy.SignatureHeader)) || r.Method != http.MethodPost {
				http.Error(w, "bad signature", http.StatusUnauthorized)
				return
			}
			bodies <- body
			if down.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
			}
		}))
		defer srv.Close()
		now := time.Now()
		clock := func() time.Time { return now }
		w := NewWebhook(config.EventsWebhook{URL: srv.URL, Secret: "s3cret"}, s, srv.Client())
		w.Clock = clock
		if err := s.WithTx(ctx, func(q storage.Querier) error { return w.Applied(ctx, q, change) }); err != nil {
			t.Fatal(err)
		}
		worker := w.Worker()
		worker.Clock = clock

		if n := worker.RunOnce(ctx); n != 1 {
			t.Fatalf("first pass claimed %d events", n)
		}
		first := <-bodies
		if n, _ := s.CountOutbox(ctx, OutboxKind); n != 1 {
			t.Fatalf("%d events pending after a 503, want 1", n)
		}
		if n := worker.RunOnce(ctx); n != 0 {
			t.Fatalf("retried %d events before the backoff", n)
		}
		down.Store(false)
		now = now.Add(baseBackoff)
		if n := worker.RunOnce(ctx); n != 1 {
			t.Fatalf("retry pass claimed %d events", n)
		}
		if second := <-bodies; string(second) != string(first) {
			t.Fatalf("retry sent %s, first attempt %s", second, first)
		}
		if n, _ := s.CountOutbox(ctx, OutboxKind); n != 0 {
			t.Fatalf("%d events pending after delivery", n)
		}
		var ev Event
		if err := json.Unmarshal(first, &ev); err != nil || ev.Change != change || ev.At != now.Add(-baseBackoff).UnixMilli() {
			t.Fatalf("delivered %s (%v)", first, err)
		}
	})
}

// TestDeliveryRedirect: a redirect is not a delivery: the event stays queued
// (following a 302 would GET the new location and count its 200 as
// delivered), even with a client that would follow it.
func TestDeliveryRedirect(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		var moved atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/moved" {
				moved.Add(1)
				return
			}
			http.Redirect(w, r, "/moved", http.StatusFound)
		}))
		defer srv.Close()
		w := NewWebhook(config.EventsWebhook{URL: srv.URL + "/events", Secret: "s3cret"}, s, http.DefaultClient)
		if err := s.WithTx(ctx, func(q storage.Querier) error { return w.Applied(ctx, q, change) }); err != nil {
			t.Fatal(err)
		}
		if n := w.Worker().RunOnce(ctx); n != 1 {
			t.Fatalf("claimed %d events", n)
		}
		if n, _ := s.CountOutbox(ctx, OutboxKind); n != 1 || moved.Load() != 0 {
			t.Fatalf("after a 302: %d events pending, redirect target asked %d times", n, moved.Load())
		}
	})
}

// TestCounter: a change is counted once its transaction commits, never when
// it rolls back.
func TestCounter(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := context.Background()
		count := func() float64 {
			return metricstest.Value(t, "threepidd_threepid_changes_total", "callback", "user_threepid", "op", "add")
		}
		before := count()
		rollback := errors.New("rollback")
		for _, fail := range []bool{true, false} {
			err := s.WithTx(ctx, func(q storage.Querier) error {
				if err := (Sinks{Counter{}}).Applied(ctx, q, change); err != nil {
					t.Fatal(err)
				}
				if count() != before {
					t.Fatal("counted before the commit")
				}
				if fail {
					return rollback
				}
				return nil
			})
			if fail != errors.Is(err, rollback) {
				t.Fatalf("WithTx = %v", err)
			}
		}
		if got := count() - before; got != 1 {
			t.Fatalf("counted %v changes, want 1", got)
		}
	})
}
