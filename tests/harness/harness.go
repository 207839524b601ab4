// Package harness starts threepidd in-process for end-to-end tests, on
// OS-chosen 127.0.0.1 ports, against the fakes of package fakes (homeserver,
// identity servers, SMTP and SMS sinks) and a real SQLite or Postgres store.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation/signingkey"
	"github.com/threepidd/threepidd/server"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/support"
)

// ServerName is the fake homeserver's name.
const ServerName = "hs.test"

// HSAdminToken is the fake Synapse's admin token. A threepidd of kind synapse
// gets it as homeserver.admin_token (the mirror runs, as in a real
// deployment) unless Options.HomeserverYAML sets admin_token or mirror itself.
const HSAdminToken = "syt_synapse_admin"

// Options shape an Env.
type Options struct {
	// Kind is the homeserver kind (synapse by default).
	Kind string
	// IdentityServers is how many fake identity servers to configure.
	IdentityServers int
	// NoOnUpdate lists the indices (in IS) of identity servers configured
	// with onupdate: false; the others may call onupdate.
	NoOnUpdate []int
	// NoEmail and NoMSISDN leave that medium unconfigured.
	NoEmail, NoMSISDN bool
	// RateLimitYAML replaces the default ratelimit section (requestToken and
	// unbind limits off), e.g. "{requesttoken_per_ip: {per_second: 0.1, burst: 2}}".
	RateLimitYAML string
	// ExtraYAML is appended to the generated configuration (top-level keys).
	ExtraYAML string
	// HomeserverYAML adds keys to the homeserver mapping, which is written in
	// flow style: e.g. "admin_token: tok, mirror: synapse_admin". Without
	// admin_token or mirror in it, kind synapse gets admin_token HSAdminToken.
	HomeserverYAML string
	// EmailYAML adds keys to the email mapping (flow style, as HomeserverYAML).
	EmailYAML string
}

// Env is a running threepidd with its fakes.
type Env struct {
	t       testing.TB
	Backend storagetest.Backend
	HS      *fakes.Homeserver
	SMTP    *fakes.SMTPSink
	SMS     *fakes.SMSSink
	IS      []*fakes.IdentityServer
	Key     *signingkey.Key
	Config  *config.Config
	Server  *server.Server
	// URL is threepidd's base URL.
	URL string

	configPath string
	cancel     context.CancelFunc
	done       chan error
}

func init() {
	// Server logs are noise in test output unless asked for.
	if os.Getenv("THREEPIDD_TEST_VERBOSE") == "" {
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
}

// Run calls fn once per storage backend (SQLite, and Postgres when configured).
func Run(t *testing.T, fn func(t *testing.T, b storagetest.Backend)) {
	t.Helper()
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) { fn(t, b) })
	}
}

