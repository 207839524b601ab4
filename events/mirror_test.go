package events_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/events/eventstest"
	"github.com/threepidd/threepidd/metrics/metricstest"
	"github.com/threepidd/threepidd/policy"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
)

const hsAdminToken = "syt_hs_admin"

// mirrorFixture is a mirror between a store and a fake homeserver.
type mirrorFixture struct {
	t      *testing.T
	hs     *fakes.Homeserver
	store  storage.Store
	mirror *events.Mirror
	next   *eventstest.Recorder
	// sink is what the services call: the mirror, then next.
	sink events.Sink
}

// change applies an add or remove to the store and fires the mirror in the
// same transaction, as the account and admin services do.
func (f *mirrorFixture) change(op policy.Op, userID, medium, address string) {
	f.t.Helper()
	ctx := context.Background()
	err := f.store.WithTx(ctx, func(q storage.Querier) error {
		var err error
		if op == policy.OpAdd {
			err = q.InsertAssociation(ctx, storage.Association{UserID: userID, Medium: medium, Address: address, ValidatedAt: 1, AddedAt: 1})
		} else {
			_, err = q.DeleteAssociation(ctx, userID, medium, address)
		}
		if err != nil {
			return err
		}
		return f.sink.Applied(ctx, q, policy.Change{Callback: policy.CallbackUserThreepid, Op: op, UserID: userID, Medium: medium, Address: address})
	})
	if err != nil {
		f.t.Fatalf("%s %s: %v", op, address, err)
	}
}

// run handles every due mirror item (at the given offset from now) and
// returns how many admin calls that made.
func (f *mirrorFixture) run(after time.Duration) int {
	before := f.hs.AdminCalls()
	w := f.mirror.Worker()
	w.Clock = func() time.Time { return time.Now().Add(after) }
	w.RunOnce(context.Background())
	return f.hs.AdminCalls() - before
}

func (f *mirrorFixture) pending() int64 {
	f.t.Helper()
	n, err := f.store.CountOutbox(context.Background(), events.MirrorKind)
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *mirrorFixture) expectThreepids(userID string, want ...fakes.HomeserverThreepid) {
	f.t.Helper()
	got := f.hs.Threepids(userID)
	for i := range got {
		if i < len(want) && want[i].AddedAt == 0 { // added by the mirror: any time
			got[i].AddedAt, got[i].ValidatedAt = 0, 0
		}
	}
	if !slices.Equal(got, want) {
		f.t.Fatalf("homeserver 3PIDs of %s:\n%+v\nwant\n%+v", userID, got, want)
	}
}

