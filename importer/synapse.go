package importer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/threepidd/threepidd/homeserver"
)

// Synapse reads 3PIDs through Synapse's admin API: GET
// /_synapse/admin/v2/users?from=<n>&limit=<m>&guests=false, paged by
// next_token, then GET /_synapse/admin/v2/users/{userId} for each account's
// "threepids". Deactivated accounts are not listed (Synapse removes their
// 3PIDs anyway); an account that disappears between the two calls is skipped.
type Synapse struct {
	Admin *homeserver.SynapseAdmin
	// URL is the homeserver's, for the report.
	URL string
	// PageSize is the limit per listing call (default 100); Parallel how many
	// accounts are read at once (default 4).
	PageSize, Parallel int
}

// Describe implements Source.
func (s *Synapse) Describe() string { return "the Synapse admin API at " + s.URL }

// Close implements Source.
func (s *Synapse) Close() error { return nil }

// maxPages bounds the listing loop against a homeserver whose next_token never ends.
const maxPages = 10_000_000

// Read implements Source.
func (s *Synapse) Read(ctx context.Context, progress func(format string, args ...any)) (Snapshot, error) {
	pageSize := cmp.Or(s.PageSize, 100)
	var snap Snapshot
	from := ""
	for range maxPages {
		page, err := s.Admin.ListUsers(ctx, from, pageSize)
		if err != nil {
			return Snapshot{}, err
		}
		users, err := s.details(ctx, page.Users)
		if err != nil {
			return Snapshot{}, err
		}
		for _, u := range users {
			if u.Name == "" || u.Deactivated {
				continue
			}
			for _, tp := range u.Threepids {
				snap.Records = append(snap.Records, Record{UserID: u.Name, Medium: tp.Medium, Address: tp.Address,
					ValidatedAt: tp.ValidatedAt, AddedAt: tp.AddedAt})
			}
		}
		snap.Users += len(page.Users)
		progress("%d/%d accounts read, %d 3PIDs", snap.Users, page.Total, len(snap.Records))
		if page.Next == "" || len(page.Users) == 0 {
			return snap, nil
		}
		if page.Next == from {
			return Snapshot{}, fmt.Errorf("the user listing did not advance past %s", from)
		}
		from = page.Next
	}
	return Snapshot{}, fmt.Errorf("the user listing did not end after %d pages", maxPages)
}

// details reads the accounts of one page, Parallel at a time. An account the
// homeserver no longer knows is returned empty.
func (s *Synapse) details(ctx context.Context, listed []homeserver.ListedUser) ([]homeserver.SynapseUser, error) {
	out := make([]homeserver.SynapseUser, len(listed))
	errs := make([]error, len(listed))
	sem := make(chan struct{}, cmp.Or(s.Parallel, 4))
	var wg sync.WaitGroup
	for i, l := range listed {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u, err := s.Admin.User(ctx, l.Name)
			if errors.Is(err, homeserver.ErrUserNotFound) {
				return
			}
			out[i], errs[i] = u, err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
