package e2e

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/importer"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
)

const (
	hsAdminToken = "syt_synapse_admin"
	// mirrorYAML turns the Synapse mirror on (harness.Options.HomeserverYAML).
	mirrorYAML   = "admin_token: " + hsAdminToken + ", mirror: synapse_admin"
	deactivateV3 = "/_matrix/client/v3/account/deactivate"
	deactivateR0 = "/_matrix/client/r0/account/deactivate"
)

// runImport imports from the fake homeserver's admin API into e's store.
func runImport(t *testing.T, e *harness.Env) importer.Report {
	t.Helper()
	source, err := importer.SourceFor(e.Config, "")
	if err != nil {
		t.Fatal(err)
	}
	defer source.Close()
	var progress strings.Builder
	rep, err := (&importer.Importer{Store: e.Server.Store, Source: source, Progress: &progress}).Run(context.Background())
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if !strings.Contains(progress.String(), "accounts read") {
		t.Fatalf("no progress shown: %q", progress.String())
	}
	return rep
}

// storeSnapshot returns the 3PIDs threepidd holds for each of users.
func storeSnapshot(t *testing.T, store storage.Store, users []string) map[string][]storage.Association {
	t.Helper()
	out := map[string][]storage.Association{}
	for _, u := range users {
		as, err := store.AssociationsOf(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		if len(as) > 0 {
			out[u] = as
		}
	}
	return out
}

// TestImportSynapse: 1,000 accounts with 3PIDs, imported twice, give the same
// store; an address on two accounts and one threepidd gave to someone else are
// reported and imported for nobody new.
func TestImportSynapse(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{HomeserverYAML: "admin_token: " + hsAdminToken})
		e.HS.SetAdminToken(hsAdminToken)
		holder := e.NewUser("holder")
		e.AddEmail(t, holder, "taken@example.org")
		users := []string{holder.ID}
		const n = 1000
		for i := range n {
			id := e.HS.AddUser(fmt.Sprintf("user%04d", i), "pw")
			tps := []fakes.HomeserverThreepid{{Medium: "email", Address: fmt.Sprintf("User%04d@Example.org", i), ValidatedAt: int64(1000 + i), AddedAt: int64(500 + i)}}
			if i%10 == 0 {
				tps = append(tps, fakes.HomeserverThreepid{Medium: "msisdn", Address: fmt.Sprintf("4477009%05d", i)})
			}
			switch i {
			case 1:
				tps = append(tps, fakes.HomeserverThreepid{Medium: "email", Address: "Shared@Example.org"})
			case 2:
				tps = append(tps, fakes.HomeserverThreepid{Medium: "email", Address: "shared@example.org"})
			case 3:
				tps = append(tps, fakes.HomeserverThreepid{Medium: "email", Address: "taken@example.org"})
			}
			e.HS.SetThreepids(id, tps)
			users = append(users, id)
		}
		e.HS.AddGuest()
		wantConflicts := []importer.Conflict{
			{Medium: "email", Address: "shared@example.org", Users: []string{"@user0001:hs.test", "@user0002:hs.test"}, Reason: importer.ReasonSeveralAccounts},
			{Medium: "email", Address: "taken@example.org", Users: []string{"@user0003:hs.test"}, HeldBy: holder.ID, Reason: importer.ReasonHeldElsewhere},
		}

		first := runImport(t, e)
		if first.Users != n+1 || first.Found != n+n/10+3 || first.Imported != n+n/10 || first.Present != 0 || len(first.Rejected) != 0 {
			t.Fatalf("first import: %d users, %d found, %d imported, %d present, rejected %v",
				first.Users, first.Found, first.Imported, first.Present, first.Rejected)
		}
		if !reflect.DeepEqual(first.Conflicts, wantConflicts) {
			t.Fatalf("conflicts %+v, want %+v", first.Conflicts, wantConflicts)
		}
		after := storeSnapshot(t, e.Server.Store, users)
		if got := after["@user0007:hs.test"]; len(got) != 1 || got[0].Address != "user0007@example.org" || got[0].ValidatedAt != 1007 || got[0].AddedAt != 507 {
			t.Fatalf("user0007 holds %+v", got)
		}
		if got := after["@user0010:hs.test"]; len(got) != 2 {
			t.Fatalf("user0010 holds %+v", got)
		}
		if got := after[holder.ID]; len(got) != 1 || got[0].Address != "taken@example.org" {
			t.Fatalf("the holder's address moved: %+v", got)
		}

		second := runImport(t, e)
		if second.Imported != 0 || second.Present != first.Imported || !reflect.DeepEqual(second.Conflicts, wantConflicts) {
			t.Fatalf("second import: %d imported, %d present, conflicts %+v", second.Imported, second.Present, second.Conflicts)
		}
		if again := storeSnapshot(t, e.Server.Store, users); !reflect.DeepEqual(again, after) {
			t.Fatal("the second import changed the store")
		}
	})
}

// waitHomeserver waits until the fake homeserver holds want for userID
// (addresses; the timestamps of entries in keep must be unchanged).
func waitHomeserver(t *testing.T, e *harness.Env, userID string, keep []fakes.HomeserverThreepid, want ...string) {
	t.Helper()
	var got []fakes.HomeserverThreepid
	waitFor(t, fmt.Sprintf("the homeserver to hold %v for %s", want, userID), func() bool {
		got = e.HS.Threepids(userID)
		var addresses []string
		for _, tp := range got {
			addresses = append(addresses, tp.Address)
		}
		return slices.Equal(addresses, want)
	}, 20*time.Second)
	for _, k := range keep {
		if !slices.Contains(got, k) {
			t.Fatalf("the homeserver's %s lost its timestamps: %+v", k.Address, got)
		}
	}
}

