package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/matrix-org/gomatrixserverlib"
	"golang.org/x/time/rate"

	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/outbound"
)

const (
	// pubkeyPath is the identity-server endpoint that serves a public key.
	pubkeyPath = "/_matrix/identity/v2/pubkey/"
	// keyCacheSize bounds the number of (server, key ID) entries kept.
	keyCacheSize = 1024
	// keyTTL is how long a fetched key is trusted before it is fetched again,
	// so a key the identity server withdraws stops being accepted.
	keyTTL = time.Hour
	// negativeTTL is how long a failed fetch is remembered, so a down or
	// misbehaving identity server is asked at most once per key in that time.
	negativeTTL = 30 * time.Second
	// fetchBurst and fetchRate bound the fetches of keys not in the cache per
	// identity server and source address: the key ID comes from an
	// unauthenticated header, so without a budget anyone could make threepidd
	// fetch a new key ID from an identity server on every request. The budget
	// is per source so that forged requests from one address cannot spend the
	// fetches the identity server itself needs after a restart or a key
	// rotation.
	fetchBurst = 10
	fetchRate  = rate.Limit(1) // per second
	// serverFetchBurst and serverFetchRate bound all the fetches from one
	// identity server, whatever their sources, so that threepidd never
	// becomes a way to load it: well above what one source may spend, so
	// that a single forger cannot reach it.
	serverFetchBurst = 50
	serverFetchRate  = rate.Limit(5) // per second
	// maxBudgets bounds the fetch budgets kept (per source and per server);
	// the least recently used go first, which only ever gives a source a
	// fresh budget.
	maxBudgets = 10_000
	// budgetIdle is how long an unused budget is kept: long enough to refill
	// it completely, after which forgetting it changes nothing.
	budgetIdle = time.Minute
	// fetchTimeout bounds one key fetch, whoever waits for it.
	fetchTimeout = 10 * time.Second
	// maxPubkeyBody bounds the pubkey answer we read.
	maxPubkeyBody = 64 << 10
	// maxKeyIDLen bounds the key IDs we look up.
	maxKeyIDLen = 128
	// maxKeysPerSignature bounds how many of a signer's key IDs VerifyJSON
	// tries, so an object listing many keys cannot cause many fetches.
	maxKeysPerSignature = 4
	// ed25519Prefix starts every key ID we can verify with.
	ed25519Prefix = "ed25519:"
)

// KeyRing fetches and caches identity-server public keys. Keys pinned in the
// config (verify_keys) are used without HTTP; otherwise a key is fetched from
// GET <base_url>/_matrix/identity/v2/pubkey/<keyId>. Concurrent misses for one
// key share one fetch; the caches are bounded; failures are remembered for
// 30 s in a cache of their own, so they cannot push good keys out. Fetches of
// keys not in the cache are budgeted: each source address (the client of the
// request that needs the key) gets at most fetchBurst fetches at once from
// one identity server and fetchRate a second after that, and each identity
// server serves at most serverFetchBurst, then serverFetchRate a second, to
// all sources together. It is safe for concurrent use.
type KeyRing struct {
	client   *http.Client
	now      func() time.Time
	keys     *lru.Cache[keyRef, keyEntry]
	failures *lru.Cache[keyRef, keyEntry]

	mu       sync.Mutex
	inflight map[keyRef]*keyFetch
	// budgets holds the fetch budgets: per identity server base URL and
	// source (key base URL + "\x00" + source) and per base URL alone.
	budgets *expirable.LRU[string, *rate.Limiter]
}

// keyRef names one key of one identity server.
type keyRef struct {
	baseURL, keyID string
}

// keyEntry is a cached fetch result: a key or an error, until expires.
type keyEntry struct {
	key     ed25519.PublicKey
	err     error
	expires time.Time
}

// keyFetch is a fetch under way; done is closed when key/err are set.
type keyFetch struct {
	done chan struct{}
	key  ed25519.PublicKey
	err  error
}

