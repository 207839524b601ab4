package events

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/outbox"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// MirrorKind is the outbox kind of the calls that write 3PID changes back to
// the homeserver (homeserver.mirror).
const MirrorKind = "mirror"

// Mirror worker tuning: one item makes at most two admin calls, each bounded
// by homeserver.AdminCallTimeout; a claimed batch stays hidden from other instances long
// enough to try all of it.
const (
	mirrorBatch       = 5
	mirrorLease       = mirrorBatch*2*homeserver.AdminCallTimeout + 30*time.Second
	mirrorPoll        = time.Second
	mirrorBaseBackoff = time.Second
	mirrorMaxBackoff  = 5 * time.Minute
)

var mirrorCalls = metrics.Factory.NewCounterVec(metrics.CounterOpts("homeserver_mirror_total",
	"Mirror items handled, by outcome: put (the homeserver's list was replaced), unchanged (it already "+
		"matched), no_user (unknown or deactivated on the homeserver: never PUT), not_applied (PUT, "+
		"but the homeserver's answer still differs: a legacy non-canonical row Synapse cannot delete), "+
		"held_elsewhere (another homeserver account holds the added address: never moved)."), []string{"outcome"})

func init() {
	for _, outcome := range []string{"put", "unchanged", "no_user", "not_applied"} {
		mirrorCalls.WithLabelValues(outcome) // at zero from the start
	}
}

// Mirror writes every 3PID added to or removed from an account in threepidd
// (by the user, an administrator or a deactivation) back to a Synapse
// homeserver, so that its password reset, 3PID login and e-mail notifications
// keep working (homeserver.mirror: synapse_admin).
//
// [Mirror.Applied] queues one outbox item in the transaction that made the
// change; the request that made the change
// never waits for the homeserver and never fails because of it. The worker
// ([Mirror.Worker]) handles each item with two admin calls:
//
//  1. GET /_synapse/admin/v2/users/{userId}. An unknown user (404) or a
//     deactivated one is left alone: Synapse's PUT creates unknown users, and
//     a deactivated account must not get 3PIDs back.
//  2. Only if the homeserver's list differs from threepidd for that one 3PID,
//     and, for an added one, no other homeserver account holds it (GET
//     /_synapse/admin/v1/threepid/{medium}/users/{address}: Synapse's PUT
//     would move it, and the other account's password reset would go to
//     this one; it is logged and left for an operator, and reconcile reports it),
//     PUT /_synapse/admin/v2/users/{userId} {"threepids": [...]}: the list
//     exactly as Synapse returned it (its own spelling of each address) plus
//     the added 3PID or minus the removed one. Nothing else is in the body, so
//     the account's other fields stay as they are.
//
// What Synapse does on that PUT (synapse/rest/admin/users.py,
// UserRestServletV2.on_PUT): it diffs the (medium, address) pairs sent against
// the ones it holds, byte for byte.
//   - Pairs in both are not touched: they keep added_at, validated_at and the
//     "m.email" pusher. That is why the mirror sends the homeserver's own list
//     back instead of threepidd's: a pair that is re-sent differently (say,
//     canonicalised) would be deleted and re-added, losing all three.
//   - A pair only in the body is added with added_at = validated_at = the time
//     of the PUT (the admin API takes no timestamps), e-mail canonicalised,
//     and upserted on (medium, address): an account that still held it on the
//     homeserver loses it. No pusher is created (Synapse only creates one for
//     accounts the same PUT creates).
//   - A pair only on the homeserver is deleted: first Synapse unbinds it from
//     the identity servers it has recorded itself (binds made through
//     Synapse before threepidd took over; threepidd unbinds its own), then
//     the association goes, and with it the user's "m.email" pusher for that
//     address. If an identity server fails, Synapse answers 500 and deletes
//     nothing; the item is retried.
//
// The desired state is read from threepidd's store when the item runs, not
// taken from the queued operation, so items for one 3PID may run in any order
// and any number of times: the last one leaves the homeserver as threepidd is.
// 3PIDs threepidd does not hold for anyone stay untouched on the homeserver.
// Failures (homeserver down, 5xx, 429, a refused admin token) are retried with
// backoff for up to 7 days (outbox_* metrics, kind "mirror"); other refusals
// are logged and dropped.
//
// Two instances handling items of the same user at the same instant can race
// (each PUT replaces the whole list); each instance handles its claimed items
// one at a time.
type Mirror struct {
	Admin *homeserver.SynapseAdmin
	Store storage.Store
	Clock clock.Func
}

