package importer

import (
	"cmp"
	"context"
	"fmt"

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
		names := make([]string, len(page.Users))
		for i, u := range page.Users {
			names[i] = u.Name
		}
		users, err := s.Admin.Users(ctx, names, cmp.Or(s.Parallel, 4))
		if err != nil {
			return Snapshot{}, err
		}
		for _, u := range users {
			if u.Name == "" || u.Deactivated {
				continue
			}
			snap.Seen = append(snap.Seen, u.Name)
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
