package storagetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/storage"
)

func testSessions(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	first := storage.Session{
		SID: "sid1", ClientSecret: "secret", Medium: "email", Address: "a@example.org",
		TokenHash: "hash1", SendAttempt: 1, NextLink: "https://example.org/next",
		ExpiresAt: 1000, CreatedAt: 10,
	}
	check(t, s.CreateSession(ctx, first), "create")
	wantErr(t, s.CreateSession(ctx, first), storage.ErrConflict, "create existing sid")

	got, err := s.SessionByID(ctx, "sid1")
	check(t, err, "by id")
	equal(t, got, first, "by id")
	_, err = s.SessionByID(ctx, "nope")
	wantErr(t, err, storage.ErrNotFound, "by unknown id")

	got, err = s.SessionByKey(ctx, "secret", "email", "a@example.org")
	check(t, err, "by key")
	equal(t, got, first, "by key")
	for _, key := range [][3]string{
		{"other", "email", "a@example.org"},
		{"secret", "msisdn", "a@example.org"},
		{"secret", "email", "b@example.org"},
	} {
		_, err = s.SessionByKey(ctx, key[0], key[1], key[2])
		wantErr(t, err, storage.ErrNotFound, fmt.Sprintf("by key %q", key))
	}
	// With two sessions for one key, the newest is returned.
	second := first
	second.SID, second.CreatedAt, second.ExpiresAt = "sid2", 20, 3000
	check(t, s.CreateSession(ctx, second), "create second")
	got, err = s.SessionByKey(ctx, "secret", "email", "a@example.org")
	check(t, err, "by key")
	equal(t, got.SID, "sid2", "newest session by key")

	for want := 1; want <= 2; want++ {
		n, err := s.IncrementSessionFailures(ctx, "sid1")
		check(t, err, "increment failures")
		equal(t, n, want, "failed attempts")
	}
	_, err = s.IncrementSessionFailures(ctx, "nope")
	wantErr(t, err, storage.ErrNotFound, "increment failures of unknown sid")

	check(t, s.UpdateSessionToken(ctx, "sid1", "hash2", 2, 2000), "update token")
	got, err = s.SessionByID(ctx, "sid1")
	check(t, err, "by id")
	want := first
	want.TokenHash, want.SendAttempt, want.ExpiresAt = "hash2", 2, 2000
	equal(t, got, want, "after token update (failures reset)")
	wantErr(t, s.UpdateSessionToken(ctx, "nope", "h", 1, 1), storage.ErrNotFound, "update token of unknown sid")

	check(t, s.MarkSessionValidated(ctx, "sid1", 500), "mark validated")
	check(t, s.MarkSessionValidated(ctx, "sid1", 600), "mark validated again")
	got, err = s.SessionByID(ctx, "sid1")
	check(t, err, "by id")
	equal(t, got.ValidatedAt, int64(500), "validated_at is set once")
	wantErr(t, s.MarkSessionValidated(ctx, "nope", 1), storage.ErrNotFound, "mark unknown sid validated")

	// sid1 expires at 2000, sid2 at 3000.
	n, err := s.DeleteSessionsExpiredBefore(ctx, 2000)
	check(t, err, "delete expired")
	equal(t, n, int64(0), "sessions expired before 2000")
	n, err = s.DeleteSessionsExpiredBefore(ctx, 2500)
	check(t, err, "delete expired")
	equal(t, n, int64(1), "sessions expired before 2500")
	_, err = s.SessionByID(ctx, "sid1")
	wantErr(t, err, storage.ErrNotFound, "expired session")

	ok, err := s.DeleteSession(ctx, "sid2")
	check(t, err, "delete")
	equal(t, ok, true, "delete existing session")
	ok, err = s.DeleteSession(ctx, "sid2")
	check(t, err, "delete again")
	equal(t, ok, false, "delete deleted session")
}

