// Package router is the router every HTTP handler of threepidd registers on
// (gorilla/mux), with JSON 404/405 answers, and the outer middleware: CORS and
// OPTIONS, panic recovery, metrics by route template. Handler packages
// (clientapi, adminapi, federationapi, sync/proxy) register their routes with
// a Register(*mux.Router) method; package server puts them together.
package router

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/threepidd/threepidd/internal/requestid"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/mxerr"
)

var (
	requestsTotal = metrics.Factory.NewCounterVec(metrics.CounterOpts("http_requests_total",
		"HTTP requests by route template, method and status."), []string{"route", "method", "status"})
	requestDuration = metrics.Factory.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metrics.Namespace, Name: "http_request_duration_seconds",
		Help:    "HTTP request latency by route template.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
	panicsTotal = metrics.Factory.NewCounter(metrics.CounterOpts("http_panics_total", "Handler panics recovered."))
)

type routeKey struct{}

// routeLabel is filled by the router with the matched route template.
type routeLabel struct{ name string }

// NewRouter returns a router whose unknown paths answer 404 M_UNRECOGNIZED and
// wrong methods 405 M_UNRECOGNIZED. Register routes on it, then serve it
// through [Wrap].
func NewRouter() *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = mxerr.Handler(func(http.ResponseWriter, *http.Request) error { return mxerr.Unrecognized })
	r.MethodNotAllowedHandler = mxerr.Handler(func(http.ResponseWriter, *http.Request) error { return mxerr.MethodNotAllowed })
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if l, ok := req.Context().Value(routeKey{}).(*routeLabel); ok {
				if route := mux.CurrentRoute(req); route != nil {
					if tpl, err := route.GetPathTemplate(); err == nil {
						l.name = tpl
					}
				}
			}
			next.ServeHTTP(w, req)
		})
	})
	return r
}

// Wrap adds the outer middleware: the request ID, CORS and OPTIONS, panic
// recovery, metrics, and a debug log line per request.
//
// The request ID is the client's X-Request-ID when trusted says its sender
// may set one (a reverse proxy among trusted_proxies; nil: nobody) and it is
// requestid.Valid, else a new one; it is echoed in the answer's X-Request-ID,
// carried by r's context into every log line and outbound request.
func Wrap(h http.Handler, trusted func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		label := &routeLabel{name: "unmatched"}
		id := r.Header.Get(requestid.Header)
		if trusted == nil || !trusted(r) || !requestid.Valid(id) {
			id = requestid.New()
		}
		r = r.WithContext(requestid.NewContext(context.WithValue(r.Context(), routeKey{}, label), id))
		sw := &statusWriter{ResponseWriter: w}
		sw.Header().Set(requestid.Header, id)
		setCORS(sw.Header())
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				panicsTotal.Inc()
				slog.ErrorContext(r.Context(), "handler panic", "path", r.URL.Path, "panic", p)
				if !sw.wrote {
					mxerr.Write(sw, r, mxerr.Unknown)
				}
			}
			took := time.Since(start)
			requestsTotal.WithLabelValues(label.name, r.Method, strconv.Itoa(sw.statusOr200())).Inc()
			requestDuration.WithLabelValues(label.name).Observe(took.Seconds())
			slog.DebugContext(r.Context(), "request", "method", r.Method, "route", label.name, "status", sw.statusOr200(), "ms", took.Milliseconds())
		}()
		if r.Method == http.MethodOptions {
			mxerr.WriteJSON(sw, http.StatusOK, struct{}{})
			return
		}
		h.ServeHTTP(sw, r)
	})
}

// setCORS sets the headers the client-server spec asks of every response.
func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming handlers (the /sync proxy) flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap exposes the underlying writer to http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) statusOr200() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// PathVar returns the decoded path variable name of a route registered on an
// encoded-path router (see [EncodedSubrouter]).
func PathVar(r *http.Request, name string) (string, error) {
	v, err := url.PathUnescape(mux.Vars(r)[name])
	if err != nil {
		return "", mxerr.InvalidParam.WithMessage("%s is not correctly percent-encoded", name)
	}
	return v, nil
}

// EncodedSubrouter returns a subrouter of r that matches routes against the
// percent-encoded path, so that an encoded "/" stays inside its segment
// (room IDs, user IDs and addresses in paths). It has no matchers of its own:
// a path prefix would be inherited by every route and, through gorilla/mux's
// matcher order, turn a wrong method into 404 instead of 405.
func EncodedSubrouter(r *mux.Router) *mux.Router {
	sub := r.NewRoute().Subrouter()
	sub.UseEncodedPath()
	sub.MethodNotAllowedHandler = r.MethodNotAllowedHandler
	return sub
}
