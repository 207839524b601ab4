// Package reconcile keeps threepidd's store and a Synapse homeserver's own
// 3PID table in step, both ways, through Synapse's admin API
// (homeserver.admin_token): what Synapse's password reset, 3PID login and
// e-mail pushers read must be what threepidd holds, and what reaches Synapse
// around threepidd (an address given at registration, a deactivation through
// the admin API) must reach threepidd.
//
// Two ways in, one set of rules:
//
//   - [ReadThrough]: the first time threepidd sees a user (any authenticated
//     request, /sync included) it imports that user's homeserver 3PIDs, so an
//     address given at registration is listed from the first request on.
//   - [Reconciler.Run]: a pass over every homeserver account (the background
//     [Worker], every homeserver.reconcile_interval, and `threepidd
//     reconcile`), page by page with bounded memory, resumable where it
//     stopped, one instance at a time (a lease in the store).
//
// For each account the homeserver lists:
//
//   - a 3PID only the homeserver has is imported, without after-events
//     (the homeserver holds it already), unless another account holds it in
//     threepidd, or the homeserver resolves the address to another account
//     (a spelling from before Synapse canonicalised): a conflict, reported by
//     user ID, never guessed;
//   - a 3PID only threepidd has is written back through the mirror
//     ([events.Mirror.Restore]), unless another homeserver account holds it (a
//     conflict); with homeserver.mirror none it is only counted;
//   - an account the homeserver has deactivated gets the cleanup of a
//     deactivation through threepidd (unbind at the identity servers, remove
//     the 3PIDs) when threepidd still holds anything of it;
//   - an account with mirror work still queued is left for the next pass:
//     until the mirror ran, the homeserver's list may still hold what the
//     user just removed.
//
// A second pass over unchanged data changes nothing.
package reconcile

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/importer"
	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/internal/lease"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// JobName names the pass in the store's jobs.
const JobName = "reconcile"

// Defaults of a Reconciler.
const (
	// DefaultPageSize is how many accounts one listing call and one
	// transaction cover.
	DefaultPageSize = 500
	// DefaultParallel is how many accounts are read from the admin API at once.
	DefaultParallel = 8
	// Lease is how long a holder keeps the pass without renewing it; it is
	// renewed after every page.
	Lease = 5 * time.Minute
	// maxReported bounds the conflicts a report keeps (all are counted).
	maxReported = 10_000
	// maxPages bounds the listing loop against a homeserver whose next_token never ends.
	maxPages = 10_000_000
)

// Deactivator runs the cleanup of a deactivation (account.Service.DeactivateUser).
type Deactivator interface {
	DeactivateUser(ctx context.Context, userID string) (string, error)
}

// Reconciler compares threepidd's store with a Synapse homeserver's 3PIDs.
type Reconciler struct {
	Store storage.Store
	Admin *homeserver.SynapseAdmin
	// Mirror writes back what only threepidd holds; nil (homeserver.mirror
	// none): such 3PIDs are counted, not written.
	Mirror      *events.Mirror
	Deactivator Deactivator
	// Interval is the time between two passes (homeserver.reconcile_interval).
	Interval time.Duration
	// Holder names this instance in the lease; "" picks host/pid/random.
	Holder string
	// Progress receives a line per page; nil: none.
	Progress io.Writer
	// PageSize and Parallel default to DefaultPageSize and DefaultParallel.
	PageSize, Parallel int
	Clock              clock.Func
}

// Conflict is a 3PID the two sides give to different accounts.
type Conflict struct {
	// UserID is the account the pass was looking at.
	UserID          string
	Medium, Address string
	// Other is the account the other side gives it to.
	Other  string
	Reason string
}

// Conflict reasons.
const (
	ReasonHeldInThreepidd  = "the homeserver gives it to this account, threepidd to another"
	ReasonHeldOnHomeserver = "threepidd gives it to this account, the homeserver to another"
	ReasonOtherSpelling    = "the homeserver holds it in another spelling, and gives the address to another account"
)

// Report is what a pass (or the part of it this run made) found and did.
type Report struct {
	// Resumed is true when the run continued a pass at a cursor.
	Resumed bool
	// Finished is true when the pass reached the end of the listing.
	Finished bool
	// Users is how many accounts were compared.
	Users int
	// Repairs by kind.
	Imported, Mirrored, Deactivated int
	// NotMirrored counts 3PIDs only threepidd holds, left so (mirror none).
	NotMirrored int
	// Deferred counts accounts left to the next pass (mirror work queued).
	Deferred int
	// ConflictCount counts every conflict; Conflicts keeps the first maxReported.
	ConflictCount int
	Conflicts     []Conflict
	Rejected      []importer.Rejected
}

