package server

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/mxerr"
	"github.com/threepidd/threepidd/storage"
)

const (
	// probeTimeout bounds each check of /health and /ready.
	probeTimeout = 2 * time.Second
	// homeserverCheckTTL is how long a homeserver check answers /ready, so
	// that load balancers polling every second do not each reach the
	// homeserver.
	homeserverCheckTTL = 5 * time.Second
	// homeserverCheckInterval is how often the homeserver is checked without
	// a /ready request, to keep threepidd_homeserver_up current.
	homeserverCheckInterval = 15 * time.Second
)

// readiness answers GET /ready: 200 while the database answers a ping and
// the homeserver answered its last check, 503 naming what is down otherwise.
// GET /health, the liveness check, is the process and its database only.
type readiness struct {
	store storage.Store
	hs    *homeserver.Client

	mu      sync.Mutex // held during a check: concurrent probes wait for its result
	checked time.Time
	hsErr   error
}

// homeserver returns the result of the last homeserver check, checking again
// when it is older than homeserverCheckTTL.
func (rd *readiness) homeserver(ctx context.Context) error {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if time.Since(rd.checked) < homeserverCheckTTL {
		return rd.hsErr
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	rd.hsErr = rd.hs.CheckReachable(ctx)
	rd.checked = time.Now()
	if rd.hsErr != nil {
		slog.WarnContext(ctx, "ready: homeserver unreachable", "err", rd.hsErr)
	}
	return rd.hsErr
}

// serve is the /ready handler.
func (rd *readiness) serve(w http.ResponseWriter, r *http.Request) error {
	if err := ping(r.Context(), rd.store); err != nil {
		return err
	}
	if rd.homeserver(r.Context()) != nil {
		return &mxerr.Error{Status: http.StatusServiceUnavailable, ErrCode: "M_UNKNOWN", Message: "homeserver unreachable"}
	}
	mxerr.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// Run implements worker: it checks the homeserver every
// homeserverCheckInterval (at once, then on).
func (rd *readiness) Run(ctx context.Context) {
	t := time.NewTicker(homeserverCheckInterval)
	defer t.Stop()
	for {
		_ = rd.homeserver(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ping checks that the database answers within probeTimeout: a 503 "database
// unreachable" when it does not.
func ping(ctx context.Context, store storage.Store) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := store.Ping(ctx); err != nil {
		slog.WarnContext(ctx, "database unreachable", "err", err)
		return &mxerr.Error{Status: http.StatusServiceUnavailable, ErrCode: "M_UNKNOWN", Message: "database unreachable"}
	}
	return nil
}
