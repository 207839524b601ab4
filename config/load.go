package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Environment variables: EnvPrefix + the upper-cased YAML path joined by "_".
const (
	// EnvPrefix starts every environment override.
	EnvPrefix = "THREEPIDD_"
	// EnvTestPrefix starts names reserved for tests; Load ignores them.
	EnvTestPrefix = "THREEPIDD_TEST_"
)

// Defaults returned by [Defaults] and applied by [Load].
const (
	// DefaultListen is the default listen address.
	DefaultListen = "127.0.0.1:8090"
	// DefaultSQLiteDSN is the database file used when the driver is sqlite and no dsn is set.
	DefaultSQLiteDSN = "threepidd.db"
	// DefaultSMTPPort is the SMTP port used when smtp_host is set without smtp_port.
	DefaultSMTPPort = 25
	// DefaultTokenCacheTTL is how long a whoami answer is cached.
	DefaultTokenCacheTTL = 10 * time.Second
	// DefaultPolicyTimeout bounds a policy webhook call.
	DefaultPolicyTimeout = 2 * time.Second
	// DefaultSyncRetention is how far back a first /sync shows notifications.
	DefaultSyncRetention = 168 * time.Hour
	// DefaultSpliceBudget bounds the /sync bodies held at once for splicing:
	// a dozen 20 MB initial syncs, or thousands of ordinary incremental ones.
	DefaultSpliceBudget = 256 << 20
	// DefaultOnUpdateMaxAge is how old an onupdate's ts may be.
	DefaultOnUpdateMaxAge = 10 * time.Minute
	// DefaultOnUpdateClockSkew is how far in the future an onupdate's ts may be.
	DefaultOnUpdateClockSkew = time.Minute
	// DefaultTokenAttemptsPerLifetime is how many tokens one 3PID may have
	// submitted within one token lifetime of its medium, across its sessions
	// and their resends (ratelimit.token_attempts_per_lifetime).
	DefaultTokenAttemptsPerLifetime = 5
	// DefaultTokenAttemptsPerDay is how many tokens one 3PID may have
	// submitted within 24 hours (ratelimit.token_attempts_per_day).
	DefaultTokenAttemptsPerDay = 10
	// DefaultEmailTokenLifetime is how long the link of a validation mail works.
	DefaultEmailTokenLifetime = time.Hour
	// DefaultMSISDNTokenLifetime is how long the code of a validation SMS works.
	DefaultMSISDNTokenLifetime = 15 * time.Minute
	// DefaultValidatedSessionLifetime is how long a validated session can be spent by /3pid/add.
	DefaultValidatedSessionLifetime = 24 * time.Hour
	// DefaultEmailSubject is the subject of validation mails (a text/template).
	DefaultEmailSubject = "[{{.ServerName}}] Confirm your e-mail address"
	// DefaultReconcileInterval is how often the background reconcile pass runs.
	DefaultReconcileInterval = time.Hour
)

// DefaultIPRangeDenylist is Synapse's default ip_range_blacklist: loopback,
// private, carrier-grade NAT, link-local, documentation, benchmarking,
// multicast and other non-public ranges (synapse/config/server.py,
// DEFAULT_IP_RANGE_BLOCKLIST, v1.157).
var DefaultIPRangeDenylist = []string{
	"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
	"192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
	"::1/128", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10",
}

