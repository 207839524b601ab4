package crash

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/onupdate"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

// Knobs of the SIGKILL test.
const (
	// CyclesEnv sets how many kill/restart cycles run per backend.
	CyclesEnv = "THREEPIDD_TEST_CRASH_CYCLES"
	// SeedEnv replays a run: the seed is printed by every run.
	SeedEnv = "THREEPIDD_TEST_CRASH_SEED"

	defaultCycles      = 20
	defaultShortCycles = 5
	// workers is how many clients send requests at once.
	workers = 4
	// minUp and maxUp bound how long the binary serves before the kill.
	minUp, maxUp = 150 * time.Millisecond, 1500 * time.Millisecond
	// startupKillOneIn: about one start in this many is killed while the
	// binary starts (opening and migrating the store), before it serves; these
	// kills come on top of the cycles under load.
	startupKillOneIn = 8
	maxStartupKill   = 300 * time.Millisecond
)

// outcome is what a client knows of one operation.
type outcome int

const (
	notTried outcome = iota
	// unanswered: sent, but the process died before answering; it may or
	// may not have been applied, never half.
	unanswered
	// acknowledged: answered 200; it must be durable.
	acknowledged
)

// item is one e-mail address a worker owns and the operations made on it,
// in this order: added to the account, bound on the identity server, then
// dropped (unbound by the user, or deleted or taken over by the identity
// server's onupdate). An operation that went unanswered freezes the item.
type item struct {
	user    user
	address string
	sid     string // the validation session, once requestToken answered
	add     outcome
	bind    outcome
	drop    outcome
	// dropBy is "unbind", "deleted" or "takeover" once a drop was sent.
	dropBy string
}

func (it *item) frozen() bool {
	return it.add == unanswered || it.bind == unanswered || it.drop == unanswered
}

// stats counts what the clients saw.
type stats struct {
	mu                                 sync.Mutex
	adds, binds, unbinds, onupdates    int
	unansweredOps, lists, startupKills int
	cycles                             int
	upTime                             time.Duration
}

func (s *stats) count(field *int) {
	s.mu.Lock()
	*field++
	s.mu.Unlock()
}

// cyclesFromEnv returns the number of cycles: CyclesEnv, else 20 (5 under -short).
func cyclesFromEnv(t *testing.T) int {
	t.Helper()
	if v := os.Getenv(CyclesEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive integer", CyclesEnv, v)
		}
		return n
	}
	if testing.Short() {
		return defaultShortCycles
	}
	return defaultCycles
}

// seedFromEnv returns SeedEnv, else a fresh seed; it is logged either way.
func seedFromEnv(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(SeedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want an unsigned integer", SeedEnv, v)
		}
		seed = n
	}
	t.Logf("seed %d (replay with %s=%d)", seed, SeedEnv, seed)
	return seed
}

// TestSIGKILL runs a stream of adds (requestToken, mail, link, UIA add),
// binds, unbinds and onupdates against the real binary, kills it with
// SIGKILL at random points and restarts it, on every backend. At the end,
// everything acknowledged is there (GET /account/3pid; bindings,
// notifications and sessions in the store opened directly after a clean
// stop), and nothing is half-written: no association whose session was not
// spent, no notification whose binding was not dropped, no binding that an
// acknowledged unbind or onupdate removed, no gap in the stream positions.
func TestSIGKILL(t *testing.T) {
	cycles, seed := cyclesFromEnv(t), seedFromEnv(t)
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			support.ThreepiddBinary(t) // not part of the timing
			runCycles(t, b, cycles, seed)
		})
	}
}

func runCycles(t *testing.T, b storagetest.Backend, cycles int, seed uint64) {
	began := time.Now()
	f := newFixture(t, b)
	users := make([]user, workers)
	for w := range users {
		users[w] = f.newUser(fmt.Sprintf("crash%d", w))
	}
	items := make([][]*item, workers)
	st := &stats{}
	rng := rand.New(rand.NewPCG(seed, 0))
	for cycle := 0; st.cycles < cycles; cycle++ {
		if cycle > 0 && rng.IntN(startupKillOneIn) == 0 {
			f.launch()
			time.Sleep(time.Duration(rng.Int64N(int64(maxStartupKill))))
			f.kill()
			st.startupKills++
			continue
		}
		f.start()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			wrng := rand.New(rand.NewPCG(seed, uint64(cycle*workers+w+1)))
			go func() {
				defer wg.Done()
				runWorker(ctx, t, f, st, wrng, users[w], &items[w], fmt.Sprintf("c%d-w%d", cycle, w))
			}()
		}
		up := minUp + time.Duration(rng.Int64N(int64(maxUp-minUp)))
		time.Sleep(up) // the random kill point
		f.kill()
		cancel()
		wg.Wait()
		st.cycles++
		st.upTime += up
	}
	f.start()
	verifyAPI(t, f, users, items)
	f.stop()
	f.checkLog()
	verifyStore(t, storagetest.Open(t, b), users, items)
	t.Logf("%s: %d kill/restart cycles under load (serving %v in all) and %d kills while starting, in %v; "+
		"acknowledged: %d adds, %d binds, %d unbinds, %d onupdates, %d list checks; %d operations unanswered",
		b.Name, st.cycles, st.upTime.Round(time.Millisecond), st.startupKills, time.Since(began).Round(time.Millisecond),
		st.adds, st.binds, st.unbinds, st.onupdates, st.lists, st.unansweredOps)
}

