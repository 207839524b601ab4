package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// migration is one numbered schema step. Its statements may use the tokens
// {{autoid}} and {{bytes}}, replaced by the dialect's column definitions.
type migration struct {
	version int64
	name    string
	stmts   []string
}

// migrations are applied in order; append new steps, never edit applied ones.
var migrations = []migration{
	{1, "initial schema", []string{
		`CREATE TABLE sessions (
			sid             TEXT PRIMARY KEY,
			client_secret   TEXT NOT NULL,
			medium          TEXT NOT NULL,
			address         TEXT NOT NULL,
			token_hash      TEXT NOT NULL,
			send_attempt    BIGINT NOT NULL,
			next_link       TEXT NOT NULL,
			failed_attempts INTEGER NOT NULL,
			validated_at    BIGINT NOT NULL,
			expires_at      BIGINT NOT NULL,
			created_at      BIGINT NOT NULL
		)`,
		`CREATE INDEX sessions_by_key ON sessions (client_secret, medium, address)`,
		`CREATE INDEX sessions_by_expiry ON sessions (expires_at)`,

		`CREATE TABLE associations (
			medium       TEXT NOT NULL,
			address      TEXT NOT NULL,
			user_id      TEXT NOT NULL,
			validated_at BIGINT NOT NULL,
			added_at     BIGINT NOT NULL,
			PRIMARY KEY (medium, address)
		)`,
		`CREATE INDEX associations_by_user ON associations (user_id, added_at, medium, address)`,

		`CREATE TABLE bindings (
			user_id   TEXT NOT NULL,
			medium    TEXT NOT NULL,
			address   TEXT NOT NULL,
			id_server TEXT NOT NULL,
			bound_at  BIGINT NOT NULL,
			PRIMARY KEY (user_id, medium, address, id_server)
		)`,
		`CREATE INDEX bindings_by_threepid ON bindings (medium, address, id_server)`,

		`CREATE TABLE stream_counter (
			id    INTEGER PRIMARY KEY CHECK (id = 1),
			value BIGINT NOT NULL
		)`,
		`INSERT INTO stream_counter (id, value) VALUES (1, 0)`,
		`CREATE TABLE notifications (
			stream_id BIGINT PRIMARY KEY,
			user_id   TEXT NOT NULL,
			medium    TEXT NOT NULL,
			address   TEXT NOT NULL,
			deleted   BOOLEAN NOT NULL,
			mxid      TEXT NOT NULL,
			origin    TEXT NOT NULL,
			at        BIGINT NOT NULL
		)`,
		`CREATE INDEX notifications_by_user ON notifications (user_id, stream_id)`,

		`CREATE TABLE outbox (
			id           {{autoid}},
			kind         TEXT NOT NULL,
			item_key     TEXT NOT NULL,
			payload      {{bytes}} NOT NULL,
			attempts     INTEGER NOT NULL,
			next_attempt BIGINT NOT NULL,
			created_at   BIGINT NOT NULL,
			last_error   TEXT NOT NULL
		)`,
		`CREATE INDEX outbox_by_due ON outbox (kind, next_attempt)`,
		`CREATE INDEX outbox_by_key ON outbox (kind, item_key)`,

		`CREATE TABLE replays (
			hash    TEXT PRIMARY KEY,
			seen_at BIGINT NOT NULL
		)`,
		`CREATE INDEX replays_by_age ON replays (seen_at)`,
	}},
	{2, "at most one pending outbox item per non-empty key", []string{
		`DROP INDEX outbox_by_key`,
		`CREATE UNIQUE INDEX outbox_unique_key ON outbox (kind, item_key) WHERE item_key <> ''`,
	}},
	{3, "outbox items grouped by the resource they need", []string{
		`ALTER TABLE outbox ADD COLUMN item_group TEXT NOT NULL DEFAULT ''`,
		`CREATE INDEX outbox_by_group ON outbox (kind, item_group, next_attempt)`,
	}},
	{4, "every token sent for a session, each valid until it expires", []string{
		`CREATE TABLE session_tokens (
			sid          TEXT NOT NULL,
			token_hash   TEXT NOT NULL,
			send_attempt BIGINT NOT NULL,
			expires_at   BIGINT NOT NULL,
			used_at      BIGINT NOT NULL,
			PRIMARY KEY (sid, token_hash)
		)`,
		// A session's current token; a validated session was validated by it.
		`INSERT INTO session_tokens (sid, token_hash, send_attempt, expires_at, used_at)
			SELECT sid, token_hash, send_attempt, expires_at, validated_at FROM sessions`,
		`ALTER TABLE sessions DROP COLUMN token_hash`,
		// Attempts are counted per 3PID now (token_attempts).
		`ALTER TABLE sessions DROP COLUMN failed_attempts`,
	}},
	{5, "token attempts per 3PID", []string{
		`CREATE TABLE token_attempts (
			medium  TEXT NOT NULL,
			address TEXT NOT NULL,
			at      BIGINT NOT NULL
		)`,
		`CREATE INDEX token_attempts_by_threepid ON token_attempts (medium, address, at)`,
		`CREATE INDEX token_attempts_by_age ON token_attempts (at)`,
	}},
	{6, "rate-limit buckets shared by the instances", []string{
		`CREATE TABLE ratelimit_buckets (
			limiter    TEXT NOT NULL,
			bucket_key TEXT NOT NULL,
			tat        BIGINT NOT NULL,
			taken_by   BIGINT NOT NULL,
			PRIMARY KEY (limiter, bucket_key)
		)`,
		`CREATE INDEX ratelimit_buckets_by_tat ON ratelimit_buckets (tat)`,
	}},
	{7, "users whose homeserver 3PIDs were imported", []string{
		`CREATE TABLE seen_users (
			user_id TEXT PRIMARY KEY,
			seen_at BIGINT NOT NULL
		)`,
	}},
	{8, "periodic jobs: lease, cursor, schedule", []string{
		`CREATE TABLE jobs (
			name        TEXT PRIMARY KEY,
			holder      TEXT NOT NULL,
			lease_until BIGINT NOT NULL,
			cursor      TEXT NOT NULL,
			started_at  BIGINT NOT NULL,
			finished_at BIGINT NOT NULL,
			next_run    BIGINT NOT NULL
		)`,
	}},
	{9, "validation messages being sent, claimed by one request", []string{
		`CREATE TABLE send_claims (
			claim_key  TEXT PRIMARY KEY,
			claimed_at BIGINT NOT NULL
		)`,
	}},
	{10, "the import's staging table", []string{
		// One row per 3PID an import read (reason: why it is not imported,
		// "" if it may be) and one per account read (medium and address "").
		`CREATE TABLE import_staging (
			medium       TEXT NOT NULL,
			address      TEXT NOT NULL,
			user_id      TEXT NOT NULL,
			validated_at BIGINT NOT NULL,
			added_at     BIGINT NOT NULL,
			reason       TEXT NOT NULL
		)`,
		`CREATE INDEX import_staging_by_threepid ON import_staging (reason, medium, address, user_id)`,
		`CREATE INDEX import_staging_by_user ON import_staging (medium, user_id)`,
	}},
}

