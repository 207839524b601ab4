// Package seed writes a computed population of users (a [fakes.Population])
// straight into a threepidd store, in bulk, as `threepidd import` would leave
// it: each user's own 3PIDs (1 to 3 e-mail addresses; an address one account
// holds in another spelling is left out, as the import leaves conflicts), the
// binding of each user's first address on an identity server, and every user
// marked seen. It is the seeding half of the load tool: a million users take
// minutes, not hours, because rows go in multi-row INSERTs (the store's bulk
// writes) rather than one statement per row.
package seed

import (
	"cmp"
	"context"
	"fmt"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/threepid"
)

// defaultBatch is how many users one transaction writes by default.
const defaultBatch = 5000

// Options say what to seed.
type Options struct {
	Population fakes.Population
	// ServerName is the homeserver's, which user IDs end in.
	ServerName string
	// IDServer holds the binding of each user's first address ("": none).
	IDServer string
	// At is when the bindings were made and the users seen (Unix ms).
	At int64
	// Batch is how many users one transaction writes (default 5000).
	Batch int
	// Progress, if set, is told after each transaction how many users are done.
	Progress func(done int)
}

// Stats count what Seed wrote.
type Stats struct {
	Users, Threepids, Bindings int
}

// UserID is population user i's ID on serverName.
func UserID(p fakes.Population, serverName string, i int) string {
	return "@" + p.Localpart(i) + ":" + serverName
}

// Binding is the binding Seed records for user i (its first address on idServer).
func Binding(p fakes.Population, serverName, idServer string, i int, at int64) storage.Binding {
	return storage.Binding{UserID: UserID(p, serverName, i), Medium: threepid.MediumEmail, Address: p.Address(i, 0), IDServer: idServer, BoundAt: at}
}

// Seed writes the population into s, a transaction per batch of users.
func Seed(ctx context.Context, s storage.Store, o Options) (Stats, error) {
	p := o.Population
	batch := cmp.Or(o.Batch, defaultBatch)
	var st Stats
	for from := 0; from < p.Users; from += batch {
		end := min(from+batch, p.Users)
		var as []storage.Association
		var bs []storage.Binding
		ids := make([]string, 0, end-from)
		for i := from; i < end; i++ {
			id := UserID(p, o.ServerName, i)
			ids = append(ids, id)
			for k := range p.ThreepidCount(i) {
				as = append(as, storage.Association{UserID: id, Medium: threepid.MediumEmail, Address: p.Address(i, k),
					ValidatedAt: p.AddedAt(i), AddedAt: p.AddedAt(i)})
			}
			if o.IDServer != "" {
				bs = append(bs, Binding(p, o.ServerName, o.IDServer, i, o.At))
			}
		}
		err := s.WithTx(ctx, func(q storage.Querier) error {
			n, err := q.InsertAssociations(ctx, as)
			if err != nil {
				return err
			}
			if n != len(as) {
				return fmt.Errorf("%d of %d 3PIDs of users %d to %d are held already: seed an empty store", len(as)-n, len(as), from, end-1)
			}
			if err := q.UpsertBindings(ctx, bs); err != nil {
				return err
			}
			return q.MarkUsersSeen(ctx, ids, o.At)
		})
		if err != nil {
			return st, fmt.Errorf("seed users %d to %d: %w", from, end-1, err)
		}
		st.Users, st.Threepids, st.Bindings = end, st.Threepids+len(as), st.Bindings+len(bs)
		if o.Progress != nil {
			o.Progress(end)
		}
	}
	return st, nil
}
