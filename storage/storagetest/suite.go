package storagetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
)

// TestSuite is the conformance suite of storage.Store: every case runs on
// every backend Backends offers, each on a fresh database.
func TestSuite(t *testing.T) {
	cases := []struct {
		name string
		fn   func(t *testing.T, b Backend, s storage.Store)
	}{
		{"Sessions", testSessions},
		{"TokenAttempts", testTokenAttempts},
		{"TokenAttemptRace", testTokenAttemptRace},
		{"RateLimits", testRateLimits},
		{"RateLimitRace", testRateLimitRace},
		{"Associations", testAssociations},
		{"AssociationRace", testAssociationRace},
		{"LockUser", testLockUser},
		{"Bindings", testBindings},
		{"Replays", testReplays},
		{"OutboxRelease", testOutboxRelease},
		{"SendClaims", testSendClaims},
		{"ReplayRace", testReplayRace},
		{"Notifications", testNotifications},
		{"NotificationsSince", testNotificationsSince},
		{"StreamPositions", testStreamPositions},
		{"Subscribe", testSubscribe},
		{"Outbox", testOutbox},
		{"OutboxConcurrentClaims", testOutboxConcurrentClaims},
		{"OutboxGroups", testOutboxGroups},
		{"WithTx", testWithTx},
		{"Reopen", testReopen},
		{"NewerSchemaRefused", testNewerSchemaRefused},
		{"BatchLookups", testBatchLookups},
		{"SeenUsers", testSeenUsers},
		{"Jobs", testJobs},
		{"BulkWrites", testBulkWrites},
		{"ImportStaging", testImportStaging},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each case has databases of its own
			Run(t, c.fn)
		})
	}
	t.Run("ConcurrentMigrations", func(t *testing.T) {
		t.Parallel()
		testConcurrentMigrations(t)
	})
}

