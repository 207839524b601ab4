package sync

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/threepidd/threepidd/api"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/mxerr"
)

// SlidingSyncPath is the simplified sliding sync endpoint (MSC4186).
const SlidingSyncPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

const (
	// MaxUpstreamBody bounds a sync body read for splicing (1 GiB; an
	// initial sync of a very large account is a few hundred MB).
	MaxUpstreamBody = 1 << 30
	// maxSlidingSyncRequest bounds a sliding sync request body, which lists
	// room subscriptions and can be larger than other client requests.
	maxSlidingSyncRequest = 1 << 20
)

// errWoken: the upstream exchange was abandoned, nothing written, because a
// notification arrived.
var errWoken = errors.New("woken before the upstream answer")

// Proxy serves the sync endpoints in front of the homeserver: GET /sync and
// POST simplified sliding sync get the section and the composite token spliced
// in; GET /keys/changes and /rooms/{roomId}/messages, which clients pass sync
// tokens to, are forwarded with threepidd's part of the tokens removed.
//
// Requests reach the homeserver with the client's credentials and its
// User-Agent, the real client address in X-Forwarded-For, and the query as
// the client sent it but for the tokens (and ?access_token=, sent as a header).
// Upstream answers other than 200 pass through unchanged.
//
// A 200 body with nothing to add but the token (the usual case) is streamed:
// the token is replaced in its first bytes and the rest copied through, in
// constant memory. With a section to add, the body is read whole once and
// spliced. A gzip body is decompressed and sent uncompressed (an HTTP front
// end such as nginx may compress it again for the network): with its exact
// Content-Length when spliced, chunked when streamed.
type Proxy struct {
	Stream     *Stream
	Auth       *api.Auth
	Homeserver *homeserver.Client
}

