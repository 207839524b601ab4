package importer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threepidd/threepidd/internal/lease"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
)

// pagedSource serves pages of two accounts each: account i holds
// "u<i>@example.org", and the last account also holds the first one's
// address in another spelling. failAt makes the read of that page fail once.
type pagedSource struct {
	accounts int
	failAt   string
	reads    []string
}

var errPageFailed = errors.New("the homeserver went away")

func (s *pagedSource) Describe() string { return "a paged fake homeserver" }
func (s *pagedSource) Close() error     { return nil }
func (s *pagedSource) Read(context.Context, func(string, ...any)) (Snapshot, error) {
	return Snapshot{}, errors.New("a Pager is read page by page")
}

func (s *pagedSource) ReadPage(_ context.Context, cursor string) (Snapshot, string, int, error) {
	s.reads = append(s.reads, cursor)
	if cursor == s.failAt && cursor != "" {
		s.failAt = ""
		return Snapshot{}, "", 0, errPageFailed
	}
	from, _ := strconv.Atoi(cursor)
	var page Snapshot
	for i := from; i < min(from+2, s.accounts); i++ {
		user := fmt.Sprintf("@u%d:hs.test", i)
		page.Users++
		page.Seen = append(page.Seen, user)
		page.Records = append(page.Records, Record{UserID: user, Medium: "email", Address: fmt.Sprintf("u%d@example.org", i), ValidatedAt: 1, AddedAt: 1})
		if i == s.accounts-1 {
			page.Records = append(page.Records, Record{UserID: user, Medium: "email", Address: "U0@Example.ORG", ValidatedAt: 1, AddedAt: 1})
		}
	}
	next := ""
	if from+2 < s.accounts {
		next = strconv.Itoa(from + 2)
	}
	return page, next, s.accounts, nil
}

// TestImporterPagedResume: an import interrupted midway continues at the
// page it stopped at, finds a conflict between the first and the last page,
// marks every account seen, and holds the lease against a second importer.
func TestImporterPagedResume(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		ctx := t.Context()
		now := func() time.Time { return time.UnixMilli(1_700_000_000_000) }
		source := &pagedSource{accounts: 7, failAt: "4"}
		im := &Importer{Store: store, Source: source, Clock: now, Holder: "first"}
		if _, err := im.Run(ctx); !errors.Is(err, errPageFailed) {
			t.Fatalf("first run: %v, want the page's error", err)
		}
		if got := strings.Join(source.reads, " "); got != " 2 4" {
			t.Fatalf("pages read before the failure: %q", got)
		}
		// The lease was given up: another holder may continue.
		var progress strings.Builder
		im = &Importer{Store: store, Source: source, Clock: now, Holder: "second", Progress: &progress}
		rep, err := im.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(source.reads, " "); got != " 2 4 4 6" {
			t.Errorf("pages read in all: %q, want the failed page again and not the first ones", got)
		}
		if !rep.Resumed || rep.Users != 7 || rep.Found != 8 || rep.Imported != 6 || rep.Present != 0 || rep.ConflictCount != 1 {
			t.Errorf("report: %+v", rep)
		}
		want := Conflict{Medium: "email", Address: "u0@example.org", Users: []string{"@u0:hs.test", "@u6:hs.test"}, Reason: ReasonSeveralAccounts}
		if len(rep.Conflicts) != 1 || fmt.Sprint(rep.Conflicts[0]) != fmt.Sprint(want) {
			t.Errorf("conflicts: %+v, want %+v", rep.Conflicts, want)
		}
		if !strings.Contains(progress.String(), "import: continuing the import") || !strings.Contains(progress.String(), "7/7 accounts read") {
			t.Errorf("progress:\n%s", progress.String())
		}
		for i := range 7 {
			user := fmt.Sprintf("@u%d:hs.test", i)
			as, err := store.AssociationsOf(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			if wantN := map[bool]int{true: 0, false: 1}[i == 0]; len(as) != wantN {
				t.Errorf("%s holds %+v, want %d 3PIDs", user, as, wantN)
			}
			if seen, err := store.UserSeen(ctx, user); err != nil || !seen {
				t.Errorf("%s seen = %v (%v)", user, seen, err)
			}
		}

		// Run again: a new import from the start changes nothing.
		source.reads = nil
		rep, err = im.Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Resumed || rep.Imported != 0 || rep.Present != 6 || rep.ConflictCount != 1 || len(source.reads) != 4 {
			t.Errorf("second import: %+v after reading %q", rep, source.reads)
		}

		// A lease held elsewhere keeps a second importer out.
		if _, _, err := store.ClaimJob(ctx, JobName, "elsewhere", now().UnixMilli(), now().Add(time.Hour).UnixMilli(), 0, true); err != nil {
			t.Fatal(err)
		}
		var busy *lease.BusyError
		if _, err := im.Run(ctx); !errors.As(err, &busy) || busy.Holder != "elsewhere" {
			t.Errorf("run while another holds the lease: %v, want a BusyError", err)
		}
	})
}