// Defaults returns the configuration a file that sets nothing gets. Load
// decodes the file on top of it, so a key present in the file (even with a
// zero value, such as a rate of 0 that turns a limit off) wins over its default.
func Defaults() Config {
	return Config{
		Listen:   DefaultListen,
		Database: Database{Driver: DriverSQLite},
		Homeserver: Homeserver{
			Kind:              KindSynapse,
			TokenCacheTTL:     DefaultTokenCacheTTL,
			ReconcileInterval: DefaultReconcileInterval,
		},
		TrustedProxies: []string{"127.0.0.1/32", "::1/128"},
		Policy:         Policy{Webhook: PolicyWebhook{Timeout: DefaultPolicyTimeout}},
		RateLimit: RateLimits{
			RequestTokenPerIP:        Bucket{PerSecond: 0.1, Burst: 10},
			RequestTokenPerAddress:   Bucket{PerSecond: 0.003, Burst: 5},
			OnUpdatePerServer:        Bucket{PerSecond: 50, Burst: 200},
			UnbindPerUser:            Bucket{PerSecond: 0.05, Burst: 10},
			TokenAttemptsPerLifetime: DefaultTokenAttemptsPerLifetime,
			TokenAttemptsPerDay:      DefaultTokenAttemptsPerDay,
		},
		Sync:                     Sync{Retention: DefaultSyncRetention, SpliceBudgetBytes: DefaultSpliceBudget},
		Log:                      Log{Format: LogText, Level: LogInfo},
		Outbound:                 Outbound{IPRangeDenylist: slices.Clone(DefaultIPRangeDenylist)},
		OnUpdate:                 OnUpdate{MaxAge: DefaultOnUpdateMaxAge, ClockSkew: DefaultOnUpdateClockSkew},
		Email:                    Email{TokenLifetime: DefaultEmailTokenLifetime, Subject: DefaultEmailSubject},
		MSISDN:                   MSISDN{TokenLifetime: DefaultMSISDNTokenLifetime},
		ValidatedSessionLifetime: DefaultValidatedSessionLifetime,
	}
}

// Load reads the YAML file at path (none when path is ""), rejecting unknown
// keys, on top of [Defaults]; then applies the THREEPIDD_* variables of
// environ (as from os.Environ) and the defaults that depend on other keys, and
// validates the result. Every error is one line naming the key or variable.
//
// An environment value is parsed as YAML into its field (lists, maps,
// durations, booleans, whole sections), except that string fields take the
// value verbatim, so secrets starting with "#" or "*" survive. An empty value
// resets the field to its zero value.
func Load(path string, environ []string) (*Config, error) {
	cfg := Defaults()
	if path != "" {
		if err := cfg.decodeFile(path); err != nil {
			return nil, err
		}
	}
	if err := cfg.applyEnv(environ); err != nil {
		return nil, err
	}
	cfg.applyDerivedDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) decodeFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: read %s: %w", path, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	if len(doc.Content) == 0 { // an empty file
		return nil
	}
	if err := decodeNode(doc.Content[0], reflect.ValueOf(c).Elem(), ""); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// applyDerivedDefaults fills the defaults that depend on other keys, after
// the file and the environment have had their say.
func (c *Config) applyDerivedDefaults() {
	if c.Database.Driver == DriverSQLite && c.Database.DSN == "" {
		c.Database.DSN = DefaultSQLiteDSN
	}
	if c.Email.SMTPHost != "" && c.Email.SMTPPort == 0 {
		c.Email.SMTPPort = DefaultSMTPPort
	}
	if c.Email.SMTPHost != "" && c.Email.RequireTLS == nil {
		required := !loopbackHost(c.Email.SMTPHost)
		c.Email.RequireTLS = &required
	}
	if c.Homeserver.Mirror == "" {
		c.Homeserver.Mirror = c.Homeserver.defaultMirror()
	}
}

// defaultMirror is homeserver.mirror when the file leaves it unset: Synapse's
// password reset, 3PID login and e-mail pushers read its own 3PID table, so
// the mirror keeps that table in step; Dendrite reads its table only in its
// own 3PID endpoints, which threepidd serves, so it needs none (README,
// "Homeserver kinds").
func (hs Homeserver) defaultMirror() string {
	if hs.Kind == KindSynapse {
		return MirrorSynapseAdmin
	}
	return MirrorNone
}

// decodeNode decodes n into v strictly: a key that names no field of a
// struct is an error naming its whole path. Structs are decoded key by key
// onto their current value, so absent keys keep their defaults; everything
// else is decoded by go.yaml.in/yaml/v3 and replaces the current value.
func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	null := n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
	switch {
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct:
		if null {
			v.SetZero()
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return decodeNode(n, v.Elem(), path)
	case v.Kind() == reflect.Struct:
		if null {
			return nil
		}
		return decodeStruct(n, v, path)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if null {
			v.SetZero()
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: line %d: expected a list", displayPath(path), n.Line)
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decodeNode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	default:
		v.SetZero() // a map must not merge into its previous value
		if err := n.Decode(v.Addr().Interface()); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) {
				return fmt.Errorf("%s: %s", displayPath(path), strings.Join(te.Errors, "; "))
			}
			return fmt.Errorf("%s: %w", displayPath(path), err)
		}
		return nil
	}
}