// runWorker sends operations on the items of u until ctx ends. prefix makes
// its addresses unique.
func runWorker(ctx context.Context, t *testing.T, f *fixture, st *stats, rng *rand.Rand, u user, items *[]*item, prefix string) {
	c := newClient(f.URL)
	defer c.close()
	// settle records the outcome of an operation: an unanswered one is
	// counted; any other failure is a bug.
	settle := func(o *outcome, err error, what string, ok *int) bool {
		switch {
		case err == nil:
			*o = acknowledged
			st.count(ok)
			return true
		case !errors.Is(err, errNoAnswer):
			t.Errorf("%s: %v", what, err)
		}
		st.count(&st.unansweredOps)
		return false
	}
	for seq := 0; ctx.Err() == nil; seq++ {
		var bindable, droppable []*item
		for _, it := range *items {
			switch {
			case it.frozen():
			case it.add == acknowledged && it.bind == notTried:
				bindable = append(bindable, it)
			case it.bind == acknowledged && it.drop == notTried:
				droppable = append(droppable, it)
			}
		}
		switch r := rng.IntN(10); {
		case r < 3 && len(bindable) > 0:
			it := bindable[rng.IntN(len(bindable))]
			it.bind = unanswered
			settle(&it.bind, c.bind(ctx, f.IS, u, it.address), "bind "+it.address, &st.binds)
		case r < 6 && len(droppable) > 0:
			it := droppable[rng.IntN(len(droppable))]
			it.drop = unanswered
			var err error
			switch rng.IntN(3) {
			case 0:
				it.dropBy = "unbind"
				err = c.unbind(ctx, u, it.address)
			case 1:
				it.dropBy = "deleted"
				err = c.onUpdate(ctx, f.IS, onupdate.Body{Threepid: it.address, Medium: "email", Deleted: true, MXID: u.ID})
			default:
				it.dropBy = "takeover"
				err = c.onUpdate(ctx, f.IS, onupdate.Body{Threepid: it.address, MXID: takeoverMXID})
			}
			counter := &st.onupdates
			if it.dropBy == "unbind" {
				counter = &st.unbinds
			}
			settle(&it.drop, err, it.dropBy+" "+it.address, counter)
		case r < 7:
			checkList(ctx, t, c, st, u, *items)
		default:
			it := &item{user: u, address: fmt.Sprintf("%s-%s-%d@example.org", u.ID[1:len(u.ID)-len(serverName)-1], prefix, seq)}
			*items = append(*items, it)
			it.add = unanswered
			err := c.addEmail(ctx, f.SMTP, u, it.address, func(sid string) { it.sid = sid })
			settle(&it.add, err, "add "+it.address, &st.adds)
		}
	}
}

// takeoverMXID is the remote user the identity server moves taken-over
// addresses to.
const takeoverMXID = "@thief:elsewhere.test"

// checkList requires GET /account/3pid to list every acknowledged add of u
// and nothing that was never sent.
func checkList(ctx context.Context, t *testing.T, c *client, st *stats, u user, items []*item) {
	got, err := c.threepids(ctx, u)
	if err != nil {
		if !errors.Is(err, errNoAnswer) {
			t.Errorf("list: %v", err)
		}
		return
	}
	st.count(&st.lists)
	compareList(t, "during the run", u, got, items)
}

// compareList checks a user's listed 3PIDs against the items.
func compareList(t *testing.T, when string, u user, got map[string]bool, items []*item) {
	t.Helper()
	sent := map[string]bool{}
	for _, it := range items {
		key := "email:" + it.address
		sent[key] = it.add != notTried
		if it.add == acknowledged && !got[key] {
			t.Errorf("%s: the acknowledged add of %s to %s is not listed", when, it.address, u.ID)
		}
	}
	for key := range got {
		if !sent[key] {
			t.Errorf("%s: %s lists %s, which was never added", when, u.ID, key)
		}
	}
}

// verifyAPI compares every user's GET /account/3pid with the items.
func verifyAPI(t *testing.T, f *fixture, users []user, items [][]*item) {
	t.Helper()
	c := newClient(f.URL)
	defer c.close()
	for w, u := range users {
		got, err := c.threepids(context.Background(), u)
		if err != nil {
			t.Fatalf("final list of %s: %v", u.ID, err)
		}
		compareList(t, "after the last restart", u, got, items[w])
	}
}

