// Package storagetest runs tests against every storage backend: helpers that
// give each test fresh databases (a SQLite file, and a Postgres schema when
// THREEPIDD_TEST_POSTGRES names a server), and the conformance suite every
// backend must pass ([TestSuite]).
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
)

// PostgresEnv names the environment variable holding the DSN of the Postgres
// server tests use (each test gets a schema of its own there). Unset, tests run
// on SQLite only, except under CI=true, where that is a failure.
const PostgresEnv = "THREEPIDD_TEST_POSTGRES"

// Backend is a fresh, empty database of one backend.
type Backend struct {
	// Name is "sqlite" or "postgres", the subtest names of Run.
	Name string
	// Driver and DSN are what backend.Open takes.
	Driver, DSN string
}

// Backends returns a fresh database per available backend: a SQLite file in
// t.TempDir() and, when PostgresEnv is set, a new schema on that server,
// dropped when t ends.
func Backends(t testing.TB) []Backend {
	t.Helper()
	bs := []Backend{freshSQLite(t)}
	dsn := os.Getenv(PostgresEnv)
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set (required when CI=true)", PostgresEnv)
		}
		t.Logf("%s is not set: skipping the postgres backend", PostgresEnv)
		return bs
	}
	return append(bs, Backend{Name: "postgres", Driver: backend.Postgres, DSN: postgresSchema(t, dsn)})
}

// Fresh returns a fresh database of the backend called name ("sqlite" or
// "postgres"), as Backends makes them; it fails t when that backend is not
// available.
func Fresh(t testing.TB, name string) Backend {
	t.Helper()
	if name == "sqlite" {
		return freshSQLite(t)
	}
	for _, b := range Backends(t) {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no %s backend", name)
	return Backend{}
}

// freshSQLite is a SQLite file in t.TempDir().
func freshSQLite(t testing.TB) Backend {
	return Backend{Name: "sqlite", Driver: backend.SQLite, DSN: filepath.Join(t.TempDir(), "threepidd.db")}
}

// postgresSchema creates a schema with a random name on the server of dsn,
// drops it when t ends, and returns dsn with its search_path set to it.
func postgresSchema(t testing.TB, dsn string) string {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	schema := "t_" + hex.EncodeToString(b[:])

	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
		admin.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create test schema on %s: %v", PostgresEnv, err)
	}
	return withSearchPath(dsn, schema)
}

// withSearchPath sets the search_path runtime parameter of a URL or key=value DSN.
func withSearchPath(dsn, schema string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return strings.TrimSpace(dsn) + " search_path=" + schema
}

// Open opens b's database and closes it when t ends.
func Open(t testing.TB, b Backend) storage.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := backend.Open(ctx, b.Driver, b.DSN)
	if err != nil {
		t.Fatalf("open %s store: %v", b.Name, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close %s store: %v", b.Name, err)
		}
	})
	return s
}

// Run runs fn as one subtest per backend ("sqlite", "postgres"), each with a
// fresh store that is closed when the subtest ends.
func Run(t *testing.T, fn func(t *testing.T, b Backend, s storage.Store)) {
	t.Helper()
	for _, b := range Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			fn(t, b, Open(t, b))
		})
	}
}

// Notify appends to s a notification for user that the identity server
// id.test reported at at (an email 3PID taken over by mxid, or deleted), and
// returns its stream position.
func Notify(t testing.TB, s storage.Store, user, address string, deleted bool, mxid string, at time.Time) int64 {
	t.Helper()
	pos, err := s.AppendNotification(context.Background(), storage.Notification{
		UserID: user, Medium: "email", Address: address, Deleted: deleted, MXID: mxid, Origin: "id.test", At: at.UnixMilli(),
	})
	if err != nil {
		t.Fatalf("append notification: %v", err)
	}
	return pos
}

// SQLite opens a fresh SQLite store in t's temporary directory, closed when t
// ends: for tests that need one real store and no second backend.
func SQLite(t testing.TB) storage.Store {
	return Open(t, Backend{Name: "sqlite", Driver: backend.SQLite, DSN: filepath.Join(t.TempDir(), "threepidd.db")})
}
