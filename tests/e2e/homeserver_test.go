package e2e

// The homeserver side: the Synapse import, the mirror of 3PIDs to Synapse, and
// account deactivation through threepidd.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threepidd/threepidd/account"
	"github.com/threepidd/threepidd/events"
	"github.com/threepidd/threepidd/homeserver"
	"github.com/threepidd/threepidd/importer"
	"github.com/threepidd/threepidd/outbound"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/harness"
	"github.com/threepidd/threepidd/tests/support"
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

// failingProxy forwards to target and answers 500 M_UNKNOWN to the admin
// API's user-detail call number failAt (1-based; 0: never).
type failingProxy struct {
	srv    *httptest.Server
	failAt atomic.Int64
	n      atomic.Int64
}

func newFailingProxy(t *testing.T, target string) *failingProxy {
	t.Helper()
	p := &failingProxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/_synapse/admin/v2/users/") {
			if n := p.n.Add(1); n == p.failAt.Load() {
				reply(w, 500, `{"errcode": "M_UNKNOWN", "error": "Internal server error"}`)
				return
			}
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		maps.Copy(w.Header(), resp.Header)
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// TestImportSynapsePages: the Synapse import over several pages, with a
// non-canonical address, an address on two accounts, a guest, and an admin
// API failure midway that leaves nothing half-imported; reruns converge.
func TestImportSynapsePages(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{HomeserverYAML: "admin_token: " + hsAdminToken})
		e.HS.SetAdminToken(hsAdminToken)
		proxy := newFailingProxy(t, e.HS.URL())
		hsCfg := e.Config.Homeserver
		hsCfg.URL = proxy.srv.URL
		hs, err := homeserver.New(hsCfg, outbound.NewTransport())
		if err != nil {
			t.Fatal(err)
		}
		source := &importer.Synapse{Admin: hs.SynapseAdmin(hsAdminToken), URL: proxy.srv.URL, PageSize: 2, Parallel: 1}
		var users []string
		add := func(localpart string, tps ...fakes.HomeserverThreepid) {
			id := e.HS.AddUser(localpart, "pw")
			e.HS.SetThreepids(id, tps)
			users = append(users, id)
		}
		add("imp1", fakes.HomeserverThreepid{Medium: "email", Address: " Mixed.Case@EXAMPLE.Org", ValidatedAt: 11, AddedAt: 10},
			fakes.HomeserverThreepid{Medium: "msisdn", Address: "447700900321", ValidatedAt: 21, AddedAt: 20})
		add("imp2", fakes.HomeserverThreepid{Medium: "email", Address: "dup@example.org"})
		add("imp3", fakes.HomeserverThreepid{Medium: "email", Address: "DUP@Example.org"})
		add("imp4")
		add("imp5", fakes.HomeserverThreepid{Medium: "email", Address: "five@example.org", ValidatedAt: 51, AddedAt: 50})
		guest, _ := e.HS.AddGuest()
		e.HS.SetThreepids(guest, []fakes.HomeserverThreepid{{Medium: "email", Address: "guest@example.org"}})
		users = append(users, guest)
		ctx := context.Background()
		run := func() (importer.Report, error) {
			return (&importer.Importer{Store: e.Server.Store, Source: source}).Run(ctx)
		}

		proxy.failAt.Store(4) // the fourth account read fails: the third page
		if _, err := run(); err == nil || !strings.Contains(err.Error(), "HTTP 500") {
			t.Fatalf("an admin API failure midway: %v, want an error naming HTTP 500", err)
		}
		if got := storeSnapshot(t, e.Server.Store, users); len(got) != 0 {
			t.Fatalf("a failed import wrote %+v", got)
		}

		proxy.failAt.Store(0)
		wantConflicts := []importer.Conflict{{Medium: "email", Address: "dup@example.org",
			Users: []string{"@imp2:hs.test", "@imp3:hs.test"}, Reason: importer.ReasonSeveralAccounts}}
		for i, imported := range []int{3, 0} {
			rep, err := run()
			if err != nil {
				t.Fatalf("import %d: %v", i+1, err)
			}
			if rep.Users != 5 || rep.Found != 5 || rep.Imported != imported || rep.Present != 3-imported || len(rep.Rejected) != 0 ||
				!slices.EqualFunc(rep.Conflicts, wantConflicts, func(a, b importer.Conflict) bool { return fmt.Sprint(a) == fmt.Sprint(b) }) {
				t.Fatalf("import %d: %+v", i+1, rep)
			}
			got := map[string][]string{}
			for user, as := range storeSnapshot(t, e.Server.Store, users) {
				for _, a := range as {
					got[user] = append(got[user], fmt.Sprintf("%s %s %d %d", a.Medium, a.Address, a.ValidatedAt, a.AddedAt))
				}
				slices.Sort(got[user])
			}
			want := map[string][]string{
				"@imp1:hs.test": {"email mixed.case@example.org 11 10", "msisdn 447700900321 21 20"},
				"@imp5:hs.test": {"email five@example.org 51 50"},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("import %d stored %v, want %v", i+1, got, want)
			}
		}
	})
}

