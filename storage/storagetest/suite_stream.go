package storagetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
)

// wakeTimeout bounds the wait for a wake-up that must come.
const wakeTimeout = 10 * time.Second

func testNotifications(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	pos, err := s.MaxStreamID(ctx)
	check(t, err, "max stream id")
	equal(t, pos, int64(0), "max stream id of an empty stream")

	n := storage.Notification{
		UserID: "@u:hs", Medium: "email", Address: "a@hs", Deleted: true,
		MXID: "@u:hs", Origin: "is.example", At: 1234,
	}
	p1, err := s.AppendNotification(ctx, n)
	check(t, err, "append")
	n2 := storage.Notification{UserID: "@v:hs", Medium: "msisdn", Address: "441234", MXID: "@w:remote", Origin: "is2", At: 1235}
	p2, err := s.AppendNotification(ctx, n2)
	check(t, err, "append")
	equal(t, []int64{p1, p2}, []int64{1, 2}, "positions")
	pos, err = s.MaxStreamID(ctx)
	check(t, err, "max stream id")
	equal(t, pos, int64(2), "max stream id")

	n.StreamID, n2.StreamID = p1, p2
	got, err := s.NotificationsSince(ctx, "@u:hs", 0, 0, 10)
	check(t, err, "since")
	equal(t, got, []storage.Notification{n}, "every field stored")
	got, err = s.NotificationsSince(ctx, "@v:hs", 0, 0, 10)
	check(t, err, "since")
	equal(t, got, []storage.Notification{n2}, "every field stored")
}

func testNotificationsSince(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	var u []storage.Notification
	for _, n := range []storage.Notification{
		{UserID: "@u:hs", Address: "1", At: 100},
		{UserID: "@v:hs", Address: "2", At: 150},
		{UserID: "@u:hs", Address: "3", At: 200},
		{UserID: "@u:hs", Address: "4", At: 300},
	} {
		pos, err := s.AppendNotification(ctx, n)
		check(t, err, "append")
		n.StreamID = pos
		if n.UserID == "@u:hs" {
			u = append(u, n)
		}
	}
	for _, c := range []struct {
		name             string
		user             string
		after, notBefore int64
		limit            int
		want             []storage.Notification
	}{
		{"all", "@u:hs", 0, 0, 10, u},
		{"after first", "@u:hs", u[0].StreamID, 0, 10, u[1:]},
		{"after last", "@u:hs", u[2].StreamID, 0, 10, []storage.Notification{}},
		{"not before 200", "@u:hs", 0, 200, 10, u[1:]},
		{"limit", "@u:hs", 0, 0, 2, u[:2]},
		{"limit after", "@u:hs", u[0].StreamID, 0, 1, u[1:2]},
		{"limit 0", "@u:hs", 0, 0, 0, []storage.Notification{}},
		{"other user", "@w:hs", 0, 0, 10, []storage.Notification{}},
	} {
		got, err := s.NotificationsSince(ctx, c.user, c.after, c.notBefore, c.limit)
		check(t, err, c.name)
		equal(t, got, c.want, c.name)
	}
}

