package e2e

// One truth about 3PIDs: what reaches Synapse around threepidd (addresses
// given at registration, deactivations through the admin API) reaches
// threepidd, and threepidd never grants what Synapse gives to another account.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/internal/lease"
	"github.com/threepidd/threepidd/reconcile"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
)

// addresses returns the addresses of a GET /account/3pid listing.
func addresses(list []map[string]any) []string {
	var out []string
	for _, tp := range list {
		out = append(out, tp["address"].(string))
	}
	return out
}

// TestReadThrough: an address given at registration on the homeserver is
// listed from the user's first request through threepidd on (a /sync
// included), without threepidd import; concurrent first requests import
// once, and a restart does not import again.
func TestReadThrough(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})

		// The first request is a /sync.
		u := harness.User{Password: "pw"}
		u.ID = e.HS.RegisterWithEmail("syncer", u.Password, "Syncer@Example.org")
		u.Token, u.DeviceID = e.HS.Login(u.ID)
		harness.Expect(t, e.Do("GET", "/_matrix/client/v3/sync?timeout=0", u.Token, nil), 200, "")
		registered := e.HS.Threepids(u.ID)[0]
		got := e.Threepids(t, u)
		if len(got) != 1 || got[0]["address"] != "syncer@example.org" || got[0]["medium"] != "email" ||
			int64(got[0]["validated_at"].(float64)) != registered.ValidatedAt || int64(got[0]["added_at"].(float64)) != registered.AddedAt {
			t.Fatalf("after the first /sync, GET /account/3pid lists %v, want the registration's %+v", got, registered)
		}

		// Concurrent first requests: one import.
		v := harness.User{Password: "pw"}
		v.ID = e.HS.RegisterWithEmail("burst", v.Password, "burst@example.org")
		v.Token, v.DeviceID = e.HS.Login(v.ID)
		calls := e.HS.AdminCalls()
		var wg sync.WaitGroup
		lists := make([][]string, 8)
		for i := range lists {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lists[i] = addresses(e.Threepids(t, v))
			}()
		}
		wg.Wait()
		for _, l := range lists {
			if !slices.Equal(l, []string{"burst@example.org"}) {
				t.Fatalf("a concurrent first request listed %v", l)
			}
		}
		if n := e.HS.AdminCalls() - calls; n != 1 {
			t.Fatalf("%d admin calls for 8 concurrent first requests of one user, want 1", n)
		}

		// Known after a restart: no admin call, same answer.
		e.Restart()
		calls = e.HS.AdminCalls()
		if l := addresses(e.Threepids(t, v)); !slices.Equal(l, []string{"burst@example.org"}) || e.HS.AdminCalls() != calls {
			t.Fatalf("after a restart: listed %v with %d admin calls", l, e.HS.AdminCalls()-calls)
		}

		// A user that registered without an address is seen too, once.
		w := e.NewUser("plain")
		if l := e.Threepids(t, w); len(l) != 0 {
			t.Fatalf("plain user lists %v", l)
		}
		calls = e.HS.AdminCalls()
		e.Threepids(t, w)
		if e.HS.AdminCalls() != calls {
			t.Fatal("a seen user's second request asked the homeserver again")
		}
	})
}

// TestHomeserverHolderRefused: an address another account holds on the
// homeserver (given at registration, not yet seen by threepidd) is refused
// at requestToken and at add, and the homeserver's table never moves it.
func TestHomeserverHolderRefused(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{})
		alice := e.NewUser("alice")
		// alice validates the address while nobody holds it...
		secret := "secret-taken"
		sid := e.ValidateEmail(t, secret, "taken@example.org")
		// ... then bob registers with it on the homeserver.
		bob := e.HS.RegisterWithEmail("bob", "pw", "taken@example.org")

		r := e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "other", "email": "Taken@example.org", "send_attempt": 1})
		harness.Expect(t, r, 400, "M_THREEPID_IN_USE")
		harness.Expect(t, e.AddThreepid(t, alice, sid, secret), 400, "M_THREEPID_IN_USE")
		if l := e.Threepids(t, alice); len(l) != 0 {
			t.Fatalf("alice holds %v", l)
		}
		e.Restart() // lets every queued mirror item run first
		time.Sleep(1500 * time.Millisecond)
		if holder := e.HS.Holder("email", "taken@example.org"); holder != bob {
			t.Fatalf("the homeserver gives the address to %q, want %s", holder, bob)
		}
		// bob's own first request lists it, and bob may add it again (a no-op).
		bu := harness.User{ID: bob, Password: "pw"}
		bu.Token, bu.DeviceID = e.HS.Login(bob)
		if l := addresses(e.Threepids(t, bu)); !slices.Equal(l, []string{"taken@example.org"}) {
			t.Fatalf("bob lists %v", l)
		}
	})
}

