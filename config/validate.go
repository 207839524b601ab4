package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/threepidd/threepidd/threepid"
)

// The values of the enumerated keys.
const (
	// DriverSQLite selects the SQLite backend (database.driver).
	DriverSQLite = "sqlite"
	// DriverPostgres selects the PostgreSQL backend (database.driver).
	DriverPostgres = "postgres"
	// KindSynapse is a Synapse homeserver (homeserver.kind).
	KindSynapse = "synapse"
	// KindDendrite is a Dendrite homeserver (homeserver.kind).
	KindDendrite = "dendrite"
	// MirrorNone keeps 3PID changes in threepidd only (homeserver.mirror).
	MirrorNone = "none"
	// MirrorSynapseAdmin writes 3PID changes back through Synapse's admin API (homeserver.mirror).
	MirrorSynapseAdmin = "synapse_admin"
	// LogText and LogJSON are the log formats (log.format): slog's key=value
	// lines, or one JSON object per line.
	LogText = "text"
	LogJSON = "json"
	// LogInfo is the default log level (log.level).
	LogInfo = "info"
)

// logLevels are the values of log.level.
var logLevels = []string{"debug", LogInfo, "warn", "error"}

var (
	// keyIDPattern is the spec's key id grammar for ed25519 keys.
	keyIDPattern = regexp.MustCompile(`^ed25519:[a-zA-Z0-9_]+$`)
	// pgKeyValuePattern recognises a libpq key=value connection string.
	pgKeyValuePattern = regexp.MustCompile(`^\s*[a-z_]+\s*=`)
)

// problem is a validation error: one line naming the key.
func problem(key, format string, args ...any) error {
	return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...))
}

// Validate checks the configuration and returns the first mistake found, as
// one line naming the key. It reads the file system: the signing key must be
// readable, and for SQLite the database file and its directory usable.
func (c *Config) Validate() error {
	for _, check := range []func() error{
		c.validateServer,
		c.validateDatabase,
		c.validateHomeserver,
		c.validateIdentityServers,
		c.validateDelivery,
		c.validatePolicy,
		c.validateRateLimits,
		c.validateLog,
		c.validateOutbound,
		c.validateOnUpdate,
		c.validateSessions,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateServer() error {
	switch {
	case c.ServerName == "":
		return problem("server_name", "required")
	case !threepid.ValidServerName(c.ServerName):
		return problem("server_name", "%q is not a valid server name (host or host:port)", c.ServerName)
	}
	if err := checkHostPort(c.Listen); err != nil {
		return problem("listen", "%v", err)
	}
	if c.MetricsListen != "" {
		if err := checkHostPort(c.MetricsListen); err != nil {
			return problem("metrics_listen", "%v", err)
		}
	}
	if c.PublicBaseURL != "" {
		if err := checkHTTPURL(c.PublicBaseURL); err != nil {
			return problem("public_baseurl", "%v", err)
		}
	}
	if err := checkCIDRs("trusted_proxies", c.TrustedProxies); err != nil {
		return err
	}
	if c.Sync.Retention < 0 {
		return problem("sync.retention", "must not be negative")
	}
	if c.Sync.SpliceBudgetBytes < 1<<20 {
		return problem("sync.splice_budget_bytes", "%d is less than 1 MiB (1048576)", c.Sync.SpliceBudgetBytes)
	}
	return nil
}

// checkCIDRs checks that each entry of the list at key is a CIDR or a bare
// IP address.
func checkCIDRs(key string, list []string) error {
	for i, p := range list {
		if _, err := netip.ParsePrefix(p); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(p); err != nil {
			return problem(fmt.Sprintf("%s[%d]", key, i), "%q is neither a CIDR nor an IP address", p)
		}
	}
	return nil
}

func checkHostPort(s string) error {
	if s == "" {
		return errors.New("required")
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", s)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q is not an http or https URL", s)
	case u.Hostname() == "":
		return fmt.Errorf("%q has no host", s)
	}
	return nil
}

func (c *Config) validateDatabase() error {
	switch c.Database.Driver {
	case DriverPostgres:
		return checkPostgresDSN(c.Database.DSN)
	case DriverSQLite:
		return checkSQLiteDSN(c.Database.DSN)
	default:
		return problem("database.driver", "%q is not sqlite or postgres", c.Database.Driver)
	}
}

func checkPostgresDSN(dsn string) error {
	if dsn == "" {
		return problem("database.dsn", "required for postgres")
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if _, err := url.Parse(dsn); err != nil {
			return problem("database.dsn", "not a valid postgres:// URL")
		}
		return nil
	}
	if !pgKeyValuePattern.MatchString(dsn) {
		return problem("database.dsn", "must be a postgres:// URL or a key=value connection string")
	}
	return nil
}

// checkSQLiteDSN checks that SQLite can open the file read-write and create
// it and its journal files beside it. In-memory databases pass.
func checkSQLiteDSN(dsn string) error {
	if dsn == "" {
		return problem("database.dsn", "required")
	}
	path := strings.TrimPrefix(dsn, "file:")
	path, query, _ := strings.Cut(path, "?")
	if path == ":memory:" || strings.Contains(query, "mode=memory") {
		return nil
	}
	dir := filepath.Dir(path)
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return problem("database.dsn", "directory %s does not exist", dir)
	case err != nil:
		return problem("database.dsn", "directory %s: %v", dir, err)
	case !info.IsDir():
		return problem("database.dsn", "%s is not a directory", dir)
	}
	probe, err := os.CreateTemp(dir, ".threepidd-write-check-*")
	if err != nil {
		return problem("database.dsn", "directory %s is not writable: %v", dir, err)
	}
	_ = probe.Close()
	_ = os.Remove(probe.Name())
	info, err = os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // SQLite creates it
	case err != nil:
		return problem("database.dsn", "unreadable database file: %v", err)
	case info.IsDir():
		return problem("database.dsn", "%s is a directory, not a database file", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return problem("database.dsn", "unreadable database file: %v", err)
	}
	_ = f.Close()
	return nil
}