// check stops the test on an unexpected error.
func check(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantErr checks that err matches target (errors.Is).
func wantErr(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// equal checks got deep-equals want.
func equal[T any](t testing.TB, got, want T, what string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// rawDB opens b's database directly with database/sql, for what the
// interface cannot do.
func rawDB(t testing.TB, b Backend) *sql.DB {
	t.Helper()
	driver := map[string]string{backend.SQLite: "sqlite3", backend.Postgres: "pgx"}[b.Driver]
	db, err := sql.Open(driver, b.DSN)
	check(t, err, "open raw database")
	t.Cleanup(func() { db.Close() })
	return db
}

var errRollback = errors.New("roll back, please")

func testWithTx(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	assoc := func(user, addr string) storage.Association {
		return storage.Association{UserID: user, Medium: "email", Address: addr, ValidatedAt: 1, AddedAt: 2}
	}
	held := func(addr string) bool {
		t.Helper()
		_, err := s.AssociationByAddress(ctx, "email", addr)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("association by address: %v", err)
		}
		return err == nil
	}

	t.Run("commit", func(t *testing.T) {
		err := s.WithTx(ctx, func(q storage.Querier) error {
			check(t, q.InsertAssociation(ctx, assoc("@a:hs", "commit@x")), "insert")
			got, err := q.AssociationByAddress(ctx, "email", "commit@x")
			check(t, err, "read own write")
			equal(t, got, assoc("@a:hs", "commit@x"), "read own write")
			return nil
		})
		check(t, err, "WithTx")
		if !held("commit@x") {
			t.Error("committed association missing")
		}
	})

	t.Run("after commit", func(t *testing.T) {
		var ran []string
		check(t, s.WithTx(ctx, func(q storage.Querier) error {
			q.AfterCommit(func() { ran = append(ran, "committed") })
			equal(t, ran, []string(nil), "run before the commit")
			return nil
		}), "WithTx")
		err := s.WithTx(ctx, func(q storage.Querier) error {
			q.AfterCommit(func() { ran = append(ran, "rolled back") })
			return errors.New("boom")
		})
		if err == nil {
			t.Fatal("WithTx hid fn's error")
		}
		s.AfterCommit(func() { ran = append(ran, "outside") })
		equal(t, ran, []string{"committed", "outside"}, "runs")
	})

	t.Run("rollback on error", func(t *testing.T) {
		err := s.WithTx(ctx, func(q storage.Querier) error {
			check(t, q.InsertAssociation(ctx, assoc("@a:hs", "error@x")), "insert")
			return fmt.Errorf("wrapped: %w", errRollback)
		})
		wantErr(t, err, errRollback, "WithTx")
		if held("error@x") {
			t.Error("association of a rolled-back transaction is stored")
		}
	})

	t.Run("rollback on panic", func(t *testing.T) {
		recovered := func() (p any) {
			defer func() { p = recover() }()
			_ = s.WithTx(ctx, func(q storage.Querier) error {
				check(t, q.InsertAssociation(ctx, assoc("@a:hs", "panic@x")), "insert")
				panic("boom")
			})
			return nil
		}()
		if recovered != "boom" {
			t.Errorf("WithTx re-panicked with %v, want boom", recovered)
		}
		if held("panic@x") {
			t.Error("association of a panicked transaction is stored")
		}
		// The connection of the failed transaction is usable again.
		check(t, s.InsertAssociation(ctx, assoc("@a:hs", "after-panic@x")), "insert after panic")
	})

	t.Run("conflict leaves the transaction usable", func(t *testing.T) {
		err := s.WithTx(ctx, func(q storage.Querier) error {
			wantErr(t, q.InsertAssociation(ctx, assoc("@b:hs", "commit@x")), storage.ErrConflict, "insert held address")
			_, err := q.AssociationByAddress(ctx, "email", "missing@x")
			wantErr(t, err, storage.ErrNotFound, "read missing")
			return q.InsertAssociation(ctx, assoc("@b:hs", "after-conflict@x"))
		})
		check(t, err, "WithTx")
		if !held("after-conflict@x") {
			t.Error("write after a conflict was not committed")
		}
	})

	t.Run("ping", func(t *testing.T) {
		check(t, s.Ping(ctx), "ping")
	})
}

// testReopen checks that data survives Close and a new Open of the same DSN.
func testReopen(t *testing.T, b Backend, s storage.Store) {
	ctx := t.Context()
	a := storage.Association{UserID: "@a:hs", Medium: "email", Address: "a@x", ValidatedAt: 1, AddedAt: 2}
	check(t, s.InsertAssociation(ctx, a), "insert association")
	bd := storage.Binding{UserID: "@a:hs", Medium: "email", Address: "a@x", IDServer: "is", BoundAt: 3}
	check(t, s.UpsertBinding(ctx, bd), "upsert binding")
	pos, err := s.AppendNotification(ctx, storage.Notification{UserID: "@a:hs", Medium: "email", Address: "a@x", At: 4})
	check(t, err, "append")
	id, err := s.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "k", Payload: []byte("p"), NextAttempt: 5})
	check(t, err, "enqueue")
	_, err = s.RememberRequest(ctx, "h", 6)
	check(t, err, "remember")
	check(t, s.Close(), "close")
	check(t, s.Close(), "second close")

	s = Open(t, b)
	got, err := s.AssociationsOf(ctx, "@a:hs")
	check(t, err, "associations")
	equal(t, got, []storage.Association{a}, "associations after reopen")
	bs, err := s.BindingsOf(ctx, "@a:hs")
	check(t, err, "bindings")
	equal(t, bs, []storage.Binding{bd}, "bindings after reopen")
	maxPos, err := s.MaxStreamID(ctx)
	check(t, err, "max stream id")
	equal(t, maxPos, pos, "max stream id after reopen")
	next, err := s.AppendNotification(ctx, storage.Notification{UserID: "@a:hs", At: 7})
	check(t, err, "append after reopen")
	equal(t, next, pos+1, "position after reopen")
	items, err := s.PendingOutbox(ctx, "k", "")
	check(t, err, "pending")
	if len(items) != 1 || items[0].ID != id || string(items[0].Payload) != "p" {
		t.Errorf("outbox after reopen: %+v", items)
	}
	fresh, err := s.RememberRequest(ctx, "h", 8)
	check(t, err, "remember")
	equal(t, fresh, false, "request remembered across reopen")
}

// testNewerSchemaRefused checks that a database migrated by a newer version
// is not opened.
func testNewerSchemaRefused(t *testing.T, b Backend, s storage.Store) {
	check(t, s.Close(), "close")
	db := rawDB(t, b)
	_, err := db.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (1000000, 'future', 0)`)
	check(t, err, "insert future version")
	s2, err := backend.Open(t.Context(), b.Driver, b.DSN)
	if err == nil {
		s2.Close()
		t.Fatal("opened a database with a newer schema")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("error %q does not say the schema is newer", err)
	}
}

// testConcurrentMigrations opens several stores at once on each fresh
// database: migrations must serialise, not fail.
func testConcurrentMigrations(t *testing.T) {
	for _, b := range Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			const n = 4
			errs := make([]error, n)
			stores := make([]storage.Store, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { stores[i], errs[i] = backend.Open(context.Background(), b.Driver, b.DSN) })
			}
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Errorf("open %d: %v", i, errs[i])
					continue
				}
				check(t, stores[i].Close(), "close")
			}
		})
	}
}