func TestMirror(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		hs := fakes.NewHomeserver(t, "hs.test")
		admin := hs.AdminClient(hsAdminToken)
		f := &mirrorFixture{t: t, hs: hs, store: store, next: &eventstest.Recorder{}}
		f.mirror = &events.Mirror{Admin: admin, Store: store}
		f.sink = events.Sinks{f.mirror, f.next}
		alice := hs.AddUser("alice", "pw")
		old := fakes.HomeserverThreepid{Medium: "email", Address: "Old@Example.org", ValidatedAt: 1000, AddedAt: 900}
		phone := fakes.HomeserverThreepid{Medium: "msisdn", Address: "447700900001", ValidatedAt: 2000, AddedAt: 1900}
		hs.SetThreepids(alice, []fakes.HomeserverThreepid{old, phone})
		added := func(address string) fakes.HomeserverThreepid {
			return fakes.HomeserverThreepid{Medium: "email", Address: address}
		}

		// An add is PUT with the homeserver's own entries unchanged: they keep
		// their timestamps (and, on Synapse, their pushers).
		f.change(policy.OpAdd, alice, "email", "new@example.org")
		if n := f.run(0); n != 3 {
			t.Fatalf("%d admin calls for an add, want GET, the holder lookup and PUT", n)
		}
		f.expectThreepids(alice, old, phone, added("new@example.org"))
		if len(f.next.Changes()) != 1 || f.next.Changes()[0].Address != "new@example.org" {
			t.Fatalf("Next got %+v", f.next.Changes())
		}

		// The homeserver's spelling of an address threepidd holds canonically
		// is the same 3PID: nothing to PUT.
		f.change(policy.OpAdd, alice, "email", "old@example.org")
		if n := f.run(0); n != 1 {
			t.Fatalf("%d admin calls when the homeserver agrees, want the GET only", n)
		}
		f.expectThreepids(alice, old, phone, added("new@example.org"))

		f.change(policy.OpRemove, alice, "email", "new@example.org")
		f.run(0)
		f.expectThreepids(alice, old, phone)

		// Items run against threepidd's state when they run: an add undone
		// before the mirror ran leaves the homeserver alone.
		f.change(policy.OpAdd, alice, "email", "brief@example.org")
		f.change(policy.OpRemove, alice, "email", "brief@example.org")
		if n := f.run(0); n != 2 {
			t.Fatalf("%d admin calls for two items that cancel out, want two GETs", n)
		}
		f.expectThreepids(alice, old, phone)

		// A user the homeserver does not know is never PUT (that would create it).
		f.change(policy.OpAdd, "@ghost:hs.test", "email", "ghost@example.org")
		if n := f.run(0); n != 1 || hs.Threepids("@ghost:hs.test") != nil || f.pending() != 0 {
			t.Fatalf("ghost: %d calls, homeserver has %v, %d pending", n, hs.Threepids("@ghost:hs.test"), f.pending())
		}

		// A deactivated account gets nothing back.
		bob := hs.AddUser("bob", "pw-bob")
		token, _ := hs.Login(bob)
		deactivate(t, hs, token, bob, "pw-bob")
		f.change(policy.OpAdd, bob, "email", "bob@example.org")
		if n := f.run(0); n != 1 || len(hs.Threepids(bob)) != 0 {
			t.Fatalf("deactivated: %d calls, homeserver has %v", n, hs.Threepids(bob))
		}

		// The homeserver down: the item waits and is retried with backoff.
		hs.SetDown(true)
		f.change(policy.OpAdd, alice, "email", "later@example.org")
		f.run(0)
		if f.pending() != 1 {
			t.Fatalf("%d items pending while the homeserver is down", f.pending())
		}
		if n := f.run(0); n != 0 {
			t.Fatalf("retried at once (%d calls), before its backoff", n)
		}
		hs.SetDown(false)
		f.run(time.Minute)
		f.expectThreepids(alice, old, phone, added("later@example.org"))
		if f.pending() != 0 {
			t.Fatalf("%d items pending after the retry", f.pending())
		}

		// Other changes are handed on but not mirrored.
		f.next.Reset()
		bind := policy.Change{Callback: policy.CallbackIdentityServerBinding, Op: policy.OpBind, UserID: alice, Medium: "email", Address: "later@example.org", IDServer: "id.test"}
		if err := f.sink.Applied(context.Background(), store, bind); err != nil {
			t.Fatal(err)
		}
		if f.pending() != 0 || len(f.next.Changes()) != 1 || f.next.Changes()[0] != bind {
			t.Fatalf("bind: %d pending, Next got %+v", f.pending(), f.next.Changes())
		}

		// A legacy row in a non-canonical spelling: Synapse canonicalises an
		// address before deleting it, so the PUT leaves the row. The mirror
		// notices from the answer (not_applied) and does not retry in vain.
		legacy := fakes.HomeserverThreepid{Medium: "email", Address: "Legacy@Example.org", ValidatedAt: 3000, AddedAt: 2900}
		hs.SetThreepids(alice, []fakes.HomeserverThreepid{old, phone, legacy})
		before := mirrorOutcomes(t, "not_applied")
		f.change(policy.OpRemove, alice, "email", "legacy@example.org")
		if n := f.run(0); n != 2 {
			t.Fatalf("%d admin calls for the legacy row, want GET and PUT", n)
		}
		f.expectThreepids(alice, old, phone, legacy)
		if got := mirrorOutcomes(t, "not_applied") - before; got != 1 || f.pending() != 0 {
			t.Fatalf("legacy row: not_applied counted %v times, %d pending; want 1 and 0", got, f.pending())
		}
	})
}

