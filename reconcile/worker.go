package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/threepidd/threepidd/internal/lease"
)

// Bounds of a Worker's sleep between two looks at the schedule: a pass
// another instance left unfinished is taken over within maxWait.
const (
	maxWait = time.Minute
	minWait = 100 * time.Millisecond
)

// Worker runs the pass in the background whenever it is due (every
// Reconciler.Interval from the end of the last one, the first an interval
// after the store first saw the job), continuing a pass under way first. On
// several instances sharing a database, one runs each pass.
type Worker struct {
	R *Reconciler
}

// Run runs due passes until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	for {
		rep, err := w.R.Run(ctx, false)
		wait := min(w.R.Interval, maxWait)
		var busy *lease.BusyError
		var notDue *NotDueError
		switch {
		case err == nil:
			slog.InfoContext(ctx, "reconcile pass finished", "accounts", rep.Users, "imported", rep.Imported,
				"mirrored", rep.Mirrored, "deactivated", rep.Deactivated, "deferred", rep.Deferred, "conflicts", rep.ConflictCount)
			for _, c := range rep.Conflicts {
				slog.WarnContext(ctx, "reconcile: conflict", "user_id", c.UserID, "medium", c.Medium, "other", c.Other, "reason", c.Reason)
			}
		case errors.As(err, &notDue):
			wait = time.Until(notDue.Next)
		case errors.As(err, &busy):
			wait = time.Until(busy.Until)
		case ctx.Err() != nil:
			return
		default:
			slog.WarnContext(ctx, "reconcile pass failed; the next attempt continues where it stopped", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(max(wait, minWait), maxWait)):
		}
	}
}