// Register adds the proxied routes under every client prefix. Room IDs are
// matched percent-encoded, so that an encoded "/" stays inside its segment.
func (p *Proxy) Register(r *mux.Router) {
	// A subrouter without matchers of its own (see admin.Handler.Register).
	encoded := r.NewRoute().Subrouter()
	encoded.UseEncodedPath()
	encoded.MethodNotAllowedHandler = r.MethodNotAllowedHandler
	for _, prefix := range api.ClientPrefixes {
		r.Handle(prefix+"/sync", p.Auth.Require(p.sync)).Methods(http.MethodGet)
		r.Handle(prefix+"/keys/changes", mxerr.Handler(p.passTokens("from", "to"))).Methods(http.MethodGet)
		encoded.Handle(prefix+"/rooms/{roomId}/messages", mxerr.Handler(p.passTokens("from", "to"))).Methods(http.MethodGet)
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
	splice func(body []byte, sec Section, pos int64) (Spliced, error)
	// minimal is the body answered when a notification ends a long-poll.
	minimal func(sec Section, tok Token) []byte
}

var (
	syncFlavour = &flavour{endpoint: "sync", param: "since", tokenKey: "next_batch", splice: SpliceSync,
		minimal: func(sec Section, tok Token) []byte {
			b := append(tok.AppendTo([]byte(`{"next_batch":"`)), `","threepids":`...)
			return append(sec.AppendJSON(b), '}')
		}}
	slidingFlavour = &flavour{endpoint: "sliding_sync", param: "pos", tokenKey: "pos", splice: SpliceSlidingSync,
		minimal: func(sec Section, tok Token) []byte {
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
	body, err := api.ReadBody(r, maxSlidingSyncRequest)
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
	resp, err := p.roundTrip(r.Context(), r, body, set, r.Header.Get("Accept-Encoding"), "passthrough")
	if err != nil {
		return unlessGone(r.Context(), homeserver.UpstreamError(r.Context(), err))
	}
	defer resp.Body.Close()
	relay(w, resp)
	return nil
}

// tokenParam parses the token in query parameter name.
func tokenParam(query url.Values, name string) (Token, error) {
	tok, err := ParseToken(query.Get(name))
	if err != nil {
		return Token{}, mxerr.InvalidParam.WithMessage("The %s token is malformed", name)
	}
	return tok, nil
}

// serveSync is the sync exchange shared by both flavours; reqBody is the
// body to forward (nil for GET).
//
// A long-poll (a token given and timeout > 0) watches for the user's
// notifications while the homeserver holds the request. When one arrives, the
// upstream request is cancelled and the client gets a minimal body: the
// section, and a token whose upstream part is the one the client sent, so no
// upstream event is skipped. When notifications are already pending, the
// homeserver is asked with timeout=0, so the client gets both at once.
func (p *Proxy) serveSync(w http.ResponseWriter, r *http.Request, fl *flavour, reqBody []byte) error {
	ctx := r.Context()
	userID := api.UserFrom(ctx).UserID
	query := r.URL.Query()
	tok, err := tokenParam(query, fl.param)
	if err != nil {
		return err
	}
	timeout, _ := strconv.ParseInt(query.Get("timeout"), 10, 64) // the homeserver judges bad values
	longPoll := query.Get(fl.param) != "" && timeout > 0
	deadline := time.Now().Add(time.Duration(timeout) * time.Millisecond)
	set := map[string]string{fl.param: tok.Upstream}
	woken := false
	for {
		// Watch before reading the section, so nothing slips in between.
		wctx, stop := ctx, context.CancelFunc(func() {})
		remaining := time.Until(deadline)
		watching := longPoll && remaining > 0
		if watching {
			wctx, stop = p.Stream.Watch(ctx, userID)
		}
		sec, next, err := p.Stream.Section(ctx, userID, tok)
		if err != nil {
			stop()
			return unlessGone(ctx, err)
		}
		// A plain upstream token means "now" once, as the request began: a
		// notification that wakes the long-poll is after that position, and
		// must not be skipped by reading "now" again.
		if !tok.HasPos {
			tok = NewToken(tok.Upstream, next)
		}
		switch {
		case len(sec) > 0 && woken:
			stop()
			writeBody(w, nil, fl.minimal(sec, NewToken(tok.Upstream, next)))
			return nil
		case len(sec) > 0 && longPoll:
			// Already pending: the homeserver must not hold the request.
			stop()
			wctx, stop = ctx, func() {}
			set["timeout"] = "0"
		case longPoll && !watching: // the deadline passed after a wake for nothing new
			set["timeout"] = "0"
		case woken: // a wake for nothing new: poll on for the time left
			set["timeout"] = strconv.FormatInt(remaining.Milliseconds(), 10)
		}
		err = p.exchange(w, r, wctx, fl, reqBody, set, sec, next)
		stop()
		if !errors.Is(err, errWoken) {
			return unlessGone(ctx, err)
		}
		woken = true
	}
}

// unlessGone returns err, or nil once the client has left: nobody is there to
// answer, and nothing went wrong on our side.
func unlessGone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// exchange forwards the request with the query changes in set and writes the
// answer: a 200 body extended with the token (and the section, if any),
// anything else as it came. It returns errWoken, having written nothing, when
// wctx was woken before the answer was committed.
//
// The upstream request has a context of its own, cancelled by a wake only
// until the answer is committed: from the first byte sent to the client on,
// the upstream body is relayed to its end.
func (p *Proxy) exchange(w http.ResponseWriter, r *http.Request, wctx context.Context, fl *flavour, reqBody []byte, set map[string]string, sec Section, next int64) error {
	reqCtx, cancelReq := context.WithCancel(r.Context())
	defer cancelReq()
	var state atomic.Int32 // 0 open, 1 committed, 2 woken
	defer context.AfterFunc(wctx, func() {
		if errors.Is(context.Cause(wctx), ErrWoken) && state.CompareAndSwap(0, 2) {
			cancelReq()
		}
	})()
	commit := func() bool { return state.CompareAndSwap(0, 1) }

	resp, err := p.roundTrip(reqCtx, r, reqBody, set, forwardEncoding(r.Header.Get("Accept-Encoding")), fl.endpoint)
	if err != nil {
		if state.Load() == 2 {
			return errWoken
		}
		return homeserver.UpstreamError(r.Context(), err)
	}
	defer resp.Body.Close()
	switch enc := resp.Header.Get("Content-Encoding"); {
	case resp.StatusCode != http.StatusOK || !decodable(enc):
		if !commit() {
			return errWoken
		}
		relay(w, resp)
		return nil
	case len(sec) == 0:
		return p.streamToken(w, r, resp, fl, next, commit)
	}
	body, err := readUpstream(resp)
	defer func() { putBuffer(body) }()
	if err := readOutcome(r, fl, commit, err); err != nil {
		return err
	}
	writeSpliced(w, r, fl, resp.Header, *body, sec, next)
	return nil
}

// readOutcome is the answer to give after reading an upstream body with
// error err: errWoken when commit fails (the request was already woken), 503
// for a body over MaxUpstreamBody, the upstream error for another failure,
// nil when the body may be written.
func readOutcome(r *http.Request, fl *flavour, commit func() bool, err error) error {
	switch {
	case !commit():
		return errWoken
	case errors.Is(err, errTooLarge):
		slog.ErrorContext(r.Context(), "sync body too large to splice", "endpoint", fl.endpoint, "limit", MaxUpstreamBody)
		return mxerr.Unavailable.WithMessage("The homeserver's sync response is too large")
	case err != nil:
		return homeserver.UpstreamError(r.Context(), err)
	}
	return nil
}

// decodable reports whether a body with this Content-Encoding can be read
// (only gzip and identity are asked for).
func decodable(encoding string) bool {
	return encoding == "" || strings.EqualFold(encoding, "identity") || strings.EqualFold(encoding, "gzip")
}

// streamHead bounds how much of a body is held while looking for its token.
const streamHead = 256 << 10

// streamToken relays a 200 body with only its token to change (no section),
// without holding the body: the token is looked for in its first streamHead
// bytes (homeservers write next_batch/pos first), replaced, and the rest is
// copied through. A gzip body is decompressed on the fly and sent chunked.
// When the token is not in the head, the body is read whole and spliced.
func (p *Proxy) streamToken(w http.ResponseWriter, r *http.Request, resp *http.Response, fl *flavour, next int64, commit func() bool) error {
	var rd io.Reader = resp.Body
	length := resp.ContentLength
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		zr, err := newGzipReader(resp.Body)
		if err != nil {
			return homeserver.UpstreamError(r.Context(), err)
		}
		defer gzipReaders.Put(zr)
		rd, length = zr, -1
	}
	buf := getBuffer(streamHead)
	defer func() { putBuffer(buf) }()
	tok, ended, err := readHead(rd, buf, fl.tokenKey)
	if err == nil && !ended && tok.Index == 0 {
		buf, err = readInto(buf, rd, MaxUpstreamBody)
		ended = true
	}
	if err := readOutcome(r, fl, commit, err); err != nil {
		return err
	}
	if ended {
		writeSpliced(w, r, fl, resp.Header, *buf, nil, next)
		return nil
	}
	head := *buf
	token := append(append([]byte{'"'}, NewToken(tok.Str, next).AppendTo(nil)...), '"')
	n := -1
	if length >= 0 {
		n = int(length) - len(tok.Raw) + len(token)
	}
	writeHeader(w, resp.Header, n)
	_, _ = w.Write(head[:tok.Index])
	_, _ = w.Write(token)
	_, _ = w.Write(head[tok.Index+len(tok.Raw):])
	copied, err := io.CopyBuffer(w, rd, head[:cap(head)])
	abortOn(err)
	spliceBytes.WithLabelValues(fl.endpoint).Observe(float64(len(head)) + float64(copied))
	return nil
}

// abortOn ends the response abruptly when relaying a body failed half-way,
// so that the client sees a broken connection, never a body that looks whole
// (a chunked body would otherwise end cleanly).
func abortOn(err error) {
	if err != nil {
		panic(http.ErrAbortHandler)
	}
}

// readHead reads rd into the empty buffer buf until the top-level string
// member key is complete in it, rd ends (ended), or buf is full. tok.Index is
// 0 when the member was not found.
func readHead(rd io.Reader, buf *[]byte, key string) (tok gjson.Result, ended bool, err error) {
	for b := *buf; len(b) < cap(b); b = *buf {
		n, err := rd.Read(b[len(b):cap(b)])
		*buf = b[:len(b)+n]
		if err == io.EOF {
			return gjson.Result{}, true, nil
		}
		if err != nil {
			return gjson.Result{}, false, err
		}
		head := *buf
		start := firstNonSpace(head)
		if start < 0 {
			continue
		}
		if head[start] != '{' {
			return gjson.Result{}, false, nil // not a sync body: read it all
		}
		tok = gjson.GetBytes(head[start:], key)
		// Complete only if something follows it: a value cut at the end of the
		// head may look whole.
		if tok.Type == gjson.String && tok.Index > 0 && start+tok.Index+len(tok.Raw) < len(head) {
			tok.Index += start
			return tok, false, nil
		}
	}
	return gjson.Result{}, false, nil
}

// writeSpliced answers 200 with the (decoded) body spliced for sec and next,
// or, when it is not a sync body we understand, with body as it is.
func writeSpliced(w http.ResponseWriter, r *http.Request, fl *flavour, upstream http.Header, body []byte, sec Section, next int64) {
	spliced, err := fl.splice(body, sec, next)
	if err != nil {
		slog.WarnContext(r.Context(), "sync body passed through unspliced", "endpoint", fl.endpoint, "err", err)
		writeBody(w, upstream, body)
		return
	}
	spliceBytes.WithLabelValues(fl.endpoint).Observe(float64(len(body)))
	writeHeader(w, upstream, spliced.Len())
	_, _ = spliced.WriteTo(w)
}

// roundTrip sends r to the homeserver under ctx: same method and path, the
// query with the changes in set (an empty value drops the parameter), body as
// the request body, acceptEncoding as Accept-Encoding.
func (p *Proxy) roundTrip(ctx context.Context, r *http.Request, body []byte, set map[string]string, acceptEncoding, endpoint string) (*http.Response, error) {
	caller := p.Auth.Caller(r)
	set["access_token"] = "" // sent as a header by SetHeaders
	target := r.URL.EscapedPath()
	if q := rewriteQuery(r.URL.RawQuery, set); q != "" {
		target += "?" + q
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, p.Homeserver.URL(target), rd)
	if err != nil {
		return nil, err
	}
	caller.SetHeaders(req)
	for _, h := range []string{"Accept", "Content-Type"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	start := time.Now()
	resp, err := p.Homeserver.HTTPClient().Do(req)
	if err == nil {
		upstreamDuration.WithLabelValues(endpoint).Observe(time.Since(start).Seconds())
	}
	return resp, err
}

// readUpstream reads a 200 body, decompressing gzip, into a pooled buffer
// (put back by the caller).
func readUpstream(resp *http.Response) (*[]byte, error) {
	raw, err := readBody(resp.Body, resp.ContentLength, MaxUpstreamBody)
	if err != nil || !strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		return raw, err
	}
	defer putBuffer(raw)
	return gunzip(*raw, MaxUpstreamBody)
}

// forwardEncoding is the Accept-Encoding sent upstream for a body we may
// splice: gzip if the client takes it (so a body we cannot read never comes
// back), else identity.
func forwardEncoding(clientAccepts string) string {
	for _, part := range strings.Split(clientAccepts, ",") {
		name, params, _ := strings.Cut(part, ";")
		name = strings.TrimSpace(name)
		if !strings.EqualFold(name, "gzip") && name != "*" {
			continue
		}
		if q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v == 0 {
				continue
			}
		}
		return "gzip"
	}
	return "identity"
}

// rewriteQuery returns raw with the parameters named in set given their new
// value (dropped when it is ""); every other byte is kept as the client sent it.
func rewriteQuery(raw string, set map[string]string) string {
	if raw == "" {
		return ""
	}
	var b strings.Builder
	b.Grow(len(raw))
	for pair := range strings.SplitSeq(raw, "&") {
		key, _, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(key)
		if value, ok := set[name]; err == nil && ok {
			if value == "" {
				continue
			}
			pair = key + "=" + url.QueryEscape(value)
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	return b.String()
}

// hopHeaders are the hop-by-hop headers a proxy does not relay.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// writeHeader answers 200 with Content-Length n (none when n < 0: the body
// goes chunked) and the upstream headers (those of a decoded body: no
// Content-Encoding; no hop-by-hop headers; upstream values replace ours, e.g.
// CORS).
func writeHeader(w http.ResponseWriter, upstream http.Header, n int) {
	dst := w.Header()
	for k, vs := range upstream {
		dst[k] = vs
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
	dst.Del("Content-Encoding")
	dst.Del("Content-Length")
	if n >= 0 {
		dst.Set("Content-Length", strconv.Itoa(n))
	}
	if dst.Get("Content-Type") == "" {
		dst.Set("Content-Type", "application/json")
	}
	w.WriteHeader(http.StatusOK)
}

// writeBody answers 200 with body and the upstream headers.
func writeBody(w http.ResponseWriter, upstream http.Header, body []byte) {
	writeHeader(w, upstream, len(body))
	_, _ = w.Write(body)
}

// relay writes an upstream answer as it came: status, headers, body.
func relay(w http.ResponseWriter, resp *http.Response) {
	dst := w.Header()
	for k, vs := range resp.Header {
		dst[k] = vs
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	buf := getBuffer(32 << 10)
	defer putBuffer(buf)
	_, err := io.CopyBuffer(w, resp.Body, (*buf)[:cap(*buf)])
	abortOn(err)
}
