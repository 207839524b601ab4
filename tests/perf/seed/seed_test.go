package seed_test

import (
	"testing"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/fakes"
	"github.com/threepidd/threepidd/tests/perf/seed"
)

// TestSeed seeds a small population, in several batches, into each backend
// and reads it back through the store.
func TestSeed(t *testing.T) {
	const users, at = 25, 1234
	p := fakes.Population{Users: users, ConflictEvery: 10}
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, s storage.Store) {
		ctx := t.Context()
		var progress []int
		st, err := seed.Seed(ctx, s, seed.Options{Population: p, ServerName: "hs.test", IDServer: "is.test", At: at, Batch: 10,
			Progress: func(done int) { progress = append(progress, done) }})
		if err != nil {
			t.Fatal(err)
		}
		if want := (seed.Stats{Users: users, Threepids: 49, Bindings: users}); st != want {
			t.Errorf("stats = %+v, want %+v", st, want)
		}
		if len(progress) != 3 || progress[2] != users {
			t.Errorf("progress = %v, want 10, 20, 25", progress)
		}
		for _, i := range []int{0, 9, 24} {
			id := seed.UserID(p, "hs.test", i)
			as, err := s.AssociationsOf(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if len(as) != p.ThreepidCount(i) || as[0].Address != p.Address(i, 0) || as[0].AddedAt != p.AddedAt(i) {
				t.Errorf("user %d holds %+v, want its %d own addresses (no conflicting spelling)", i, as, p.ThreepidCount(i))
			}
			bs, err := s.BindingsOf(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if want := seed.Binding(p, "hs.test", "is.test", i, at); len(bs) != 1 || bs[0] != want {
				t.Errorf("user %d's bindings = %+v, want %+v", i, bs, want)
			}
			if seen, err := s.UserSeen(ctx, id); err != nil || !seen {
				t.Errorf("user %d seen = %v (%v), want true", i, seen, err)
			}
		}
		if _, err := seed.Seed(ctx, s, seed.Options{Population: p, ServerName: "hs.test"}); err == nil {
			t.Error("seeding again succeeded, want an error: the 3PIDs are held")
		}
	})
}