// TestAdminDeactivationReconciled: an account deactivated through Synapse's
// admin API, which threepidd never hears of, loses its 3PIDs and bindings
// (the identity server unbound) within one reconcile interval.
func TestAdminDeactivationReconciled(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		const interval = 2 * time.Second
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, HomeserverYAML: "reconcile_interval: 2s", ExtraYAML: "admin_token: " + adminToken + "\n"})
		u := e.NewUser("leaver")
		e.AddEmail(t, u, "leaver@example.org")
		harness.Expect(t, e.Bind(t, u, 0, "email", "leaver@example.org"), 200, "")
		waitHomeserver(t, e, u.ID, nil, "leaver@example.org")

		r := harness.Do(t, "POST", e.HS.URL()+"/_synapse/admin/v1/deactivate/"+strings.ReplaceAll(u.ID, "@", "%40"), hsAdminToken, map[string]any{"erase": false})
		harness.Expect(t, r, 200, "")
		deactivated := time.Now()
		support.WaitFor(t, "threepidd to drop the deactivated account's 3PIDs", func() bool {
			as, err := e.Server.Store.AssociationsOf(context.Background(), u.ID)
			return err == nil && len(as) == 0 && len(e.BindingsOf(t, u, "leaver@example.org")) == 0
		}, interval+10*time.Second)
		t.Logf("cleaned up %v after the deactivation (interval %v)", time.Since(deactivated).Round(time.Millisecond), interval)
		if _, bound := e.IS[0].Bindings()["leaver@example.org"]; bound {
			t.Fatal("the identity server still binds the address")
		}
		r = e.Do("GET", adminPrefix+"/threepids/email/leaver%40example.org", adminToken, nil)
		harness.Expect(t, r, 404, "M_NOT_FOUND")
	})
}

