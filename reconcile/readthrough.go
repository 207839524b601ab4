package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"

	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/homeserver"
)

// Read-through tuning.
const (
	// knownUsers bounds the users remembered in memory as imported; past it
	// the least recently seen are forgotten, and their next request asks the
	// store once (a primary-key lookup), not the homeserver.
	knownUsers = 200_000
	// readThroughTimeout bounds one user's import on the request path.
	readThroughTimeout = 10 * time.Second
	// retryAfter is how long a user whose import failed (or was deferred)
	// is not tried again, so that a homeserver that is down is not asked on
	// every request.
	retryAfter = 30 * time.Second
	// failedUsers bounds the users remembered as failed.
	failedUsers = 100_000
)

// ReadThrough imports a user's homeserver 3PIDs the first time threepidd
// sees the user (auth.Auth calls FirstSeen after whoami), so that an address
// given at registration is listed by GET /account/3pid from the user's first
// request on. It follows the rules of a reconcile pass for that one account,
// but only imports: writing back and deactivation cleanups are the pass's.
//
// After a user's first request it costs one lookup in a bounded in-memory
// set. The store remembers who was imported (also by `threepidd import` and
// every pass), so a restart or another instance does not import everyone
// again; concurrent first requests of one user import once. A user the
// homeserver does not know (or has deactivated) is simply marked seen. A
// failure is logged and the request goes on; the user is tried again after
// retryAfter.
type ReadThrough struct {
	r      *Reconciler
	known  *lru.Cache[string, struct{}]
	failed *expirable.LRU[string, struct{}]
	group  singleflight.Group
}

// NewReadThrough returns the read-through of r's homeserver.
func NewReadThrough(r *Reconciler) *ReadThrough {
	known, err := lru.New[string, struct{}](knownUsers)
	if err != nil {
		panic(err) // only for a size <= 0
	}
	return &ReadThrough{r: r, known: known, failed: expirable.NewLRU[string, struct{}](failedUsers, nil, retryAfter)}
}

// FirstSeen imports userID's homeserver 3PIDs unless that was done before.
func (rt *ReadThrough) FirstSeen(ctx context.Context, userID string) {
	if rt.known.Contains(userID) || rt.failed.Contains(userID) {
		return
	}
	// One import per user at a time, on behalf of every request waiting for
	// it: it must not end when the first of them goes away.
	_, _, _ = rt.group.Do(userID, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readThroughTimeout)
		defer cancel()
		outcome, err := rt.importUser(ctx, userID)
		readThroughs.WithLabelValues(outcome).Inc()
		switch {
		case err != nil:
			slog.WarnContext(ctx, "read-through: could not import the homeserver's 3PIDs of a user; tried again later",
				"user_id", userID, "err", err)
			rt.failed.Add(userID, struct{}{})
		case outcome == "deferred":
			rt.failed.Add(userID, struct{}{})
		default:
			rt.known.Add(userID, struct{}{})
		}
		return nil, nil
	})
}

// importUser imports userID's homeserver 3PIDs and marks the user seen,
// unless the store says that was done; it returns the outcome for the metric.
func (rt *ReadThrough) importUser(ctx context.Context, userID string) (string, error) {
	r := rt.r
	seen, err := r.Store.UserSeen(ctx, userID)
	switch {
	case err != nil:
		return "error", err
	case seen:
		return "seen", nil
	}
	u, err := r.Admin.User(ctx, userID)
	if errors.Is(err, homeserver.ErrUserNotFound) || (err == nil && u.Deactivated) {
		return "unknown", r.Store.MarkUsersSeen(ctx, []string{userID}, r.Clock.Now().UnixMilli())
	}
	if err != nil {
		return "error", err
	}
	if pending, err := events.MirrorPending(ctx, r.Store, userID); err != nil || pending {
		return "deferred", err
	}
	ours, err := r.ours(ctx, []string{userID})
	if err != nil {
		return "error", err
	}
	var rep Report
	p, err := r.plan(ctx, u, ours[userID], &rep)
	if err != nil {
		return "error", err
	}
	p.restores = nil // the pass's job
	if err := r.apply(ctx, []plan{p}, &rep); err != nil {
		return "error", err
	}
	for _, c := range rep.Conflicts {
		slog.WarnContext(ctx, "read-through: a homeserver 3PID of a user is another account's", "user_id", c.UserID,
			"medium", c.Medium, "other", c.Other, "reason", c.Reason)
	}
	if rep.Imported == 0 {
		return "nothing", nil
	}
	return "imported", nil
}