func testAssociations(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	a1 := storage.Association{UserID: "@u:hs", Medium: "email", Address: "x@hs", ValidatedAt: 19, AddedAt: 20}
	a2 := storage.Association{UserID: "@u:hs", Medium: "email", Address: "w@hs", ValidatedAt: 9, AddedAt: 10}
	a3 := storage.Association{UserID: "@u:hs", Medium: "msisdn", Address: "441234", ValidatedAt: 19, AddedAt: 20}
	for _, a := range []storage.Association{a1, a2, a3} {
		check(t, s.InsertAssociation(ctx, a), "insert")
	}
	other := a1
	other.UserID = "@other:hs"
	wantErr(t, s.InsertAssociation(ctx, other), storage.ErrConflict, "insert address held by another user")
	wantErr(t, s.InsertAssociation(ctx, a1), storage.ErrConflict, "insert address held by the same user")

	got, err := s.AssociationsOf(ctx, "@u:hs")
	check(t, err, "associations of")
	equal(t, got, []storage.Association{a2, a1, a3}, "ordered by added_at, medium, address")
	got, err = s.AssociationsOf(ctx, "@nobody:hs")
	check(t, err, "associations of nobody")
	equal(t, got, []storage.Association{}, "associations of nobody")

	holder, err := s.AssociationByAddress(ctx, "email", "x@hs")
	check(t, err, "by address")
	equal(t, holder, a1, "by address")
	_, err = s.AssociationByAddress(ctx, "msisdn", "x@hs")
	wantErr(t, err, storage.ErrNotFound, "by address, other medium")

	n, err := s.CountAssociations(ctx, "@u:hs")
	check(t, err, "count")
	equal(t, n, 3, "count")

	ok, err := s.DeleteAssociation(ctx, "@other:hs", "email", "x@hs")
	check(t, err, "delete by non-holder")
	equal(t, ok, false, "delete by non-holder")
	ok, err = s.DeleteAssociation(ctx, "@u:hs", "email", "x@hs")
	check(t, err, "delete")
	equal(t, ok, true, "delete")
	n, err = s.CountAssociations(ctx, "@u:hs")
	check(t, err, "count")
	equal(t, n, 2, "count after delete")
	// The address is free again.
	check(t, s.InsertAssociation(ctx, other), "insert freed address")
}

// testAssociationRace has 20 users claim one address at once, half directly,
// half in a transaction that checks first: exactly one wins.
func testAssociationRace(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const n = 20
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a := storage.Association{UserID: fmt.Sprintf("@u%d:hs", i), Medium: "email", Address: "race@hs", AddedAt: int64(i)}
			<-start
			if i%2 == 0 {
				errs[i] = s.InsertAssociation(ctx, a)
				return
			}
			errs[i] = s.WithTx(ctx, func(q storage.Querier) error {
				if _, err := q.AssociationByAddress(ctx, a.Medium, a.Address); err == nil {
					return storage.ErrConflict
				}
				return q.InsertAssociation(ctx, a)
			})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("users %d and %d both got the address", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, storage.ErrConflict):
			t.Errorf("user %d: got %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("nobody got the address")
	}
	holder, err := s.AssociationByAddress(ctx, "email", "race@hs")
	check(t, err, "by address")
	equal(t, holder.UserID, fmt.Sprintf("@u%d:hs", winner), "holder")
}

// testLockUser: transactions that lock a user, count their associations and
// add one below a limit never take the user past it, however many race.
func testLockUser(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const n, limit = 20, 3
	errLimit := errors.New("limit reached")
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.WithTx(ctx, func(q storage.Querier) error {
				if err := q.LockUser(ctx, "@limited:hs"); err != nil {
					return err
				}
				count, err := q.CountAssociations(ctx, "@limited:hs")
				if err != nil {
					return err
				}
				if count >= limit {
					return errLimit
				}
				return q.InsertAssociation(ctx, storage.Association{UserID: "@limited:hs", Medium: "email", Address: fmt.Sprintf("l%d@hs", i)})
			})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, errLimit) {
			t.Errorf("transaction %d: %v", i, err)
		}
	}
	count, err := s.CountAssociations(ctx, "@limited:hs")
	check(t, err, "count")
	equal(t, count, limit, "associations after the race")
	// Outside a transaction it takes nothing that lasts.
	check(t, s.LockUser(ctx, "@limited:hs"), "lock outside a transaction")
	check(t, s.WithTx(ctx, func(q storage.Querier) error { return q.LockUser(ctx, "@limited:hs") }), "lock again")
}

