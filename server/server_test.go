package server

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/policy"
)

// TestEventsWebhookDeliversThroughPooledTransport: the worker that delivers
// events is the one built on the pooled outbound client (User-Agent
// threepidd, no redirects), not http.DefaultClient.
func TestEventsWebhookDeliversThroughPooledTransport(t *testing.T) {
	agents := make(chan string, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		agents <- r.Header.Get("User-Agent")
	}))
	defer receiver.Close()

	cfg := config.Defaults()
	cfg.ServerName = "hs.test"
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	cfg.Database = config.Database{Driver: config.DriverSQLite, DSN: filepath.Join(t.TempDir(), "threepidd.db")}
	cfg.Homeserver.URL = "http://127.0.0.1:1"
	cfg.Homeserver.Mirror = config.MirrorNone
	cfg.Policy.EventsWebhook = config.EventsWebhook{URL: receiver.URL, Secret: "s"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := New(ctx, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !outbound.Pooled(srv.Events.Client.Transport) {
		t.Fatalf("the events webhook's transport is %T, not the pooled outbound transport", srv.Events.Client.Transport)
	}
	go func() { _ = srv.Serve(ctx) }()
	defer srv.Shutdown()

	change := policy.Change{Callback: policy.CallbackUserThreepid, Op: policy.OpAdd, UserID: "@a:hs.test", Medium: "email", Address: "a@example.org"}
	if err := srv.Events.Applied(ctx, srv.Store, change); err != nil {
		t.Fatal(err)
	}
	select {
	case ua := <-agents:
		if ua != outbound.UserAgent {
			t.Fatalf("event delivered with User-Agent %q, want %q (the outbound client)", ua, outbound.UserAgent)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event delivered within 10 s")
	}
}
