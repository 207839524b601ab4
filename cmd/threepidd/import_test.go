package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/threepidd/threepidd/importer"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
)

// TestImport runs `threepidd import` in-process against a fake Synapse.
func TestImport(t *testing.T) {
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			hs := fakes.NewHomeserver(t, "hs.test")
			hs.SetAdminToken("hs-admin")
			alice, bob := hs.AddUser("alice", "pw"), hs.AddUser("bob", "pw")
			hs.SetThreepids(alice, []fakes.HomeserverThreepid{{Medium: "email", Address: "alice@example.org"}})
			hs.SetThreepids(bob, []fakes.HomeserverThreepid{{Medium: "msisdn", Address: "447700900002"}, {Medium: "email", Address: "@@"}})
			configFile := configFiles(t, b, hs)
			synapse := configFile("synapse", ", kind: synapse, admin_token: hs-admin")
			runCommandCases(t, []commandCase{
				{"first run", []string{"import", "-config", synapse}, 0,
					"imported:         2\n  already present:  0", "import: 2/2 accounts read, 3 3PIDs"},
				{"second run changes nothing", []string{"import", "-config", synapse}, 0,
					"imported:         0\n  already present:  2\n  conflicts:        0\n  not imported:     1\nnot imported: @bob:hs.test email \"@@\"", ""},
				{"stray argument", []string{"import", "-config", synapse, "now"}, 2, "", `unexpected argument "now"`},
				{"no admin token", []string{"import", "-config", configFile("no-token", ", kind: synapse")}, 1, "", "homeserver.admin_token: required"},
				{"wrong admin token", []string{"import", "-config", configFile("wrong", ", kind: synapse, admin_token: nope")}, 1, "", "HTTP 401 M_UNKNOWN_TOKEN"},
				{"dendrite without its database", []string{"import", "-config", configFile("dendrite", ", kind: dendrite")}, 1, "", "-dendrite-db"},
				{"dendrite database for synapse", []string{"import", "-config", synapse, "-dendrite-db", "x.db"}, 1, "", "only for homeserver.kind dendrite"},
				{"missing config", []string{"import", "-config", filepath.Join(t.TempDir(), "absent.yaml")}, 1, "", "absent.yaml"},
			})
		})
	}
}

// commandCase is one run of the command line and what it must print.
type commandCase struct {
	name           string
	args           []string
	exit           int
	stdout, stderr string // substrings expected
}

// runCommandCases runs each case in-process, in order.
func runCommandCases(t *testing.T, cases []commandCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) { runCommand(t, tt.args, tt.exit, tt.stdout, tt.stderr) })
	}
}

// configFiles returns a writer of configuration files on backend b in front
// of hs: the file's name, and the keys added to its homeserver mapping.
func configFiles(t *testing.T, b storagetest.Backend, hs *fakes.Homeserver) func(name, hsKeys string) string {
	dir := t.TempDir()
	return func(name, hsKeys string) string {
		t.Helper()
		path := filepath.Join(dir, name+".yaml")
		y := fmt.Sprintf("server_name: hs.test\ndatabase: {driver: %s, dsn: %q}\nhomeserver: {url: %q%s}\n", b.Driver, b.DSN, hs.URL(), hsKeys)
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
}

// runCommand runs the command line args in-process and fails t unless it
// exits with exit and its stdout and stderr contain wantOut and wantErr.
func runCommand(t *testing.T, args []string, exit int, wantOut, wantErr string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if got := run(context.Background(), args, &stdout, &stderr); got != exit {
		t.Fatalf("exit %d, want %d; stdout %q, stderr %q", got, exit, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), wantOut) || !strings.Contains(stderr.String(), wantErr) {
		t.Fatalf("stdout %q, stderr %q; want %q and %q in them", stdout.String(), stderr.String(), wantOut, wantErr)
	}
}

// TestImportResumes: an import the homeserver interrupts after its first
// page of accounts exits 1; run again, it continues at the second page and
// finishes with every account, the conflict across pages reported.
func TestImportResumes(t *testing.T) {
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			hs := fakes.NewHomeserver(t, "hs.test")
			hs.SetAdminToken("hs-admin")
			hs.SetPopulation(fakes.Population{Users: 1200, ConflictEvery: 501}) // user 500 holds user 499's first address
			// The first listing call and the 500 accounts of its page, then 503.
			hs.SetAdminCallLimit(1 + importer.DefaultPageSize)
			config := configFiles(t, b, hs)("synapse", ", kind: synapse, admin_token: hs-admin")
			runCommandCases(t, []commandCase{
				{"interrupted", []string{"import", "-config", config}, 1, "", "import: 500/1200 accounts read"},
			})
			hs.SetAdminCallLimit(0)
			runCommandCases(t, []commandCase{
				{"continued", []string{"import", "-config", config}, 0,
					"accounts read:    1200\n  3PIDs found:      2402\n  imported:         2398\n  already present:  0\n  conflicts:        2",
					"import: continuing the import"},
			})
		})
	}
}
