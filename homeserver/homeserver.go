// Package homeserver is threepidd's client of the upstream Matrix homeserver,
// and nothing else: access-token checks (whoami, cached), the
// user-interactive-auth relay, forwarding a client's request, and Synapse's
// admin API.
package homeserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
)

// maxUpstreamBody bounds what is read of a homeserver answer we interpret or relay.
const maxUpstreamBody = 1 << 20

// tokenCacheSize bounds the whoami cache.
const tokenCacheSize = 100_000

var (
	whoamiCache = metrics.Factory.NewCounterVec(metrics.CounterOpts("whoami_cache_total",
		"Access-token checks answered from the whoami cache (hit) or asked of the homeserver (miss)."), []string{"result"})
	up = metrics.Factory.NewGauge(metrics.GaugeOpts("homeserver_up",
		"1 when the homeserver answered its last reachability check (GET /_matrix/client/versions), 0 when it did not."))
)

// The series of whoamiCache, looked up once (a lookup by label values costs
// a hash and a lock per request); they exist from the start, at zero.
var (
	whoamiHits   = whoamiCache.WithLabelValues("hit")
	whoamiMisses = whoamiCache.WithLabelValues("miss")
)

// Identity is who an access token belongs to.
type Identity struct {
	UserID   string
	DeviceID string
	IsGuest  bool
}

// Caller is what the homeserver must see of the client's request: its token,
// the appservice user_id it masquerades as, and the forwarded headers.
type Caller struct {
	AccessToken string
	// AsUserID is the ?user_id= of an appservice request, forwarded as such.
	AsUserID string
	// ClientIP is the real client address (from trusted proxies' X-Forwarded-For).
	ClientIP  string
	UserAgent string
}

// Client talks to the upstream homeserver.
type Client struct {
	// baseURL is the homeserver's URL, parsed and printed once: every
	// request's URL starts with it.
	baseURL string
	http    *http.Client
	relay   config.UIARelay
	cache   *expirable.LRU[string, cachedIdentity]
	// callTimeout bounds each call; CallTimeout except in tests.
	callTimeout time.Duration
}

// DefaultRelay returns the UIA relay call for a homeserver kind (DESIGN.md,
// "UIA relay"). Both are user-interactive and have no effect once auth passes:
// a random unknown sid for Synapse, a device the user does not have for
// Dendrite ({random} in a path is replaced by that device id).
func DefaultRelay(kind string) config.UIARelay {
	if kind == "dendrite" {
		return config.UIARelay{Method: http.MethodDelete, Path: "/_matrix/client/v3/devices/{random}"}
	}
	return config.UIARelay{Method: http.MethodPost, Path: "/_matrix/client/v3/account/3pid/add"}
}

// New returns a client for cfg on transport (outbound.NewTransport; the /sync
// proxy shares it). It never follows redirects; every call is bounded by its
// context.
func New(cfg config.Homeserver, transport http.RoundTripper) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil {
		return nil, fmt.Errorf("homeserver url: %w", err)
	}
	relay := DefaultRelay(cfg.Kind)
	if cfg.UIARelay != nil {
		relay = *cfg.UIARelay
	}
	ttl := cfg.TokenCacheTTL
	c := &Client{
		baseURL:     base.String(),
		http:        outbound.NewClient(transport, 0),
		relay:       relay,
		callTimeout: CallTimeout,
	}
	if ttl > 0 {
		c.cache = expirable.NewLRU[string, cachedIdentity](tokenCacheSize, nil, ttl)
	}
	return c, nil
}

// URL returns the homeserver URL for path (which may carry a query).
func (c *Client) URL(path string) string { return c.baseURL + path }

// RoundTrip sends req, a request for the homeserver (at [Client.URL]), on
// the pooled transport, and returns the answer as it came: a redirect is an
// answer, never followed. It is what a reverse proxy does (the /sync proxy
// relays a request this way per client request); http.Client.Do would come
// to the same, after copying the request's headers for redirects it never
// follows. The caller closes the body.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.http.Transport.RoundTrip(req)
}