// TestReconcile: a pass over 10,000 accounts with 1% drift of each kind
// repairs what is repairable, reports each conflict by user ID, and a second
// pass changes nothing. Interrupted, a pass continues where it stopped; a
// second instance does not run it at the same time.
func TestReconcile(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		const users = 10_000
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		ctx := context.Background()
		id := func(i int) string { return fmt.Sprintf("@u%05d:%s", i, harness.ServerName) }
		addr := func(kind string, i int) string { return fmt.Sprintf("%s%d@example.org", kind, i) }
		var ours []storage.Association
		for i := range users {
			e.HS.AddUser(fmt.Sprintf("u%05d", i), "pw")
			hs := []fakes.HomeserverThreepid{{Medium: "email", Address: addr("u", i), ValidatedAt: 1000, AddedAt: 1000}}
			ours = append(ours, storage.Association{UserID: id(i), Medium: "email", Address: addr("u", i), ValidatedAt: 1000, AddedAt: 1000})
			switch {
			case i < 100: // given at registration: only on the homeserver
				hs = append(hs, fakes.HomeserverThreepid{Medium: "email", Address: addr("reg", i), ValidatedAt: 2000, AddedAt: 2000})
			case i < 200: // only in threepidd: the mirror's item was lost
				ours = append(ours, storage.Association{UserID: id(i), Medium: "email", Address: addr("tp", i), ValidatedAt: 3000, AddedAt: 3000})
			case i >= 300 && i < 400: // on the homeserver for i, in threepidd for i+5000
				hs = append(hs, fakes.HomeserverThreepid{Medium: "email", Address: addr("conf", i), ValidatedAt: 4000, AddedAt: 4000})
				ours = append(ours, storage.Association{UserID: id(i + 5000), Medium: "email", Address: addr("conf", i), ValidatedAt: 4000, AddedAt: 4000})
			}
			e.HS.SetThreepids(id(i), hs)
		}
		err := e.Server.Store.WithTx(ctx, func(q storage.Querier) error {
			for _, a := range ours {
				if err := q.InsertAssociation(ctx, a); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Accounts 200-299 bind their address, then are deactivated
		// through the admin API.
		for i := 200; i < 300; i++ {
			u := harness.User{ID: id(i), Password: "pw"}
			u.Token, u.DeviceID = e.HS.Login(u.ID)
			harness.Expect(t, e.Bind(t, u, 0, "email", addr("u", i)), 200, "")
			e.HS.AdminDeactivate(u.ID)
		}

		r := e.Server.Reconciler
		r.PageSize = 1000
		// Interrupted after three pages, then continued.
		runCtx, cancel := context.WithCancel(ctx)
		r.Progress = &cancelAfter{lines: 3, cancel: cancel}
		rep, err := r.Run(runCtx, true)
		if err == nil || rep.Users != 3000 {
			t.Fatalf("interrupted pass: %d accounts, err %v; want 3000 and an error", rep.Users, err)
		}
		r.Progress = nil
		// Another instance does not run it meanwhile... once it holds it.
		other := *r
		other.Holder = "other-instance"
		if _, ok, err := e.Server.Store.ClaimJob(ctx, reconcile.JobName, other.Holder, time.Now().UnixMilli(),
			time.Now().Add(time.Minute).UnixMilli(), 0, true); err != nil || !ok {
			t.Fatalf("claim by another instance: %v %v", ok, err)
		}
		var busy *lease.BusyError
		if _, err := r.Run(ctx, true); !errors.As(err, &busy) || busy.Holder != "other-instance" {
			t.Fatalf("run while another instance holds the pass: %v", err)
		}
		if err := e.Server.Store.ReleaseJob(ctx, reconcile.JobName, other.Holder); err != nil {
			t.Fatal(err)
		}
		rest, err := r.Run(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if !rest.Resumed || !rest.Finished || rest.Users != users-3000 {
			t.Fatalf("continued pass: resumed %t, finished %t, %d accounts", rest.Resumed, rest.Finished, rest.Users)
		}
		total := sum(rep, rest)

		if total.Imported != 100 || total.Mirrored != 100 || total.Deactivated != 100 || total.ConflictCount != 200 || total.Deferred != 0 {
			t.Fatalf("first pass: %d imported, %d mirrored, %d deactivated, %d conflicts, %d deferred; want 100, 100, 100, 200, 0",
				total.Imported, total.Mirrored, total.Deactivated, total.ConflictCount, total.Deferred)
		}
		wantConflicts := map[string]string{}
		for i := 300; i < 400; i++ {
			wantConflicts[id(i)] = id(i + 5000)
			wantConflicts[id(i+5000)] = id(i)
		}
		for _, c := range total.Conflicts {
			if wantConflicts[c.UserID] != c.Other || !strings.HasPrefix(c.Address, "conf") {
				t.Fatalf("unexpected conflict %+v", c)
			}
			delete(wantConflicts, c.UserID)
		}
		if len(wantConflicts) != 0 {
			t.Fatalf("%d conflicts not reported, e.g. of %v", len(wantConflicts), slices.Collect(maps.Keys(wantConflicts))[:1])
		}

		// Each repair, as the two sides show it.
		for _, i := range []int{0, 57, 99} {
			a, err := e.Server.Store.AssociationByAddress(ctx, "email", addr("reg", i))
			if err != nil || a.UserID != id(i) || a.ValidatedAt != 2000 || a.AddedAt != 2000 {
				t.Fatalf("imported reg%d: %+v %v", i, a, err)
			}
		}
		for _, i := range []int{100, 150, 199} {
			if holder := e.HS.Holder("email", addr("tp", i)); holder != id(i) {
				t.Fatalf("tp%d is held by %q on the homeserver, want %s", i, holder, id(i))
			}
		}
		unbound := map[string]bool{}
		for _, c := range e.IS[0].UnbindCalls() {
			unbound[c.Address] = true
		}
		for i := 200; i < 300; i++ {
			as, err := e.Server.Store.AssociationsOf(ctx, id(i))
			if err != nil || len(as) != 0 || !unbound[addr("u", i)] {
				t.Fatalf("deactivated %s: holds %+v (%v), unbound %t", id(i), as, err, unbound[addr("u", i)])
			}
		}
		for i := 300; i < 400; i++ {
			if holder := e.HS.Holder("email", addr("conf", i)); holder != id(i) {
				t.Fatalf("conflict conf%d moved to %q on the homeserver", i, holder)
			}
			if a, err := e.Server.Store.AssociationByAddress(ctx, "email", addr("conf", i)); err != nil || a.UserID != id(i+5000) {
				t.Fatalf("conflict conf%d moved in threepidd: %+v %v", i, a, err)
			}
		}

		// The mirror items the cleanups queued run (deactivated accounts:
		// never written); then a second pass changes nothing.
		support.WaitFor(t, "the mirror queue to drain", func() bool {
			n, err := e.Server.Store.CountOutbox(ctx, "mirror")
			return err == nil && n == 0
		}, 30*time.Second)
		again, err := r.Run(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if again.Repairs() != 0 || again.ConflictCount != 200 || again.Users != users || again.Deferred != 0 {
			t.Fatalf("second pass: %d repairs, %d conflicts, %d accounts, %d deferred; want 0, 200, %d, 0",
				again.Repairs(), again.ConflictCount, again.Users, again.Deferred, users)
		}
	})
}

// cancelAfter cancels a pass after its lines-th progress line (one per page).
type cancelAfter struct {
	lines  int
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.lines -= strings.Count(string(p), "\n")
	if c.lines <= 0 {
		c.cancel()
	}
	return len(p), nil
}

var _ io.Writer = (*cancelAfter)(nil)

// sum adds the counts of the runs of one pass.
func sum(reps ...reconcile.Report) reconcile.Report {
	var t reconcile.Report
	for _, r := range reps {
		t.Users += r.Users
		t.Imported += r.Imported
		t.Mirrored += r.Mirrored
		t.Deactivated += r.Deactivated
		t.Deferred += r.Deferred
		t.ConflictCount += r.ConflictCount
		t.Conflicts = append(t.Conflicts, r.Conflicts...)
	}
	return t
}
