//go:build realpeer

package realpeer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/server"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

// Threepidd is threepidd running in-process in front of a Dendrite.
type Threepidd struct {
	// URL is its base, http://127.0.0.1:<port>, for calls that skip nginx.
	URL string
	// Addr is host:port of URL, for an nginx upstream.
	Addr string
	// Config is the configuration it runs with, as config.Load returned it.
	Config *config.Config
	// ConfigPath is the file Config was loaded from, for the subcommands an
	// operator runs with it (threepidd import -config).
	ConfigPath string
}

// ThreepiddOptions shape a threepidd for StartThreepidd.
type ThreepiddOptions struct {
	// Backend is its database (storagetest.Backends gives fresh ones).
	Backend storagetest.Backend
	// Dendrite is its homeserver (kind dendrite, the homeserver's server
	// name, and its signing key reused, as operators do).
	Dendrite *Dendrite
	// Addr is the 127.0.0.1:<port> to listen on, reserved with ReserveAddr
	// before nginx was started with it; "" picks a free port.
	Addr string
	// PublicBaseURL is what validation links start with (nginx's URL); ""
	// means threepidd's own URL.
	PublicBaseURL string
	// SMTPPort is the port of an SMTP server on 127.0.0.1 for validation
	// mail; 0 leaves e-mail off.
	SMTPPort int
	// SMSWebhookURL is the SMS gateway webhook for validation codes
	// (msisdn.webhook_url); "" leaves phone numbers off.
	SMSWebhookURL string
	// IdentityServers are the identity servers it trusts.
	IdentityServers []config.IdentityServer
	// Outbound, when set, is its outbound section (the guard of the
	// identity servers clients name).
	Outbound *config.Outbound
}

// ReserveAddr returns a free 127.0.0.1:<port> for a threepidd that nginx must
// know before it starts (the validation links point at nginx).
func ReserveAddr(t testing.TB) string {
	t.Helper()
	port, err := support.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

// StartThreepidd writes a configuration file for opts, loads it with
// config.Load as the binary does, and serves threepidd in-process (server.New,
// Serve) until the test ends. The rate limits keep their defaults.
func StartThreepidd(ctx context.Context, t testing.TB, opts ThreepiddOptions) *Threepidd {
	t.Helper()
	tp, err := startThreepidd(ctx, t, opts)
	if err != nil {
		t.Fatalf("start threepidd: %v", err)
	}
	return tp
}

func startThreepidd(ctx context.Context, t testing.TB, opts ThreepiddOptions) (*Threepidd, error) {
	if opts.Addr == "" {
		port, err := support.FreePort()
		if err != nil {
			return nil, err
		}
		opts.Addr = "127.0.0.1:" + strconv.Itoa(port)
	}
	doc := map[string]any{
		"server_name":      opts.Dendrite.ServerName,
		"listen":           opts.Addr,
		"public_baseurl":   opts.PublicBaseURL,
		"signing_key_path": opts.Dendrite.KeyPath,
		"database":         map[string]any{"driver": opts.Backend.Driver, "dsn": opts.Backend.DSN},
		"homeserver":       map[string]any{"url": opts.Dendrite.URL, "kind": config.KindDendrite},
	}
	if opts.SMTPPort != 0 {
		doc["email"] = map[string]any{"smtp_host": "127.0.0.1", "smtp_port": opts.SMTPPort, "from": "threepidd@" + opts.Dendrite.ServerName}
	}
	if opts.SMSWebhookURL != "" {
		doc["msisdn"] = map[string]any{"webhook_url": opts.SMSWebhookURL}
	}
	if len(opts.IdentityServers) > 0 {
		doc["identity_servers"] = opts.IdentityServers
	}
	if opts.Outbound != nil {
		doc["outbound"] = opts.Outbound
	}
	data, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	path := filepath.Join(t.TempDir(), "threepidd.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		return nil, fmt.Errorf("config.Load:\n%s\n%w", data, err)
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	serveCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx) }()
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("threepidd shutdown: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("threepidd serve: %v", err)
		}
	})
	return &Threepidd{URL: "http://" + srv.Addr(), Addr: srv.Addr(), Config: cfg, ConfigPath: path}, nil
}
