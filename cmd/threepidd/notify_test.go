package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/harness"
)

// TestNotify runs `threepidd notify` in-process against a running threepidd
// whose identity server id1.test may call onupdate.
func TestNotify(t *testing.T) {
	harness.Run(t, func(t *testing.T, b storagetest.Backend) {
		e := harness.Start(t, b, harness.Options{IdentityServers: 1})
		alice, bob := e.NewUser("alice"), e.NewUser("bob")
		harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
		harness.Expect(t, e.Bind(t, bob, 0, "msisdn", "447700900123"), 200, "")
		var key bytes.Buffer
		if err := e.IS[0].Key().WriteSynapse(&key); err != nil {
			t.Fatal(err)
		}
		keyPath := filepath.Join(t.TempDir(), "is.key")
		if err := os.WriteFile(keyPath, key.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		// notify builds a command line: the valid flags, then extra (a later
		// flag wins).
		notify := func(extra ...string) []string {
			return append([]string{"notify", "-key", keyPath, "-origin", e.IS[0].Name(), "-destination", harness.ServerName, "-to", e.URL}, extra...)
		}
		// lost is the notification a successful call must leave.
		type lost struct {
			address, mxid string
			deleted       bool
		}
		tests := []struct {
			name           string
			args           []string
			exit           int
			stdout, stderr string // substrings expected
			user           harness.User
			lost           *lost // nil: user has no notification afterwards
		}{
			{"usage: mxid required for a takeover", notify("-threepid", "alice@example.org"), 2, "", "-mxid is required", alice, nil},
			{"usage: stray argument", notify("-threepid", "alice@example.org", "-deleted", "extra"), 2, "", `unexpected argument "extra"`, alice, nil},
			{"unreadable key", notify("-threepid", "alice@example.org", "-deleted", "-key", filepath.Join(t.TempDir(), "missing.key")), 1, "", "load -key", alice, nil},
			{"wrong destination", notify("-threepid", "alice@example.org", "-deleted", "-destination", "other.hs"), 1, "", "401 Unauthorized: M_UNAUTHORIZED", alice, nil},
			{"origin not configured", notify("-threepid", "alice@example.org", "-deleted", "-origin", "evil.test"), 1, "", "M_UNAUTHORIZED", alice, nil},
			{"invalid mxid", notify("-threepid", "alice@example.org", "-mxid", "bob"), 1, "", "400 Bad Request: M_INVALID_PARAM: mxid is not a valid user ID", alice, nil},
			{"takeover", notify("-threepid", "Alice@Example.org", "-mxid", "@bob:other.tld"), 0, "accepted: Alice@Example.org taken over by @bob:other.tld", "",
				alice, &lost{"alice@example.org", "@bob:other.tld", false}},
			{"deletion with medium", notify("-threepid", "+447700900123", "-medium", "msisdn", "-deleted", "-mxid", bob.ID), 0, "accepted: +447700900123 deleted", "",
				bob, &lost{"447700900123", bob.ID, true}},
		}

		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				runCommand(t, tt.args, tt.exit, tt.stdout, tt.stderr)
				ns := e.Notifications(t, tt.user)
				if tt.lost == nil {
					if len(ns) != 0 {
						t.Fatalf("%s notified: %+v", tt.user.ID, ns)
					}
					return
				}
				if len(ns) != 1 || ns[0].Address != tt.lost.address || ns[0].MXID != tt.lost.mxid || ns[0].Deleted != tt.lost.deleted || ns[0].Origin != e.IS[0].Name() {
					t.Fatalf("%s notifications %+v, want one %+v", tt.user.ID, ns, *tt.lost)
				}
				if got := e.BindingsOf(t, tt.user, tt.lost.address); len(got) != 0 {
					t.Fatalf("%s still bound on %v", tt.user.ID, got)
				}
			})
		}
		// The same takeover again after alice bound the address anew is a
		// genuine repeat (each call signs its own ts), not a replay: applied.
		t.Run("repeated takeover", func(t *testing.T) {
			harness.Expect(t, e.Bind(t, alice, 0, "email", "alice@example.org"), 200, "")
			// notify's ts has millisecond resolution: make sure this call's
			// is not the first's.
			time.Sleep(2 * time.Millisecond)
			var stdout, stderr bytes.Buffer
			args := notify("-threepid", "Alice@Example.org", "-mxid", "@bob:other.tld")
			if exit := run(context.Background(), args, &stdout, &stderr); exit != 0 {
				t.Fatalf("exit %d; stdout %q, stderr %q", exit, stdout.String(), stderr.String())
			}
			if ns := e.Notifications(t, alice); len(ns) != 2 {
				t.Fatalf("after a repeated takeover alice has %d notifications, want 2: %+v", len(ns), ns)
			}
			if got := e.BindingsOf(t, alice, "alice@example.org"); len(got) != 0 {
				t.Fatalf("the repeated takeover left alice bound on %v", got)
			}
		})
	})
}