// NewKeyRing returns a KeyRing that fetches with client (nil: a client with a
// 10 s timeout), never following redirects: a key comes from the configured
// identity server's own URL or not at all.
func NewKeyRing(client *http.Client) *KeyRing {
	if client == nil {
		client = outbound.NewClient(outbound.NewTransport(), fetchTimeout)
	}
	client = outbound.WithoutRedirects(client)
	return &KeyRing{
		client:   client,
		now:      time.Now,
		keys:     newKeyCache(),
		failures: newKeyCache(),
		inflight: make(map[keyRef]*keyFetch),
		budgets:  expirable.NewLRU[string, *rate.Limiter](maxBudgets, nil, budgetIdle),
	}
}

func newKeyCache() *lru.Cache[keyRef, keyEntry] {
	cache, err := lru.New[keyRef, keyEntry](keyCacheSize)
	if err != nil {
		panic(fmt.Sprintf("federation: key cache: %v", err)) // only for a size <= 0
	}
	return cache
}

// cached returns the unexpired cached result for ref; k.mu is held.
func (k *KeyRing) cached(ref keyRef) (keyEntry, bool) {
	for _, c := range []*lru.Cache[keyRef, keyEntry]{k.keys, k.failures} {
		if e, ok := c.Get(ref); ok && k.now().Before(e.expires) {
			return e, true
		}
	}
	return keyEntry{}, false
}

// budget returns the budget called key, made with limit and burst when it is
// new; k.mu is held.
func (k *KeyRing) budget(key string, limit rate.Limit, burst int) *rate.Limiter {
	b, ok := k.budgets.Get(key)
	if !ok {
		b = rate.NewLimiter(limit, burst)
		k.budgets.Add(key, b)
	}
	return b
}

// allowFetch spends one fetch from baseURL for source, if both source's
// budget and baseURL's have one left; k.mu is held.
func (k *KeyRing) allowFetch(baseURL, source string) bool {
	now := k.now()
	own := k.budget(baseURL+"\x00"+source, fetchRate, fetchBurst)
	if own.TokensAt(now) < 1 {
		return false
	}
	if !k.budget(baseURL, serverFetchRate, serverFetchBurst).AllowN(now, 1) {
		return false
	}
	return own.AllowN(now, 1)
}

// PublicKey returns the public key keyID (e.g. "ed25519:0") of identity server
// is, fetched if need be on the budget of threepidd itself (the association of
// a bind). When is has verify_keys, only those pinned keys are used and
// nothing is fetched: a pin that fell back to the network would pin nothing.
func (k *KeyRing) PublicKey(ctx context.Context, is config.IdentityServer, keyID string) (ed25519.PublicKey, error) {
	return k.PublicKeyFor(ctx, is, keyID, "")
}

// PublicKeyFor is PublicKey for a request from source (a client address, as
// SourceOf gives it), whose fetches it spends.
func (k *KeyRing) PublicKeyFor(ctx context.Context, is config.IdentityServer, keyID, source string) (ed25519.PublicKey, error) {
	if err := checkKeyID(keyID); err != nil {
		return nil, err
	}
	if len(is.VerifyKeys) > 0 {
		return pinnedKey(is, keyID)
	}
	ref := keyRef{baseURL: is.URL(), keyID: keyID}
	k.mu.Lock()
	if e, ok := k.cached(ref); ok {
		k.mu.Unlock()
		return e.key, e.err
	}
	f, ok := k.inflight[ref]
	if !ok {
		if !k.allowFetch(ref.baseURL, source) {
			// Over budget: a key we fetched before is still better than
			// none, even past its TTL (only a withdrawn key is at stake).
			e, stale := k.keys.Peek(ref)
			k.mu.Unlock()
			if stale {
				return e.key, nil
			}
			return nil, fmt.Errorf("key %s of %s: too many key fetches from this identity server, try again later", keyID, ref.baseURL)
		}
		f = &keyFetch{done: make(chan struct{})}
		k.inflight[ref] = f
		go k.fetch(context.WithoutCancel(ctx), ref, f)
	}
	k.mu.Unlock()
	select {
	case <-f.done:
		return f.key, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("key %s of %s: %w", keyID, ref.baseURL, ctx.Err())
	}
}

