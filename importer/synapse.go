package importer

import (
	"cmp"
	"context"
	"fmt"

	"github.com/threepidd/threepidd/homeserver"
)

// Defaults of a Synapse source.
const (
	// DefaultPageSize is how many accounts one listing call covers.
	DefaultPageSize = 500
	// DefaultParallel is how many accounts are read at once.
	DefaultParallel = 8
)

// Synapse reads 3PIDs through Synapse's admin API: GET
// /_synapse/admin/v2/users?from=<n>&limit=<m>&guests=false&deactivated=true,
// paged by next_token (deactivated accounts are listed, so that the offsets
// of a resumed import stay put, and skipped: Synapse removes their 3PIDs
// anyway), then GET /_synapse/admin/v2/users/{userId} for each active
// account's "threepids". An account that disappears between the two calls is
// skipped. It is a [Pager]: the import holds a page at a time.
type Synapse struct {
	Admin *homeserver.SynapseAdmin
	// URL is the homeserver's, for the report.
	URL string
	// PageSize is the limit per listing call (default DefaultPageSize);
	// Parallel how many accounts are read at once (default DefaultParallel).
	PageSize, Parallel int
}

// Describe implements Source.
func (s *Synapse) Describe() string { return "the Synapse admin API at " + s.URL }

// Close implements Source.
func (s *Synapse) Close() error { return nil }

// Read implements Source: every page in one Snapshot.
func (s *Synapse) Read(ctx context.Context, progress func(format string, args ...any)) (Snapshot, error) {
	var snap Snapshot
	cursor := ""
	for range maxPages {
		page, next, total, err := s.ReadPage(ctx, cursor)
		if err != nil {
			return Snapshot{}, err
		}
		snap.Users += page.Users
		snap.Seen = append(snap.Seen, page.Seen...)
		snap.Records = append(snap.Records, page.Records...)
		progress("%d/%d accounts read, %d 3PIDs", snap.Users, total, len(snap.Records))
		if next == "" {
			return snap, nil
		}
		cursor = next
	}
	return Snapshot{}, fmt.Errorf("the user listing did not end after %d pages", maxPages)
}

// ReadPage implements Pager: cursor is the listing's from.
func (s *Synapse) ReadPage(ctx context.Context, cursor string) (page Snapshot, next string, total int, err error) {
	listed, err := s.Admin.ListAccounts(ctx, cursor, cmp.Or(s.PageSize, DefaultPageSize))
	if err != nil {
		return Snapshot{}, "", 0, err
	}
	var names []string
	for _, u := range listed.Users {
		if !u.Deactivated {
			names = append(names, u.Name)
		}
	}
	users, err := s.Admin.Users(ctx, names, cmp.Or(s.Parallel, DefaultParallel))
	if err != nil {
		return Snapshot{}, "", 0, err
	}
	for _, u := range users {
		if u.Name == "" || u.Deactivated {
			continue
		}
		page.Users++
		page.Seen = append(page.Seen, u.Name)
		for _, tp := range u.Threepids {
			page.Records = append(page.Records, SynapseRecord(u.Name, tp))
		}
	}
	if listed.Next == "" || len(listed.Users) == 0 {
		return page, "", listed.Total, nil
	}
	if listed.Next == cursor {
		return Snapshot{}, "", 0, fmt.Errorf("the user listing did not advance past %s", cursor)
	}
	return page, listed.Next, listed.Total, nil
}

// SynapseRecord is the record of one of a Synapse account's 3PIDs, as the
// admin API gives them.
func SynapseRecord(userID string, tp homeserver.SynapseThreepid) Record {
	return Record{UserID: userID, Medium: tp.Medium, Address: tp.Address, ValidatedAt: tp.ValidatedAt, AddedAt: tp.AddedAt}
}
