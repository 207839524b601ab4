//go:build realpeer

package realpeer

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the "sqlite3" database/sql driver

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

// importRow is a row of Dendrite's userapi_threepids.
type importRow struct{ localpart, medium, address string }

// listedThreepid is an entry of GET /_matrix/client/v3/account/3pid.
type listedThreepid struct {
	Medium      string `json:"medium"`
	Address     string `json:"address"`
	ValidatedAt int64  `json:"validated_at"`
	AddedAt     int64  `json:"added_at"`
}

var (
	// importRows are written into Dendrite's user database: alice's e-mail
	// in upper case (imported in lower case), her phone number, bob's
	// e-mail, and one address that both hold in two spellings (Dendrite's
	// key is the exact string), which threepidd must give to neither.
	importRows = []importRow{
		{"alice", "email", "Alice.Smith@Example.ORG"},
		{"alice", "msisdn", "447700900123"},
		{"alice", "email", "Shared@Example.org"},
		{"bob", "email", "bob@example.org"},
		{"bob", "email", "shared@example.org"},
	}
	// importWant is what threepidd lists per localpart after the import,
	// in its order (added_at, which one import run shares, then medium and
	// address).
	importWant = map[string][]listedThreepid{
		"alice": {{Medium: "email", Address: "alice.smith@example.org"}, {Medium: "msisdn", Address: "447700900123"}},
		"bob":   {{Medium: "email", Address: "bob@example.org"}},
	}
)

// importReport is the report threepidd import prints on stdout for
// importRows read from userDB (a file: URI).
func importReport(userDB string, imported, present int) string {
	return fmt.Sprintf(`threepidd import from the Dendrite SQLite database %s
  accounts read:    2
  3PIDs found:      5
  imported:         %d
  already present:  %d
  conflicts:        1
  not imported:     0
conflict: email "shared@example.org": held by several homeserver accounts: @alice:localhost, @bob:localhost
`, strings.TrimPrefix(userDB, "file:"), imported, present)
}

