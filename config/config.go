// Package config loads threepidd's YAML configuration, applies defaults and
// THREEPIDD_* environment overrides, and validates it with one clear message
// per mistake.
package config

import "time"

// Config is the whole configuration file. The YAML keys are the contract in DESIGN.md.
type Config struct {
	ServerName      string           `yaml:"server_name"`
	Listen          string           `yaml:"listen"`
	MetricsListen   string           `yaml:"metrics_listen"`
	PublicBaseURL   string           `yaml:"public_baseurl"`
	SigningKeyPath  string           `yaml:"signing_key_path"`
	Database        Database         `yaml:"database"`
	Homeserver      Homeserver       `yaml:"homeserver"`
	TrustedProxies  []string         `yaml:"trusted_proxies"`
	IdentityServers []IdentityServer `yaml:"identity_servers"`
	Email           Email            `yaml:"email"`
	MSISDN          MSISDN           `yaml:"msisdn"`
	Policy          Policy           `yaml:"policy"`
	RateLimit       RateLimits       `yaml:"ratelimit"`
	AdminToken      string           `yaml:"admin_token"`
	Sync            Sync             `yaml:"sync"`
	Log             Log              `yaml:"log"`
	Outbound        Outbound         `yaml:"outbound"`
	OnUpdate        OnUpdate         `yaml:"onupdate"`
	// ValidatedSessionLifetime is how long a validated session can still be
	// spent by /3pid/add.
	ValidatedSessionLifetime time.Duration `yaml:"validated_session_lifetime"`
}

// Database selects the storage backend.
type Database struct {
	Driver string `yaml:"driver"` // sqlite | postgres
	DSN    string `yaml:"dsn"`
}

// Homeserver is the upstream homeserver.
type Homeserver struct {
	URL           string        `yaml:"url"`
	Kind          string        `yaml:"kind"` // synapse | dendrite
	UIARelay      *UIARelay     `yaml:"uia_relay"`
	TokenCacheTTL time.Duration `yaml:"token_cache_ttl"`
	AdminToken    string        `yaml:"admin_token"`
	// Mirror is synapse_admin or none; "" (unset) is derived from Kind:
	// synapse_admin for synapse, none for dendrite.
	Mirror string `yaml:"mirror"`
	// ReconcileInterval is how often the background reconcile pass runs
	// (kind synapse with an admin_token); 0 turns it off.
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
}

// UIARelay overrides the homeserver call used to relay user-interactive auth.
type UIARelay struct {
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
}

// IdentityServer is an identity server this homeserver trusts.
type IdentityServer struct {
	ServerName  string            `yaml:"server_name"`
	SigningName string            `yaml:"signing_name"`
	BaseURL     string            `yaml:"base_url"`
	OnUpdate    bool              `yaml:"onupdate"`
	VerifyKeys  map[string]string `yaml:"verify_keys"`
}

// Email configures validation e-mails. An empty SMTPHost means e-mail is not supported.
type Email struct {
	SMTPHost     string `yaml:"smtp_host"`
	SMTPPort     int    `yaml:"smtp_port"`
	SMTPUsername string `yaml:"smtp_username"`
	SMTPPassword string `yaml:"smtp_password"`
	// RequireTLS: nil until derived (true unless SMTPHost is a loopback
	// host); see [Email.TLSRequired].
	RequireTLS *bool  `yaml:"require_tls"`
	From       string `yaml:"from"`
	// TokenLifetime is how long the link of a validation mail works.
	TokenLifetime time.Duration `yaml:"token_lifetime"`
	// Subject is the subject of validation mails, a text/template.
	Subject string `yaml:"subject"`
	// TemplateDir holds files that replace the built-in mail templates.
	TemplateDir string `yaml:"template_dir"`
	// NextLinkDomainsAllowed lists the hosts next_link may name (Synapse's
	// next_link_domain_whitelist): nil allows any, an empty list none.
	NextLinkDomainsAllowed []string `yaml:"next_link_domains_allowed"`
}