// Start starts the fakes and threepidd on backend b.
func Start(t testing.TB, b storagetest.Backend, opts Options) *Env {
	t.Helper()
	e := &Env{t: t, Backend: b}
	e.HS = fakes.NewHomeserver(t, ServerName)
	e.SMTP = fakes.NewSMTPSink(t)
	e.SMS = fakes.NewSMSSink(t)
	dir := t.TempDir()
	key, err := signingkey.Generate("")
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	e.Key = key
	keyPath := filepath.Join(dir, "signing.key")
	var kb bytes.Buffer
	if err := key.WriteSynapse(&kb); err != nil {
		t.Fatalf("write key: %v", err)
	}
	if err := os.WriteFile(keyPath, kb.Bytes(), 0o600); err != nil {
		t.Fatalf("write key: %v", err)
	}
	kind := opts.Kind
	if kind == "" {
		kind = "synapse"
	}
	var y strings.Builder
	fmt.Fprintf(&y, "server_name: %s\nlisten: 127.0.0.1:0\nsigning_key_path: %q\n", ServerName, keyPath)
	fmt.Fprintf(&y, "database: {driver: %s, dsn: %q}\n", b.Driver, b.DSN)
	hsExtra := ""
	if opts.HomeserverYAML != "" {
		hsExtra = ", " + opts.HomeserverYAML
	}
	e.HS.SetAdminToken(HSAdminToken)
	if kind == "synapse" && !strings.Contains(opts.HomeserverYAML, "admin_token:") && !strings.Contains(opts.HomeserverYAML, "mirror:") {
		hsExtra += ", admin_token: " + HSAdminToken
	}
	fmt.Fprintf(&y, "homeserver: {url: %q, kind: %s, token_cache_ttl: 2s%s}\n", e.HS.URL(), kind, hsExtra)
	if !opts.NoEmail {
		emailExtra := ""
		if opts.EmailYAML != "" {
			emailExtra = ", " + opts.EmailYAML
		}
		fmt.Fprintf(&y, "email: {smtp_host: 127.0.0.1, smtp_port: %d, from: \"threepidd@hs.test\"%s}\n", e.SMTP.Port(), emailExtra)
	}
	if !opts.NoMSISDN {
		fmt.Fprintf(&y, "msisdn: {webhook_url: %q}\n", e.SMS.URL())
	}
	if opts.RateLimitYAML == "" {
		opts.RateLimitYAML = "{requesttoken_per_ip: {per_second: 0}, requesttoken_per_address: {per_second: 0}, unbind_per_user: {per_second: 0}}"
	}
	fmt.Fprintf(&y, "ratelimit: %s\n", opts.RateLimitYAML)
	if opts.IdentityServers > 0 {
		y.WriteString("identity_servers:\n")
		for i := 0; i < opts.IdentityServers; i++ {
			is := fakes.NewIdentityServer(t, fmt.Sprintf("id%d.test", i+1))
			is.TrustHomeserver(ServerName, string(key.ID), key.PublicKey())
			e.IS = append(e.IS, is)
			fmt.Fprintf(&y, "  - {server_name: %s, base_url: %q, onupdate: %t}\n", is.Name(), is.URL(), !slices.Contains(opts.NoOnUpdate, i))
		}
	}
	y.WriteString(opts.ExtraYAML)
	e.configPath = filepath.Join(dir, "threepidd.yaml")
	if err := os.WriteFile(e.configPath, []byte(y.String()), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	e.start()
	t.Cleanup(e.Stop)
	return e
}

// start loads the config file and starts a server. After the first start the
// listen address is pinned, so links sent before a restart still work.
func (e *Env) start() {
	e.t.Helper()
	cfg, err := config.Load(e.configPath, nil)
	if err != nil {
		e.t.Fatalf("load config: %v", err)
	}
	if e.Config != nil {
		cfg.Listen = e.Config.Listen
		cfg.PublicBaseURL = e.Config.PublicBaseURL
	}
	srv, err := server.New(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("start threepidd: %v", err)
	}
	cfg.Listen = srv.Addr()
	e.Config, e.Server, e.URL = cfg, srv, "http://"+srv.Addr()
	registerThreepidd(srv.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- srv.Serve(ctx) }()
}

// Stop shuts threepidd down (idempotent).
func (e *Env) Stop() {
	if e.Server == nil {
		return
	}
	if err := e.Server.Shutdown(); err != nil {
		e.t.Errorf("shutdown: %v", err)
	}
	e.cancel()
	<-e.done
	unregisterThreepidd(e.Config.Listen)
	e.Server = nil
}

// EditConfig replaces old, which must be there, with new in the
// configuration file; the next Restart reads it.
func (e *Env) EditConfig(old, new string) {
	e.t.Helper()
	data, err := os.ReadFile(e.configPath)
	if err != nil {
		e.t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		e.t.Fatalf("the configuration has no %q:\n%s", old, data)
	}
	if err := os.WriteFile(e.configPath, bytes.Replace(data, []byte(old), []byte(new), 1), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// Restart stops threepidd and starts it again on the same store and address.
func (e *Env) Restart() {
	e.t.Helper()
	e.Stop()
	e.start()
}

// Response is an HTTP answer (support's, so that tests of every package
// read answers alike).
type Response = support.Response

// Do sends a request to threepidd with an optional access token. body may be
// nil, a []byte or string (sent as is) or any value (sent as JSON).
func (e *Env) Do(method, path, token string, body any) Response {
	e.t.Helper()
	return Do(e.t, method, e.URL+path, token, body)
}

// Do sends one HTTP request and reads the whole answer.
func Do(t testing.TB, method, url, token string, body any) Response {
	t.Helper()
	return Send(t, support.Request{Method: method, URL: url, Token: token, Body: body})
}

// Send sends req (within a minute), reads the whole answer and, when it comes
// from a threepidd of this package, checks it against the spec.
func Send(t testing.TB, req support.Request) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := support.Send(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	checkSpec(t, req.Method, req.URL, r)
	return r
}

// Expect fails the test unless r has the status and (if non-empty) errcode.
func Expect(t testing.TB, r Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || (errcode != "" && r.ErrCode() != errcode) {
		t.Fatalf("got %d %s, want %d %s: %s", r.Status, r.ErrCode(), status, errcode, r.Body)
	}
}

// DoHeaders sends a request without a body, with extra headers.
func DoHeaders(t testing.TB, method, url, token string, headers map[string]string) Response {
	t.Helper()
	h := http.Header{}
	for k, v := range headers {
		h.Set(k, v)
	}
	return Send(t, support.Request{Method: method, URL: url, Token: token, Header: h})
}
