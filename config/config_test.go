package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeConfig writes a config file into a fresh directory and returns its path.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "threepidd.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// minimal is the smallest valid file; the database lives in a temporary directory.
func minimal(t *testing.T) string {
	t.Helper()
	return "server_name: example.org\n" +
		"homeserver: {url: \"http://127.0.0.1:8008\", admin_token: syt_admin}\n" +
		"database: {dsn: " + filepath.Join(t.TempDir(), "threepidd.db") + "}\n"
}

func TestLoadDefaults(t *testing.T) {
	t.Chdir(t.TempDir()) // the default SQLite file is relative
	path := writeConfig(t, "server_name: example.org\nhomeserver: {url: \"http://127.0.0.1:8008\", admin_token: syt_admin}\n")
	cfg, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.ServerName = "example.org"
	want.Homeserver.URL = "http://127.0.0.1:8008"
	want.Homeserver.AdminToken = "syt_admin"
	want.Homeserver.Mirror = MirrorSynapseAdmin
	want.Database.DSN = DefaultSQLiteDSN
	if !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("Load = %+v\nwant %+v", *cfg, want)
	}
	// The contract's values, spelled out.
	switch {
	case cfg.Listen != "127.0.0.1:8090", cfg.MetricsListen != "",
		cfg.Database.Driver != "sqlite", cfg.Database.DSN != "threepidd.db",
		cfg.Homeserver.Kind != "synapse", cfg.Homeserver.TokenCacheTTL != 10*time.Second,
		cfg.Homeserver.Mirror != "synapse_admin", cfg.Homeserver.UIARelay != nil,
		cfg.Homeserver.ReconcileInterval != time.Hour,
		!reflect.DeepEqual(cfg.TrustedProxies, []string{"127.0.0.1/32", "::1/128"}),
		cfg.RateLimit.RequestTokenPerIP != Bucket{PerSecond: 0.1, Burst: 10},
		cfg.RateLimit.RequestTokenPerAddress != Bucket{PerSecond: 0.003, Burst: 5},
		cfg.RateLimit.OnUpdatePerServer != Bucket{PerSecond: 50, Burst: 200},
		cfg.RateLimit.UnbindPerUser != Bucket{PerSecond: 0.05, Burst: 10},
		!reflect.DeepEqual(cfg.Outbound.IPRangeDenylist, DefaultIPRangeDenylist) || len(cfg.Outbound.IPRangeDenylist) != 19,
		cfg.Outbound.IPRangeAllowlist != nil, cfg.Outbound.CAFiles != nil,
		cfg.OnUpdate.MaxAge != 10*time.Minute, cfg.OnUpdate.ClockSkew != time.Minute,
		cfg.Policy.Webhook.Timeout != 2*time.Second, cfg.Sync.Retention != 168*time.Hour,
		cfg.Sync.SpliceBudgetBytes != 256<<20, cfg.Log != Log{Format: "text", Level: "info"},
		cfg.Email.SMTPPort != 0, cfg.EmailEnabled(), cfg.MSISDNEnabled(),
		cfg.Email.TokenLifetime != time.Hour, cfg.MSISDN.TokenLifetime != 15*time.Minute,
		cfg.ValidatedSessionLifetime != 24*time.Hour, cfg.Email.NextLinkDomainsAllowed != nil,
		cfg.Email.Subject != "[{{.ServerName}}] Confirm your e-mail address", cfg.Email.TemplateDir != "",
		cfg.Policy.RequestTokenInhibit3PIDErrors,
		cfg.RateLimit.TokenAttemptsPerLifetime != 5, cfg.RateLimit.TokenAttemptsPerDay != 10:
		t.Fatalf("defaults differ from the contract: %+v", *cfg)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRequireTLSDefault: STARTTLS is required unless the SMTP server is a
// loopback host (or require_tls says otherwise).
func TestRequireTLSDefault(t *testing.T) {
	for _, tt := range []struct {
		host, requireTLS string // requireTLS "" leaves the key out
		want             bool
	}{
		{"smtp.example.org", "", true},
		{"192.0.2.25", "", true},
		{"2001:db8::25", "", true},
		{"localhost.example.org", "", true},
		{"127.0.0.1", "", false},
		{"127.8.9.10", "", false},
		{"::1", "", false},
		{"[::1]", "", false},
		{"localhost", "", false},
		{"LocalHost.", "", false},
		{"mail.localhost", "", false},
		{"smtp.example.org", "false", false},
		{"127.0.0.1", "true", true},
	} {
		t.Run(tt.host+" "+tt.requireTLS, func(t *testing.T) {
			env := []string{"THREEPIDD_EMAIL_SMTP_HOST=" + tt.host, "THREEPIDD_EMAIL_FROM=threepidd@example.org"}
			if tt.requireTLS != "" {
				env = append(env, "THREEPIDD_EMAIL_REQUIRE_TLS="+tt.requireTLS)
			}
			cfg, err := Load(writeConfig(t, minimal(t)), env)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Email.RequireTLS == nil || *cfg.Email.RequireTLS != tt.want || cfg.Email.TLSRequired() != tt.want {
				t.Fatalf("require_tls = %v (TLSRequired %v), want %v", cfg.Email.RequireTLS, cfg.Email.TLSRequired(), tt.want)
			}
		})
	}
}

// TestNextLinkDomainsAllowed: unset allows any host (nil), an empty list none.
func TestNextLinkDomainsAllowed(t *testing.T) {
	for _, tt := range []struct {
		name, extra string
		env         []string
		want        []string
	}{
		{"unset", "", nil, nil},
		{"empty list", "email: {next_link_domains_allowed: []}\n", nil, []string{}},
		{"empty list from the environment", "", []string{"THREEPIDD_EMAIL_NEXT_LINK_DOMAINS_ALLOWED=[]"}, []string{}},
		{"unset again by the environment", "email: {next_link_domains_allowed: []}\n", []string{"THREEPIDD_EMAIL_NEXT_LINK_DOMAINS_ALLOWED="}, nil},
		{"hosts", "email: {next_link_domains_allowed: [app.example.org, 192.0.2.1, \"2001:db8::1\"]}\n", nil,
			[]string{"app.example.org", "192.0.2.1", "2001:db8::1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, minimal(t)+tt.extra), tt.env)
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.Email.NextLinkDomainsAllowed
			if (got == nil) != (tt.want == nil) || !slices.Equal(got, tt.want) {
				t.Fatalf("next_link_domains_allowed = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestLoadFullFile(t *testing.T) {
	cfg, err := Load("testdata/full.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ServerName:     "example.org:8448",
		Listen:         "[::1]:0",
		MetricsListen:  "127.0.0.1:9464",
		PublicBaseURL:  "https://matrix.example.org",
		SigningKeyPath: "testdata/signing.key",
		Database:       Database{Driver: "postgres", DSN: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
		Homeserver: Homeserver{
			URL:               "http://127.0.0.1:8008",
			Kind:              "dendrite",
			UIARelay:          &UIARelay{Method: "DELETE", Path: "/_matrix/client/v3/devices/x"},
			TokenCacheTTL:     90 * time.Second,
			AdminToken:        "syt_admin",
			Mirror:            "none",
			ReconcileInterval: 15 * time.Minute,
		},
		TrustedProxies: []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"},
		IdentityServers: []IdentityServer{
			{
				ServerName:  "id.example.org",
				SigningName: "vector.im",
				BaseURL:     "https://id-internal.example.org:8090/",
				OnUpdate:    true,
				VerifyKeys: map[string]string{
					"ed25519:0":      "KBmCKyBUIC3hYHqsdtHhpMqBBqrvmPxS5Ce4Es2SyvA",
					"ed25519:padded": "KBmCKyBUIC3hYHqsdtHhpMqBBqrvmPxS5Ce4Es2SyvA=",
				},
			},
			{ServerName: "[2001:db8::2]:8090"},
		},
		Email: Email{
			SMTPHost: "smtp.example.org", SMTPPort: 587, SMTPUsername: "threepidd",
			SMTPPassword: "#not a comment", RequireTLS: ptr(false), From: "Example <noreply@example.org>",
			TokenLifetime: 2 * time.Hour, Subject: "Confirm {{.Address}}", TemplateDir: "testdata",
			NextLinkDomainsAllowed: []string{"app.example.org", "::1"},
		},
		MSISDN: MSISDN{WebhookURL: "https://sms.example.org/send", TokenLifetime: 10 * time.Minute},
		Policy: Policy{
			EmailDomainsAllowed:           []string{"example.org"},
			EmailDomainsDenied:            []string{"spam.example"},
			MSISDNCountriesAllowed:        []string{"44"},
			MSISDNCountriesDenied:         []string{"1"},
			BindIdentityServersAllowed:    []string{"id.example.org"},
			MaxThreepidsPerUser:           3,
			Webhook:                       PolicyWebhook{URL: "https://policy.example/check", Secret: "s3cret", Timeout: 500 * time.Millisecond, FailOpen: true},
			EventsWebhook:                 EventsWebhook{URL: "https://policy.example/events", Secret: "ev3nts"},
			RequestTokenInhibit3PIDErrors: true,
		},
		RateLimit: RateLimits{
			RequestTokenPerIP:        Bucket{PerSecond: 0, Burst: 0}, // an explicit 0 beats the default
			RequestTokenPerAddress:   Bucket{PerSecond: 1.5, Burst: 2},
			OnUpdatePerServer:        Bucket{PerSecond: 5, Burst: 20},
			UnbindPerUser:            Bucket{PerSecond: 0.5, Burst: 3},
			TokenAttemptsPerLifetime: 3,
			TokenAttemptsPerDay:      6,
		},
		AdminToken:               "adm1n",
		Sync:                     Sync{Retention: 24 * time.Hour, SpliceBudgetBytes: 64 << 20},
		ValidatedSessionLifetime: time.Hour,
		Log:                      Log{Format: "json", Level: "debug"},
		Outbound: Outbound{
			IPRangeDenylist:  []string{"10.0.0.0/8", "fc00::/7", "192.0.2.1"},
			IPRangeAllowlist: []string{"10.1.0.0/16"},
			CAFiles:          []string{"testdata/ca.pem"},
		},
		OnUpdate: OnUpdate{MaxAge: 5 * time.Minute, ClockSkew: 30 * time.Second},
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("Load = %+v\nwant %+v", *cfg, want)
	}
}

func TestExampleFileLoads(t *testing.T) {
	example, err := filepath.Abs("../threepidd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // its SQLite file is relative to the working directory
	cfg, err := Load(example, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.Database.Driver != DriverSQLite, cfg.Database.DSN != "threepidd.db",
		cfg.Homeserver.URL != "http://127.0.0.1:8008", len(cfg.IdentityServers) != 0,
		cfg.SigningKeyPath != "", !cfg.EmailEnabled(), cfg.Email.SMTPHost != "127.0.0.1",
		cfg.Email.SMTPPort != 1025, cfg.MSISDNEnabled():
		t.Fatalf("the example does not describe a local SQLite setup with e-mail on 127.0.0.1:1025: %+v", *cfg)
	}
	if want := Defaults().RateLimit; cfg.RateLimit != want {
		t.Errorf("example rate limits %+v differ from the defaults %+v", cfg.RateLimit, want)
	}
}

func TestEnvOverrides(t *testing.T) {
	keyFile, err := filepath.Abs("testdata/signing.key")
	if err != nil {
		t.Fatal(err)
	}
	otherDB := filepath.Join(t.TempDir(), "other.db")
	file := minimal(t) + "listen: 127.0.0.1:1111\nmetrics_listen: 127.0.0.1:9464\n"
	environ := []string{
		"PATH=/usr/bin",
		"THREEPIDD_TEST_POSTGRES=postgres://nobody@127.0.0.1:1/x", // reserved for tests: ignored
		"THREEPIDD_TEST_ANYTHING_ELSE=1",
		"THREEPIDD_LISTEN=127.0.0.1:0",                                     // scalar over the file
		"THREEPIDD_METRICS_LISTEN=",                                        // empty turns it off
		"THREEPIDD_TRUSTED_PROXIES=[10.0.0.0/8, 192.0.2.1]",                // list
		"THREEPIDD_HOMESERVER_TOKEN_CACHE_TTL=1m",                          // duration
		"THREEPIDD_RATELIMIT_REQUESTTOKEN_PER_IP_BURST=3",                  // nested key
		"THREEPIDD_HOMESERVER_UIA_RELAY_PATH=/_matrix/client/v3/devices/x", // key under a nil section
		"THREEPIDD_HOMESERVER_UIA_RELAY_METHOD=DELETE",
		"THREEPIDD_EMAIL_REQUIRE_TLS=true", // bool
		"THREEPIDD_EMAIL_SMTP_HOST=127.0.0.1",
		"THREEPIDD_EMAIL_FROM=threepidd@example.org",
		"THREEPIDD_ADMIN_TOKEN=#secret: *not yaml", // strings are verbatim
		"THREEPIDD_DATABASE_DSN=" + otherDB,        // applied after its section ...
		"THREEPIDD_DATABASE={driver: sqlite, dsn: ignored.db}",
		"THREEPIDD_IDENTITY_SERVERS=[{server_name: id.example.org, onupdate: true, verify_keys: {\"ed25519:0\": KBmCKyBUIC3hYHqsdtHhpMqBBqrvmPxS5Ce4Es2SyvA}}]",
		"THREEPIDD_SIGNING_KEY_PATH=" + keyFile,
	}
	cfg, err := Load(writeConfig(t, file), environ)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Listen, "127.0.0.1:0"},
		{"metrics_listen", cfg.MetricsListen, ""},
		{"trusted_proxies", cfg.TrustedProxies, []string{"10.0.0.0/8", "192.0.2.1"}},
		{"token_cache_ttl", cfg.Homeserver.TokenCacheTTL, time.Minute},
		{"burst", cfg.RateLimit.RequestTokenPerIP, Bucket{PerSecond: 0.1, Burst: 3}},
		{"uia_relay", cfg.Homeserver.UIARelay, &UIARelay{Method: "DELETE", Path: "/_matrix/client/v3/devices/x"}},
		{"require_tls", cfg.Email.RequireTLS, ptr(true)},
		{"smtp_port default follows an env smtp_host", cfg.Email.SMTPPort, DefaultSMTPPort},
		{"admin_token", cfg.AdminToken, "#secret: *not yaml"},
		{"database", cfg.Database, Database{Driver: "sqlite", DSN: otherDB}},
		{"identity_servers", cfg.IdentityServers, []IdentityServer{{
			ServerName: "id.example.org", OnUpdate: true,
			VerifyKeys: map[string]string{"ed25519:0": "KBmCKyBUIC3hYHqsdtHhpMqBBqrvmPxS5Ce4Es2SyvA"},
		}}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

// TestMirrorDefault: homeserver.mirror follows the kind when unset, and an
// explicit none stays none (so Synapse may run without an admin token).
func TestMirrorDefault(t *testing.T) {
	tests := []struct {
		name, homeserver, want string
	}{
		{"synapse with an admin token", "{url: \"http://127.0.0.1:8008\", admin_token: t}", MirrorSynapseAdmin},
		{"synapse, explicit none", "{url: \"http://127.0.0.1:8008\", mirror: none}", MirrorNone},
		{"synapse, explicit none, admin token", "{url: \"http://127.0.0.1:8008\", mirror: none, admin_token: t}", MirrorNone},
		{"dendrite", "{url: \"http://127.0.0.1:8008\", kind: dendrite}", MirrorNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, "server_name: example.org\nhomeserver: "+tt.homeserver+"\n"+
				"database: {dsn: \""+filepath.Join(t.TempDir(), "t.db")+"\"}\n"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Homeserver.Mirror != tt.want {
				t.Fatalf("homeserver.mirror = %q, want %q", cfg.Homeserver.Mirror, tt.want)
			}
		})
	}
}

func TestEnvWithoutFile(t *testing.T) {
	cfg, err := Load("", []string{
		"THREEPIDD_SERVER_NAME=example.org",
		"THREEPIDD_HOMESERVER_URL=http://127.0.0.1:8008",
		"THREEPIDD_HOMESERVER_MIRROR=none",
		"THREEPIDD_DATABASE_DSN=" + filepath.Join(t.TempDir(), "t.db"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "example.org" || cfg.Listen != DefaultListen {
		t.Fatalf("Load from the environment only = %+v", *cfg)
	}
}

func TestEnvNames(t *testing.T) {
	for _, name := range []string{
		"THREEPIDD_SERVER_NAME", "THREEPIDD_DATABASE", "THREEPIDD_DATABASE_DSN",
		"THREEPIDD_HOMESERVER_UIA_RELAY", "THREEPIDD_HOMESERVER_UIA_RELAY_METHOD",
		"THREEPIDD_HOMESERVER_ADMIN_TOKEN", "THREEPIDD_ADMIN_TOKEN",
		"THREEPIDD_RATELIMIT_REQUESTTOKEN_PER_IP_BURST", "THREEPIDD_POLICY_WEBHOOK_FAIL_OPEN",
		"THREEPIDD_POLICY_EVENTS_WEBHOOK_SECRET", "THREEPIDD_SYNC_RETENTION", "THREEPIDD_IDENTITY_SERVERS",
	} {
		if _, ok := envFields()[name]; !ok {
			t.Errorf("no key for %s", name)
		}
	}
	// Fields inside list items are set through the list, not one by one.
	if _, ok := envFields()["THREEPIDD_IDENTITY_SERVERS_SERVER_NAME"]; ok {
		t.Error("THREEPIDD_IDENTITY_SERVERS_SERVER_NAME should not exist")
	}
}

func TestLoadMistakes(t *testing.T) {
	missingKey := filepath.Join(t.TempDir(), "missing.key")
	keyFile, err := filepath.Abs("testdata/signing.key")
	if err != nil {
		t.Fatal(err)
	}
	aDir := t.TempDir()
	is := func(list string) []string {
		return []string{"THREEPIDD_IDENTITY_SERVERS=" + list, "THREEPIDD_SIGNING_KEY_PATH=" + keyFile}
	}
	tests := []struct {
		name  string
		extra string   // appended to the minimal file
		env   []string // applied on top
		want  string   // the error contains this
	}{
		// Reading the file.
		{name: "unknown key", extra: "listn: 127.0.0.1:1\n", want: `config: unknown key "listn"`},
		{name: "unknown nested key", extra: "policy: {webhook: {urll: x}}\n", want: `config: unknown key "policy.webhook.urll"`},
		{name: "unknown key in a list item", extra: "identity_servers: [{server_name: a.org, onupdatee: true}]\n",
			want: `config: unknown key "identity_servers[0].onupdatee"`},
		{name: "unknown key next to a merge", extra: "ratelimit: {requesttoken_per_ip: &b {burst: 1}, onupdate_per_server: {<<: *b, brust: 2}}\n",
			want: `config: unknown key "ratelimit.onupdate_per_server.brust"`},
		{name: "wrong type", extra: "ratelimit: {requesttoken_per_ip: {burst: lots}}\n", want: "config: ratelimit.requesttoken_per_ip.burst: line"},
		{name: "duration without unit", extra: "sync: {retention: 7}\n", want: "config: sync.retention:"},
		{name: "section given a scalar", extra: "policy: none\n", want: "config: policy: line"},
		{name: "list of structs given a mapping", extra: "identity_servers: {server_name: a.org}\n", want: "config: identity_servers: line"},
		{name: "YAML syntax", extra: "email: {from: [\n", want: "threepidd.yaml: yaml: line"},
		{name: "duplicate key", extra: "listen: 127.0.0.1:1\n\nlisten: 127.0.0.1:2\n", want: `config: duplicate key "listen" (line 6)`},
		{name: "duplicate key in a map", extra: "identity_servers: [{server_name: a.org, verify_keys: {\"ed25519:0\": x, \"ed25519:0\": y}}]\n",
			want: "config: identity_servers[0].verify_keys: line 4:"},

		// Environment.
		{name: "unknown variable", env: []string{"THREEPIDD_LISTN=127.0.0.1:0"}, want: "config: unknown environment variable THREEPIDD_LISTN"},
		{name: "variable of a field inside a list", env: []string{"THREEPIDD_IDENTITY_SERVERS_ONUPDATE=true"}, want: "THREEPIDD_IDENTITY_SERVERS_ONUPDATE"},
		{name: "variable with a bad value", env: []string{"THREEPIDD_RATELIMIT_REQUESTTOKEN_PER_IP_BURST=lots"},
			want: "config: THREEPIDD_RATELIMIT_REQUESTTOKEN_PER_IP_BURST: ratelimit.requesttoken_per_ip.burst:"},
		{name: "variable with an unknown key", env: []string{"THREEPIDD_DATABASE={dsnn: x}"}, want: `config: THREEPIDD_DATABASE: unknown key "database.dsnn"`},
		{name: "variable with bad YAML", env: []string{"THREEPIDD_TRUSTED_PROXIES=[a"}, want: "config: THREEPIDD_TRUSTED_PROXIES: yaml:"},

		// Validation.
		{name: "server_name missing", env: []string{"THREEPIDD_SERVER_NAME="}, want: "config: server_name: required"},
		{name: "server_name invalid", env: []string{"THREEPIDD_SERVER_NAME=exa mple.org"}, want: "config: server_name:"},
		{name: "listen without port", env: []string{"THREEPIDD_LISTEN=127.0.0.1"}, want: "config: listen:"},
		{name: "listen port too big", env: []string{"THREEPIDD_LISTEN=:65536"}, want: "config: listen:"},
		{name: "listen empty", env: []string{"THREEPIDD_LISTEN="}, want: "config: listen: required"},
		{name: "metrics_listen invalid", env: []string{"THREEPIDD_METRICS_LISTEN=9464"}, want: "config: metrics_listen:"},
		{name: "public_baseurl not http", env: []string{"THREEPIDD_PUBLIC_BASEURL=matrix.example.org"}, want: "config: public_baseurl:"},
		{name: "trusted proxy garbage", env: []string{"THREEPIDD_TRUSTED_PROXIES=[10.0.0.0/8, proxy.local]"}, want: "config: trusted_proxies[1]:"},
		{name: "homeserver.url missing", env: []string{"THREEPIDD_HOMESERVER_URL="}, want: "config: homeserver.url: required"},
		{name: "homeserver.url not http", env: []string{"THREEPIDD_HOMESERVER_URL=ftp://127.0.0.1"}, want: "config: homeserver.url:"},
		{name: "homeserver.url without host", env: []string{"THREEPIDD_HOMESERVER_URL=http:///x"}, want: "config: homeserver.url:"},
		{name: "homeserver.kind unknown", env: []string{"THREEPIDD_HOMESERVER_KIND=conduit"}, want: "config: homeserver.kind:"},
		{name: "homeserver.mirror unknown", env: []string{"THREEPIDD_HOMESERVER_MIRROR=dendrite_admin"}, want: "config: homeserver.mirror:"},
		{name: "mirror without admin token", env: []string{"THREEPIDD_HOMESERVER_MIRROR=synapse_admin", "THREEPIDD_HOMESERVER_ADMIN_TOKEN="},
			want: "config: homeserver.admin_token: required"},
		{name: "synapse without admin token", env: []string{"THREEPIDD_HOMESERVER_ADMIN_TOKEN="},
			want: "config: homeserver.admin_token: required with homeserver.kind synapse, for the mirror (homeserver.mirror defaults to synapse_admin); set homeserver.mirror: none to run without it"},
		{name: "synapse_admin mirror of a dendrite", env: []string{"THREEPIDD_HOMESERVER_KIND=dendrite", "THREEPIDD_HOMESERVER_MIRROR=synapse_admin"},
			want: `config: homeserver.mirror: synapse_admin needs homeserver.kind synapse, not "dendrite"`},
		{name: "reconcile_interval negative", env: []string{"THREEPIDD_HOMESERVER_RECONCILE_INTERVAL=-1m"}, want: "config: homeserver.reconcile_interval:"},
		{name: "uia_relay without path", env: []string{"THREEPIDD_HOMESERVER_UIA_RELAY_METHOD=POST"}, want: "config: homeserver.uia_relay.path: required"},
		{name: "uia_relay without method", env: []string{"THREEPIDD_HOMESERVER_UIA_RELAY={path: /x}"}, want: "config: homeserver.uia_relay.method: required"},
		{name: "uia_relay relative path", env: []string{"THREEPIDD_HOMESERVER_UIA_RELAY={method: POST, path: x}"}, want: "config: homeserver.uia_relay.path:"},
		{name: "token_cache_ttl negative", env: []string{"THREEPIDD_HOMESERVER_TOKEN_CACHE_TTL=-1s"}, want: "config: homeserver.token_cache_ttl:"},
		{name: "identity server without server_name", env: is(`[{base_url: "https://id.example.org"}]`), want: "config: identity_servers[0].server_name: required"},
		{name: "identity server given as a string", env: is(`["https://id.example.org"]`), want: "THREEPIDD_IDENTITY_SERVERS: identity_servers[0]: line 1: expected a mapping"},
		{name: "identity server with an invalid server_name", env: is(`[{server_name: "https://id.example.org"}]`), want: "config: identity_servers[0].server_name:"},
		{name: "identity servers duplicated", env: is(`[{server_name: a.org}, {server_name: b.org}, {server_name: a.org}]`),
			want: "config: identity_servers[2].server_name:"},
		{name: "identity server signing_name invalid", env: is(`[{server_name: a.org, signing_name: "a b"}]`), want: "config: identity_servers[0].signing_name:"},
		{name: "identity server base_url not http", env: is(`[{server_name: a.org, base_url: "a.org"}]`), want: "config: identity_servers[0].base_url:"},
		{name: "verify key id without algorithm", env: is(`[{server_name: a.org, verify_keys: {"0": KBmCKyBUIC3hYHqsdtHhpMqBBqrvmPxS5Ce4Es2SyvA}}]`),
			want: `config: identity_servers[0].verify_keys["0"]:`},
		{name: "verify key not base64", env: is(`[{server_name: a.org, verify_keys: {"ed25519:0": "not base64!"}}]`),
			want: `config: identity_servers[0].verify_keys["ed25519:0"]: not base64`},
		{name: "verify key too short", env: is(`[{server_name: a.org, verify_keys: {"ed25519:0": "AAAA"}}]`),
			want: `config: identity_servers[0].verify_keys["ed25519:0"]: an ed25519 public key is 32 bytes, not 3`},
		{name: "identity servers without signing key", env: []string{"THREEPIDD_IDENTITY_SERVERS=[{server_name: a.org}]"},
			want: "config: signing_key_path: required when identity_servers is set"},
		{name: "missing key file", env: []string{"THREEPIDD_SIGNING_KEY_PATH=" + missingKey}, want: "config: signing_key_path: missing key file"},
		{name: "key file is a directory", env: []string{"THREEPIDD_SIGNING_KEY_PATH=" + aDir}, want: "config: signing_key_path:"},
		{name: "database driver unknown", env: []string{"THREEPIDD_DATABASE_DRIVER=mysql"}, want: "config: database.driver:"},
		{name: "postgres without dsn", env: []string{"THREEPIDD_DATABASE_DRIVER=postgres", "THREEPIDD_DATABASE_DSN="}, want: "config: database.dsn: required for postgres"},
		{name: "postgres with a file name", env: []string{"THREEPIDD_DATABASE_DRIVER=postgres"}, want: "config: database.dsn: must be a postgres:// URL"},
		{name: "sqlite in a missing directory", env: []string{"THREEPIDD_DATABASE_DSN=" + filepath.Join(aDir, "nope", "t.db")}, want: "config: database.dsn: directory " + filepath.Join(aDir, "nope") + " does not exist"},
		{name: "sqlite file is a directory", env: []string{"THREEPIDD_DATABASE_DSN=" + aDir}, want: "config: database.dsn:"},
		{name: "email without from", env: []string{"THREEPIDD_EMAIL_SMTP_HOST=127.0.0.1"}, want: "config: email.from: required"},
		{name: "email from invalid", env: []string{"THREEPIDD_EMAIL_SMTP_HOST=127.0.0.1", "THREEPIDD_EMAIL_FROM=threepidd"}, want: "config: email.from:"},
		{name: "email port invalid", env: []string{"THREEPIDD_EMAIL={smtp_host: 127.0.0.1, smtp_port: 70000, from: a@b.c}"}, want: "config: email.smtp_port:"},
		{name: "msisdn webhook not http", env: []string{"THREEPIDD_MSISDN_WEBHOOK_URL=sms.example.org"}, want: "config: msisdn.webhook_url:"},
		{name: "policy webhook not http", env: []string{"THREEPIDD_POLICY_WEBHOOK_URL=policy"}, want: "config: policy.webhook.url:"},
		{name: "policy webhook timeout zero", env: []string{"THREEPIDD_POLICY_WEBHOOK_URL=https://p.example", "THREEPIDD_POLICY_WEBHOOK_TIMEOUT=0s"},
			want: "config: policy.webhook.timeout:"},
		{name: "events webhook not http", env: []string{"THREEPIDD_POLICY_EVENTS_WEBHOOK_URL=events"}, want: "config: policy.events_webhook.url:"},
		{name: "bind allowed names no server", env: []string{"THREEPIDD_POLICY_BIND_IDENTITY_SERVERS_ALLOWED=[vector.im, \"https://vector.im\"]"},
			want: `config: policy.bind_identity_servers_allowed[1]: "https://vector.im" is not a server name`},
		{name: "max threepids negative", env: []string{"THREEPIDD_POLICY_MAX_THREEPIDS_PER_USER=-1"}, want: "config: policy.max_threepids_per_user:"},
		{name: "rate negative", env: []string{"THREEPIDD_RATELIMIT_REQUESTTOKEN_PER_IP_PER_SECOND=-0.5"}, want: "config: ratelimit.requesttoken_per_ip.per_second:"},
		{name: "rate NaN", env: []string{"THREEPIDD_RATELIMIT_ONUPDATE_PER_SERVER_PER_SECOND=.nan"}, want: "config: ratelimit.onupdate_per_server.per_second:"},
		{name: "burst negative", env: []string{"THREEPIDD_RATELIMIT_REQUESTTOKEN_PER_ADDRESS_BURST=-1"}, want: "config: ratelimit.requesttoken_per_address.burst:"},
		{name: "burst zero with a rate", env: []string{"THREEPIDD_RATELIMIT_ONUPDATE_PER_SERVER_BURST=0"}, want: "config: ratelimit.onupdate_per_server.burst:"},
		{name: "retention negative", env: []string{"THREEPIDD_SYNC_RETENTION=-1h"}, want: "config: sync.retention:"},
		{name: "splice budget too small", env: []string{"THREEPIDD_SYNC_SPLICE_BUDGET_BYTES=1000"}, want: "config: sync.splice_budget_bytes: 1000 is less than 1 MiB"},
		{name: "splice budget zero", env: []string{"THREEPIDD_SYNC_SPLICE_BUDGET_BYTES=0"}, want: "config: sync.splice_budget_bytes:"},
		{name: "log format unknown", env: []string{"THREEPIDD_LOG_FORMAT=logfmt"}, want: `config: log.format: "logfmt" is not text or json`},
		{name: "log level unknown", env: []string{"THREEPIDD_LOG_LEVEL=verbose"}, want: `config: log.level: "verbose" is not one of debug, info, warn, error`},
		{name: "unbind rate negative", env: []string{"THREEPIDD_RATELIMIT_UNBIND_PER_USER_PER_SECOND=-1"}, want: "config: ratelimit.unbind_per_user.per_second:"},
		{name: "denylist garbage", env: []string{"THREEPIDD_OUTBOUND_IP_RANGE_DENYLIST=[10.0.0.0/8, intranet]"}, want: `config: outbound.ip_range_denylist[1]: "intranet" is neither`},
		{name: "allowlist garbage", env: []string{"THREEPIDD_OUTBOUND_IP_RANGE_ALLOWLIST=[127.0.0.1/33]"}, want: "config: outbound.ip_range_allowlist[0]:"},
		{name: "CA file missing", env: []string{"THREEPIDD_OUTBOUND_CA_FILES=[" + missingKey + "]"}, want: "config: outbound.ca_files[0]: open " + missingKey},
		{name: "CA file without a certificate", env: []string{"THREEPIDD_OUTBOUND_CA_FILES=[" + keyFile + "]"}, want: "config: outbound.ca_files[0]: " + keyFile + " holds no PEM certificate"},
		{name: "onupdate max_age zero", env: []string{"THREEPIDD_ONUPDATE_MAX_AGE=0s"}, want: "config: onupdate.max_age: must be positive"},
		{name: "onupdate clock_skew negative", env: []string{"THREEPIDD_ONUPDATE_CLOCK_SKEW=-1s"}, want: "config: onupdate.clock_skew: must not be negative"},
		{name: "email token lifetime zero", env: []string{"THREEPIDD_EMAIL_TOKEN_LIFETIME=0s"}, want: "config: email.token_lifetime: must be at least 1s"},
		{name: "msisdn token lifetime negative", env: []string{"THREEPIDD_MSISDN_TOKEN_LIFETIME=-15m"}, want: "config: msisdn.token_lifetime:"},
		{name: "validated session lifetime zero", env: []string{"THREEPIDD_VALIDATED_SESSION_LIFETIME=0s"}, want: "config: validated_session_lifetime:"},
		{name: "email subject empty", env: []string{"THREEPIDD_EMAIL_SUBJECT= "}, want: "config: email.subject: must not be empty"},
		{name: "email template dir missing", env: []string{"THREEPIDD_EMAIL_TEMPLATE_DIR=" + filepath.Join(aDir, "nope")}, want: "config: email.template_dir:"},
		{name: "email template dir is a file", env: []string{"THREEPIDD_EMAIL_TEMPLATE_DIR=" + keyFile}, want: "config: email.template_dir: " + keyFile + " is not a directory"},
		{name: "next_link host with a scheme", env: []string{"THREEPIDD_EMAIL_NEXT_LINK_DOMAINS_ALLOWED=[a.org, https://app.example.org]"},
			want: "config: email.next_link_domains_allowed[1]:"},
		{name: "next_link host with a port", env: []string{"THREEPIDD_EMAIL_NEXT_LINK_DOMAINS_ALLOWED=[app.example.org:443]"},
			want: "config: email.next_link_domains_allowed[0]:"},
		{name: "next_link host in brackets", env: []string{"THREEPIDD_EMAIL_NEXT_LINK_DOMAINS_ALLOWED=[\"[::1]\"]"},
			want: "config: email.next_link_domains_allowed[0]:"},
		{name: "next_link host in upper case", env: []string{"THREEPIDD_EMAIL_NEXT_LINK_DOMAINS_ALLOWED=[App.Example.org]"},
			want: "config: email.next_link_domains_allowed[0]: \"App.Example.org\" must be written in lower case"},
		{name: "next_link host empty", env: []string{"THREEPIDD_EMAIL_NEXT_LINK_DOMAINS_ALLOWED=[\"\"]"},
			want: "config: email.next_link_domains_allowed[0]:"},
		{name: "token attempts zero", env: []string{"THREEPIDD_RATELIMIT_TOKEN_ATTEMPTS_PER_LIFETIME=0"}, want: "config: ratelimit.token_attempts_per_lifetime: must be at least 1"},
		{name: "token attempts per day below the lifetime's", env: []string{"THREEPIDD_RATELIMIT_TOKEN_ATTEMPTS_PER_DAY=4"},
			want: "config: ratelimit.token_attempts_per_day: must be at least ratelimit.token_attempts_per_lifetime (5)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, minimal(t)+tc.extra), tc.env)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", *cfg)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not one line", err)
			}
		})
	}
}

func TestUnknownKeyMessage(t *testing.T) {
	_, err := Load(writeConfig(t, "server_name: example.org\ndatabase:\n  dsnn: x.db\n"), nil)
	if err == nil || err.Error() != `config: unknown key "database.dsnn"` {
		t.Fatalf("Load = %v, want config: unknown key \"database.dsnn\"", err)
	}
}

func TestMergeKeys(t *testing.T) {
	file := minimal(t) + "ratelimit:\n" +
		"  requesttoken_per_ip: &b {per_second: 1, burst: 2}\n" +
		"  onupdate_per_server: {burst: 5, <<: *b}\n" // explicit keys win, wherever the merge is
	cfg, err := Load(writeConfig(t, file), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.RateLimit.OnUpdatePerServer, (Bucket{PerSecond: 1, Burst: 5}); got != want {
		t.Fatalf("merged bucket = %+v, want %+v", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if err == nil || !strings.Contains(err.Error(), "config: read ") {
		t.Fatalf("Load of a missing file: %v", err)
	}
}

func TestUnreadableDatabase(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files regardless of their mode")
	}
	db := filepath.Join(t.TempDir(), "t.db")
	if err := os.WriteFile(db, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	_, err := Load(writeConfig(t, minimal(t)), []string{"THREEPIDD_DATABASE_DSN=" + db})
	if err == nil || !strings.Contains(err.Error(), "config: database.dsn: unreadable database file") {
		t.Fatalf("Load with an unreadable database: %v", err)
	}
}

func TestSQLiteDSNForms(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{
		":memory:",
		"file::memory:?cache=shared",
		"file:" + filepath.Join(dir, "t.db") + "?_busy_timeout=5000",
		filepath.Join(dir, "t.db"),
	} {
		if _, err := Load(writeConfig(t, minimal(t)), []string{"THREEPIDD_DATABASE_DSN=" + dsn}); err != nil {
			t.Errorf("dsn %q: %v", dsn, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("validation left files behind: %v", entries)
	}
}

func TestPostgresDSNForms(t *testing.T) {
	for _, dsn := range []string{
		"postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		"postgresql:///test?host=/run/postgresql",
		"host=127.0.0.1 user=postgres dbname=test sslmode=disable",
	} {
		env := []string{"THREEPIDD_DATABASE_DRIVER=postgres", "THREEPIDD_DATABASE_DSN=" + dsn}
		if _, err := Load(writeConfig(t, minimal(t)), env); err != nil {
			t.Errorf("dsn %q: %v", dsn, err)
		}
	}
}

func TestIdentityServerHelpers(t *testing.T) {
	cfg := Config{IdentityServers: []IdentityServer{
		{ServerName: "id.example.org", SigningName: "vector.im", BaseURL: "https://internal:8090/"},
		{ServerName: "matrix.org"},
		{ServerName: "vector.im"},
	}}
	tests := []struct {
		name             string
		got              func() (IdentityServer, bool)
		wantServer       string
		wantOK           bool
		wantName, wanURL string
	}{
		{"by server_name", func() (IdentityServer, bool) { return cfg.IdentityServer("id.example.org") }, "id.example.org", true, "vector.im", "https://internal:8090"},
		{"default base_url", func() (IdentityServer, bool) { return cfg.IdentityServer("matrix.org") }, "matrix.org", true, "matrix.org", "https://matrix.org"},
		{"signing_name is not a server_name", func() (IdentityServer, bool) { return cfg.IdentityServer("vector.i") }, "", false, "", ""},
		{"origin by signing_name", func() (IdentityServer, bool) { return cfg.IdentityServerByOrigin("vector.im") }, "vector.im", true, "vector.im", "https://vector.im"},
		{"origin by server_name", func() (IdentityServer, bool) { return cfg.IdentityServerByOrigin("id.example.org") }, "id.example.org", true, "vector.im", "https://internal:8090"},
		{"origin unknown", func() (IdentityServer, bool) { return cfg.IdentityServerByOrigin("evil.org") }, "", false, "", ""},
	}
	for _, tc := range tests {
		is, ok := tc.got()
		if ok != tc.wantOK || is.ServerName != tc.wantServer {
			t.Errorf("%s: got %q, %v; want %q, %v", tc.name, is.ServerName, ok, tc.wantServer, tc.wantOK)
			continue
		}
		if ok && (is.Name() != tc.wantName || is.URL() != tc.wanURL) {
			t.Errorf("%s: Name() = %q, URL() = %q; want %q, %q", tc.name, is.Name(), is.URL(), tc.wantName, tc.wanURL)
		}
	}
	// Without the entry for vector.im, its signing name still finds id.example.org.
	cfg.IdentityServers = cfg.IdentityServers[:2]
	if is, ok := cfg.IdentityServerByOrigin("vector.im"); !ok || is.ServerName != "id.example.org" {
		t.Errorf("IdentityServerByOrigin(vector.im) = %q, %v; want id.example.org", is.ServerName, ok)
	}
}

func TestEnabled(t *testing.T) {
	var cfg Config
	if cfg.EmailEnabled() || cfg.MSISDNEnabled() {
		t.Fatal("an empty config enables delivery")
	}
	cfg.Email.SMTPHost = "127.0.0.1"
	cfg.MSISDN.WebhookURL = "http://127.0.0.1:1/sms"
	if !cfg.EmailEnabled() || !cfg.MSISDNEnabled() {
		t.Fatal("configured delivery is not enabled")
	}
}
