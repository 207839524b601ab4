package postgres_test

import (
	"database/sql"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// TestListenerReconnects kills the listener's connection: the store
// reconnects, delivers what was committed meanwhile, and keeps delivering.
func TestListenerReconnects(t *testing.T) {
	var pg *storagetest.Backend
	for _, b := range storagetest.Backends(t) {
		if b.Driver == backend.Postgres {
			pg = &b
		}
	}
	if pg == nil {
		t.Skipf("%s is not set", storagetest.PostgresEnv)
	}
	u, err := url.Parse(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	appName := "threepidd listener " + u.Query().Get("search_path")
	admin, err := sql.Open("pgx", os.Getenv(storagetest.PostgresEnv))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx := t.Context()
	listenerPID := func(not int) int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			var pid int
			err := admin.QueryRowContext(ctx,
				`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> $2`, appName, not).Scan(&pid)
			if err == nil {
				return pid
			}
			if err != sql.ErrNoRows {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // polling the server; nothing to wait on
		}
		t.Fatalf("no listener connection (application_name %q)", appName)
		return 0
	}

	s := storagetest.Open(t, *pg)
	woken := make(chan string, 16)
	s.Subscribe(ctx, func(userID string) { woken <- userID })
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-woken:
			if got != want {
				t.Fatalf("woken for %s, want %s", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("not woken for %s", want)
		}
	}
	appendFor := func(user string) {
		t.Helper()
		if _, err := s.AppendNotification(ctx, storage.Notification{UserID: user, At: 1}); err != nil {
			t.Fatal(err)
		}
	}

	appendFor("@before:hs")
	expect("@before:hs")

	old := listenerPID(0)
	var killed bool
	if err := admin.QueryRowContext(ctx, `SELECT pg_terminate_backend($1)`, old).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate listener: %v %v", killed, err)
	}
	appendFor("@meanwhile:hs")
	expect("@meanwhile:hs")

	listenerPID(old)
	appendFor("@after:hs")
	expect("@after:hs")
}