// TestMirrorKeepsSynapseState: what Synapse's admin PUT does to the rest of
// an account survives the mirror's changes: the addresses it does not touch
// keep their timestamps and e-mail pushers; an added address can get a
// pusher (Synapse allows one only for an address in its own table); a
// removed address loses its pusher; an address another homeserver account
// holds is never moved to this one.
func TestMirrorKeepsSynapseState(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		hs := fakes.NewHomeserver(t, "hs.test")
		f := &mirrorFixture{t: t, hs: hs, store: store}
		f.mirror = &events.Mirror{Admin: hs.AdminClient(hsAdminToken), Store: store}
		f.sink = f.mirror
		carol := hs.RegisterWithEmail("carol", "pw", "Carol@Example.org")
		registered := hs.Threepids(carol)
		registeredPusher := fakes.HomeserverPusher{Kind: "email", AppID: "m.email", PushKey: "carol@example.org"}
		if len(registered) != 1 || !slices.Equal(hs.Pushers(carol), []fakes.HomeserverPusher{registeredPusher}) {
			t.Fatalf("registration left %+v and pushers %+v", registered, hs.Pushers(carol))
		}
		time.Sleep(2 * time.Millisecond) // a later PUT would show in the timestamps

		if err := hs.AddEmailPusher(carol, "work@example.org"); err == nil {
			t.Fatal("Synapse gave a pusher for an address it does not hold")
		}
		f.change(policy.OpAdd, carol, "email", "work@example.org")
		f.run(0)
		f.expectThreepids(carol, registered[0], fakes.HomeserverThreepid{Medium: "email", Address: "work@example.org"})
		if !slices.Equal(hs.Pushers(carol), []fakes.HomeserverPusher{registeredPusher}) {
			t.Fatalf("pushers after an add: %+v", hs.Pushers(carol))
		}
		if err := hs.AddEmailPusher(carol, "work@example.org"); err != nil {
			t.Fatalf("no pusher for a mirrored address: %v", err)
		}

		f.change(policy.OpRemove, carol, "email", "work@example.org")
		f.run(0)
		f.expectThreepids(carol, registered[0])
		if !slices.Equal(hs.Pushers(carol), []fakes.HomeserverPusher{registeredPusher}) {
			t.Fatalf("pushers after a removal: %+v, want the registered one only", hs.Pushers(carol))
		}

		dave := hs.RegisterWithEmail("dave", "pw", "dave@example.org")
		before := mirrorOutcomes(t, "held_elsewhere")
		f.change(policy.OpAdd, carol, "email", "dave@example.org")
		f.run(0)
		if hs.Holder("email", "dave@example.org") != dave || f.pending() != 0 {
			t.Fatalf("dave's address is held by %q on the homeserver, %d pending", hs.Holder("email", "dave@example.org"), f.pending())
		}
		f.expectThreepids(carol, registered[0])
		if got := mirrorOutcomes(t, "held_elsewhere") - before; got != 1 {
			t.Fatalf("held_elsewhere counted %v times, want 1", got)
		}
	})
}

// mirrorOutcomes reads threepidd_homeserver_mirror_total{outcome}.
func mirrorOutcomes(t *testing.T, outcome string) float64 {
	return metricstest.Value(t, "threepidd_homeserver_mirror_total", "outcome", outcome)
}

// deactivate deactivates userID on the fake homeserver, as a client would.
func deactivate(t *testing.T, hs *fakes.Homeserver, token, userID, password string) {
	t.Helper()
	body := fmt.Sprintf(`{"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": %q}, "password": %q}}`, userID, password)
	req, err := http.NewRequest(http.MethodPost, hs.URL()+"/_matrix/client/v3/account/deactivate", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !hs.Deactivated(userID) {
		t.Fatalf("deactivate %s: HTTP %d", userID, resp.StatusCode)
	}
}
