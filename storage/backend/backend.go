// Package backend opens the storage backend a configuration names.
package backend

import (
	"context"
	"fmt"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/postgres"
	"github.com/threepidd/threepidd/storage/sqlite"
)

// The drivers Open knows, as config's database.driver names them.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Open opens and migrates the database dsn with driver SQLite or Postgres.
func Open(ctx context.Context, driver, dsn string) (storage.Store, error) {
	switch driver {
	case SQLite:
		return sqlite.Open(ctx, dsn)
	case Postgres:
		return postgres.Open(ctx, dsn)
	}
	return nil, fmt.Errorf("storage: unknown database driver %q (want %q or %q)", driver, SQLite, Postgres)
}