// mirrorJob is the payload of a mirror item.
type mirrorJob struct {
	UserID  string    `json:"user_id"`
	Op      policy.Op `json:"op"`
	Medium  string    `json:"medium"`
	Address string    `json:"address"`
}

// Applied queues the mirror of an added or removed account 3PID in q, the
// transaction that applied it.
func (m *Mirror) Applied(ctx context.Context, q storage.Querier, c policy.Change) error {
	if c.Callback != policy.CallbackUserThreepid || (c.Op != policy.OpAdd && c.Op != policy.OpRemove) {
		return nil
	}
	job := mirrorJob{UserID: c.UserID, Op: c.Op, Medium: c.Medium, Address: c.Address}
	if err := outbox.Enqueue(ctx, q, MirrorKind, mirrorKeyPrefix(c.UserID)+rand.Text(), job, m.Clock.Now()); err != nil {
		return fmt.Errorf("queue mirror of %s: %w", c.Op, err)
	}
	return nil
}

// mirrorKeyPrefix starts the key of every mirror item of userID: the keys are
// unique (items are never merged), and grouped by user for [MirrorPending].
// User IDs have no spaces.
func mirrorKeyPrefix(userID string) string { return userID + " " }

// MirrorPending reports whether mirror work for userID is queued: until it
// has run, the homeserver's list of that user may still hold what threepidd
// removed, or lack what it added.
func MirrorPending(ctx context.Context, q storage.Querier, userID string) (bool, error) {
	n, err := q.CountOutboxKeyPrefix(ctx, MirrorKind, mirrorKeyPrefix(userID))
	if err != nil {
		return false, fmt.Errorf("pending mirror work of %s: %w", userID, err)
	}
	return n > 0, nil
}

// Worker returns the outbox worker that performs the queued mirror calls.
func (m *Mirror) Worker() *outbox.Worker {
	return &outbox.Worker{
		Store:       m.Store,
		Kind:        MirrorKind,
		Do:          m.handle,
		Poll:        mirrorPoll,
		BaseBackoff: mirrorBaseBackoff,
		MaxBackoff:  mirrorMaxBackoff,
		Batch:       mirrorBatch,
		Lease:       mirrorLease,
		OnGiveUp: outbox.LogGiveUp("homeserver mirror abandoned after the give-up age: the homeserver's 3PIDs of this user differ from threepidd's",
			func(j mirrorJob) []any { return []any{"user_id", j.UserID, "op", j.Op, "medium", j.Medium} }),
	}
}

