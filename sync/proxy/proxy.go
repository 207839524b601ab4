// Package proxy is the /sync proxy: it serves the sync endpoints in front of
// a homeserver that does not embed the sync library (package sync), adding
// the "threepids" section and the composite token to what the homeserver
// answers. Its files follow its jobs: proxy.go the routes and what differs
// between the endpoints, exchange.go the long-poll and the exchange with the
// homeserver, rewrite.go the streaming rewrite of a body's token, upstream.go
// the reverse-proxy plumbing (the request sent, the answer relayed), buffer.go
// pooled buffers and gzip.
package proxy

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/httpapi"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/router"
	tpsync "github.com/threepidd/threepidd/sync"
)

// SlidingSyncPath is the simplified sliding sync endpoint (MSC4186).
const SlidingSyncPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// relationsPrefixes are where the relations endpoints live: the spec's v1,
// and Synapse's unstable (client_patterns with releases=("v1",)).
var relationsPrefixes = []string{"/_matrix/client/v1", "/_matrix/client/unstable"}

// relationsPath is the shortest of the relations endpoints, which take sync
// tokens as from and to; the others add /{relType} and /{relType}/{eventType}.
const relationsPath = "/rooms/{roomId}/relations/{eventId}"

// passthrough labels the metrics of the requests forwarded with their tokens
// stripped (passTokens).
const passthrough = "passthrough"

// maxSlidingSyncRequest bounds a sliding sync request body, which lists
// room subscriptions and can be larger than other client requests.
const maxSlidingSyncRequest = 1 << 20

// errWoken: the upstream exchange was abandoned, nothing written, because a
// notification arrived.
var errWoken = errors.New("woken before the upstream answer")

// Proxy serves the sync endpoints in front of the homeserver: GET /sync and
// POST simplified sliding sync get the section and the composite token spliced
// in; GET /keys/changes, /rooms/{roomId}/messages, /rooms/{roomId}/members
// and /rooms/{roomId}/relations/..., which clients pass sync tokens to, are
// forwarded with threepidd's part of the tokens removed.
//
// Requests reach the homeserver with the client's credentials and its
// User-Agent, the real client address in X-Forwarded-For, and the query as
// the client sent it but for the tokens (and ?access_token=, sent as a header).
// Upstream answers other than 200 pass through unchanged.
//
// A 200 body with nothing to add but the token (the usual case) is streamed:
// the token is replaced in its first bytes and the rest copied through, in
// constant memory. With a section to add, the body is read whole once and
// spliced, within Budget; a body that does not fit is streamed, and its
// section comes with the next sync. A gzip body is decompressed and sent uncompressed (an HTTP front
// end such as nginx may compress it again for the network): with its exact
// Content-Length when spliced, chunked when streamed.
type Proxy struct {
	Stream     *tpsync.Stream
	Auth       *auth.Auth
	Homeserver *homeserver.Client
	// Budget bounds the bodies held at once for splicing (nil: a budget of
	// DefaultSpliceBudget shared by every proxy without one).
	Budget *Budget
}

// budget returns the proxy's splice budget.
func (p *Proxy) budget() *Budget {
	if p.Budget == nil {
		return defaultBudget
	}
	return p.Budget
}

// Register adds the proxied routes under every client prefix (room messages
// and members under api/v1 too, relations under v1 and unstable, as Synapse
// serves them). Room IDs are matched percent-encoded, so that an encoded "/"
// stays inside its segment.
//
// gorilla/mux tries routes in the order they were added, one regular
// expression each: /sync, which every client calls over and over, comes
// first (and package server registers the proxy before the other handlers).
func (p *Proxy) Register(r *mux.Router) {
	for _, prefix := range httpapi.ClientPrefixes {
		r.Handle(prefix+"/sync", p.Auth.Require(p.sync)).Methods(http.MethodGet)
	}
	encoded := router.EncodedSubrouter(r)
	for _, prefix := range httpapi.ClientPrefixes {
		r.Handle(prefix+"/keys/changes", mxerr.Handler(p.passTokens("from", "to"))).Methods(http.MethodGet)
	}
	for _, prefix := range append([]string{httpapi.LegacyPrefix}, httpapi.ClientPrefixes...) {
		encoded.Handle(prefix+"/rooms/{roomId}/messages", mxerr.Handler(p.passTokens("from", "to"))).Methods(http.MethodGet)
		// matrix-js-sdk passes its last next_batch as "at" (lazy-loaded members).
		encoded.Handle(prefix+"/rooms/{roomId}/members", mxerr.Handler(p.passTokens("at"))).Methods(http.MethodGet)
	}
	for _, prefix := range relationsPrefixes {
		for _, tail := range []string{"", "/{relType}", "/{relType}/{eventType}"} {
			encoded.Handle(prefix+relationsPath+tail, mxerr.Handler(p.passTokens("from", "to"))).Methods(http.MethodGet)
		}
	}
	r.Handle(SlidingSyncPath, p.Auth.Require(p.slidingSync)).Methods(http.MethodPost)
}