// verifyStore checks the store after the final stop: associations against
// their sessions, bindings and notifications against what was acknowledged,
// and the stream positions.
func verifyStore(t *testing.T, s storage.Store, users []user, items [][]*item) {
	t.Helper()
	ctx := context.Background()
	var notifications int64
	for w, u := range users {
		assoc := map[string]bool{}
		as, err := s.AssociationsOf(ctx, u.ID)
		if err != nil {
			t.Fatalf("associations of %s: %v", u.ID, err)
		}
		for _, a := range as {
			assoc[a.Address] = true
		}
		bound := map[string]bool{}
		bs, err := s.BindingsOf(ctx, u.ID)
		if err != nil {
			t.Fatalf("bindings of %s: %v", u.ID, err)
		}
		for _, b := range bs {
			if b.IDServer != isName || b.Medium != "email" {
				t.Errorf("unexpected binding %+v", b)
			}
			bound[b.Address] = true
		}
		notified := map[string][]storage.Notification{}
		ns, err := s.NotificationsSince(ctx, u.ID, 0, 0, 1<<20)
		if err != nil {
			t.Fatalf("notifications of %s: %v", u.ID, err)
		}
		notifications += int64(len(ns))
		for _, n := range ns {
			notified[n.Address] = append(notified[n.Address], n)
		}
		byAddress := map[string]*item{}
		for _, it := range items[w] {
			byAddress[it.address] = it
			checkItem(ctx, t, s, it, assoc[it.address], bound[it.address], notified[it.address])
		}
		for addr := range bound {
			if byAddress[addr] == nil || byAddress[addr].bind == notTried {
				t.Errorf("%s is recorded as bound to %s, which never asked", addr, u.ID)
			}
		}
		for addr := range notified {
			if byAddress[addr] == nil {
				t.Errorf("%s was notified about %s, which it never bound", u.ID, addr)
			}
		}
	}
	maxPos, err := s.MaxStreamID(ctx)
	if err != nil {
		t.Fatalf("max stream id: %v", err)
	}
	if maxPos != notifications {
		t.Errorf("stream positions: max %d for %d notifications (a gap or a lost notification)", maxPos, notifications)
	}
	if n, err := s.CountOutbox(ctx, "unbind"); err != nil || n != 0 {
		t.Errorf("%d unbinds queued (err %v); the identity server was always up", n, err)
	}
}

// checkItem checks one item against its rows: the association (assoc), the
// binding record (bound) and the notifications about it.
func checkItem(ctx context.Context, t *testing.T, s storage.Store, it *item, assoc, bound bool, ns []storage.Notification) {
	t.Helper()
	who := it.address + " of " + it.user.ID
	// Adds: acknowledged means there; never there without its session spent,
	// and a spent session means the association was written with it.
	if it.add == acknowledged && !assoc {
		t.Errorf("%s: acknowledged add lost", who)
	}
	if assoc && it.add == notTried {
		t.Errorf("%s: associated, but never added", who)
	}
	if it.sid != "" {
		_, err := s.SessionByID(ctx, it.sid)
		spent := errors.Is(err, storage.ErrNotFound)
		if err != nil && !spent {
			t.Fatalf("session %s: %v", it.sid, err)
		}
		if assoc != spent {
			t.Errorf("%s: associated %v, but its session spent %v (half-written add)", who, assoc, spent)
		}
	}
	// Bindings: an acknowledged bind stays until an acknowledged drop.
	switch {
	case it.bind == acknowledged && it.drop == notTried && !bound:
		t.Errorf("%s: acknowledged bind lost", who)
	case it.drop == acknowledged && bound:
		t.Errorf("%s: still bound after an acknowledged %s", who, it.dropBy)
	}
	// Notifications: only by an onupdate, at most one, never with the binding kept.
	if len(ns) > 1 {
		t.Errorf("%s: %d notifications, want at most one: %+v", who, len(ns), ns)
	}
	for _, n := range ns {
		if bound {
			t.Errorf("%s: notified %+v, but the binding was not dropped", who, n)
		}
		wantDeleted, wantMXID := it.dropBy == "deleted", it.user.ID
		if it.dropBy == "takeover" {
			wantMXID = takeoverMXID
		}
		if (it.dropBy != "deleted" && it.dropBy != "takeover") || n.Deleted != wantDeleted ||
			n.MXID != wantMXID || n.Origin != isName || n.Medium != "email" {
			t.Errorf("%s: notification %+v does not match the %q drop sent", who, n, it.dropBy)
		}
	}
	if it.bind == acknowledged && it.drop == acknowledged && it.dropBy != "unbind" && len(ns) == 0 {
		t.Errorf("%s: acknowledged %s of an acknowledged binding left no notification", who, it.dropBy)
	}
	if it.dropBy == "unbind" && len(ns) > 0 {
		t.Errorf("%s: a user's own unbind notified them: %+v", who, ns)
	}
}