// TestMirror: adds and removes through threepidd (user and admin) reach the
// homeserver's admin API, keeping what it held; with the homeserver down the
// change is queued and arrives once it is back.
func TestMirror(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{HomeserverYAML: mirrorYAML, ExtraYAML: "admin_token: " + adminToken + "\n"})
		e.HS.SetAdminToken(hsAdminToken)
		u := e.NewUser("mirrored")
		old := fakes.HomeserverThreepid{Medium: "email", Address: "old@example.org", ValidatedAt: 1111, AddedAt: 999}
		e.HS.SetThreepids(u.ID, []fakes.HomeserverThreepid{old})
		keep := []fakes.HomeserverThreepid{old}

		e.AddEmail(t, u, "New@Example.org")
		waitHomeserver(t, e, u.ID, keep, "old@example.org", "new@example.org")
		r := e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "new@example.org"})
		harness.Expect(t, r, 200, "")
		waitHomeserver(t, e, u.ID, keep, "old@example.org")

		e.HS.SetDown(true)
		calls := e.HS.AdminCalls()
		e.AddEmail(t, u, "down@example.org")
		waitFor(t, "a failed mirror attempt", func() bool {
			n, err := e.Server.Store.CountOutbox(context.Background(), events.MirrorKind)
			return err == nil && n == 1 && e.HS.AdminCalls() > calls
		}, 10*time.Second)
		if got := e.HS.Threepids(u.ID); len(got) != 1 {
			t.Fatalf("the homeserver changed while down: %+v", got)
		}
		e.HS.SetDown(false)
		waitHomeserver(t, e, u.ID, keep, "old@example.org", "down@example.org")

		r = e.Do("DELETE", adminPrefix+"/users/%40mirrored%3Ahs.test/threepids/email/down%40example.org", adminToken, nil)
		harness.Expect(t, r, 200, "")
		waitHomeserver(t, e, u.ID, keep, "old@example.org")
	})
}

// TestDeactivate: POST /account/deactivate through threepidd goes to the
// homeserver with its UIA; once it deactivated the account, threepidd unbinds
// at the identity server and removes the 3PIDs on both sides.
func TestDeactivate(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, HomeserverYAML: mirrorYAML})
		e.HS.SetAdminToken(hsAdminToken)
		ctx := context.Background()
		tests := []struct {
			localpart, path, hsResult, want string
		}{
			{"leaver", deactivateV3, "success", "success"},
			{"oldclient", deactivateR0, "no-support", "no-support"},
		}
		for _, tc := range tests {
			u := e.NewUser(tc.localpart)
			address := tc.localpart + "@example.org"
			e.AddEmail(t, u, address)
			harness.Expect(t, e.Bind(t, u, 0, "email", address), 200, "")
			waitHomeserver(t, e, u.ID, nil, address)
			e.HS.SetDeactivateUnbindResult(tc.hsResult)

			r := e.Do("POST", tc.path, u.Token, map[string]any{})
			harness.Expect(t, r, 401, "")
			session, _ := r.JSON(t)["session"].(string)
			if session == "" || len(e.Threepids(t, u)) != 1 || e.HS.Deactivated(u.ID) {
				t.Fatalf("%s: the UIA round changed something: %s", tc.localpart, r.Body)
			}

			r = e.Do("POST", tc.path, u.Token, map[string]any{"auth": u.PasswordAuth(session), "erase": false})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != tc.want {
				t.Fatalf("%s: id_server_unbind_result %v, want %s", tc.localpart, got, tc.want)
			}
			calls := e.HS.RelayCalls()
			if last := calls[len(calls)-1]; last.Path != tc.path || !strings.Contains(string(last.Body), `"erase":false`) {
				t.Fatalf("%s: relayed %s %s", tc.localpart, last.Path, last.Body)
			}
			if !e.HS.Deactivated(u.ID) {
				t.Fatalf("%s: not deactivated on the homeserver", tc.localpart)
			}
			if _, ok := e.IS[0].Bindings()[address]; ok {
				t.Fatalf("%s: the identity server still binds %s", tc.localpart, address)
			}
			if as, err := e.Server.Store.AssociationsOf(ctx, u.ID); err != nil || len(as) != 0 {
				t.Fatalf("%s: threepidd kept %+v (%v)", tc.localpart, as, err)
			}
			if bs, err := e.Server.Store.BindingsOf(ctx, u.ID); err != nil || len(bs) != 0 {
				t.Fatalf("%s: threepidd kept bindings %+v (%v)", tc.localpart, bs, err)
			}

			// A retry: the homeserver's answer for a dead token comes back.
			harness.Expect(t, e.Do("POST", tc.path, u.Token, map[string]any{"auth": u.PasswordAuth(session)}), 401, "M_UNKNOWN_TOKEN")
		}
		// The removals were mirrored without giving the accounts anything back,
		// and no cleanup is left over.
		waitFor(t, "the mirror and cleanup queues to drain", func() bool {
			m, err1 := e.Server.Store.CountOutbox(ctx, events.MirrorKind)
			d, err2 := e.Server.Store.CountOutbox(ctx, account.DeactivateKind)
			return err1 == nil && err2 == nil && m == 0 && d == 0
		}, 20*time.Second)
		for _, tc := range tests {
			if got := e.HS.Threepids("@" + tc.localpart + ":hs.test"); len(got) != 0 {
				t.Fatalf("%s: the homeserver holds %+v after deactivation", tc.localpart, got)
			}
		}
	})
}
