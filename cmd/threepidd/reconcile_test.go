package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/reconcile"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/backend"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
)

// TestServeNeedsAdminToken: kind synapse without an admin token, and without
// mirror: none said explicitly, does not start: one line names the key.
func TestServeNeedsAdminToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "threepidd.yaml")
	y := fmt.Sprintf("server_name: hs.test\nlisten: 127.0.0.1:0\ndatabase: {dsn: %q}\nhomeserver: {url: \"http://127.0.0.1:1\"}\n",
		filepath.Join(dir, "t.db"))
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if exit := run(context.Background(), []string{"serve", "-config", path}, &stdout, &stderr); exit != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", exit, stderr.String())
	}
	want := "threepidd serve: config: homeserver.admin_token: required with homeserver.kind synapse, for the mirror " +
		"(homeserver.mirror defaults to synapse_admin); set homeserver.mirror: none to run without it\n"
	if stderr.String() != want {
		t.Fatalf("stderr %q, want the one line %q", stderr.String(), want)
	}
}

// TestReconcileCommand runs `threepidd reconcile` in-process against a fake
// Synapse: an import, a write-back, a conflict reported by user ID; a second
// run changes nothing; another instance's pass is not run twice.
func TestReconcileCommand(t *testing.T) {
	for _, b := range storagetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			hs := fakes.NewHomeserver(t, "hs.test")
			hs.SetAdminToken("hs-admin")
			hs.RegisterWithEmail("alice", "pw", "alice@example.org")
			carol := hs.AddUser("carol", "pw")
			dave := hs.RegisterWithEmail("dave", "pw", "shared@example.org")
			erin := hs.AddUser("erin", "pw")
			store, err := backend.Open(ctx, b.Driver, b.DSN)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range []storage.Association{
				{UserID: carol, Medium: "email", Address: "carol@example.org", ValidatedAt: 1, AddedAt: 1},
				{UserID: erin, Medium: "email", Address: "shared@example.org", ValidatedAt: 1, AddedAt: 1},
			} {
				if err := store.InsertAssociation(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			configFile := configFiles(t, b, hs)
			synapse := configFile("synapse", ", admin_token: hs-admin")
			conflicts := fmt.Sprintf("conflicts:             2\n  not addresses:         0\n"+
				"conflict: %s email \"shared@example.org\": %s (%s)\n"+
				"conflict: %s email \"shared@example.org\": %s (%s)\n",
				dave, reconcile.ReasonHeldInThreepidd, erin, erin, reconcile.ReasonHeldOnHomeserver, dave)
			runCommandCases(t, []commandCase{
				{"first run", []string{"reconcile", "-config", synapse}, 0,
					"pass:                  finished\n  accounts compared:     4\n  imported:              1\n  written back:          1\n", "reconcile: 4 accounts compared"},
				{"conflicts by user ID", []string{"reconcile", "-config", synapse}, 0, conflicts, ""},
				{"second run changes nothing", []string{"reconcile", "-config", synapse}, 0,
					"imported:              0\n  written back:          0\n  deactivations cleaned: 0\n", ""},
				{"stray argument", []string{"reconcile", "-config", synapse, "now"}, 2, "", `unexpected argument "now"`},
				{"without the admin API", []string{"reconcile", "-config", configFile("none", ", mirror: none")}, 1, "",
					"reconcile needs Synapse's admin API: homeserver.kind synapse and homeserver.admin_token"},
			})
			if got := hs.Holder("email", "carol@example.org"); got != carol {
				t.Fatalf("carol's address written back to %q", got)
			}

			// Another instance holds the pass.
			now := time.Now()
			if _, ok, err := store.ClaimJob(ctx, reconcile.JobName, "elsewhere", now.UnixMilli(), now.Add(time.Minute).UnixMilli(), 0, true); err != nil || !ok {
				t.Fatalf("claim: %v %v", ok, err)
			}
			store.Close()
			var stdout, stderr bytes.Buffer
			if exit := run(ctx, []string{"reconcile", "-config", synapse}, &stdout, &stderr); exit != 1 ||
				!strings.Contains(stderr.String(), "another reconcile (elsewhere) is running") {
				t.Fatalf("while another instance runs it: exit %d, stderr %q", exit, stderr.String())
			}
		})
	}
}