// waitHomeserver waits until the fake homeserver holds want for userID
// (addresses; the timestamps of entries in keep must be unchanged).
func waitHomeserver(t *testing.T, e *harness.Env, userID string, keep []fakes.HomeserverThreepid, want ...string) {
	t.Helper()
	var got []fakes.HomeserverThreepid
	support.WaitFor(t, fmt.Sprintf("the homeserver to hold %v for %s", want, userID), func() bool {
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
// homeserver's admin API, keeping what it held, as spelled, with their
// timestamps; with the homeserver down the change is queued and arrives once
// it is back; the mirror retries while the homeserver refuses the admin token,
// and leaves an account deactivated on the homeserver alone.
func TestMirror(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{HomeserverYAML: mirrorYAML, ExtraYAML: "admin_token: " + adminToken + "\n"})
		e.HS.SetAdminToken(hsAdminToken)
		ctx := context.Background()
		drained := func() bool {
			n, err := e.Server.Store.CountOutbox(ctx, events.MirrorKind)
			return err == nil && n == 0
		}

		// First, while nothing else is queued: it counts the queued changes.
		t.Run("user and admin changes, the homeserver down meanwhile", func(t *testing.T) {
			u := e.NewUser("mirrored")
			old := fakes.HomeserverThreepid{Medium: "email", Address: "old@example.org", ValidatedAt: 1111, AddedAt: 999}
			e.HS.SetThreepids(u.ID, []fakes.HomeserverThreepid{old})
			keep := []fakes.HomeserverThreepid{old}

			e.AddEmail(t, u, "New@Example.org")
			waitHomeserver(t, e, u.ID, keep, "old@example.org", "new@example.org")
			r := e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "new@example.org"})
			harness.Expect(t, r, 200, "")
			waitHomeserver(t, e, u.ID, keep, "old@example.org")

			// A grant asks the homeserver first: down, it is refused (502)
			// rather than risk an address another account holds there.
			e.AddEmail(t, u, "down@example.org")
			waitHomeserver(t, e, u.ID, keep, "old@example.org", "down@example.org")
			e.HS.SetDown(true)
			r = e.Do("POST", requestTokenPath, "", map[string]any{"client_secret": "down-secret", "email": "refused@example.org", "send_attempt": 1})
			harness.Expect(t, r, 502, "M_UNKNOWN")
			calls := e.HS.AdminCalls()
			r = e.Do("DELETE", adminPrefix+"/users/%40mirrored%3Ahs.test/threepids/email/down%40example.org", adminToken, nil)
			harness.Expect(t, r, 200, "")
			support.WaitFor(t, "a failed mirror attempt", func() bool {
				n, err := e.Server.Store.CountOutbox(context.Background(), events.MirrorKind)
				return err == nil && n == 1 && e.HS.AdminCalls() > calls
			}, 10*time.Second)
			if got := e.HS.Threepids(u.ID); len(got) != 2 {
				t.Fatalf("the homeserver changed while down: %+v", got)
			}
			e.HS.SetDown(false)
			waitHomeserver(t, e, u.ID, keep, "old@example.org")
		})

		t.Run("keeps the homeserver's spelling and timestamps", func(t *testing.T) {
			u := e.NewUser("spelled")
			keep := []fakes.HomeserverThreepid{
				{Medium: "email", Address: "Other@Example.ORG", ValidatedAt: 1234, AddedAt: 1000},
				{Medium: "msisdn", Address: "447700900555", ValidatedAt: 2234, AddedAt: 2000},
			}
			e.HS.SetThreepids(u.ID, keep)
			e.AddEmail(t, u, "new@example.org")
			waitHomeserver(t, e, u.ID, keep, "Other@Example.ORG", "447700900555", "new@example.org")
			harness.Expect(t, e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "new@example.org"}), 200, "")
			waitHomeserver(t, e, u.ID, keep, "Other@Example.ORG", "447700900555")
		})

		t.Run("admin token refused, then accepted", func(t *testing.T) {
			u := e.NewUser("refused")
			e.AddEmail(t, u, "refused@example.org")
			waitHomeserver(t, e, u.ID, nil, "refused@example.org")
			e.HS.SetAdminToken("rotated")
			calls := e.HS.AdminCalls()
			harness.Expect(t, e.Do("POST", deletePath, u.Token, map[string]any{"medium": "email", "address": "refused@example.org"}), 200, "")
			support.WaitFor(t, "a refused mirror attempt", func() bool { return e.HS.AdminCalls() > calls }, 10*time.Second)
			if drained() {
				t.Fatal("the mirror gave up on a refused admin token")
			}
			e.HS.SetAdminToken(hsAdminToken)
			waitHomeserver(t, e, u.ID, nil)
		})

		t.Run("deactivated on the homeserver", func(t *testing.T) {
			u := e.NewUser("gone")
			e.AddEmail(t, u, "gone@example.org")
			waitHomeserver(t, e, u.ID, nil, "gone@example.org")
			deactivateOnHomeserver(t, e, u)
			support.WaitFor(t, "the mirror queue to drain", drained, 10*time.Second)
			calls := e.HS.AdminCalls()
			harness.Expect(t, e.Do("DELETE", adminPrefix+"/users/%40gone%3Ahs.test/threepids/email/gone%40example.org", adminToken, nil), 200, "")
			support.WaitFor(t, "the mirror to look and give up", func() bool { return e.HS.AdminCalls() > calls && drained() }, 10*time.Second)
			if got := e.HS.Threepids(u.ID); len(got) != 0 || !e.HS.Deactivated(u.ID) {
				t.Fatalf("the deactivated account now holds %+v (deactivated %t)", got, e.HS.Deactivated(u.ID))
			}
		})
	})
}