// flavour is what differs between /sync and sliding sync.
type flavour struct {
	// endpoint labels metrics.
	endpoint string
	// param is the query parameter carrying the client's token.
	param string
	// tokenKey is the response member carrying the next token.
	tokenKey string
	// splice extends an upstream 200 body.
	splice func(body []byte, sec tpsync.Section, pos int64) (tpsync.Spliced, error)
	// minimal is the body answered when a notification ends a long-poll.
	minimal func(sec tpsync.Section, tok tpsync.Token) []byte
}

var (
	syncFlavour = &flavour{endpoint: "sync", param: "since", tokenKey: "next_batch", splice: tpsync.SpliceSync,
		minimal: func(sec tpsync.Section, tok tpsync.Token) []byte {
			b := append(tok.AppendTo([]byte(`{"next_batch":"`)), `","threepids":`...)
			return append(sec.AppendJSON(b), '}')
		}}
	slidingFlavour = &flavour{endpoint: "sliding_sync", param: "pos", tokenKey: "pos", splice: tpsync.SpliceSlidingSync,
		minimal: func(sec tpsync.Section, tok tpsync.Token) []byte {
			b := append(tok.AppendTo([]byte(`{"pos":"`)), `","lists":{},"rooms":{},"extensions":{"threepids":`...)
			return append(sec.AppendJSON(b), '}', '}')
		}}
)

func (p *Proxy) sync(w http.ResponseWriter, r *http.Request) error {
	return p.serveSync(w, r, syncFlavour, nil)
}

// slidingSync serves simplified sliding sync. Requests that do not enable the
// threepids extension pass through, with only our part of pos removed.
func (p *Proxy) slidingSync(w http.ResponseWriter, r *http.Request) error {
	body, err := httpapi.ReadBody(r, maxSlidingSyncRequest)
	if err != nil {
		return err
	}
	if gjson.GetBytes(body, "extensions.threepids.enabled").Type != gjson.True {
		return p.pass(w, r, body, "pos")
	}
	// The homeserver does not know the extension: it is ours alone.
	if body, err = sjson.DeleteBytes(body, "extensions.threepids"); err != nil {
		return mxerr.BadJSON.WithMessage("Could not read the request body")
	}
	return p.serveSync(w, r, slidingFlavour, body)
}

// passTokens forwards a request whose params may hold composite tokens.
func (p *Proxy) passTokens(params ...string) mxerr.Handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		return p.pass(w, r, nil, params...)
	}
}

// pass forwards r with our part of the token params removed and relays the
// answer unchanged.
func (p *Proxy) pass(w http.ResponseWriter, r *http.Request, body []byte, params ...string) error {
	set := make(map[string]string, len(params))
	query := r.URL.Query()
	for _, name := range params {
		if !query.Has(name) {
			continue
		}
		tok, err := tokenParam(query, name)
		if err != nil {
			return err
		}
		set[name] = tok.Upstream
	}
	resp, err := p.roundTrip(r.Context(), r, p.Auth.Caller(r), body, set, r.Header.Get("Accept-Encoding"), passthrough)
	if err != nil {
		return unlessGone(r.Context(), homeserver.UpstreamError(r.Context(), err))
	}
	defer resp.Body.Close()
	relay(w, resp)
	return nil
}

// tokenParam parses the token in query parameter name.
func tokenParam(query url.Values, name string) (tpsync.Token, error) {
	tok, err := tpsync.ParseToken(query.Get(name))
	if err != nil {
		return tpsync.Token{}, mxerr.InvalidParam.WithMessage("The %s token is malformed", name)
	}
	return tok, nil
}

// unlessGone returns err, or nil once the client has left: nobody is there to
// answer, and nothing went wrong on our side.
func unlessGone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