// Repairs is how many changes the pass made.
func (r Report) Repairs() int { return r.Imported + r.Mirrored + r.Deactivated }

func (r *Report) conflict(c Conflict) {
	r.ConflictCount++
	conflictsFound.Inc()
	if len(r.Conflicts) < maxReported {
		r.Conflicts = append(r.Conflicts, c)
	}
}

// NotDueError is returned by Run, unforced, when no pass is due.
type NotDueError struct {
	Next time.Time
}

func (e *NotDueError) Error() string {
	return "the next reconcile pass is due " + e.Next.UTC().Format(time.RFC3339)
}

func (r *Reconciler) holder() string { return lease.Holder(r.Holder) }

func (r *Reconciler) progress(format string, args ...any) {
	if r.Progress != nil {
		fmt.Fprintf(r.Progress, "reconcile: "+format+"\n", args...)
	}
}

// Run makes a pass, or continues the one under way at its cursor. force runs
// it even if it is not due (the command); without it, a pass that is not due
// returns a *NotDueError. Another instance holding the pass is a *lease.BusyError.
// On an error or an interruption the cursor stays where the last page
// finished, the lease is given up, and the next run continues there.
func (r *Reconciler) Run(ctx context.Context, force bool) (rep Report, err error) {
	holder := r.holder()
	now := r.Clock.Now()
	job, claimed, err := lease.Claim(ctx, r.Store, JobName, holder, now.UnixMilli(), now.Add(Lease).UnixMilli(),
		now.Add(r.Interval).UnixMilli(), force)
	if err != nil {
		return rep, err
	}
	if !claimed {
		if job.Holder != "" && job.LeaseUntil > now.UnixMilli() {
			return rep, &lease.BusyError{Job: JobName, Holder: job.Holder, Until: time.UnixMilli(job.LeaseUntil)}
		}
		return rep, &NotDueError{Next: time.UnixMilli(job.NextRun)}
	}
	runningPasses.Set(1)
	defer runningPasses.Set(0)
	defer func() {
		outcome := "finished"
		switch {
		case err != nil && ctx.Err() != nil:
			outcome = "interrupted"
		case err != nil:
			outcome = "failed"
		}
		runs.WithLabelValues(outcome).Inc()
		if err != nil {
			// Give the lease up, keeping the cursor, even if ctx has ended.
			if rerr := r.Store.ReleaseJob(context.WithoutCancel(ctx), JobName, holder); rerr != nil {
				slog.WarnContext(ctx, "reconcile: could not give the lease up; it ends by itself", "err", rerr)
			}
		}
	}()
	cursor := job.Cursor
	rep.Resumed = cursor != ""
	if rep.Resumed {
		r.progress("continuing the pass started %s at account %s", time.UnixMilli(job.StartedAt).UTC().Format(time.RFC3339), cursor)
	}
	start := time.Now()
	for range maxPages {
		page, err := r.Admin.ListAccounts(ctx, cursor, cmp.Or(r.PageSize, DefaultPageSize))
		if err != nil {
			return rep, err
		}
		if err := r.page(ctx, page.Users, &rep); err != nil {
			return rep, err
		}
		rate := float64(rep.Users) / max(time.Since(start).Seconds(), 0.001)
		r.progress("%d accounts compared (listing: %d), %.0f/s; %d repaired, %d conflicts",
			rep.Users, page.Total, rate, rep.Repairs(), rep.ConflictCount)
		// A page done is recorded even when ctx has just ended.
		saveCtx := context.WithoutCancel(ctx)
		if page.Next == "" || len(page.Users) == 0 {
			now := r.Clock.Now()
			if err := r.Store.FinishJob(saveCtx, JobName, holder, now.UnixMilli(), now.Add(r.Interval).UnixMilli()); err != nil {
				return rep, err
			}
			rep.Finished = true
			lastSuccess.Set(float64(now.Unix()))
			return rep, nil
		}
		if page.Next == cursor {
			return rep, fmt.Errorf("the account listing did not advance past %s", cursor)
		}
		cursor = page.Next
		if err := r.Store.SaveJobCursor(saveCtx, JobName, holder, cursor, r.Clock.Now().Add(Lease).UnixMilli()); err != nil {
			return rep, fmt.Errorf("lost the lease: %w", err)
		}
	}
	return rep, fmt.Errorf("the account listing did not end after %d pages", maxPages)
}