// deactivateOnHomeserver deactivates u directly on the fake homeserver, as if
// the client had not gone through threepidd.
func deactivateOnHomeserver(t *testing.T, e *harness.Env, u harness.User) {
	t.Helper()
	r := harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, map[string]any{})
	session, _ := r.JSON(t)["session"].(string)
	harness.Expect(t, harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, map[string]any{"auth": u.PasswordAuth(session)}), 200, "")
}

// withoutSession returns r's body with any UIA "session" blanked.
func withoutSession(t *testing.T, r harness.Response) string {
	t.Helper()
	var m map[string]any
	if json.Unmarshal(r.Body, &m) != nil {
		return string(r.Body)
	}
	if _, ok := m["session"]; ok {
		m["session"] = ""
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestDeactivate: POST /account/deactivate through threepidd goes to the
// homeserver with its UIA, whose answers and errors pass unchanged; it acts
// only on the token's own account; once the homeserver deactivated the
// account, threepidd unbinds at the identity server and removes the 3PIDs on
// both sides (the mirror is on), combines the unbind results, and answers a
// retry as the homeserver does.
func TestDeactivate(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1, HomeserverYAML: mirrorYAML})
		e.HS.SetAdminToken(hsAdminToken)
		ctx := context.Background()
		is := e.IS[0]
		setup := func(localpart string) (harness.User, string) {
			u := e.NewUser(localpart)
			address := localpart + "@example.org"
			e.AddEmail(t, u, address)
			harness.Expect(t, e.Bind(t, u, 0, "email", address), 200, "")
			return u, address
		}
		held := func(u harness.User, address string) string {
			as, err := e.Server.Store.AssociationsOf(ctx, u.ID)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("3pids=%d bindings=%d is=%t deactivated=%t", len(as), len(e.BindingsOf(t, u, address)),
				is.Bindings()[address] == u.ID, e.HS.Deactivated(u.ID))
		}

		t.Run("homeserver answers passed through", func(t *testing.T) {
			u, address := setup("careful")
			before := held(u, address)
			// What the homeserver itself answers, and what threepidd answers.
			for _, c := range []struct {
				name    string
				body    func(session string) any
				status  int
				errcode string
			}{
				{"UIA round", func(string) any { return map[string]any{} }, 401, ""},
				{"wrong password", func(s string) any {
					a := u.PasswordAuth(s)
					a["password"] = "wrong"
					return map[string]any{"auth": a}
				}, 401, "M_FORBIDDEN"},
				{"erase not a boolean", func(s string) any { return map[string]any{"auth": u.PasswordAuth(s), "erase": "yes"} }, 400, "M_BAD_JSON"},
				{"not JSON", func(string) any { return "{" }, 400, "M_NOT_JSON"},
			} {
				direct := harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, map[string]any{})
				session, _ := direct.JSON(t)["session"].(string)
				direct = harness.Do(t, "POST", e.HS.URL()+deactivateV3, u.Token, c.body(session))
				relayed := e.Do("POST", deactivateV3, u.Token, c.body(session))
				harness.Expect(t, relayed, c.status, c.errcode)
				// A UIA session is new on each round; everything else is the same.
				if relayed.Status != direct.Status || withoutSession(t, relayed) != withoutSession(t, direct) {
					t.Fatalf("%s: threepidd answered %d %s, the homeserver %d %s", c.name, relayed.Status, relayed.Body, direct.Status, direct.Body)
				}
			}
			if after := held(u, address); after != before {
				t.Fatalf("refused deactivations changed %s to %s", before, after)
			}
		})

		t.Run("guest", func(t *testing.T) {
			_, token := e.HS.AddGuest()
			relays := len(e.HS.RelayCalls())
			harness.Expect(t, e.Do("POST", deactivateV3, token, map[string]any{}), 403, "M_GUEST_ACCESS_FORBIDDEN")
			if n := len(e.HS.RelayCalls()); n != relays {
				t.Fatal("a guest's deactivation was relayed")
			}
		})

		t.Run("only the token's account", func(t *testing.T) {
			alice, aliceAddress := setup("bystander")
			bob, bobAddress := setup("quitter")
			before := held(alice, aliceAddress)
			r := e.Do("POST", deactivateV3, bob.Token, map[string]any{})
			session, _ := r.JSON(t)["session"].(string)
			// Alice's identity in the auth dict does not make it her account.
			auth := bob.PasswordAuth(session)
			r = e.Do("POST", deactivateV3, bob.Token, map[string]any{"auth": auth, "user_id": alice.ID})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != "success" {
				t.Fatalf("id_server_unbind_result %v", got)
			}
			if after := held(alice, aliceAddress); after != before {
				t.Fatalf("bob's deactivation changed alice: %s -> %s", before, after)
			}
			if got := held(bob, bobAddress); got != "3pids=0 bindings=0 is=false deactivated=true" {
				t.Fatalf("bob after deactivation: %s", got)
			}
			// The client retries: the homeserver's answer for a dead token.
			harness.Expect(t, e.Do("POST", deactivateV3, bob.Token, map[string]any{"auth": auth}), 401, "M_UNKNOWN_TOKEN")
			if got := held(bob, bobAddress); got != "3pids=0 bindings=0 is=false deactivated=true" {
				t.Fatalf("bob after a retry: %s", got)
			}
		})

		t.Run("identity server failing", func(t *testing.T) {
			u, address := setup("unlucky")
			is.SetMode(fakes.IdentityServerFail500)
			r := e.Do("POST", deactivateV3, u.Token, map[string]any{})
			session, _ := r.JSON(t)["session"].(string)
			r = e.Do("POST", deactivateV3, u.Token, map[string]any{"auth": u.PasswordAuth(session)})
			harness.Expect(t, r, 200, "")
			if got := r.JSON(t)["id_server_unbind_result"]; got != "no-support" {
				t.Fatalf("id_server_unbind_result %v with the identity server failing", got)
			}
			if got := held(u, address); got != "3pids=0 bindings=1 is=true deactivated=true" {
				t.Fatalf("after deactivation with the identity server failing: %s", got)
			}
			is.SetMode(fakes.IdentityServerNormal)
			support.WaitFor(t, "the queued unbind", func() bool { return held(u, address) == "3pids=0 bindings=0 is=false deactivated=true" }, 60*time.Second)
			if n, err := e.Server.Store.CountOutbox(ctx, account.DeactivateKind); err != nil || n != 0 {
				t.Fatalf("%d cleanups left queued (%v)", n, err)
			}
		})
		// Last, once the cases above are done: it waits for every queue to drain.
		t.Run("through the homeserver, then unbound and removed on both sides", func(t *testing.T) {
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
			support.WaitFor(t, "the mirror and cleanup queues to drain", func() bool {
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
	})
}