func testBindings(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	b1 := storage.Binding{UserID: "@u:hs", Medium: "email", Address: "a@hs", IDServer: "is1", BoundAt: 10}
	b2 := storage.Binding{UserID: "@u:hs", Medium: "email", Address: "a@hs", IDServer: "is2", BoundAt: 11}
	b3 := storage.Binding{UserID: "@v:hs", Medium: "email", Address: "a@hs", IDServer: "is1", BoundAt: 12}
	b4 := storage.Binding{UserID: "@u:hs", Medium: "msisdn", Address: "441234", IDServer: "is1", BoundAt: 13}
	for _, b := range []storage.Binding{b4, b3, b2, b1} {
		check(t, s.UpsertBinding(ctx, b), "upsert")
	}
	b1.BoundAt = 20
	check(t, s.UpsertBinding(ctx, b1), "upsert existing")

	got, err := s.BindingsOf(ctx, "@u:hs")
	check(t, err, "bindings of")
	equal(t, got, []storage.Binding{b1, b2, b4}, "bindings of, by medium, address, id_server")
	got, err = s.BindingsOf(ctx, "@nobody:hs")
	check(t, err, "bindings of nobody")
	equal(t, got, []storage.Binding{}, "bindings of nobody")

	for _, c := range []struct {
		medium, address, idServer string
		want                      []storage.Binding
	}{
		{"email", "a@hs", "is1", []storage.Binding{b1, b3}},
		{"email", "a@hs", "is2", []storage.Binding{b2}},
		{"email", "a@hs", "", []storage.Binding{b1, b3, b2}},
		{"email", "a@hs", "is3", []storage.Binding{}},
		{"msisdn", "a@hs", "", []storage.Binding{}},
	} {
		got, err := s.BindingsOf3PID(ctx, c.medium, c.address, c.idServer)
		check(t, err, "bindings of 3pid")
		equal(t, got, c.want, fmt.Sprintf("bindings of %s %s on %q", c.medium, c.address, c.idServer))
	}

	ok, err := s.DeleteBinding(ctx, "@u:hs", "email", "a@hs", "is1")
	check(t, err, "delete")
	equal(t, ok, true, "delete")
	ok, err = s.DeleteBinding(ctx, "@u:hs", "email", "a@hs", "is1")
	check(t, err, "delete again")
	equal(t, ok, false, "delete again")
	got, err = s.BindingsOf3PID(ctx, "email", "a@hs", "is1")
	check(t, err, "bindings of 3pid")
	equal(t, got, []storage.Binding{b3}, "after delete")
}

func testReplays(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	for _, c := range []struct {
		hash string
		at   int64
		want bool
	}{
		{"h1", 10, true},
		{"h1", 11, false},
		{"h2", 20, true},
	} {
		fresh, err := s.RememberRequest(ctx, c.hash, c.at)
		check(t, err, "remember")
		equal(t, fresh, c.want, fmt.Sprintf("remember %s at %d", c.hash, c.at))
	}
	n, err := s.ForgetRequestsBefore(ctx, 20)
	check(t, err, "forget")
	equal(t, n, int64(1), "forgotten before 20")
	fresh, err := s.RememberRequest(ctx, "h1", 30)
	check(t, err, "remember forgotten")
	equal(t, fresh, true, "remember forgotten hash")
	fresh, err = s.RememberRequest(ctx, "h2", 30)
	check(t, err, "remember kept")
	equal(t, fresh, false, "remember kept hash")
}

// testReplayRace replays one request from several goroutines: one applies it.
func testReplayRace(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const n = 10
	fresh := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fresh[i], errs[i] = s.RememberRequest(ctx, "same", 1) })
	}
	wg.Wait()
	count := 0
	for i := range n {
		check(t, errs[i], "remember")
		if fresh[i] {
			count++
		}
	}
	equal(t, count, 1, "callers told the request is new")
}