// testStreamPositions has concurrent writers append (some rolling back), while
// a reader checks it only ever sees a gap-free prefix of the stream.
func testStreamPositions(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const (
		writers = 6
		rounds  = 8
		user    = "@stream:hs"
	)
	var (
		mu        sync.Mutex
		committed []int64
		wg        sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				n := storage.Notification{UserID: user, Address: fmt.Sprintf("%d/%d", w, r), At: 1}
				switch r % 3 {
				case 0: // on its own
					pos, err := s.AppendNotification(ctx, n)
					if err != nil {
						t.Errorf("append: %v", err)
						return
					}
					mu.Lock()
					committed = append(committed, pos)
					mu.Unlock()
				case 1: // two in one transaction
					var ps []int64
					err := s.WithTx(ctx, func(q storage.Querier) error {
						for range 2 {
							pos, err := q.AppendNotification(ctx, n)
							if err != nil {
								return err
							}
							ps = append(ps, pos)
						}
						return nil
					})
					if err != nil {
						t.Errorf("append in transaction: %v", err)
						return
					}
					mu.Lock()
					committed = append(committed, ps...)
					mu.Unlock()
				case 2: // rolled back: its position is reused
					err := s.WithTx(ctx, func(q storage.Querier) error {
						if _, err := q.AppendNotification(ctx, n); err != nil {
							return err
						}
						return errRollback
					})
					wantErr(t, err, errRollback, "rolled back append")
				}
			}
		})
	}
	done := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-done:
				return
			default:
			}
			ns, err := s.NotificationsSince(ctx, user, 0, 0, 1000)
			if err != nil {
				t.Errorf("read stream: %v", err)
				return
			}
			for i, n := range ns {
				if n.StreamID != int64(i+1) {
					t.Errorf("reader saw position %d at index %d: a gap", n.StreamID, i)
					return
				}
			}
		}
	}()
	wg.Wait()
	close(done)
	<-readerDone

	slices.Sort(committed)
	want := make([]int64, len(committed))
	for i := range want {
		want[i] = int64(i + 1)
	}
	equal(t, committed, want, "committed positions")
	maxPos, err := s.MaxStreamID(ctx)
	check(t, err, "max stream id")
	equal(t, maxPos, int64(len(committed)), "max stream id")
	ns, err := s.NotificationsSince(ctx, user, 0, 0, 1000)
	check(t, err, "since")
	equal(t, len(ns), len(committed), "notifications stored")
}

// waker collects the user IDs a subscription is woken with.
type waker chan string

func subscribe(ctx context.Context, s storage.Store) waker {
	w := make(waker, 64)
	s.Subscribe(ctx, func(userID string) { w <- userID })
	return w
}

// next returns the next user ID woken, failing after wakeTimeout.
func (w waker) next(t testing.TB) string {
	t.Helper()
	select {
	case u := <-w:
		return u
	case <-time.After(wakeTimeout):
		t.Fatal("no wake-up")
		return ""
	}
}

// none checks nothing has been woken.
func (w waker) none(t testing.TB, when string) {
	t.Helper()
	select {
	case u := <-w:
		t.Errorf("%s: woken for %s", when, u)
	default:
	}
}

func testSubscribe(t *testing.T, b Backend, s storage.Store) {
	ctx := t.Context()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := subscribe(sctx, s)
	appendFor := func(q storage.Querier, user string) {
		t.Helper()
		_, err := q.AppendNotification(ctx, storage.Notification{UserID: user, At: 1})
		check(t, err, "append for "+user)
	}

	// Committed in a transaction: woken after the commit.
	check(t, s.WithTx(ctx, func(q storage.Querier) error {
		appendFor(q, "@a:hs")
		w.none(t, "before commit")
		return nil
	}), "WithTx")
	equal(t, w.next(t), "@a:hs", "woken after commit")

	// Rolled back (by error or panic): nobody is woken; the next commit
	// (outside a transaction) wakes its user, and nothing came before it.
	wantErr(t, s.WithTx(ctx, func(q storage.Querier) error {
		appendFor(q, "@rolledback:hs")
		return errRollback
	}), errRollback, "WithTx")
	func() {
		defer func() { _ = recover() }()
		_ = s.WithTx(ctx, func(q storage.Querier) error {
			appendFor(q, "@panicked:hs")
			panic("boom")
		})
	}()
	appendFor(s, "@b:hs")
	equal(t, w.next(t), "@b:hs", "woken after a rollback")

	// A second subscription is woken too; one whose context ended is not.
	w2 := subscribe(ctx, s)
	cancel()
	appendFor(s, "@c:hs")
	equal(t, w2.next(t), "@c:hs", "second subscription")
	w.none(t, "after its context ended")

	// Postgres: a store on the same database (another instance) wakes us.
	if b.Driver == backend.Postgres {
		other := Open(t, b)
		appendFor(other, "@d:hs")
		equal(t, w2.next(t), "@d:hs", "woken by another instance")
	}
}
