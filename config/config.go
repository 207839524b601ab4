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
	RequireTLS   bool   `yaml:"require_tls"`
	From         string `yaml:"from"`
}

// MSISDN configures validation SMS. An empty WebhookURL means msisdn is not supported.
type MSISDN struct {
	WebhookURL string `yaml:"webhook_url"`
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

// RateLimits are the token buckets.
type RateLimits struct {
	RequestTokenPerIP      Bucket `yaml:"requesttoken_per_ip"`
	RequestTokenPerAddress Bucket `yaml:"requesttoken_per_address"`
	OnUpdatePerServer      Bucket `yaml:"onupdate_per_server"`
}

// Bucket is a token bucket; PerSecond 0 turns the limit off.
type Bucket struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Sync configures the /sync extension.
type Sync struct {
	Retention time.Duration `yaml:"retention"`
}
