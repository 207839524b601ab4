package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/storage"
)

// DefaultRetention is how far back a first sync shows notifications when
// Options.Retention is zero (config sync.retention's default).
const DefaultRetention = 168 * time.Hour

// DefaultLimit is how many notifications one response covers at most when
// Options.Limit is zero; the rest come with the next sync.
const DefaultLimit = 500

// Entry is what a client learns about one of its user's 3PIDs.
type Entry struct {
	// Deleted is true when the binding was deleted on the identity server,
	// false when another user took the 3PID over.
	Deleted bool `json:"deleted"`
	// MXID is the user the 3PID is now bound to (takeover) or was bound to
	// (deletion); empty for a deletion that named nobody.
	MXID string `json:"mxid,omitempty"`
	// Medium is "email" or "msisdn".
	Medium string `json:"medium"`
}

// Section is the "threepids" section of a sync response, keyed by address.
// When an address has several notifications in the range, the latest wins.
type Section map[string]Entry

// AppendJSON appends the section as a JSON object (keys sorted) to dst.
func (s Section) AppendJSON(dst []byte) []byte {
	data, err := json.Marshal(s)
	if err != nil { // strings and bools always encode
		panic(fmt.Sprintf("encode threepids section: %v", err))
	}
	return append(dst, data...)
}

// Options configure a Stream.
type Options struct {
	// Retention is how far back a section reaches: a first sync (no token)
	// shows the notifications of the last Retention, and a position older than
	// that shows no more; zero means DefaultRetention.
	Retention time.Duration
	// Limit bounds the notifications one section covers; zero means DefaultLimit.
	Limit int
	// Clock returns the current time; nil means time.Now.
	Clock clock.Func
}

// Stream serves users' 3PID notification streams: sections for sync
// responses and wake-ups for long-polls. It is safe for concurrent use.
type Stream struct {
	store storage.Store
	opts  Options
	hub   *Hub
	stop  context.CancelFunc
	fresh upToDate
}

// New returns a Stream over store, subscribed to its wake-ups until Close is
// called or the store closes.
func New(store storage.Store, opts Options) *Stream {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Limit <= 0 {
		opts.Limit = DefaultLimit
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Stream{store: store, opts: opts, hub: NewHub(), stop: stop}
	store.Subscribe(ctx, s.wake)
	return s
}

// wake is the store subscription's callback.
func (s *Stream) wake(userID string) {
	s.fresh.forget(userID)
	s.hub.Wake(userID)
}

// Close ends the subscription: nobody is woken any more.
func (s *Stream) Close() { s.stop() }

// Drain ends the current and later watches with cause ErrDraining (the
// server shuts down): long-polls answer at once, Wait with what it has.
func (s *Stream) Drain() { s.hub.Drain() }

// Hub returns the stream's wake-up hub.
func (s *Stream) Hub() *Hub { return s.hub }

// Section returns userID's section for a client at tok and the position to
// put into the next token:
//
//   - tok with a position: the notifications after it, but none older than
//     Retention: a client away for longer (or a forged position 0) sees what
//     a first sync shows, never the whole history;
//   - a plain upstream token: none, and the current position (a client that
//     synced before threepidd was deployed starts from "now");
//   - the zero Token (a first sync): the notifications of the last Retention.
//
// The same tok always yields the same notifications (plus newer ones), so a
// client that retries a request sees them again; the next position covers
// exactly what was returned, so each notification reaches a sync stream once.
// A client that is up to date usually costs no query: the answer "nothing
// after this position" is remembered until the user's next wake-up.
func (s *Stream) Section(ctx context.Context, userID string, tok Token) (Section, int64, error) {
	if tok.HasPos {
		// Positions commit in order: every notification read, and every
		// position below it, has committed, so the last one read is a safe next
		// position. With none, the client's position stays.
		if s.fresh.has(userID, tok.Pos, s.opts.Clock.Now()) {
			return nil, tok.Pos, nil
		}
		seq := s.fresh.seq()
		ns, err := s.since(ctx, userID, tok.Pos, s.notBefore())
		if err != nil {
			return nil, 0, err
		}
		if len(ns) == 0 {
			s.fresh.mark(userID, tok.Pos, seq, s.opts.Clock.Now())
			return nil, tok.Pos, nil
		}
		return section(ns), ns[len(ns)-1].StreamID, nil
	}
	// Read "now" first: every notification up to it is visible to the query
	// that follows.
	now, err := s.store.MaxStreamID(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("sync section: %w", err)
	}
	if tok.Upstream != "" {
		return nil, now, nil
	}
	ns, err := s.since(ctx, userID, 0, s.notBefore())
	if err != nil {
		return nil, 0, err
	}
	next := now
	if n := len(ns); n == s.opts.Limit || (n > 0 && ns[n-1].StreamID > now) {
		next = ns[n-1].StreamID
	}
	return section(ns), next, nil
}

// notBefore is the time (ms) of the oldest notification a section shows.
func (s *Stream) notBefore() int64 {
	return s.opts.Clock.Now().Add(-s.opts.Retention).UnixMilli()
}

// since reads userID's notifications after position `after` and not older
// than notBefore, at most Limit.
func (s *Stream) since(ctx context.Context, userID string, after, notBefore int64) ([]storage.Notification, error) {
	ns, err := s.store.NotificationsSince(ctx, userID, after, notBefore, s.opts.Limit)
	if err != nil {
		return nil, fmt.Errorf("sync section: %w", err)
	}
	return ns, nil
}

// section folds notifications, oldest first, into a section (nil when none).
func section(ns []storage.Notification) Section {
	if len(ns) == 0 {
		return nil
	}
	sec := make(Section, len(ns))
	for _, n := range ns {
		sec[n.Address] = Entry{Deleted: n.Deleted, MXID: n.MXID, Medium: n.Medium}
	}
	return sec
}

// Watch returns a context that ends when a notification for userID is
// appended (cause [ErrWoken]) or when ctx ends, and a function that stops
// watching; call it when done. Call Watch before reading the section, so that
// a notification appended in between is not missed:
//
//	wctx, stop := stream.Watch(ctx, userID)
//	defer stop()
//	sec, next, err := stream.Section(ctx, userID, tok)
//	if err == nil && len(sec) == 0 {
//		<-wctx.Done() // or hand wctx to your own long-poll
//	}
func (s *Stream) Watch(ctx context.Context, userID string) (context.Context, context.CancelFunc) {
	return s.hub.Watch(ctx, userID)
}

// Wait is Section that long-polls: it returns as soon as the section is
// non-empty, or with an empty section (and no error) when ctx ends first, ctx's
// deadline being the client's timeout, or the stream drains (Drain). The position returned is the one to put
// into the next token. Errors come from the store only.
func (s *Stream) Wait(ctx context.Context, userID string, tok Token) (Section, int64, error) {
	for {
		wctx, stop := s.hub.Watch(ctx, userID)
		sec, next, err := s.Section(ctx, userID, tok)
		if err != nil || len(sec) > 0 {
			stop()
			return sec, next, err
		}
		<-wctx.Done()
		stop()
		if ctx.Err() != nil || errors.Is(context.Cause(wctx), ErrDraining) {
			return nil, next, nil
		}
		// Woken: whatever arrived is after next.
		tok = NewToken(tok.Upstream, next)
	}
}
