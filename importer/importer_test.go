package importer

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// fakeSource returns a fixed snapshot, or err.
type fakeSource struct {
	snap Snapshot
	err  error
}

func (s *fakeSource) Describe() string { return "a fake homeserver" }
func (s *fakeSource) Close() error     { return nil }
func (s *fakeSource) Read(_ context.Context, progress func(string, ...any)) (Snapshot, error) {
	progress("%d accounts read", s.snap.Users)
	return s.snap, s.err
}

func TestImporter(t *testing.T) {
	source := &fakeSource{snap: Snapshot{
		Users: 7,
		Records: []Record{
			{UserID: "@a:hs.test", Medium: "email", Address: "Alice@Example.org", ValidatedAt: 10, AddedAt: 11},
			{UserID: "@a:hs.test", Medium: "email", Address: " alice@example.org", ValidatedAt: 5, AddedAt: 20},
			{UserID: "@a:hs.test", Medium: "msisdn", Address: "+447700900001"},
			{UserID: "@c:hs.test", Medium: "email", Address: "shared@example.org", ValidatedAt: 1, AddedAt: 1},
			{UserID: "@b:hs.test", Medium: "email", Address: "Shared@Example.org", ValidatedAt: 1, AddedAt: 1},
			{UserID: "@d:hs.test", Medium: "email", Address: "taken@example.org", ValidatedAt: 1, AddedAt: 1},
			{UserID: "@e:hs.test", Medium: "email", Address: "nope"},
			{UserID: "@f:hs.test", Medium: "fax", Address: "12345"},
		},
		Rejected: []Rejected{{Record{UserID: "@g:hs.test", Medium: "email", Address: "g@example.org"}, "the account is deactivated"}},
	}}
	wantConflicts := []Conflict{
		{Medium: "email", Address: "shared@example.org", Users: []string{"@b:hs.test", "@c:hs.test"}, Reason: ReasonSeveralAccounts},
		{Medium: "email", Address: "taken@example.org", Users: []string{"@d:hs.test"}, HeldBy: "@zed:hs.test", Reason: ReasonHeldElsewhere},
	}
	wantAlice := []storage.Association{
		{UserID: "@a:hs.test", Medium: "email", Address: "alice@example.org", ValidatedAt: 5, AddedAt: 11},
		{UserID: "@a:hs.test", Medium: "msisdn", Address: "447700900001", ValidatedAt: 1_700_000_000_000, AddedAt: 1_700_000_000_000},
	}
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		ctx := context.Background()
		if err := store.InsertAssociation(ctx, storage.Association{UserID: "@zed:hs.test", Medium: "email", Address: "taken@example.org", ValidatedAt: 1, AddedAt: 1}); err != nil {
			t.Fatal(err)
		}
		for run, want := range []struct{ imported, present int }{{2, 0}, {0, 2}} {
			var progress strings.Builder
			now := time.UnixMilli(1_700_000_000_000).Add(time.Duration(run) * time.Hour)
			im := &Importer{Store: store, Source: source, Progress: &progress, Clock: func() time.Time { return now }}
			rep, err := im.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Users != 7 || rep.Found != 9 || rep.Imported != want.imported || rep.Present != want.present {
				t.Fatalf("run %d counts: %+v", run+1, rep)
			}
			if !reflect.DeepEqual(rep.Conflicts, wantConflicts) {
				t.Fatalf("run %d conflicts:\n%+v\nwant\n%+v", run+1, rep.Conflicts, wantConflicts)
			}
			var rejected []string
			for _, r := range rep.Rejected {
				rejected = append(rejected, r.UserID+" "+r.Address)
			}
			if got := strings.Join(rejected, ", "); got != "@e:hs.test nope, @f:hs.test 12345, @g:hs.test g@example.org" {
				t.Fatalf("run %d rejected: %s", run+1, got)
			}
			if !strings.Contains(progress.String(), "import: 7 accounts read\n") {
				t.Fatalf("progress: %q", progress.String())
			}
			alice, err := store.AssociationsOf(ctx, "@a:hs.test")
			if err != nil || !reflect.DeepEqual(alice, wantAlice) {
				t.Fatalf("run %d: @a holds %+v (%v), want %+v", run+1, alice, err, wantAlice)
			}
			for _, u := range []string{"@b:hs.test", "@c:hs.test", "@d:hs.test", "@e:hs.test"} {
				if n, err := store.CountAssociations(ctx, u); err != nil || n != 0 {
					t.Fatalf("run %d: %s holds %d 3PIDs (%v)", run+1, u, n, err)
				}
			}
		}
	})
}

func TestImporterSourceFails(t *testing.T) {
	store := storagetest.Open(t, storagetest.Backends(t)[0])
	_, err := (&Importer{Store: store, Source: &fakeSource{err: errors.New("admin API refused the token")}}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "admin API refused the token") {
		t.Fatalf("err = %v", err)
	}
}

func TestReportWrite(t *testing.T) {
	rep := Report{
		Source: "a fake homeserver", Users: 3, Found: 4, Imported: 1, Present: 0,
		Conflicts: []Conflict{
			{Medium: "email", Address: "s@example.org", Users: []string{"@b:hs.test", "@c:hs.test"}, Reason: ReasonSeveralAccounts},
			{Medium: "email", Address: "t@example.org", Users: []string{"@d:hs.test"}, HeldBy: "@z:hs.test", Reason: ReasonHeldElsewhere},
		},
		Rejected: []Rejected{{Record{UserID: "@e:hs.test", Medium: "email", Address: "nope"}, "invalid address: no @"}},
	}
	var out strings.Builder
	if err := rep.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"threepidd import from a fake homeserver\n",
		"  imported:         1\n",
		"  conflicts:        2\n",
		`conflict: email "s@example.org": held by several homeserver accounts: @b:hs.test, @c:hs.test` + "\n",
		`conflict: email "t@example.org": held by another account in threepidd: @d:hs.test on the homeserver, @z:hs.test in threepidd` + "\n",
		`not imported: @e:hs.test email "nope": invalid address: no @` + "\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("report lacks %q:\n%s", line, out.String())
		}
	}
}