// handle makes the homeserver agree with threepidd about one user's 3PID.
func (m *Mirror) handle(ctx context.Context, item storage.OutboxItem) error {
	var job mirrorJob
	if err := json.Unmarshal(item.Payload, &job); err != nil {
		return fmt.Errorf("decode mirror job: %w", err)
	}
	owner, err := m.Store.AssociationByAddress(ctx, job.Medium, job.Address)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: look up 3PID owner: %v", outbox.ErrRetry, err)
	}
	want := err == nil && owner.UserID == job.UserID
	u, err := m.Admin.User(ctx, job.UserID)
	switch {
	case errors.Is(err, homeserver.ErrUserNotFound):
		mirrorCalls.WithLabelValues("no_user").Inc()
		slog.InfoContext(ctx, "homeserver mirror: user unknown to the homeserver, not mirrored", "user_id", job.UserID)
		return nil
	case err != nil:
		return adminFailure(err)
	case u.Deactivated:
		mirrorCalls.WithLabelValues("no_user").Inc()
		return nil
	}
	list, changed := withThreepid(u.Threepids, job.Medium, job.Address, want)
	if !changed {
		mirrorCalls.WithLabelValues("unchanged").Inc()
		return nil
	}
	if want {
		holder, err := m.Admin.ThreepidHolder(ctx, job.Medium, job.Address)
		if err != nil {
			return adminFailure(err)
		}
		if holder != "" && holder != job.UserID {
			mirrorCalls.WithLabelValues("held_elsewhere").Inc()
			slog.WarnContext(ctx, "homeserver mirror: another homeserver account holds the address threepidd gave this user; "+
				"not moved (threepidd reconcile reports it)", "user_id", job.UserID, "holder", holder, "medium", job.Medium)
			return nil
		}
	}
	after, err := m.Admin.SetThreepids(ctx, job.UserID, list)
	if err != nil {
		return adminFailure(err)
	}
	if _, differs := withThreepid(after, job.Medium, job.Address, want); differs {
		// Synapse canonicalises an e-mail address before deleting it, so a
		// row it holds in another spelling (from before it canonicalised)
		// cannot be removed through this API. Retrying would not help.
		mirrorCalls.WithLabelValues("not_applied").Inc()
		slog.WarnContext(ctx, "homeserver mirror: the homeserver did not apply the change; "+
			"Synapse cannot remove a 3PID it holds in a non-canonical spelling, remove it there by hand",
			"user_id", job.UserID, "medium", job.Medium, "op", job.Op)
		return nil
	}
	mirrorCalls.WithLabelValues("put").Inc()
	return nil
}

// adminFailure marks a temporary admin API failure for a retry.
func adminFailure(err error) error {
	if homeserver.TemporaryAdminError(err) {
		return fmt.Errorf("%w: %v", outbox.ErrRetry, err)
	}
	return err
}

// withThreepid returns the homeserver's list with (medium, address) present
// (want) or absent, and whether that differs from list. Entries are compared
// by canonical form, so a homeserver spelling of the same address counts as
// present; every other entry is kept as the homeserver spelled it.
func withThreepid(list []homeserver.SynapseThreepid, medium, address string, want bool) ([]homeserver.SynapseThreepid, bool) {
	same := func(tp homeserver.SynapseThreepid) bool {
		if tp.Medium != medium {
			return false
		}
		canonical, err := threepid.CanonicalAddress(medium, tp.Address)
		return err == nil && canonical == address
	}
	present := slices.ContainsFunc(list, same)
	switch {
	case want && !present:
		return append(slices.Clone(list), homeserver.SynapseThreepid{Medium: medium, Address: address}), true
	case !want && present:
		return slices.DeleteFunc(slices.Clone(list), same), true
	}
	return list, false
}

// Held is an address threepidd gives a user that another homeserver account
// holds on the homeserver.
type Held struct {
	Medium, Address string
	// Holder is the homeserver account holding it.
	Holder string
}

// Restore writes back to the homeserver the 3PIDs of userID that threepidd
// holds and the homeserver's list lacks (have is that list, as GET
// /_synapse/admin/v2/users/{userId} answered it), in one PUT that keeps
// every entry of have as spelled; an address another homeserver account
// holds is left out and returned, never moved. It returns how many were
// written back.
func (m *Mirror) Restore(ctx context.Context, userID string, have []homeserver.SynapseThreepid, missing []storage.Association) (int, []Held, error) {
	list := have
	var held []Held
	var added []storage.Association
	for _, a := range missing {
		holder, err := m.Admin.ThreepidHolder(ctx, a.Medium, a.Address)
		if err != nil {
			return 0, nil, err
		}
		if holder != "" && holder != userID {
			held = append(held, Held{Medium: a.Medium, Address: a.Address, Holder: holder})
			continue
		}
		var changed bool
		if list, changed = withThreepid(list, a.Medium, a.Address, true); changed {
			added = append(added, a)
		}
	}
	if len(added) == 0 {
		return 0, held, nil
	}
	after, err := m.Admin.SetThreepids(ctx, userID, list)
	if err != nil {
		return 0, held, err
	}
	restored := 0
	for _, a := range added {
		if _, differs := withThreepid(after, a.Medium, a.Address, true); !differs {
			restored++
		}
	}
	mirrorCalls.WithLabelValues("put").Inc()
	return restored, held, nil
}