// decodeStruct decodes a mapping into the struct v. Merge keys ("<<: *x") are
// applied first, so the mapping's own keys override them as YAML requires.
func decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: line %d: expected a mapping", displayPath(path), n.Line)
	}
	seen := map[string]bool{}
	for _, merging := range []bool{true, false} {
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			if isMerge := key.ShortTag() == "!!merge"; isMerge != merging {
				continue
			}
			if merging {
				if err := decodeMerge(val, v, path); err != nil {
					return err
				}
				continue
			}
			keyPath := joinPath(path, key.Value)
			if seen[key.Value] {
				return fmt.Errorf("duplicate key %q (line %d)", keyPath, key.Line)
			}
			seen[key.Value] = true
			idx, ok := fieldIndex(v.Type(), key.Value)
			if !ok {
				return fmt.Errorf("unknown key %q", keyPath)
			}
			if err := decodeNode(val, v.Field(idx), keyPath); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeMerge applies the value of a merge key: a mapping or a list of them.
func decodeMerge(val *yaml.Node, v reflect.Value, path string) error {
	if val.Kind == yaml.AliasNode {
		val = val.Alias
	}
	if val.Kind != yaml.SequenceNode {
		return decodeStruct(val, v, path)
	}
	for _, m := range val.Content {
		if m.Kind == yaml.AliasNode {
			m = m.Alias
		}
		if err := decodeStruct(m, v, path); err != nil {
			return err
		}
	}
	return nil
}

// fieldIndex finds the field of struct type t whose yaml tag is name.
func fieldIndex(t reflect.Type, name string) (int, bool) {
	for i := range t.NumField() {
		if yamlName(t.Field(i)) == name {
			return i, true
		}
	}
	return 0, false
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func displayPath(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

// envField is a key that an environment variable can set.
type envField struct {
	path  string // YAML path, e.g. "ratelimit.requesttoken_per_ip.burst"
	index []int  // field indexes from Config down to the key
}

// envFields maps every variable name to its key, derived from the yaml tags
// of Config: every key, sections included, down to the leaves.
var envFields = sync.OnceValue(func() map[string]envField {
	fields := map[string]envField{}
	var walk func(t reflect.Type, path string, index []int)
	walk = func(t reflect.Type, path string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			p := joinPath(path, name)
			idx := append(append([]int(nil), index...), i)
			env := envName(p)
			if prev, dup := fields[env]; dup {
				panic(fmt.Sprintf("config: keys %s and %s share the variable %s", prev.path, p, env))
			}
			fields[env] = envField{path: p, index: idx}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, p, idx)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return fields
})

// envName is the variable that overrides the key at path.
func envName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// applyEnv applies the THREEPIDD_* variables of environ. Sections are applied
// before their keys, so THREEPIDD_DATABASE_DSN refines THREEPIDD_DATABASE.
func (c *Config) applyEnv(environ []string) error {
	type setting struct {
		name, value string
		field       envField
	}
	var settings []setting
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || strings.HasPrefix(name, EnvTestPrefix) {
			continue
		}
		f, ok := envFields()[name]
		if !ok {
			return fmt.Errorf("config: unknown environment variable %s", name)
		}
		settings = append(settings, setting{name, value, f})
	}
	sort.SliceStable(settings, func(i, j int) bool {
		return len(settings[i].field.index) < len(settings[j].field.index)
	})
	for _, s := range settings {
		if err := c.setFromEnv(s.field, s.value); err != nil {
			return fmt.Errorf("config: %s: %w", s.name, err)
		}
	}
	return nil
}

func (c *Config) setFromEnv(f envField, value string) error {
	v := reflect.ValueOf(c).Elem()
	for _, i := range f.index {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(i)
	}
	switch {
	case value == "":
		v.SetZero()
		return nil
	case v.Kind() == reflect.String:
		v.SetString(value)
		return nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(value), &doc); err != nil {
		return err
	}
	if len(doc.Content) == 0 { // only a comment
		v.SetZero()
		return nil
	}
	return decodeNode(doc.Content[0], v, f.path)
}