func (c *Config) validateHomeserver() error {
	hs := c.Homeserver
	if hs.URL == "" {
		return problem("homeserver.url", "required")
	}
	if err := checkHTTPURL(hs.URL); err != nil {
		return problem("homeserver.url", "%v", err)
	}
	if hs.Kind != KindSynapse && hs.Kind != KindDendrite {
		return problem("homeserver.kind", "%q is not synapse or dendrite", hs.Kind)
	}
	switch hs.Mirror {
	case MirrorNone:
	case MirrorSynapseAdmin:
		switch {
		case hs.Kind != KindSynapse:
			return problem("homeserver.mirror", "synapse_admin needs homeserver.kind synapse, not %q", hs.Kind)
		case hs.AdminToken == "":
			return problem("homeserver.admin_token", "required with homeserver.kind synapse, for the mirror "+
				"(homeserver.mirror defaults to synapse_admin); set homeserver.mirror: none to run without it")
		}
	default:
		return problem("homeserver.mirror", "%q is not none or synapse_admin", hs.Mirror)
	}
	if r := hs.UIARelay; r != nil {
		switch {
		case r.Method == "":
			return problem("homeserver.uia_relay.method", "required when uia_relay is set")
		case r.Path == "":
			return problem("homeserver.uia_relay.path", "required when uia_relay is set")
		case !strings.HasPrefix(r.Path, "/"):
			return problem("homeserver.uia_relay.path", "%q does not start with /", r.Path)
		}
	}
	if hs.TokenCacheTTL < 0 {
		return problem("homeserver.token_cache_ttl", "must not be negative")
	}
	if hs.ReconcileInterval < 0 {
		return problem("homeserver.reconcile_interval", "must not be negative (0 turns the reconcile pass off)")
	}
	return nil
}

