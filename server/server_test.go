package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/tests/support"
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

	cfg := testConfig(t)
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

// testConfig is a configuration on a fresh SQLite file, with a homeserver
// nobody answers at.
func testConfig(t *testing.T) config.Config {
	cfg := config.Defaults()
	cfg.ServerName = "hs.test"
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = ""
	cfg.Database = config.Database{Driver: config.DriverSQLite, DSN: filepath.Join(t.TempDir(), "threepidd.db")}
	cfg.Homeserver.URL = "http://127.0.0.1:1"
	cfg.Homeserver.Mirror = config.MirrorNone
	return cfg
}

// TestBrokenMailTemplate: a mail template of email.template_dir that does
// not render stops the start with one line naming the key and the file.
func TestBrokenMailTemplate(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "validation.html"), []byte("<a href=\"{{.Link}}\">{{.Tokn}}</a>"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Email = config.Email{SMTPHost: "127.0.0.1", SMTPPort: 1025, From: "threepidd@hs.test", Subject: config.DefaultEmailSubject, TemplateDir: dir}
	srv, err := New(context.Background(), &cfg)
	if err == nil {
		srv.Shutdown()
		t.Fatal("started with a broken template")
	}
	const want = "config: email.template_dir: template: validation.html:1:"
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "Tokn") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("error %q, want one line starting %q", err, want)
	}
}

// TestLogsWhatStopsWorking: a Synapse without the mirror, or without the
// admin API, starts, and says at startup what that costs.
func TestLogsWhatStopsWorking(t *testing.T) {
	tests := []struct {
		name       string
		kind       string
		adminToken string
		want       []string
		wantNot    []string
	}{
		{"synapse, mirror none, no admin token", config.KindSynapse, "",
			[]string{"homeserver.mirror is none", "do not reset passwords by e-mail", "homeserver.admin_token is empty", "runs no reconcile pass"}, nil},
		{"synapse, mirror none, admin token", config.KindSynapse, "t",
			[]string{"homeserver.mirror is none"}, []string{"homeserver.admin_token is empty"}},
		{"dendrite", config.KindDendrite, "", nil, []string{"homeserver.mirror is none", "homeserver.admin_token is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := support.CaptureLogs(t)
			cfg := testConfig(t)
			cfg.Homeserver.Kind = tt.kind
			cfg.Homeserver.AdminToken = tt.adminToken
			srv, err := New(context.Background(), &cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown()
			for _, w := range tt.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("the startup log does not say %q:\n%s", w, logs)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(logs.String(), w) {
					t.Errorf("the startup log says %q:\n%s", w, logs)
				}
			}
		})
	}
}

// TestShutdownLetsClientsClose: a shutdown refuses new connections at once,
// and a request that comes on a kept-alive connection meanwhile is answered,
// with "Connection: close", so that its client (a load balancer) closes the
// connection rather than have it closed under a request it is sending.
func TestShutdownLetsClientsClose(t *testing.T) {
	cfg := testConfig(t)
	srv, err := New(context.Background(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.drain.quiet, srv.drain.grace = time.Minute, time.Minute // the test's request ends the drain
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	conn, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	get := func() *http.Response {
		t.Helper()
		if _, err := conn.Write([]byte("GET /health HTTP/1.1\r\nHost: threepidd\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get(); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("before the shutdown: %d, close %v", resp.StatusCode, resp.Close)
	}
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown() }()
	support.WaitFor(t, "new connections to be refused", func() bool {
		c, err := net.Dial("tcp", srv.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 10*time.Second)
	if resp := get(); resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("during the shutdown: %d, close %v; want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
