//go:build realpeer

package realpeer

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/tests/support"
	"go.yaml.in/yaml/v3"
)

// DendriteServerName is the server_name of every Dendrite started here.
const DendriteServerName = "localhost"

// Dendrite is a running Dendrite homeserver.
type Dendrite struct {
	// URL is its client API base, http://127.0.0.1:<port>.
	URL string
	// Addr is host:port of URL, for an nginx upstream.
	Addr string
	// ServerName ends the user IDs it issues.
	ServerName string
	// Dir holds its config, SQLite databases, signing key and logs.
	Dir string
	// KeyPath is its signing key (a MATRIX PRIVATE KEY PEM), which threepidd
	// reuses as its signing_key_path, as operators do.
	KeyPath string
	// UserDB is the connection string of its user API database
	// (user_api.account_database, a file: SQLite URI in Dir), the one
	// threepidd import -dendrite-db reads.
	UserDB string

	sharedSecret string
}

// User is an account on the homeserver with one logged-in device.
type User struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
	// Localpart and Password are what the account was registered with.
	Localpart string `json:"-"`
	Password  string `json:"-"`
}

// StartDendrite starts a Dendrite in a temporary directory (SQLite,
// federation off, rate limiting off, shared-secret registration on,
// listening on a free 127.0.0.1 port, logging to Dir/log/dendrite.log),
// waits until it answers, and stops it when the test ends.
func StartDendrite(ctx context.Context, t testing.TB, env Env) *Dendrite {
	t.Helper()
	d, err := startDendrite(ctx, t, env)
	if err != nil {
		t.Fatalf("start Dendrite: %v", err)
	}
	return d
}

func startDendrite(ctx context.Context, t testing.TB, env Env) (*Dendrite, error) {
	dir := t.TempDir()
	secret, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, "matrix_key.pem")
	if out, err := exec.CommandContext(ctx, filepath.Join(env.DendriteBinDir, "generate-keys"), "--private-key", keyPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("generate-keys: %w: %s", err, out)
	}
	generated, err := exec.CommandContext(ctx, filepath.Join(env.DendriteBinDir, "generate-config"), "-dir", dir, "-server", DendriteServerName).Output()
	if err != nil {
		return nil, fmt.Errorf("generate-config: %w", err)
	}
	cfg, userDB, err := dendriteConfig(generated, dir, keyPath, secret)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "dendrite.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("write Dendrite config: %w", err)
	}
	port, err := support.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(filepath.Join(env.DendriteBinDir, "dendrite"), "-config", cfgPath, "-http-bind-address", addr)
	cmd.Dir = dir
	d := &Dendrite{URL: "http://" + addr, Addr: addr, ServerName: DendriteServerName, Dir: dir, KeyPath: keyPath, UserDB: userDB, sharedSecret: secret}
	if err := startPeer(ctx, t, "dendrite", cmd, filepath.Join(dir, "stdout.log"), d.URL+"/_matrix/client/versions", filepath.Join(dir, "log", "dendrite.log")); err != nil {
		return nil, err
	}
	return d, nil
}

// dendriteConfig takes generate-config's output (every default filled in),
// sets what a test homeserver needs, and returns it with the connection string
// of the user API database.
func dendriteConfig(generated []byte, dir, keyPath, secret string) ([]byte, string, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(generated, &doc); err != nil {
		return nil, "", fmt.Errorf("parse generate-config output: %w", err)
	}
	const userDBKey = "user_api.account_database.connection_string"
	parent, last, err := parentOf(doc, userDBKey)
	if err != nil {
		return nil, "", fmt.Errorf("Dendrite config: %w", err)
	}
	userDB, ok := parent[last].(string)
	if !ok || !strings.HasPrefix(userDB, "file:") {
		return nil, "", fmt.Errorf("Dendrite config: %s is %v, want a SQLite file: URI", userDBKey, parent[last])
	}
	overrides := []struct {
		path  string
		value any
	}{
		{"global.private_key", keyPath},
		{"global.disable_federation", true},
		{"global.trusted_third_party_id_servers", []string{}},
		{"global.server_notices.enabled", false},
		{"global.jetstream.in_memory", true},
		{"federation_api.key_perspectives", []any{}},
		{"client_api.registration_shared_secret", secret},
		{"client_api.rate_limiting.enabled", false},
		// The lowest bcrypt cost keeps registration and login fast.
		{"user_api.bcrypt_cost", 4},
		{"logging", []map[string]any{{"type": "file", "level": "info", "params": map[string]any{"path": filepath.Join(dir, "log")}}}},
	}
	for _, o := range overrides {
		if err := setPath(doc, o.path, o.value); err != nil {
			return nil, "", fmt.Errorf("Dendrite config: %w", err)
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, "", fmt.Errorf("encode Dendrite config: %w", err)
	}
	return out, userDB, nil
}

// setPath sets a dotted key in a YAML document whose parent mappings exist,
// so a key that generate-config stopped writing fails loudly.
func setPath(doc map[string]any, path string, value any) error {
	m, last, err := parentOf(doc, path)
	if err != nil {
		return fmt.Errorf("set %w", err)
	}
	m[last] = value
	return nil
}

// parentOf returns the mapping that holds a dotted key of a YAML document and
// the key's last part, which must be present.
func parentOf(doc map[string]any, path string) (map[string]any, string, error) {
	keys := strings.Split(path, ".")
	m := doc
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil, "", fmt.Errorf("%s: no mapping %q", path, k)
		}
		m = next
	}
	last := keys[len(keys)-1]
	if _, ok := m[last]; !ok {
		return nil, "", fmt.Errorf("%s: no key %q", path, last)
	}
	return m, last, nil
}

// Register creates a (non-admin) account through the shared-secret
// registration API, /_synapse/admin/v1/register, and returns it with the
// device that registration logs in.
func (d *Dendrite) Register(ctx context.Context, localpart, password string) (User, error) {
	const path = "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := DoJSON(ctx, d.URL, http.MethodGet, path, "", nil, &nonce); err != nil {
		return User{}, fmt.Errorf("register %s: %w", localpart, err)
	}
	mac := hmac.New(sha1.New, []byte(d.sharedSecret))
	mac.Write([]byte(strings.Join([]string{nonce.Nonce, localpart, password, "notadmin"}, "\x00")))
	body := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    false,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}
	var u User
	if err := DoJSON(ctx, d.URL, http.MethodPost, path, "", body, &u); err != nil {
		return User{}, fmt.Errorf("register %s: %w", localpart, err)
	}
	u.Localpart, u.Password = localpart, password
	return u, nil
}

// Login logs an account in with its password, which creates a new device.
func (d *Dendrite) Login(ctx context.Context, localpart, password string) (User, error) {
	body := map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password":   password,
	}
	var u User
	if err := DoJSON(ctx, d.URL, http.MethodPost, "/_matrix/client/v3/login", "", body, &u); err != nil {
		return User{}, fmt.Errorf("log %s in: %w", localpart, err)
	}
	u.Localpart, u.Password = localpart, password
	return u, nil
}

// randomHex returns n random bytes, hex-encoded.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}