func (c *Config) validateIdentityServers() error {
	seen := map[string]int{}
	for i, is := range c.IdentityServers {
		key := fmt.Sprintf("identity_servers[%d]", i)
		switch {
		case is.ServerName == "":
			return problem(key+".server_name", "required")
		case !threepid.ValidServerName(is.ServerName):
			return problem(key+".server_name", "%q is not a valid server name", is.ServerName)
		}
		if j, dup := seen[is.ServerName]; dup {
			return problem(key+".server_name", "%q is already identity_servers[%d]", is.ServerName, j)
		}
		seen[is.ServerName] = i
		if is.SigningName != "" && !threepid.ValidServerName(is.SigningName) {
			return problem(key+".signing_name", "%q is not a valid server name", is.SigningName)
		}
		if err := checkHTTPURL(is.URL()); err != nil {
			return problem(key+".base_url", "%v", err)
		}
		for _, id := range slices.Sorted(maps.Keys(is.VerifyKeys)) {
			if err := checkVerifyKey(id, is.VerifyKeys[id]); err != nil {
				return problem(fmt.Sprintf("%s.verify_keys[%q]", key, id), "%v", err)
			}
		}
	}
	switch {
	case c.SigningKeyPath != "":
		return checkKeyFile(c.SigningKeyPath)
	case len(c.IdentityServers) > 0:
		return problem("signing_key_path", "required when identity_servers is set")
	}
	return nil
}

// checkVerifyKey checks a pinned key: id "ed25519:<id>", value the base64
// (unpadded as the spec writes it, or padded) of a 32-byte public key.
func checkVerifyKey(id, value string) error {
	if !keyIDPattern.MatchString(id) {
		return errors.New(`key id must be "ed25519:" followed by letters, digits or _`)
	}
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(value, "="))
	if err != nil {
		return errors.New("not base64")
	}
	if len(key) != 32 {
		return fmt.Errorf("an ed25519 public key is 32 bytes, not %d", len(key))
	}
	return nil
}

func checkKeyFile(path string) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return problem("signing_key_path", "missing key file: %v", err)
	case err != nil:
		return problem("signing_key_path", "unreadable key file: %v", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return problem("signing_key_path", "unreadable key file: %v", err)
	}
	if info.IsDir() {
		return problem("signing_key_path", "%s is a directory, not a key file", path)
	}
	return nil
}

func (c *Config) validateDelivery() error {
	if e := c.Email; e.SMTPHost != "" {
		if e.SMTPPort < 1 || e.SMTPPort > 65535 {
			return problem("email.smtp_port", "%d is not a port from 1 to 65535", e.SMTPPort)
		}
		if e.From == "" {
			return problem("email.from", "required when email.smtp_host is set")
		}
		if _, err := mail.ParseAddress(e.From); err != nil {
			return problem("email.from", "%q is not an e-mail address: %v", e.From, err)
		}
	}
	if u := c.MSISDN.WebhookURL; u != "" {
		if err := checkHTTPURL(u); err != nil {
			return problem("msisdn.webhook_url", "%v", err)
		}
	}
	if strings.TrimSpace(c.Email.Subject) == "" {
		return problem("email.subject", "must not be empty")
	}
	if dir := c.Email.TemplateDir; dir != "" {
		info, err := os.Stat(dir)
		switch {
		case err != nil:
			return problem("email.template_dir", "%v", err)
		case !info.IsDir():
			return problem("email.template_dir", "%s is not a directory", dir)
		}
	}
	return nil
}

func (c *Config) validatePolicy() error {
	p := c.Policy
	if p.Webhook.URL != "" {
		if err := checkHTTPURL(p.Webhook.URL); err != nil {
			return problem("policy.webhook.url", "%v", err)
		}
		if p.Webhook.Timeout <= 0 {
			return problem("policy.webhook.timeout", "must be positive")
		}
	}
	if p.EventsWebhook.URL != "" {
		if err := checkHTTPURL(p.EventsWebhook.URL); err != nil {
			return problem("policy.events_webhook.url", "%v", err)
		}
	}
	if p.MaxThreepidsPerUser < 0 {
		return problem("policy.max_threepids_per_user", "must not be negative")
	}
	for i, name := range p.BindIdentityServersAllowed {
		if !threepid.ValidServerName(name) {
			return problem(fmt.Sprintf("policy.bind_identity_servers_allowed[%d]", i), "%q is not a server name (host or host:port)", name)
		}
	}
	return nil
}

