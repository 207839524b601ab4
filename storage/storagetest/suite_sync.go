package storagetest

import (
	"fmt"
	"testing"

	"github.com/threepidd/threepidd/storage"
)

// testBatchLookups: the per-page reads of a reconcile pass.
func testBatchLookups(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	var users []string
	for i := range 1203 { // more than one IN list
		users = append(users, fmt.Sprintf("@u%04d:hs", i))
	}
	want := []storage.Association{}
	for i, u := range users {
		if i%2 == 0 {
			continue
		}
		a := storage.Association{UserID: u, Medium: "email", Address: fmt.Sprintf("u%d@example.org", i), ValidatedAt: 1, AddedAt: int64(i)}
		check(t, s.InsertAssociation(ctx, a), "insert")
		want = append(want, a)
	}
	b := storage.Association{UserID: users[1], Medium: "msisdn", Address: "447700900123", ValidatedAt: 1, AddedAt: 0}
	check(t, s.InsertAssociation(ctx, b), "insert")
	want = append([]storage.Association{want[0]}, want...)
	want[0] = b // added_at 0 sorts first within the user
	check(t, s.InsertAssociation(ctx, storage.Association{UserID: "@other:hs", Medium: "email", Address: "o@example.org"}), "insert")

	got, err := s.AssociationsOfUsers(ctx, users)
	check(t, err, "AssociationsOfUsers")
	equal(t, got, want, "associations of the users")
	got, err = s.AssociationsOfUsers(ctx, nil)
	check(t, err, "AssociationsOfUsers of nobody")
	equal(t, got, []storage.Association{}, "associations of nobody")

	check(t, s.UpsertBinding(ctx, storage.Binding{UserID: users[1200], Medium: "email", Address: "x@example.org", IDServer: "a"}), "bind")
	check(t, s.UpsertBinding(ctx, storage.Binding{UserID: users[1200], Medium: "email", Address: "x@example.org", IDServer: "b"}), "bind")
	check(t, s.UpsertBinding(ctx, storage.Binding{UserID: users[3], Medium: "email", Address: "y@example.org", IDServer: "a"}), "bind")
	check(t, s.UpsertBinding(ctx, storage.Binding{UserID: "@other:hs", Medium: "email", Address: "z@example.org", IDServer: "a"}), "bind")
	bound, err := s.UsersWithBindings(ctx, users)
	check(t, err, "UsersWithBindings")
	equal(t, bound, []string{users[3], users[1200]}, "users with bindings")

	// Outbox items grouped by a key prefix.
	for _, key := range []string{"@a:hs 1", "@a:hs 2", "@ab:hs 1", "@a:hs"} {
		_, err := s.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "mirror", Key: key, Payload: []byte("{}")})
		check(t, err, "enqueue")
	}
	_, err = s.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "event", Key: "@a:hs 3", Payload: []byte("{}")})
	check(t, err, "enqueue")
	for prefix, want := range map[string]int64{"@a:hs ": 2, "@a:hs": 3, "@a": 4, "@ab:hs ": 1, "@b:hs ": 0, "@ä:hs ": 0} {
		n, err := s.CountOutboxKeyPrefix(ctx, "mirror", prefix)
		check(t, err, "CountOutboxKeyPrefix")
		equal(t, n, want, "mirror items with key prefix "+prefix)
	}
}

// testSeenUsers: marks survive, a second mark keeps the first time.
func testSeenUsers(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	seen, err := s.UserSeen(ctx, "@a:hs")
	check(t, err, "UserSeen")
	equal(t, seen, false, "seen before any mark")
	check(t, s.MarkUsersSeen(ctx, []string{"@a:hs", "@b:hs"}, 10), "mark")
	check(t, s.MarkUsersSeen(ctx, []string{"@b:hs", "@c:hs"}, 20), "mark again")
	for _, u := range []string{"@a:hs", "@b:hs", "@c:hs"} {
		seen, err := s.UserSeen(ctx, u)
		check(t, err, "UserSeen")
		equal(t, seen, true, u+" seen")
	}
	// Inside a transaction that rolls back, nothing is marked.
	err = s.WithTx(ctx, func(q storage.Querier) error {
		check(t, q.MarkUsersSeen(ctx, []string{"@d:hs"}, 30), "mark in transaction")
		return errRollback
	})
	wantErr(t, err, errRollback, "WithTx")
	seen, err = s.UserSeen(ctx, "@d:hs")
	check(t, err, "UserSeen")
	equal(t, seen, false, "seen after a rollback")
}

// testJobs: one holder at a time, a pass resumes at its cursor, a finished
// pass waits for its next run.
func testJobs(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	claim := func(holder string, now int64, force bool) (storage.Job, bool) {
		t.Helper()
		j, ok, err := s.ClaimJob(ctx, "reconcile", holder, now, now+100, 1000, force)
		check(t, err, "ClaimJob")
		return j, ok
	}
	// A new job waits for its first run, unless forced.
	j, ok := claim("a", 10, false)
	equal(t, ok, false, "claimed before the first run")
	equal(t, j, storage.Job{Name: "reconcile", NextRun: 1000}, "new job")
	j, ok = claim("a", 20, true)
	equal(t, ok, true, "forced claim")
	equal(t, j, storage.Job{Name: "reconcile", Holder: "a", LeaseUntil: 120, StartedAt: 20, NextRun: 1000}, "claimed job")

	// Another holder waits for the lease, even forced.
	j, ok = claim("b", 30, true)
	equal(t, ok, false, "claim of a held lease")
	equal(t, j.Holder, "a", "holder")
	check(t, s.SaveJobCursor(ctx, "reconcile", "a", "500", 200), "save cursor")
	wantErr(t, s.SaveJobCursor(ctx, "reconcile", "b", "600", 300), storage.ErrNotFound, "cursor saved by a non-holder")

	// The lease expires: b resumes a's pass at its cursor, and a has lost it.
	j, ok = claim("b", 200, false)
	equal(t, ok, true, "claim of an expired lease")
	equal(t, j, storage.Job{Name: "reconcile", Holder: "b", LeaseUntil: 300, Cursor: "500", StartedAt: 20, NextRun: 1000}, "resumed job")
	wantErr(t, s.SaveJobCursor(ctx, "reconcile", "a", "600", 400), storage.ErrNotFound, "cursor saved after losing the lease")
	wantErr(t, s.FinishJob(ctx, "reconcile", "a", 250, 2000), storage.ErrNotFound, "finish after losing the lease")

	// Released, the cursor stays for the next holder.
	check(t, s.ReleaseJob(ctx, "reconcile", "b"), "release")
	check(t, s.ReleaseJob(ctx, "reconcile", "nobody"), "release by a non-holder")
	j, ok = claim("c", 210, false)
	equal(t, ok, true, "claim after a release")
	equal(t, j.Cursor, "500", "cursor after a release")

	// Finished, the next pass waits for its run.
	check(t, s.FinishJob(ctx, "reconcile", "c", 250, 2000), "finish")
	j, ok = claim("a", 260, false)
	equal(t, ok, false, "claim before the next run")
	equal(t, j, storage.Job{Name: "reconcile", StartedAt: 20, FinishedAt: 250, NextRun: 2000}, "finished job")
	j, ok = claim("a", 2000, false)
	equal(t, ok, true, "claim at the next run")
	equal(t, j, storage.Job{Name: "reconcile", Holder: "a", LeaseUntil: 2100, StartedAt: 2000, FinishedAt: 250, NextRun: 2000}, "next pass")
}