// SetHeaders puts the caller's credentials and forwarded headers on req, and
// those the outbound transport adds (outbound.SetHeaders), so that the
// transport has no need to clone it.
func (caller Caller) SetHeaders(req *http.Request) {
	defer outbound.SetHeaders(req)
	if caller.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+caller.AccessToken)
	}
	if caller.ClientIP != "" {
		req.Header.Set("X-Forwarded-For", caller.ClientIP)
	}
	if caller.UserAgent != "" {
		req.Header.Set("User-Agent", caller.UserAgent)
	}
}

func (caller Caller) query() string {
	if caller.AsUserID == "" {
		return ""
	}
	return "?user_id=" + url.QueryEscape(caller.AsUserID)
}

// cachedIdentity is a whoami answer in the cache.
type cachedIdentity struct {
	Identity
	// ignoresUserID: the homeserver answered this token's own user to a
	// ?user_id= naming someone else, so the token is not an appservice's and
	// (as Synapse and Dendrite do for such tokens) any user_id is ignored.
	ignoresUserID bool
}

// WhoAmI returns the identity of the caller's token, from the cache when it was
// checked less than token_cache_ttl ago. A 401 from the homeserver is passed back
// as is (its body may say soft_logout); an unreachable homeserver is a 502/504
// Matrix error, never a hang beyond ctx.
//
// The cache is keyed on the token alone, and on the token and the user_id
// only for an appservice masquerading as a user: a token's own identity is
// cached under the token, and once the homeserver has shown that it ignores
// ?user_id= for that token (it answered the token's own user to another
// user_id), every user_id is served from that entry, so varying user_id
// cannot force a whoami per request.
func (c *Client) WhoAmI(ctx context.Context, caller Caller) (Identity, error) {
	if id, ok := c.cached(caller); ok {
		whoamiHits.Inc()
		return id, nil
	}
	if c.cache != nil {
		whoamiMisses.Inc()
	}
	status, body, err := c.do(ctx, caller, http.MethodGet, "/_matrix/client/v3/account/whoami"+caller.query(), nil)
	if err != nil {
		return Identity{}, err
	}
	switch {
	case status == http.StatusOK:
	case status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusTooManyRequests:
		if isMatrixError(body) {
			return Identity{}, &mxerr.Raw{Status: status, Body: body}
		}
		return Identity{}, mxerr.UnknownToken
	default:
		return Identity{}, mxerr.Unavailable.WithMessage("The homeserver could not check the access token (status %d)", status)
	}
	var who struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
		IsGuest  bool   `json:"is_guest"`
	}
	if err := json.Unmarshal(body, &who); err != nil || who.UserID == "" {
		return Identity{}, mxerr.Unavailable.WithMessage("The homeserver gave an unreadable whoami answer")
	}
	id := Identity{UserID: who.UserID, DeviceID: who.DeviceID, IsGuest: who.IsGuest}
	c.remember(caller, id)
	return id, nil
}

// CheckReachable asks the homeserver for GET /_matrix/client/versions and
// returns nil when it answers 200; threepidd_homeserver_up says the outcome.
func (c *Client) CheckReachable(ctx context.Context) error {
	status, _, err := c.do(ctx, Caller{}, http.MethodGet, "/_matrix/client/versions", nil)
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("homeserver answered /versions with %d", status)
	}
	if err != nil {
		up.Set(0)
		return err
	}
	up.Set(1)
	return nil
}

// masqueradeKey is the cache key of an appservice token acting as asUserID.
func masqueradeKey(token, asUserID string) string { return token + "\x00" + asUserID }

// cached returns the caller's identity from the cache.
func (c *Client) cached(caller Caller) (Identity, bool) {
	if c.cache == nil {
		return Identity{}, false
	}
	if own, ok := c.cache.Get(caller.AccessToken); ok &&
		(caller.AsUserID == "" || caller.AsUserID == own.UserID || own.ignoresUserID) {
		return own.Identity, true
	}
	if caller.AsUserID == "" {
		return Identity{}, false
	}
	as, ok := c.cache.Get(masqueradeKey(caller.AccessToken, caller.AsUserID))
	return as.Identity, ok
}

