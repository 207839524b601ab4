package importer

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// dendriteRows are the fixture: accounts (localpart, server_name,
// deactivated) and 3PIDs (threepid, medium, localpart, server_name).
var (
	dendriteAccounts = []struct {
		localpart, serverName string
		deactivated           bool
	}{
		{"alice", "hs.test", false}, {"bob", "hs.test", true}, {"eve", "hs.test", false}, {"dave", "other.test", false},
	}
	dendriteThreepids = [][4]string{
		{"Alice@Example.org", "email", "alice", "hs.test"},
		{"447700900001", "msisdn", "alice", "hs.test"},
		{"bob@example.org", "email", "bob", "hs.test"},
		{"carol@example.org", "email", "carol", "hs.test"}, // no account row
		{"not-an-email", "email", "eve", "hs.test"},
		{"dave@other.test", "email", "dave", "other.test"},
	}
	wantDendrite = Snapshot{
		Users: 5,
		Records: []Record{
			{UserID: "@alice:hs.test", Medium: "email", Address: "Alice@Example.org"},
			{UserID: "@alice:hs.test", Medium: "msisdn", Address: "447700900001"},
			{UserID: "@eve:hs.test", Medium: "email", Address: "not-an-email"},
		},
		Rejected: []Rejected{
			{Record{UserID: "@bob:hs.test", Medium: "email", Address: "bob@example.org"}, "the account is deactivated"},
			{Record{UserID: "@carol:hs.test", Medium: "email", Address: "carol@example.org"}, "no such account"},
			{Record{UserID: "@dave:other.test", Medium: "email", Address: "dave@other.test"}, "not a user of hs.test"},
		},
	}
)

// fillDendrite creates Dendrite's tables (schema file) in db and the fixture rows,
// with the statements Dendrite itself uses.
func fillDendrite(t *testing.T, db *sql.DB, schemaFile string) {
	t.Helper()
	schema, err := os.ReadFile(filepath.Join("testdata", schemaFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range strings.Split(string(schema), ";") {
		if strings.Contains(stmt, "CREATE") {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
	}
	for _, a := range dendriteAccounts {
		if _, err := db.Exec("INSERT INTO userapi_accounts(localpart, server_name, created_ts, password_hash, appservice_id, account_type) VALUES ($1, $2, $3, $4, $5, $6)",
			a.localpart, a.serverName, 1, "hash", nil, 1); err != nil {
			t.Fatal(err)
		}
		if a.deactivated {
			if _, err := db.Exec("UPDATE userapi_accounts SET is_deactivated = TRUE WHERE localpart = $1 AND server_name = $2", a.localpart, a.serverName); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tp := range dendriteThreepids {
		if _, err := db.Exec("INSERT INTO userapi_threepids (threepid, medium, localpart, server_name) VALUES ($1, $2, $3, $4)", tp[0], tp[1], tp[2], tp[3]); err != nil {
			t.Fatal(err)
		}
	}
}

func readDendrite(t *testing.T, dsn string) Snapshot {
	t.Helper()
	d, err := OpenDendrite(dsn, "hs.test")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	snap, err := d.Read(context.Background(), func(string, ...any) {})
	if err != nil {
		t.Fatalf("read %s: %v", d.Describe(), err)
	}
	return snap
}

func TestDendriteSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "userapi_accounts.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	fillDendrite(t, db, "dendrite_sqlite.sql")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, dsn := range []string{path, "file:" + path, "file:" + path + "?_busy_timeout=5000"} {
		if got := readDendrite(t, dsn); !reflect.DeepEqual(got, wantDendrite) {
			t.Fatalf("%s: read\n%+v\nwant\n%+v", dsn, got, wantDendrite)
		}
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the database file changed (%v)", err)
	}
	if _, err := os.Stat(path + "-wal"); !os.IsNotExist(err) {
		t.Fatalf("a WAL file appeared: %v", err)
	}

	// Read-only: a missing file is an error, never created.
	missing := filepath.Join(t.TempDir(), "nope.db")
	d, err := OpenDendrite(missing, "hs.test")
	if err == nil {
		_, err = d.Read(context.Background(), func(string, ...any) {})
		d.Close()
	}
	if _, serr := os.Stat(missing); err == nil || !os.IsNotExist(serr) {
		t.Fatalf("missing database: err %v, file %v", err, serr)
	}
}

func TestDendritePostgres(t *testing.T) {
	var dsn string
	for _, b := range storagetest.Backends(t) {
		if b.Driver == backend.Postgres {
			dsn = b.DSN
		}
	}
	if dsn == "" {
		t.Skip(storagetest.PostgresEnv + " is not set")
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fillDendrite(t, db, "dendrite_postgres.sql")
	if got := readDendrite(t, dsn); !reflect.DeepEqual(got, wantDendrite) {
		t.Fatalf("read\n%+v\nwant\n%+v", got, wantDendrite)
	}
}

// TestDendriteImportTwice: Dendrite keeps no timestamps, so the first import
// stores its own time; the second finds everything present.
func TestDendriteImportTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "userapi.db")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	fillDendrite(t, db, "dendrite_sqlite.sql")
	db.Close()
	store := storagetest.Open(t, storagetest.Backends(t)[0])
	at := time.UnixMilli(1_700_000_000_000)
	for run, want := range []struct{ imported, present int }{{2, 0}, {0, 2}} {
		d, err := OpenDendrite(path, "hs.test")
		if err != nil {
			t.Fatal(err)
		}
		rep, err := (&Importer{Store: store, Source: d, Clock: func() time.Time { return at.Add(time.Duration(run) * time.Hour) }}).Run(context.Background())
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if rep.Imported != want.imported || rep.Present != want.present || len(rep.Rejected) != 4 || len(rep.Conflicts) != 0 {
			t.Fatalf("run %d: %+v", run+1, rep)
		}
	}
	as, err := store.AssociationsOf(context.Background(), "@alice:hs.test")
	if err != nil || len(as) != 2 || as[0].AddedAt != at.UnixMilli() || as[0].ValidatedAt != at.UnixMilli() || as[0].Address != "alice@example.org" {
		t.Fatalf("alice: %+v %v", as, err)
	}
}

func TestSQLiteReadOnly(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"/var/lib/dendrite/userapi.db", "file:/var/lib/dendrite/userapi.db?_query_only=1&mode=ro"},
		{"file:userapi.db", "file:userapi.db?_query_only=1&mode=ro"},
		{"file:userapi.db?mode=rwc&_busy_timeout=5000", "file:userapi.db?_busy_timeout=5000&_query_only=1&mode=ro"},
		{"/tmp/odd?#%.db", "file:/tmp/odd%3f%23%25.db?_query_only=1&mode=ro"},
	}
	for _, tc := range tests {
		if got := sqliteReadOnly(tc.dsn); got != tc.want {
			t.Errorf("sqliteReadOnly(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}