var (
	qMigrationsTable = defineQuery(`CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at BIGINT NOT NULL
	)`)
	qMigrationVersion = defineQuery(`SELECT COALESCE(MAX(version), 0) FROM schema_migrations`)
	qMigrationDone    = defineQuery(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`)
)

// migrate applies the migrations the database lacks, on one connection, under
// the dialect's migration lock. Each step is one transaction that first checks
// the step is still missing, so concurrent migrators never apply one twice.
func (s *Store) migrate(ctx context.Context) (err error) {
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close()
	lock, unlock := s.dialect.MigrationLock()
	if lock != "" {
		if _, err := conn.ExecContext(ctx, lock); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		defer func() {
			// Release even if ctx has ended: the connection returns to the pool.
			if _, uerr := conn.ExecContext(context.WithoutCancel(ctx), unlock); uerr != nil {
				err = errors.Join(err, fmt.Errorf("migrate: unlock: %w", uerr))
			}
		}()
	}
	if _, err := conn.ExecContext(ctx, s.sql[qMigrationsTable]); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	for _, m := range migrations {
		if err := s.migrateStep(ctx, conn, m); err != nil {
			return fmt.Errorf("migrate to version %d (%s): %w", m.version, m.name, err)
		}
	}
	return nil
}

// migrateStep applies m unless the database has it already, and refuses a
// database whose schema is newer than this code.
func (s *Store) migrateStep(ctx context.Context, conn *sql.Conn, m migration) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	var version int64
	if err := tx.QueryRowContext(ctx, s.sql[qMigrationVersion]).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if latest := migrations[len(migrations)-1].version; version > latest {
		return fmt.Errorf("database schema version %d is newer than this threepidd knows (%d)", version, latest)
	}
	if version >= m.version {
		return nil
	}
	for _, stmt := range m.stmts {
		if _, err := tx.ExecContext(ctx, s.tokens.Replace(stmt)); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, s.sql[qMigrationDone], m.version, m.name, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
