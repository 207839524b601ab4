package sqlite

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileURI(t *testing.T) {
	for _, c := range []struct {
		dsn, want, err string
	}{
		{dsn: "threepidd.db", want: "file:threepidd.db"},
		{dsn: "/var/lib/a b/x.db", want: "file:/var/lib/a b/x.db"},
		{dsn: "/tmp/odd?name#with%", want: "file:/tmp/odd%3fname%23with%25"},
		{dsn: "file:x.db?cache=private", want: "file:x.db?cache=private"},
		{dsn: "", err: "empty"},
		{dsn: ":memory:", err: "in-memory"},
		{dsn: "file:x?mode=memory&cache=shared", err: "in-memory"},
	} {
		got, err := fileURI(c.dsn)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("fileURI(%q): error %v, want one containing %q", c.dsn, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("fileURI(%q) = %q, %v; want %q", c.dsn, got, err, c.want)
		}
	}
}

func TestWithParams(t *testing.T) {
	for _, c := range []struct {
		uri    string
		params []string
		want   string
	}{
		{"file:x.db", []string{"_a=1", "_b=2"}, "file:x.db?_a=1&_b=2"},
		{"file:x.db?cache=private", []string{"_a=1"}, "file:x.db?cache=private&_a=1"},
		{"file:x.db?_busy_timeout=100", []string{"_busy_timeout=5000", "_a=1"}, "file:x.db?_busy_timeout=100&_a=1"},
	} {
		if got := withParams(c.uri, c.params...); got != c.want {
			t.Errorf("withParams(%q, %q) = %q, want %q", c.uri, c.params, got, c.want)
		}
	}
}

func TestOpenErrorNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "threepidd.db")
	s, err := Open(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("opened a database in a directory that does not exist")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}

// TestOpenSettings checks that the file is created where the path says (even
// a path with URI characters) and is in WAL mode.
func TestOpenSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd?name#1%.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not at its path: %v", err)
	}
	uri, _ := fileURI(path)
	db, err := sql.Open("sqlite3", uri)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %s, want wal", mode)
	}
}
