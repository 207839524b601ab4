package sqlstore_test

import (
	"database/sql"
	"testing"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/sqlstore"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// TestMigrateSessionTokens: the sessions of a database from before resends
// kept every token keep their token (valid until it expired before), and a
// validated session keeps being validated by it.
func TestMigrateSessionTokens(t *testing.T) {
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			restore := sqlstore.MigrateOnlyTo(2)
			old := storagetest.Open(t, b)
			restore()
			driver := map[string]string{backend.SQLite: "sqlite3", backend.Postgres: "pgx"}[b.Driver]
			db, err := sql.Open(driver, b.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, row := range []string{
				`('open', 'sec', 'email', 'a@example.org', 'hash-open', 2, '', 3, 0, 5000, 100)`,
				`('done', 'sec', 'msisdn', '441234', 'hash-done', 1, 'https://app.example/', 0, 400, 6000, 200)`,
			} {
				if _, err := db.ExecContext(t.Context(), `INSERT INTO sessions (sid, client_secret, medium, address, token_hash,
					send_attempt, next_link, failed_attempts, validated_at, expires_at, created_at) VALUES `+row); err != nil {
					t.Fatalf("insert a session of schema 2: %v", err)
				}
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}

			s := storagetest.Open(t, b)
			for _, want := range []struct {
				session storage.Session
				token   storage.SessionToken
			}{
				{storage.Session{SID: "open", ClientSecret: "sec", Medium: "email", Address: "a@example.org", SendAttempt: 2, ExpiresAt: 5000, CreatedAt: 100},
					storage.SessionToken{SID: "open", TokenHash: "hash-open", SendAttempt: 2, ExpiresAt: 5000}},
				{storage.Session{SID: "done", ClientSecret: "sec", Medium: "msisdn", Address: "441234", SendAttempt: 1, NextLink: "https://app.example/", ValidatedAt: 400, ExpiresAt: 6000, CreatedAt: 200},
					storage.SessionToken{SID: "done", TokenHash: "hash-done", SendAttempt: 1, ExpiresAt: 6000, UsedAt: 400}},
			} {
				got, err := s.SessionByID(t.Context(), want.session.SID)
				if err != nil || got != want.session {
					t.Errorf("session after the migration: %+v (%v), want %+v", got, err, want.session)
				}
				tokens, err := s.SessionTokens(t.Context(), want.session.SID)
				if err != nil || len(tokens) != 1 || tokens[0] != want.token {
					t.Errorf("tokens after the migration: %+v (%v), want %+v", tokens, err, want.token)
				}
			}
		})
	}
}