// TestDendriteImport imports 3PIDs that a real Dendrite holds, as an operator
// would: rows are written into Dendrite's own user database while it runs,
// the threepidd binary's import command reads that database (-dendrite-db)
// into threepidd's store (the config file threepidd runs with, before nginx
// sends the 3PID endpoints to it), and each user's Dendrite access token then
// lists exactly the canonical imported 3PIDs through nginx, the conflicting
// address for nobody. A second run changes nothing. Once per storage backend.
func TestDendriteImport(t *testing.T) {
	ctx := ContextOf(t)
	start := time.Now()
	support.ThreepiddBinary(t) // built now, as part of the setup
	d := StartDendrite(ctx, t, env)
	users := map[string]User{}
	for _, localpart := range []string{"alice", "bob"} {
		users[localpart] = mustRegister(ctx, t, d, localpart, localpart+"-password")
	}
	writeDendriteThreepids(ctx, t, d, importRows)
	// Dendrite itself now serves the rows as written: they are in the
	// database it uses.
	for localpart, u := range users {
		var want []listedThreepid
		for _, r := range importRows {
			if r.localpart == localpart {
				want = append(want, listedThreepid{Medium: r.medium, Address: r.address})
			}
		}
		got := listThreepids(ctx, t, d.URL, u)
		for i := range got {
			got[i].ValidatedAt, got[i].AddedAt = 0, 0 // Dendrite keeps none
		}
		sortThreepids(want)
		sortThreepids(got)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Dendrite lists for %s %+v, want %+v", localpart, got, want)
		}
	}
	t.Logf("setup (threepidd built, Dendrite started, users and rows written): %v", time.Since(start).Round(time.Millisecond))

	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			start := time.Now()
			ctx := ContextOf(t)
			tp := StartThreepidd(ctx, t, ThreepiddOptions{Backend: b, Dendrite: d})

			before := time.Now().UnixMilli()
			runImport(ctx, t, tp.ConfigPath, d.UserDB, importReport(d.UserDB, 3, 0))
			after := time.Now().UnixMilli()

			n := StartNginx(ctx, t, env, tp.Addr, d.Addr)
			first := map[string][]listedThreepid{}
			for localpart, u := range users {
				got := listThreepids(ctx, t, n.URL, u)
				stripped := slices.Clone(got)
				for i, x := range got {
					if x.ValidatedAt < before || x.ValidatedAt > after || x.AddedAt != x.ValidatedAt {
						t.Errorf("%s: %s %s: validated_at %d, added_at %d, want both the import time, in [%d, %d]",
							localpart, x.Medium, x.Address, x.ValidatedAt, x.AddedAt, before, after)
					}
					stripped[i].ValidatedAt, stripped[i].AddedAt = 0, 0
				}
				if !reflect.DeepEqual(stripped, importWant[localpart]) {
					t.Fatalf("threepidd lists for %s through nginx %+v, want %+v", localpart, got, importWant[localpart])
				}
				first[localpart] = got
			}

			runImport(ctx, t, tp.ConfigPath, d.UserDB, importReport(d.UserDB, 0, 3))
			for localpart, u := range users {
				if got := listThreepids(ctx, t, n.URL, u); !reflect.DeepEqual(got, first[localpart]) {
					t.Errorf("after the second import threepidd lists for %s %+v, want as before %+v", localpart, got, first[localpart])
				}
			}
			t.Logf("import on %s: %v wall (threepidd and nginx started, two imports, checks)", b.Name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// writeDendriteThreepids inserts rows into the running Dendrite's
// userapi_threepids with the statement Dendrite uses (v0.15.2,
// userapi/storage/sqlite3/threepid_table.go). Its SQLite file takes one
// writer at a time, so the connection waits out Dendrite's.
func writeDendriteThreepids(ctx context.Context, t *testing.T, d *Dendrite, rows []importRow) {
	t.Helper()
	db, err := sql.Open("sqlite3", d.UserDB+"?_busy_timeout=10000")
	if err != nil {
		t.Fatalf("open Dendrite's user database: %v", err)
	}
	defer db.Close()
	for _, r := range rows {
		if _, err := db.ExecContext(ctx, "INSERT INTO userapi_threepids (threepid, medium, localpart, server_name) VALUES ($1, $2, $3, $4)",
			r.address, r.medium, r.localpart, d.ServerName); err != nil {
			t.Fatalf("insert %+v into Dendrite's userapi_threepids: %v", r, err)
		}
	}
}

// runImport runs `threepidd import -config configPath -dendrite-db userDB`
// and checks that it exits 0 with wantReport on stdout.
func runImport(ctx context.Context, t *testing.T, configPath, userDB, wantReport string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := support.ThreepiddCommand(ctx, t, "import", "-config", configPath, "-dendrite-db", userDB)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("threepidd import: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	if got := stdout.String(); got != wantReport {
		t.Fatalf("threepidd import printed\n%s\nwant\n%s\nstderr:\n%s", got, wantReport, stderr.Bytes())
	}
}

// listThreepids is GET /_matrix/client/v3/account/3pid at baseURL with u's token.
func listThreepids(ctx context.Context, t *testing.T, baseURL string, u User) []listedThreepid {
	t.Helper()
	var body struct {
		Threepids []listedThreepid `json:"threepids"`
	}
	if err := DoJSON(ctx, baseURL, http.MethodGet, "/_matrix/client/v3/account/3pid", u.AccessToken, nil, &body); err != nil {
		t.Fatalf("%s: %v", u.UserID, err)
	}
	if body.Threepids == nil {
		t.Fatalf("%s: GET /account/3pid at %s has no threepids array", u.UserID, baseURL)
	}
	return body.Threepids
}

// sortThreepids orders a list by medium, then address.
func sortThreepids(l []listedThreepid) {
	slices.SortFunc(l, func(a, b listedThreepid) int {
		return strings.Compare(a.Medium+"\x00"+a.Address, b.Medium+"\x00"+b.Address)
	})
}