// page compares one page of the listing.
func (r *Reconciler) page(ctx context.Context, listed []homeserver.ListedUser, rep *Report) error {
	var active, gone []string
	for _, u := range listed {
		if u.Deactivated {
			gone = append(gone, u.Name)
		} else {
			active = append(active, u.Name)
		}
	}
	ours, err := r.ours(ctx, append(active, gone...))
	if err != nil {
		return err
	}
	if err := r.cleanUp(ctx, gone, ours, rep); err != nil {
		return err
	}
	users, err := r.Admin.Users(ctx, active, cmp.Or(r.Parallel, DefaultParallel))
	if err != nil {
		return err
	}
	var plans []plan
	for _, u := range users {
		if u.Name == "" || u.Deactivated { // gone since the listing: the next pass sees it
			continue
		}
		p, err := r.plan(ctx, u, ours[u.Name], rep)
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	if err := r.apply(ctx, plans, rep); err != nil {
		return err
	}
	rep.Users += len(listed)
	usersSeen.Add(float64(len(listed)))
	return nil
}

// ours returns threepidd's associations of users, by user.
func (r *Reconciler) ours(ctx context.Context, users []string) (map[string][]storage.Association, error) {
	as, err := r.Store.AssociationsOfUsers(ctx, users)
	if err != nil {
		return nil, err
	}
	out := map[string][]storage.Association{}
	for _, a := range as {
		out[a.UserID] = append(out[a.UserID], a)
	}
	return out, nil
}

// cleanUp runs the deactivation cleanup for the deactivated accounts of
// which threepidd still holds 3PIDs or bindings.
func (r *Reconciler) cleanUp(ctx context.Context, gone []string, ours map[string][]storage.Association, rep *Report) error {
	if len(gone) == 0 {
		return nil
	}
	bound, err := r.Store.UsersWithBindings(ctx, gone)
	if err != nil {
		return err
	}
	for _, u := range gone {
		if len(ours[u]) == 0 && !slices.Contains(bound, u) {
			continue
		}
		result, err := r.Deactivator.DeactivateUser(ctx, u)
		if err != nil {
			return fmt.Errorf("clean up after the deactivation of %s: %w", u, err)
		}
		slog.InfoContext(ctx, "reconcile: removed the 3PIDs of an account the homeserver deactivated",
			"user_id", u, "id_server_unbind_result", result)
		rep.Deactivated++
		repairs.WithLabelValues("deactivated").Inc()
	}
	return nil
}

// plan is what one active account needs.
type plan struct {
	user homeserver.SynapseUser
	// imports are the canonical 3PIDs only the homeserver has; restores the
	// ones only threepidd has.
	imports  []importer.Record
	restores []storage.Association
}

// plan compares one active account's homeserver 3PIDs with threepidd's.
// Conflicts of spelling and rejected addresses go to rep.
func (r *Reconciler) plan(ctx context.Context, u homeserver.SynapseUser, ours []storage.Association, rep *Report) (plan, error) {
	p := plan{user: u}
	theirs, err := r.homeserverRecords(ctx, u, rep)
	if err != nil {
		return p, err
	}
	for _, rec := range theirs {
		if !slices.ContainsFunc(ours, func(a storage.Association) bool { return a.Medium == rec.Medium && a.Address == rec.Address }) {
			p.imports = append(p.imports, rec)
		}
	}
	for _, a := range ours {
		if !slices.ContainsFunc(theirs, func(rec importer.Record) bool { return a.Medium == rec.Medium && a.Address == rec.Address }) {
			p.restores = append(p.restores, a)
		}
	}
	return p, nil
}

// homeserverRecords returns u's homeserver 3PIDs canonicalised, one record
// per 3PID (the earliest timestamps of its spellings). An address that does
// not canonicalise is rejected; one held in a non-canonical spelling that
// the homeserver resolves to another account (its lookup compares the
// canonical form) is a conflict.
func (r *Reconciler) homeserverRecords(ctx context.Context, u homeserver.SynapseUser, rep *Report) ([]importer.Record, error) {
	var out []importer.Record
	for _, tp := range u.Threepids {
		rec := importer.SynapseRecord(u.Name, tp)
		canonical, err := threepid.CanonicalAddress(tp.Medium, tp.Address)
		if err != nil {
			rep.Rejected = append(rep.Rejected, importer.Rejected{Record: rec, Reason: err.Error()})
			continue
		}
		if canonical != tp.Address {
			holder, err := r.Admin.ThreepidHolder(ctx, tp.Medium, canonical)
			if err != nil {
				return nil, err
			}
			if holder != "" && holder != u.Name {
				rep.conflict(Conflict{UserID: u.Name, Medium: tp.Medium, Address: canonical, Other: holder, Reason: ReasonOtherSpelling})
				continue
			}
		}
		rec.Address = canonical
		i := slices.IndexFunc(out, func(x importer.Record) bool { return x.Medium == rec.Medium && x.Address == rec.Address })
		if i < 0 {
			out = append(out, rec)
			continue
		}
		out[i].ValidatedAt, out[i].AddedAt = earliest(out[i].ValidatedAt, rec.ValidatedAt), earliest(out[i].AddedAt, rec.AddedAt)
	}
	return out, nil
}

// earliest returns the smaller of two timestamps, 0 meaning unknown.
func earliest(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// apply carries the plans out: imports and seen marks in one transaction,
// then the write-backs, account by account.
func (r *Reconciler) apply(ctx context.Context, plans []plan, rep *Report) error {
	var ready []plan
	var seen []string
	for _, p := range plans {
		if len(p.imports) > 0 || len(p.restores) > 0 {
			pending, err := events.MirrorPending(ctx, r.Store, p.user.Name)
			if err != nil {
				return err
			}
			if pending {
				rep.Deferred++
				continue
			}
		}
		ready = append(ready, p)
		seen = append(seen, p.user.Name)
	}
	at := r.Clock.Now().UnixMilli()
	var imported int
	var conflicts []Conflict
	err := r.Store.WithTx(ctx, func(q storage.Querier) error {
		imported, conflicts = 0, nil
		for _, p := range ready {
			for _, rec := range p.imports {
				outcome, holder, err := importer.Insert(ctx, q, rec, at)
				switch {
				case err != nil:
					return err
				case outcome == importer.Imported:
					imported++
				case outcome == importer.HeldElsewhere:
					conflicts = append(conflicts, Conflict{UserID: rec.UserID, Medium: rec.Medium, Address: rec.Address,
						Other: holder, Reason: ReasonHeldInThreepidd})
				}
			}
		}
		return q.MarkUsersSeen(ctx, seen, at)
	})
	if err != nil {
		return err
	}
	rep.Imported += imported
	repairs.WithLabelValues("imported").Add(float64(imported))
	for _, c := range conflicts {
		rep.conflict(c)
	}
	for _, p := range ready {
		if err := r.restore(ctx, p, rep); err != nil {
			return err
		}
	}
	return nil
}

// restore writes back what only threepidd holds of one account.
func (r *Reconciler) restore(ctx context.Context, p plan, rep *Report) error {
	if len(p.restores) == 0 {
		return nil
	}
	if r.Mirror == nil {
		rep.NotMirrored += len(p.restores)
		return nil
	}
	n, held, err := r.Mirror.Restore(ctx, p.user.Name, p.user.Threepids, p.restores)
	if err != nil {
		return fmt.Errorf("write back the 3PIDs of %s: %w", p.user.Name, err)
	}
	rep.Mirrored += n
	repairs.WithLabelValues("mirrored").Add(float64(n))
	for _, h := range held {
		rep.conflict(Conflict{UserID: p.user.Name, Medium: h.Medium, Address: h.Address, Other: h.Holder, Reason: ReasonHeldOnHomeserver})
	}
	return nil
}

// Write prints the report: the counts, then every conflict and every
// homeserver 3PID that is not an address, one per line.
func (r Report) Write(w io.Writer) error {
	var b strings.Builder
	b.WriteString("threepidd reconcile\n")
	state := "finished"
	if !r.Finished {
		state = "not finished (the next run continues it)"
	}
	if r.Resumed {
		state += ", continued where a previous run stopped"
	}
	fmt.Fprintf(&b, "  pass:                  %s\n", state)
	fmt.Fprintf(&b, "  accounts compared:     %d\n", r.Users)
	fmt.Fprintf(&b, "  imported:              %d\n", r.Imported)
	fmt.Fprintf(&b, "  written back:          %d\n", r.Mirrored)
	fmt.Fprintf(&b, "  deactivations cleaned: %d\n", r.Deactivated)
	if r.NotMirrored > 0 {
		fmt.Fprintf(&b, "  only in threepidd:     %d (homeserver.mirror is none: not written back)\n", r.NotMirrored)
	}
	fmt.Fprintf(&b, "  left for the next pass: %d (mirror work queued)\n", r.Deferred)
	fmt.Fprintf(&b, "  conflicts:             %d\n", r.ConflictCount)
	fmt.Fprintf(&b, "  not addresses:         %d\n", len(r.Rejected))
	for _, c := range r.Conflicts {
		fmt.Fprintf(&b, "conflict: %s %s %q: %s (%s)\n", c.UserID, c.Medium, c.Address, c.Reason, c.Other)
	}
	if r.ConflictCount > len(r.Conflicts) {
		fmt.Fprintf(&b, "... and %d more conflicts\n", r.ConflictCount-len(r.Conflicts))
	}
	for _, x := range r.Rejected {
		fmt.Fprintf(&b, "not imported: %s %s %q: %s\n", x.UserID, x.Medium, x.Address, x.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
