package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/threepidd/threepidd/auth"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/mxerr"
	tpsync "github.com/threepidd/threepidd/sync"
)

// serveSync is the sync exchange shared by both flavours; reqBody is the
// body to forward (nil for GET).
//
// A long-poll (a token given and timeout > 0) watches for the user's
// notifications while the homeserver holds the request. When one arrives, the
// upstream request is cancelled and the client gets a minimal body: the
// section, and a token whose upstream part is the one the client sent, so no
// upstream event is skipped. When notifications are already pending, the
// homeserver is asked with timeout=0, so the client gets both at once. When
// the stream drains (a shutdown), a long-poll answers the same way at once,
// with whatever section it has (often none).
func (p *Proxy) serveSync(w http.ResponseWriter, r *http.Request, fl *flavour, reqBody []byte) error {
	ctx := r.Context()
	user := auth.UserFrom(ctx)
	userID := user.UserID
	query := r.URL.Query()
	tok, err := tokenParam(query, fl.param)
	if err != nil {
		return err
	}
	timeout, _ := strconv.ParseInt(query.Get("timeout"), 10, 64) // the homeserver judges bad values
	longPoll := query.Get(fl.param) != "" && timeout > 0
	deadline := time.Now().Add(time.Duration(timeout) * time.Millisecond)
	set := map[string]string{fl.param: tok.Upstream}
	woken, draining := false, false
	for {
		// Watch before reading the section, so nothing slips in between. A
		// request that does not long-poll has nothing to watch (wctx nil).
		var wctx context.Context
		stop := context.CancelFunc(func() {})
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
		// The client's own position, kept when its section has to wait: 0 for
		// a first sync, which then shows the same retention window again.
		prev := tok.Pos
		// A plain upstream token means "now" once, as the request began: a
		// notification that wakes the long-poll is after that position, and
		// must not be skipped by reading "now" again.
		if !tok.HasPos {
			tok = tpsync.NewToken(tok.Upstream, next)
		}
		switch {
		case woken && (len(sec) > 0 || draining):
			// A notification, or the shutdown of this instance: answer now
			// (the client's next request goes to another instance).
			stop()
			if sec == nil {
				sec = tpsync.Section{} // "threepids":{}, not null
			}
			writeBody(w, nil, fl.minimal(sec, tpsync.NewToken(tok.Upstream, next)))
			return nil
		case len(sec) > 0 && longPoll:
			// Already pending: the homeserver must not hold the request.
			stop()
			wctx, stop = nil, func() {}
			set["timeout"] = "0"
		case longPoll && !watching: // the deadline passed after a wake for nothing new
			set["timeout"] = "0"
		case woken: // a wake for nothing new: poll on for the time left
			set["timeout"] = strconv.FormatInt(remaining.Milliseconds(), 10)
		}
		err = p.exchange(w, r, user.Caller, wctx, fl, reqBody, set, sec, prev, next)
		draining = wctx != nil && errors.Is(context.Cause(wctx), tpsync.ErrDraining)
		stop()
		if !errors.Is(err, errWoken) {
			return unlessGone(ctx, err)
		}
		woken = true
	}
}

// exchange forwards the request as caller with the query changes in set and
// writes the answer: a 200 body extended with the token for next (and the
// section, if any; see relayBody for when it waits for the next sync, the
// token then keeping prev), anything else as it came. It returns errWoken,
// having written nothing, when wctx (nil: nothing watched) was woken before
// the answer was committed.
//
// The upstream request of a watched exchange has a context of its own,
// cancelled by a wake only until the answer is committed: from the first
// byte sent to the client on, the upstream body is relayed to its end. An
// exchange that watches nothing (timeout=0, most syncs) needs none of that.
func (p *Proxy) exchange(w http.ResponseWriter, r *http.Request, caller homeserver.Caller, wctx context.Context, fl *flavour, reqBody []byte, set map[string]string, sec tpsync.Section, prev, next int64) error {
	reqCtx := r.Context()
	var state atomic.Int32 // 0 open, 1 committed, 2 woken
	if wctx != nil {
		var cancelReq context.CancelFunc
		reqCtx, cancelReq = context.WithCancel(reqCtx)
		defer cancelReq()
		defer context.AfterFunc(wctx, func() {
			if cause := context.Cause(wctx); (errors.Is(cause, tpsync.ErrWoken) || errors.Is(cause, tpsync.ErrDraining)) && state.CompareAndSwap(0, 2) {
				cancelReq()
			}
		})()
	}
	commit := func() bool { return state.CompareAndSwap(0, 1) }

	resp, err := p.roundTrip(reqCtx, r, caller, reqBody, set, forwardEncoding(r.Header.Get("Accept-Encoding")), fl.endpoint)
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
	}
	return p.relayBody(w, r, resp, fl, sec, prev, next, commit)
}

// readOutcome is the answer to give after reading an upstream body with
// error err: errWoken when commit fails (the request was already woken), 502
// for a body that had to be held whole and did not fit in the splice budget,
// the upstream error for another failure, nil when the body may be written.
func readOutcome(r *http.Request, fl *flavour, commit func() bool, err error) error {
	switch {
	case !commit():
		return errWoken
	case errors.Is(err, errOverBudget):
		slog.ErrorContext(r.Context(), "sync body too large to splice: its token is not in its first bytes", "endpoint", fl.endpoint)
		return mxerr.Unavailable.WithMessage("The homeserver's sync response is too large")
	case err != nil:
		return homeserver.UpstreamError(r.Context(), err)
	}
	return nil
}
