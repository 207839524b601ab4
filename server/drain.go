package server

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// During a shutdown, before the connections left open are closed, each gets
// its next request answered with "Connection: close", so that the client (a
// load balancer's kept-alive connection) closes it itself: a connection the
// server closes can cross a request the client is sending on it, which the
// client then cannot tell from a request that failed half-way (nginx answers
// 502 and does not resend a POST). This lasts until no connection is open,
// or none had a request for drainQuiet (an idle client: closing its
// connections can cross nothing), or drainGrace passed.
const (
	drainQuiet = 100 * time.Millisecond
	drainGrace = 2 * time.Second
)

// drainer counts the open connections and marks the answers of a shutdown.
type drainer struct {
	open     atomic.Int64
	last     atomic.Int64 // when the last request began, Unix nanoseconds
	draining atomic.Bool
	// quiet and grace are drainQuiet and drainGrace (tests change them).
	quiet, grace time.Duration
}

// connState is the http.Server's ConnState hook.
func (d *drainer) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		d.open.Add(1)
	case http.StateClosed, http.StateHijacked:
		d.open.Add(-1)
	}
}

// wrap notes each request and, once draining, asks its client to close the
// connection after the answer.
func (d *drainer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.last.Store(time.Now().UnixNano())
		if d.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// drain marks the answers from now on, closes ln (Serve then knows its
// error is the shutdown's: draining is set first) and waits until no
// connection is open, none had a request for d.quiet, or d.grace passed.
func (d *drainer) drain(ln net.Listener) {
	d.draining.Store(true)
	_ = ln.Close()
	d.last.Store(time.Now().UnixNano())
	deadline := time.Now().Add(d.grace)
	for d.open.Load() > 0 && time.Now().Before(deadline) && time.Since(time.Unix(0, d.last.Load())) < d.quiet {
		time.Sleep(5 * time.Millisecond)
	}
}

// onceCloseListener is a listener whose Close may be called again (by
// http.Server.Shutdown after Shutdown closed it first): only the first
// call closes.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}