// validateSessions checks the lifetimes of validation sessions and the
// hosts next_link may name.
func (c *Config) validateSessions() error {
	for _, d := range []struct {
		key   string
		value time.Duration
	}{
		{"email.token_lifetime", c.Email.TokenLifetime},
		{"msisdn.token_lifetime", c.MSISDN.TokenLifetime},
		{"validated_session_lifetime", c.ValidatedSessionLifetime},
	} {
		if d.value < time.Second {
			return problem(d.key, "must be at least 1s, not %v", d.value)
		}
	}
	for i, host := range c.Email.NextLinkDomainsAllowed {
		if err := checkNextLinkHost(host); err != nil {
			return problem(fmt.Sprintf("email.next_link_domains_allowed[%d]", i), "%v", err)
		}
	}
	return nil
}

// checkNextLinkHost checks an entry of next_link_domains_allowed: a host as
// a URL's host name reads, lower case, without port or brackets.
func checkNextLinkHost(host string) error {
	if _, err := netip.ParseAddr(host); err == nil && !strings.Contains(host, "%") {
		if strings.ToLower(host) != host {
			return fmt.Errorf("%q must be written in lower case", host)
		}
		return nil
	}
	if !threepid.ValidServerName(host) || strings.ContainsAny(host, ":[]") {
		return fmt.Errorf("%q is not a host name (no scheme, port or path)", host)
	}
	if strings.ToLower(host) != host {
		return fmt.Errorf("%q must be written in lower case: next_link hosts are compared lower-cased", host)
	}
	return nil
}

func (c *Config) validateRateLimits() error {
	for _, b := range []struct {
		key    string
		bucket Bucket
	}{
		{"ratelimit.requesttoken_per_ip", c.RateLimit.RequestTokenPerIP},
		{"ratelimit.requesttoken_per_address", c.RateLimit.RequestTokenPerAddress},
		{"ratelimit.onupdate_per_server", c.RateLimit.OnUpdatePerServer},
		{"ratelimit.unbind_per_user", c.RateLimit.UnbindPerUser},
	} {
		switch {
		case !(b.bucket.PerSecond >= 0) || math.IsInf(b.bucket.PerSecond, 1):
			return problem(b.key+".per_second", "must be a finite number, 0 or more")
		case b.bucket.Burst < 0:
			return problem(b.key+".burst", "must not be negative")
		case b.bucket.PerSecond > 0 && b.bucket.Burst == 0:
			return problem(b.key+".burst", "must be at least 1 when per_second is set")
		}
	}
	if c.RateLimit.TokenAttemptsPerLifetime < 1 {
		return problem("ratelimit.token_attempts_per_lifetime", "must be at least 1")
	}
	if c.RateLimit.TokenAttemptsPerDay < c.RateLimit.TokenAttemptsPerLifetime {
		return problem("ratelimit.token_attempts_per_day", "must be at least ratelimit.token_attempts_per_lifetime (%d)", c.RateLimit.TokenAttemptsPerLifetime)
	}
	return nil
}

func (c *Config) validateLog() error {
	if f := c.Log.Format; f != LogText && f != LogJSON {
		return problem("log.format", "%q is not text or json", f)
	}
	if !slices.Contains(logLevels, c.Log.Level) {
		return problem("log.level", "%q is not one of %s", c.Log.Level, strings.Join(logLevels, ", "))
	}
	return nil
}

func (c *Config) validateOutbound() error {
	if err := checkCIDRs("outbound.ip_range_denylist", c.Outbound.IPRangeDenylist); err != nil {
		return err
	}
	if err := checkCIDRs("outbound.ip_range_allowlist", c.Outbound.IPRangeAllowlist); err != nil {
		return err
	}
	for i, path := range c.Outbound.CAFiles {
		if _, err := loadCertificates(path); err != nil {
			return problem(fmt.Sprintf("outbound.ca_files[%d]", i), "%v", err)
		}
	}
	return nil
}

func (c *Config) validateOnUpdate() error {
	if c.OnUpdate.MaxAge <= 0 {
		return problem("onupdate.max_age", "must be positive")
	}
	if c.OnUpdate.ClockSkew < 0 {
		return problem("onupdate.clock_skew", "must not be negative")
	}
	return nil
}