// fetch fetches ref, caches the result and wakes everyone waiting on f. It
// runs detached from the first caller so that caller leaving does not fail the
// others.
func (k *KeyRing) fetch(ctx context.Context, ref keyRef, f *keyFetch) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	f.key, f.err = k.get(ctx, ref)
	k.mu.Lock()
	if f.err != nil {
		k.failures.Add(ref, keyEntry{err: f.err, expires: k.now().Add(negativeTTL)})
	} else {
		k.failures.Remove(ref)
		k.keys.Add(ref, keyEntry{key: f.key, expires: k.now().Add(keyTTL)})
	}
	delete(k.inflight, ref)
	k.mu.Unlock()
	close(f.done)
}

// get asks the identity server for one key.
func (k *KeyRing) get(ctx context.Context, ref keyRef) (ed25519.PublicKey, error) {
	target := ref.baseURL + pubkeyPath + url.PathEscape(ref.keyID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch key %s: %w", ref.keyID, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch key %s: %w", ref.keyID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPubkeyBody+1))
	if err != nil {
		return nil, fmt.Errorf("fetch key %s from %s: %w", ref.keyID, target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch key %s from %s: %w", ref.keyID, target, mxerr.DecodeRemote(resp.StatusCode, body))
	}
	if len(body) > maxPubkeyBody {
		return nil, fmt.Errorf("fetch key %s from %s: answer larger than %d bytes", ref.keyID, target, maxPubkeyBody)
	}
	var answer struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("fetch key %s from %s: %w", ref.keyID, target, err)
	}
	key, err := decodePublicKey(answer.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("fetch key %s from %s: %w", ref.keyID, target, err)
	}
	return key, nil
}

// pinnedKey returns keyID from is's verify_keys.
func pinnedKey(is config.IdentityServer, keyID string) (ed25519.PublicKey, error) {
	b64, ok := is.VerifyKeys[keyID]
	if !ok {
		return nil, fmt.Errorf("key %s of %s is not among its pinned verify_keys", keyID, is.Name())
	}
	key, err := decodePublicKey(b64)
	if err != nil {
		return nil, fmt.Errorf("pinned key %s of %s: %w", keyID, is.Name(), err)
	}
	return key, nil
}

// checkKeyID accepts "ed25519:<identifier>" with a reasonable identifier.
func checkKeyID(keyID string) error {
	id, ok := strings.CutPrefix(keyID, ed25519Prefix)
	if !ok || id == "" || len(keyID) > maxKeyIDLen || !headerSafe(id) || strings.ContainsAny(id, "/?#%") {
		return fmt.Errorf("key ID %q is not an ed25519 key ID", truncate(keyID, maxQuoted))
	}
	return nil
}

// decodePublicKey decodes an ed25519 public key in standard base64, padded or
// not.
func decodePublicKey(b64 string) (ed25519.PublicKey, error) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "="))
	if err != nil {
		return nil, fmt.Errorf("public key is not base64: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// VerifyJSON checks that obj (a JSON object) carries a valid signature by
// signingName with a key the KeyRing can find for is. Only ed25519 keys are
// tried, at most four of them.
func (k *KeyRing) VerifyJSON(ctx context.Context, is config.IdentityServer, signingName string, obj []byte) error {
	ids, err := gomatrixserverlib.ListKeyIDs(signingName, obj)
	if err != nil {
		return fmt.Errorf("verify signature of %s: %w", signingName, err)
	}
	ids = slices.DeleteFunc(ids, func(id gomatrixserverlib.KeyID) bool {
		return !strings.HasPrefix(string(id), ed25519Prefix)
	})
	if len(ids) == 0 {
		return fmt.Errorf("verify signature of %s: no ed25519 signature by %s", is.Name(), signingName)
	}
	slices.Sort(ids)
	var errs []error
	for _, id := range ids[:min(len(ids), maxKeysPerSignature)] {
		key, err := k.PublicKey(ctx, is, string(id))
		if err == nil {
			err = gomatrixserverlib.VerifyJSON(signingName, id, key, obj)
		}
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("verify signature of %s: %w", signingName, errors.Join(errs...))
}

// SourceOf is the budget source of a client address (an IP, as
// httpapi.Proxies.ClientIP gives it): the address itself for IPv4, its /64
// for IPv6 (one host commonly holds a whole /64), the string as is when it
// does not parse.
func SourceOf(clientIP string) string {
	a, err := netip.ParseAddr(clientIP)
	if err != nil {
		return clientIP
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}
