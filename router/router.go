// Package router is the router every HTTP handler of threepidd registers on
// (gorilla/mux), with JSON 404/405 answers, and the outer middleware: CORS and
// OPTIONS, panic recovery, metrics by route template. Handler packages
// (clientapi, adminapi, federationapi, sync/proxy) register their routes with
// a Register(*mux.Router) method; package server puts them together.
package router

import (
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

// NewRouter returns a router whose unknown paths answer 404 M_UNRECOGNIZED and
// wrong methods 405 M_UNRECOGNIZED. Register routes on it, then serve it
// through [Wrap].
func NewRouter() *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = mxerr.Handler(func(http.ResponseWriter, *http.Request) error { return mxerr.Unrecognized })
	r.MethodNotAllowedHandler = mxerr.Handler(func(http.ResponseWriter, *http.Request) error { return mxerr.MethodNotAllowed })
	// The matched route's template labels the request's metrics: Wrap's
	// writer takes it.
	r.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if sw, ok := w.(*statusWriter); ok {
				if route := mux.CurrentRoute(req); route != nil {
					if tpl, err := route.GetPathTemplate(); err == nil {
						sw.route = tpl
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
		id := r.Header.Get(requestid.Header)
		if !requestid.Valid(id) || trusted == nil || !trusted(r) {
			id = requestid.New()
		}
		r = r.WithContext(requestid.NewContext(r.Context(), id))
		sw := &statusWriter{ResponseWriter: w, route: "unmatched"}
		header := sw.Header()
		header[requestIDKey] = []string{id}
		setCORS(header)
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
			requestsTotal.WithLabelValues(sw.route, methodLabel(r.Method), statusLabel(sw.statusOr200())).Inc()
			requestDuration.WithLabelValues(sw.route).Observe(took.Seconds())
			if slog.Default().Enabled(r.Context(), slog.LevelDebug) { // spare building the line's arguments
				slog.DebugContext(r.Context(), "request", "method", r.Method, "route", sw.route, "status", sw.statusOr200(), "ms", took.Milliseconds())
			}
		}()
		if r.Method == http.MethodOptions {
			mxerr.WriteJSON(sw, http.StatusOK, struct{}{})
			return
		}
		h.ServeHTTP(sw, r)
	})
}

// setCORS sets the headers the client-server spec asks of every response.
// Every response shares the same value slices (net/http and our handlers
// replace header values, never write into them), and the keys are in
// canonical form: nothing is allocated or canonicalised per request.
func setCORS(h http.Header) {
	for _, c := range corsHeaders {
		h[c.key] = c.value
	}
}

// corsHeaders are the CORS headers of every response.
var corsHeaders = []struct {
	key   string
	value []string
}{
	{"Access-Control-Allow-Origin", []string{"*"}},
	{"Access-Control-Allow-Methods", []string{"GET, POST, PUT, DELETE, OPTIONS"}},
	{"Access-Control-Allow-Headers", []string{"X-Requested-With, Content-Type, Authorization"}},
}

// requestIDKey is requestid.Header in canonical form.
var requestIDKey = http.CanonicalHeaderKey(requestid.Header)

// statusWriter records the status a handler wrote, and the template of the
// route that matched ("unmatched" when none did).
type statusWriter struct {
	http.ResponseWriter
	route  string
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

// methodLabel is the method as a metric label: the methods of HTTP and
// WebDAV's few, else "other", so that a client sending made-up methods
// cannot create series without bound.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "other"
}

// statusLabels are the status codes as metric labels, made once.
var statusLabels = func() (labels [600]string) {
	for code := range labels {
		labels[code] = strconv.Itoa(code)
	}
	return labels
}()

// statusLabel is strconv.Itoa(code), without allocating for a valid code.
func statusLabel(code int) string {
	if code >= 0 && code < len(statusLabels) {
		return statusLabels[code]
	}
	return strconv.Itoa(code)
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
