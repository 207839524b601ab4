package importer

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "github.com/mattn/go-sqlite3"    // the "sqlite3" database/sql driver
)

// dendriteQuery reads Dendrite's user API database (v0.15.2 schema,
// userapi/storage/{sqlite3,postgres}/threepid_table.go and accounts_table.go):
// every 3PID with whether its account exists and is deactivated. The SQL is
// the same for SQLite and Postgres.
const dendriteQuery = `
SELECT t.threepid, t.medium, t.localpart, t.server_name,
       a.localpart IS NOT NULL, COALESCE(a.is_deactivated, FALSE)
FROM userapi_threepids t
LEFT JOIN userapi_accounts a ON a.localpart = t.localpart AND a.server_name = t.server_name
ORDER BY t.server_name, t.localpart, t.medium, t.threepid`

// Dendrite reads 3PIDs from Dendrite's user API database (Dendrite has no
// admin API for them), read-only: a SQLite file opened with mode=ro, or
// Postgres in a READ ONLY transaction. Dendrite keeps no timestamps, so
// imported 3PIDs carry the import time. Rows of deactivated accounts (Dendrite
// keeps their 3PIDs), of other server names (virtual hosts) and of accounts
// that do not exist are not imported and are listed. The accounts counted are
// those holding 3PIDs.
type Dendrite struct {
	db         *sql.DB
	serverName string
	describe   string
}

// OpenDendrite opens Dendrite's user API database read-only: dsn is a
// postgres:// URL or a SQLite file (a path, or Dendrite's file: form). Only
// accounts of serverName are imported.
func OpenDendrite(dsn, serverName string) (*Dendrite, error) {
	driver, source, describe := "sqlite3", sqliteReadOnly(dsn), "the Dendrite SQLite database "+strings.TrimPrefix(dsn, "file:")
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		driver, source, describe = "pgx", dsn, "the Dendrite Postgres database"
	}
	db, err := sql.Open(driver, source)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", describe, err)
	}
	return &Dendrite{db: db, serverName: serverName, describe: describe}, nil
}

// sqliteReadOnly turns a SQLite path or file: URI into a read-only file: URI,
// keeping a URI's other parameters.
func sqliteReadOnly(dsn string) string {
	path, query := dsn, ""
	if rest, ok := strings.CutPrefix(dsn, "file:"); ok {
		path, query, _ = strings.Cut(rest, "?")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		q = url.Values{}
	}
	q.Set("mode", "ro")
	q.Set("_query_only", "1")
	if !strings.HasPrefix(dsn, "file:") {
		path = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	}
	return "file:" + path + "?" + q.Encode()
}

// Describe implements Source.
func (d *Dendrite) Describe() string { return d.describe }

// Close implements Source.
func (d *Dendrite) Close() error { return d.db.Close() }

// Read implements Source.
func (d *Dendrite) Read(ctx context.Context, progress func(format string, args ...any)) (Snapshot, error) {
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Snapshot{}, fmt.Errorf("open %s: %w", d.describe, err)
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to keep
	rows, err := tx.QueryContext(ctx, dendriteQuery)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read userapi_threepids: %w", err)
	}
	defer rows.Close()
	var snap Snapshot
	users := map[string]bool{}
	for rows.Next() {
		var address, medium, localpart, serverName string
		var exists, deactivated bool
		if err := rows.Scan(&address, &medium, &localpart, &serverName, &exists, &deactivated); err != nil {
			return Snapshot{}, fmt.Errorf("read userapi_threepids: %w", err)
		}
		r := Record{UserID: "@" + localpart + ":" + serverName, Medium: medium, Address: address}
		switch {
		case serverName != d.serverName:
			snap.Rejected = append(snap.Rejected, Rejected{Record: r, Reason: "not a user of " + d.serverName})
		case !exists:
			snap.Rejected = append(snap.Rejected, Rejected{Record: r, Reason: "no such account"})
		case deactivated:
			snap.Rejected = append(snap.Rejected, Rejected{Record: r, Reason: "the account is deactivated"})
		default:
			snap.Records = append(snap.Records, r)
		}
		users[r.UserID] = true
		if n := len(snap.Records) + len(snap.Rejected); n%10_000 == 0 {
			progress("%d 3PIDs read", n)
		}
	}
	if err := rows.Err(); err != nil {
		return Snapshot{}, fmt.Errorf("read userapi_threepids: %w", err)
	}
	snap.Users = len(users)
	progress("%d accounts with %d 3PIDs read", snap.Users, len(snap.Records)+len(snap.Rejected))
	return snap, nil
}
