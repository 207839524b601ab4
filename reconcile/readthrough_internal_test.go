package reconcile

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkFirstSeenKnown is the read-through's cost on every authenticated
// request (every /sync) of a user it has seen: two lookups in bounded sets.
func BenchmarkFirstSeenKnown(b *testing.B) {
	rt := NewReadThrough(&Reconciler{})
	users := make([]string, 10_000)
	for i := range users {
		users[i] = "@user" + strconv.Itoa(i) + ":example.org"
		rt.known.Add(users[i], struct{}{})
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			rt.FirstSeen(ctx, users[i%len(users)])
			i++
		}
	})
}
