package load

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage/storagetest"
)

// benchUsers is how many seeded users BenchmarkList spreads its requests
// over: few enough that their whoami answers stay cached, as for an active
// user base within token_cache_ttl.
const benchUsers = 100

// BenchmarkList measures GET /account/3pid on threepidd and the same store
// query on the baseline, from GOMAXPROCS×-cpu parallel clients per backend
// (`go test -run '^$' -bench List -benchmem ./tests/perf/load`). Besides ns/op it
// reports the p50 and p99 latency of one request in µs.
func BenchmarkList(b *testing.B) {
	for _, be := range storagetest.Backends(b) {
		r := newRig(b, be, benchUsers, benchUsers, 64)
		for _, side := range []struct {
			name    string
			iterate iteration
		}{{"threepidd", r.list(r.active, false)}, {"baseline", r.list(r.active, true)}} {
			b.Run(be.Name+"/"+side.name, func(b *testing.B) {
				var (
					mu    sync.Mutex
					all   Stats
					seeds uint64
				)
				b.RunParallel(func(pb *testing.PB) {
					mu.Lock()
					seeds++
					w := &Worker{Rand: rand.New(rand.NewPCG(seeds, 0)), stats: make([]Stats, 1)}
					mu.Unlock()
					for pb.Next() {
						_ = side.iterate(b.Context(), w, 0) // counted in w.stats
					}
					mu.Lock()
					all.merge(w.stats[0])
					mu.Unlock()
				})
				sum := all.Summarize(time.Second)
				if sum.Errors > 0 {
					b.Fatalf("%d errors; first: %s", sum.Errors, sum.FirstError)
				}
				b.ReportMetric(float64(sum.P50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(sum.P99.Microseconds()), "p99-µs")
			})
		}
	}
}