// MSISDN configures validation SMS. An empty WebhookURL means msisdn is not supported.
type MSISDN struct {
	WebhookURL string `yaml:"webhook_url"`
	// TokenLifetime is how long the code of a validation SMS works.
	TokenLifetime time.Duration `yaml:"token_lifetime"`
}

// Policy holds the built-in rules and the webhooks.
type Policy struct {
	EmailDomainsAllowed        []string      `yaml:"email_domains_allowed"`
	EmailDomainsDenied         []string      `yaml:"email_domains_denied"`
	MSISDNCountriesAllowed     []string      `yaml:"msisdn_countries_allowed"`
	MSISDNCountriesDenied      []string      `yaml:"msisdn_countries_denied"`
	BindIdentityServersAllowed []string      `yaml:"bind_identity_servers_allowed"`
	MaxThreepidsPerUser        int           `yaml:"max_threepids_per_user"`
	Webhook                    PolicyWebhook `yaml:"webhook"`
	EventsWebhook              EventsWebhook `yaml:"events_webhook"`
	// RequestTokenInhibit3PIDErrors makes requestToken for an address an
	// account holds answer as for a free one, sending nothing (Synapse's
	// request_token_inhibit_3pid_errors).
	RequestTokenInhibit3PIDErrors bool `yaml:"request_token_inhibit_3pid_errors"`
}

// PolicyWebhook is asked before each change and may block it.
type PolicyWebhook struct {
	URL      string        `yaml:"url"`
	Secret   string        `yaml:"secret"`
	Timeout  time.Duration `yaml:"timeout"`
	FailOpen bool          `yaml:"fail_open"`
}

// EventsWebhook is told after each applied change.
type EventsWebhook struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
}

// RateLimits are the token buckets, and the limits on guessing tokens.
type RateLimits struct {
	RequestTokenPerIP      Bucket `yaml:"requesttoken_per_ip"`
	RequestTokenPerAddress Bucket `yaml:"requesttoken_per_address"`
	OnUpdatePerServer      Bucket `yaml:"onupdate_per_server"`
	// UnbindPerUser limits each user's /3pid/unbind and /3pid/delete calls
	// (one bucket for both: each may dial an identity server).
	UnbindPerUser Bucket `yaml:"unbind_per_user"`
	// TokenAttemptsPerLifetime and TokenAttemptsPerDay bound the tokens
	// submitted for one 3PID, across its sessions and their resends, within
	// one token lifetime of its medium and within 24 hours.
	TokenAttemptsPerLifetime int `yaml:"token_attempts_per_lifetime"`
	TokenAttemptsPerDay      int `yaml:"token_attempts_per_day"`
}

// Bucket is a token bucket; PerSecond 0 turns the limit off.
type Bucket struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Sync configures the /sync extension.
type Sync struct {
	Retention time.Duration `yaml:"retention"`
	// SpliceBudgetBytes bounds the upstream /sync bodies held in memory at
	// once, across all requests, to splice the threepids section into them.
	SpliceBudgetBytes int64 `yaml:"splice_budget_bytes"`
}

// Log configures the log output (stderr).
type Log struct {
	Format string `yaml:"format"` // text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
}

// Outbound guards the requests threepidd makes to identity servers that
// clients name (Discovery with the user's own identity server): every
// address a name resolves to is checked before a connection is made.
type Outbound struct {
	// IPRangeDenylist are the CIDRs never dialled (default: Synapse's
	// ip_range_blacklist default); 0.0.0.0 and :: are always refused.
	IPRangeDenylist []string `yaml:"ip_range_denylist"`
	// IPRangeAllowlist are CIDRs dialled even when the denylist covers them.
	IPRangeAllowlist []string `yaml:"ip_range_allowlist"`
	// CAFiles are PEM files of root certificates trusted, besides the
	// system's, for HTTPS to those identity servers.
	CAFiles []string `yaml:"ca_files"`
}

// OnUpdate bounds the optional signed ts of onupdate requests.
type OnUpdate struct {
	// MaxAge is how old a ts may be before the update is refused.
	MaxAge time.Duration `yaml:"max_age"`
	// ClockSkew is how far in the future a ts may be.
	ClockSkew time.Duration `yaml:"clock_skew"`
}
