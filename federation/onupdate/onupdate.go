// Package onupdate serves POST /_matrix/federation/v1/3pid/onupdate: an
// identity server tells the homeserver that a binding was taken over or
// deleted (the 3PID onupdate proposal). The handler authenticates the request
// (federation.Verifier), the service applies it: binding records of local users
// who lost the 3PID are dropped and each of them gets a notification in their
// 3PID stream, in one transaction, at most once per signed request.
package onupdate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/threepidd/threepidd/api"
	"github.com/threepidd/threepidd/bindings"
	"github.com/threepidd/threepidd/config"
	"github.com/threepidd/threepidd/federation"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/ratelimit"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// MaxBody bounds an onupdate body (DESIGN.md: 64 KiB).
const MaxBody = 64 << 10

var results = metrics.Factory.NewCounterVec(metrics.CounterOpts("onupdate_requests_total",
	"onupdate requests by result: applied, no-op, unauthorised, forbidden, invalid, rate_limited, error."), []string{"result"})

// Update is a parsed, canonical onupdate body.
type Update struct {
	Medium  string
	Address string
	Deleted bool
	// MXID is empty for a deletion that names nobody.
	MXID string
}

// Service applies updates to the store.
type Service struct {
	Store  storage.Store
	Events bindings.Events
	Now    func() time.Time
}

// Result says what an update did.
type Result struct {
	// Replay is true when the same signed request was applied before.
	Replay bool
	// Notified lists the local users who lost a binding.
	Notified []string
}

// Apply applies u, sent by identity server is with the given raw body, in one
// transaction: replays (same origin, same body) change nothing.
func (s *Service) Apply(ctx context.Context, is config.IdentityServer, body []byte, u Update) (Result, error) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	sum := sha256.Sum256(append([]byte(is.ServerName+"\x00"), body...))
	var res Result
	err := s.Store.WithTx(ctx, func(q storage.Querier) error {
		res = Result{}
		fresh, err := q.RememberRequest(ctx, hex.EncodeToString(sum[:]), now.UnixMilli())
		if err != nil {
			return fmt.Errorf("remember onupdate: %w", err)
		}
		if !fresh {
			res.Replay = true
			return nil
		}
		recorded, err := q.BindingsOf3PID(ctx, u.Medium, u.Address, is.ServerName)
		if err != nil {
			return fmt.Errorf("load bindings: %w", err)
		}
		for _, b := range recorded {
			if !lost(u, b.UserID) {
				continue
			}
			if err := bindings.DropAndNotify(ctx, q, s.Events, b, u.Deleted, u.MXID, is.ServerName, now.UnixMilli()); err != nil {
				return err
			}
			res.Notified = append(res.Notified, b.UserID)
		}
		return nil
	})
	return res, err
}

// lost reports whether the local user holding a binding lost it by u: a
// deletion naming them (or naming nobody), or a takeover by someone else.
func lost(u Update, holder string) bool {
	if u.Deleted {
		return u.MXID == "" || u.MXID == holder
	}
	return u.MXID != holder
}

// Handler serves the endpoint.
type Handler struct {
	Service  *Service
	Verifier *federation.Verifier
	// PerServer limits each identity server (nil: unlimited).
	PerServer *ratelimit.Limiter
}

// Register adds the route.
func (h *Handler) Register(r *mux.Router) {
	r.Handle(federation.OnUpdatePath, mxerr.Handler(h.serve)).Methods(http.MethodPost)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	is, body, err := h.Verifier.Verify(r, MaxBody)
	if err != nil {
		results.WithLabelValues(failureLabel(err)).Inc()
		return err
	}
	if ok, wait := h.PerServer.Allow(is.ServerName); !ok {
		results.WithLabelValues("rate_limited").Inc()
		return mxerr.LimitExceeded.WithRetryAfter(wait)
	}
	u, err := Parse(body)
	if err != nil {
		results.WithLabelValues("invalid").Inc()
		return err
	}
	res, err := h.Service.Apply(r.Context(), is, body, u)
	if err != nil {
		results.WithLabelValues("error").Inc()
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

// body is the wire form; pointers tell absent from zero.
type body struct {
	Threepid *string `json:"threepid"`
	Medium   *string `json:"medium"`
	Deleted  *bool   `json:"deleted"`
	MXID     *string `json:"mxid"`
}

// Parse checks an onupdate body: threepid and deleted present (400
// M_MISSING_PARAM otherwise), deleted a boolean, mxid a valid user ID (400
// M_INVALID_PARAM) and required for updates, medium optional: "email" or
// "msisdn", inferred when absent (contains "@": email; digits: msisdn). The
// address is canonical.
func Parse(data []byte) (Update, error) {
	var b body
	if err := mxerr.UnmarshalObject(data, &b); err != nil {
		return Update{}, err
	}
	if err := api.Required("threepid", b.Threepid != nil, "deleted", b.Deleted != nil); err != nil {
		return Update{}, err
	}
	u := Update{Deleted: *b.Deleted}
	if b.MXID != nil && (*b.MXID != "" || !u.Deleted) {
		if !threepid.ValidUserID(*b.MXID) {
			return Update{}, mxerr.InvalidParam.WithMessage("mxid is not a valid user ID")
		}
		u.MXID = *b.MXID
	}
	if !u.Deleted && u.MXID == "" {
		return Update{}, mxerr.MissingParam.WithMessage("Missing parameter: mxid (required when deleted is false)")
	}
	address := strings.TrimSpace(*b.Threepid)
	medium := threepid.InferMedium(address)
	if b.Medium != nil {
		medium = *b.Medium
		if medium != threepid.MediumEmail && medium != threepid.MediumMSISDN {
			return Update{}, mxerr.InvalidParam.WithMessage("medium must be email or msisdn")
		}
	}
	canonical, err := threepid.CanonicalAddress(medium, address)
	if err != nil {
		return Update{}, mxerr.InvalidParam.WithMessage("threepid is not a valid email or msisdn address")
	}
	u.Medium, u.Address = medium, canonical
	return u, nil
}
