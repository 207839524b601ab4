// Package sqlite is the SQLite backend of storage (mattn/go-sqlite3), the
// default. The database is one file in WAL mode; one connection writes (every
// transaction starts with BEGIN IMMEDIATE) while a small pool reads.
// Wake-ups reach only the subscribers of the same process.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"

	"github.com/mattn/go-sqlite3"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/sqlstore"
)

// params are the connection settings every connection gets: WAL, a 5 s busy
// timeout, foreign keys, and write transactions that take the write lock at
// BEGIN (so two never deadlock upgrading a read lock). synchronous=NORMAL is
// the usual WAL setting: a power loss may lose the last commits, never the file.
var params = []string{
	"_journal_mode=WAL",
	"_busy_timeout=5000",
	"_foreign_keys=on",
	"_synchronous=NORMAL",
	"_txlock=immediate",
}

// maxReaders bounds the reading pool.
var maxReaders = max(4, runtime.NumCPU())

// Open opens (creating it if need be) and migrates the SQLite database named
// by dsn: a file path or a `file:` URI (whose own query parameters are kept).
func Open(ctx context.Context, dsn string) (storage.Store, error) {
	base, err := fileURI(dsn)
	if err != nil {
		return nil, err
	}
	writer, err := sql.Open("sqlite3", withParams(base, params...))
	if err != nil {
		return nil, fmt.Errorf("open sqlite database %q: %w", dsn, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxIdleTime(0)
	writer.SetConnMaxLifetime(0)
	// Open the file (and switch it to WAL) before any reader connects.
	if err := writer.PingContext(ctx); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite database %q: %w", dsn, err)
	}
	reader, err := sql.Open("sqlite3", withParams(base, append(params, "_query_only=true")...))
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite database %q: %w", dsn, err)
	}
	reader.SetMaxOpenConns(maxReaders)
	reader.SetMaxIdleConns(maxReaders)
	reader.SetConnMaxIdleTime(0)
	reader.SetConnMaxLifetime(0)

	s, err := sqlstore.Open(ctx, sqlstore.Config{Writer: writer, Reader: reader, Dialect: dialect{}})
	if err != nil {
		return nil, fmt.Errorf("open sqlite database %q: %w", dsn, err)
	}
	return s, nil
}

// fileURI turns dsn into a `file:` URI (which keeps any '?' or '#' of a plain
// path from being read as parameters). In-memory databases are refused: each
// connection of the pools would get a database of its own.
func fileURI(dsn string) (string, error) {
	if dsn == "" {
		return "", errors.New("sqlite: empty database path")
	}
	if dsn == ":memory:" || strings.Contains(dsn, "mode=memory") {
		return "", fmt.Errorf("sqlite database %q: in-memory databases are not supported, use a file", dsn)
	}
	if strings.HasPrefix(dsn, "file:") {
		return dsn, nil
	}
	return "file:" + strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(dsn), nil
}

// withParams adds the parameters to uri that it does not set itself.
func withParams(uri string, params ...string) string {
	var query url.Values
	if _, q, ok := strings.Cut(uri, "?"); ok {
		query, _ = url.ParseQuery(q) // a malformed query fails later, at connect
	}
	var b strings.Builder
	b.WriteString(uri)
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	for _, p := range params {
		name, _, _ := strings.Cut(p, "=")
		if query.Has(name) {
			continue
		}
		b.WriteString(sep)
		b.WriteString(p)
		sep = "&"
	}
	return b.String()
}

// dialect is SQLite's sqlstore.Dialect. Writers are serialised by the
// database lock, so claiming needs no row locks, and each migration's
// immediate transaction serialises migrators.
type dialect struct{}

func (dialect) Rebind(query string) string { return query }

func (dialect) IsUniqueViolation(err error) bool {
	var e sqlite3.Error
	return errors.As(err, &e) &&
		(e.ExtendedCode == sqlite3.ErrConstraintUnique || e.ExtendedCode == sqlite3.ErrConstraintPrimaryKey)
}

func (dialect) SkipLocked() string { return "" }

func (dialect) AutoIncrementID() string { return "INTEGER PRIMARY KEY AUTOINCREMENT" }

func (dialect) BytesType() string { return "BLOB" }

// UserLock is not needed: every write transaction is BEGIN IMMEDIATE.
func (dialect) UserLock() string { return "" }

func (dialect) MigrationLock() (lock, unlock string) { return "", "" }
