// Package federationapi serves the federation endpoint threepidd owns:
// POST /_matrix/federation/v1/3pid/onupdate, through which an identity server
// tells the homeserver that a binding was taken over or deleted. The handler
// authenticates the request (federation.Verifier), limits each identity
// server, parses the body and hands it to the onupdate service.
package federationapi

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/ratelimit"
)

var results = metrics.Factory.NewCounterVec(metrics.CounterOpts("onupdate_requests_total",
	"onupdate requests by result: applied, no-op, unauthorised, forbidden, invalid, stale, rate_limited, error."), []string{"result"})

func init() {
	// Every series exists from the start, at zero, for dashboards and rate().
	for _, result := range []string{"applied", "no-op", "unauthorised", "forbidden", "invalid", "rate_limited", "error"} {
		results.WithLabelValues(result)
	}
}

// OnUpdate serves the endpoint.
type OnUpdate struct {
	Service  *onupdate.Service
	Verifier *federation.Verifier
	// PerServer limits each identity server (nil: unlimited).
	PerServer *ratelimit.Limiter
}

// Register adds the route.
func (h *OnUpdate) Register(r *mux.Router) {
	r.Handle(onupdate.Path, mxerr.Handler(h.serve)).Methods(http.MethodPost)
}

func (h *OnUpdate) serve(w http.ResponseWriter, r *http.Request) error {
	is, body, err := h.Verifier.Verify(r, onupdate.MaxBody)
	if err != nil {
		label := failureLabel(err)
		results.WithLabelValues(label).Inc()
		// The caller gets a generic answer; why it was refused goes here.
		slog.InfoContext(r.Context(), "onupdate refused", "result", label, "remote", r.RemoteAddr, "err", err)
		return err
	}
	if ok, wait := h.PerServer.Allow(r.Context(), is.ServerName); !ok {
		results.WithLabelValues("rate_limited").Inc()
		return mxerr.LimitExceeded.WithRetryAfter(wait)
	}
	u, err := onupdate.Parse(body)
	if err != nil {
		results.WithLabelValues("invalid").Inc()
		return err
	}
	res, err := h.Service.Apply(r.Context(), is, body, u)
	if err != nil {
		label := "error"
		if errors.Is(err, onupdate.ErrStale) {
			label = "stale"
			slog.InfoContext(r.Context(), "onupdate refused", "result", label, "id_server", is.ServerName, "ts", u.TS, "err", err)
		}
		results.WithLabelValues(label).Inc()
		return err
	}
	switch {
	case res.Replay || len(res.Notified) == 0:
		results.WithLabelValues("no-op").Inc()
	default:
		results.WithLabelValues("applied").Inc()
		slog.InfoContext(r.Context(), "onupdate applied", "id_server", is.ServerName, "medium", u.Medium,
			"deleted", u.Deleted, "users_notified", len(res.Notified))
	}
	mxerr.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// failureLabel is the metric label of a request Verify refused.
func failureLabel(err error) string {
	var me *mxerr.Error
	switch {
	case !errors.As(err, &me):
		return "error"
	case me.Status == http.StatusUnauthorized:
		return "unauthorised"
	case me.Status == http.StatusForbidden:
		return "forbidden"
	default:
		return "invalid"
	}
}