// remember caches the homeserver's answer id to caller's whoami.
func (c *Client) remember(caller Caller, id Identity) {
	switch {
	case c.cache == nil:
	case caller.AsUserID == "":
		c.cache.Add(caller.AccessToken, cachedIdentity{Identity: id})
	case id.UserID == caller.AsUserID:
		// An appservice acting as that user (or a user naming themselves).
		c.cache.Add(masqueradeKey(caller.AccessToken, caller.AsUserID), cachedIdentity{Identity: id})
	default:
		// The token's own user, whatever user_id said: not an appservice.
		c.cache.Add(caller.AccessToken, cachedIdentity{Identity: id, ignoresUserID: true})
	}
}

// RelayUIA relays the client's auth dict to the homeserver's user-interactive
// call configured for its kind, on behalf of userID. It returns nil once the
// homeserver has accepted the auth; a *mxerr.Raw carrying the homeserver's
// answer (401 flows/session/errcode, 403 for another user's password, 429, and
// other Matrix errors) to hand back to the client; or a 502 when the homeserver
// failed.
//
// Only two answers prove that user-interactive auth passed: Synapse's 400
// M_THREEPID_AUTH_FAILED (UIA ran, then the random sid is unknown) and a 2xx
// (Dendrite's DELETE of a device the user does not have). Everything else is
// refused: both homeservers answer 400, 403 or 500 before or without checking a
// password in several cases (an unknown session, a session started on another
// request, 3PID changes switched off, another user's password).
//
// For DELETE /devices/{id} the device id is derived from the user ID, because
// Dendrite ties a UIA session to the device of its first call: the retry with
// the password must name the same device.
func (c *Client) RelayUIA(ctx context.Context, caller Caller, userID string, auth json.RawMessage) error {
	sum := sha256.Sum256([]byte("threepidd-uia-relay\x00" + userID))
	path := strings.ReplaceAll(c.relay.Path, "{random}", "THREEPIDD_UIA_"+strings.ToUpper(hex.EncodeToString(sum[:10])))
	var body []byte
	if c.relay.Method != http.MethodGet {
		req := map[string]any{"sid": "threepidd" + randomID(), "client_secret": "threepidd" + randomID()}
		if len(auth) > 0 && string(auth) != "null" {
			req["auth"] = auth
		}
		body, _ = json.Marshal(req)
	}
	status, resp, err := c.do(ctx, caller, c.relay.Method, path+caller.query(), body)
	if err != nil {
		return err
	}
	switch {
	case status/100 == 2:
		return nil
	case status == http.StatusBadRequest && mxerr.ErrCode(resp) == "M_THREEPID_AUTH_FAILED":
		return nil
	case status == http.StatusUnauthorized, status/100 == 4 && isMatrixError(resp):
		return &mxerr.Raw{Status: status, Body: resp}
	default:
		slog.WarnContext(ctx, "homeserver UIA relay gave an unexpected answer", "status", status, "errcode", mxerr.ErrCode(resp))
		return mxerr.Unavailable.WithMessage("The homeserver did not confirm user-interactive authentication (status %d)", status)
	}
}

// CallTimeout bounds one call to the homeserver (whoami, the UIA relay, a
// forwarded request): a homeserver that hangs gets the client a 504, not a hang.
const CallTimeout = 30 * time.Second

// do sends one request to the homeserver and returns its status and (bounded) body.
func (c *Client) do(ctx context.Context, caller Caller, method, pathAndQuery string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL(pathAndQuery), rd)
	if err != nil {
		return 0, nil, fmt.Errorf("build homeserver request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	caller.SetHeaders(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, UpstreamError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody))
	if err != nil {
		return 0, nil, UpstreamError(ctx, err)
	}
	return resp.StatusCode, data, nil
}

// UpstreamError turns a transport error into a Matrix error: 504 on a timeout,
// 502 otherwise. A cancelled client request is passed on as is.
func UpstreamError(ctx context.Context, err error) error {
	if ctx.Err() == context.Canceled {
		return ctx.Err()
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return mxerr.Timeout.WithMessage("The homeserver did not answer in time")
	}
	slog.WarnContext(ctx, "homeserver unreachable", "err", err)
	return mxerr.Unavailable.WithMessage("The homeserver is unreachable")
}

func isMatrixError(body []byte) bool { return mxerr.ErrCode(body) != "" }

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
