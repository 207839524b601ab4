package sync

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

// BenchmarkWakeLatency measures, in library mode, the time from a
// notification's append to the return of the Wait it wakes: from the call
// ("append") and from its return, the commit ("committed"; negative when Wait
// returned first). It reports p50 and p99; -benchtime 1000x gives 1000 wake-ups.
//
//	THREEPIDD_TEST_POSTGRES=... go test -run '^$' -bench BenchmarkWakeLatency -benchtime 1000x ./sync
func BenchmarkWakeLatency(b *testing.B) {
	for _, be := range storagetest.Backends(b) {
		b.Run(be.Name, func(b *testing.B) {
			store := storagetest.Open(b, be)
			st := New(store, Options{})
			defer st.Close()
			ctx := context.Background()
			pos, err := store.MaxStreamID(ctx)
			if err != nil {
				b.Fatal(err)
			}
			fromAppend := make([]time.Duration, 0, b.N)
			fromCommit := make([]time.Duration, 0, b.N)
			for i := 0; b.Loop(); i++ {
				done := make(chan time.Time, 1)
				go func(tok Token) {
					if _, _, err := st.Wait(ctx, "@alice:hs", tok); err != nil {
						b.Error(err)
					}
					done <- time.Now()
				}(NewToken("s", pos))
				for st.Hub().Waiting() == 0 {
					runtime.Gosched()
				}
				appended := time.Now()
				pos, err = store.AppendNotification(ctx, storage.Notification{UserID: "@alice:hs", Medium: "email",
					Address: fmt.Sprintf("a%d@example.org", i), Deleted: true, Origin: "id.test", At: time.Now().UnixMilli()})
				if err != nil {
					b.Fatal(err)
				}
				committed := time.Now()
				returned := <-done
				fromAppend = append(fromAppend, returned.Sub(appended))
				fromCommit = append(fromCommit, returned.Sub(committed))
			}
			support.ReportPercentiles(b, "append", fromAppend)
			support.ReportPercentiles(b, "committed", fromCommit)
		})
	}
}

// BenchmarkWaiters measures the memory of 100,000 long-polls waiting in
// library mode (Stream.Wait, one goroutine each, as a homeserver's request
// handlers would), then wakes them all: first for nothing new (each reads
// again and waits on), then with a notification each. "hub" is the hub alone:
// 100,000 Watch contexts, no goroutines.
//
//	go test -run '^$' -bench BenchmarkWaiters -benchtime 1x ./sync
func BenchmarkWaiters(b *testing.B) {
	const n = 100_000
	store := storagetest.SQLite(b)
	st := New(store, Options{})
	defer st.Close()
	ctx := context.Background()
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("@user%d:hs", i)
	}
	b.Run("hub", func(b *testing.B) {
		for b.Loop() {
			before := heapInUse()
			stops := make([]context.CancelFunc, n)
			for i, u := range users {
				_, stops[i] = st.Watch(ctx, u)
			}
			b.ReportMetric(float64(heapInUse()-before)/n, "bytes/watcher")
			for _, stop := range stops {
				stop()
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		for b.Loop() {
			now, err := store.MaxStreamID(ctx)
			if err != nil {
				b.Fatal(err)
			}
			before := heapInUse()
			done := make(chan struct{}, n)
			start := time.Now()
			for _, u := range users {
				go func() {
					if _, _, err := st.Wait(ctx, u, NewToken("s", now)); err != nil {
						b.Error(err)
					}
					done <- struct{}{}
				}()
			}
			for st.Hub().Waiting() < n {
				time.Sleep(10 * time.Millisecond)
			}
			b.ReportMetric(time.Since(start).Seconds(), "s-to-register")
			b.ReportMetric(float64(heapInUse()-before)/n, "bytes/waiter")
			for _, u := range users {
				st.Hub().Wake(u) // nothing new: each reads again and waits on
			}
			for st.Hub().Waiting() < n {
				time.Sleep(10 * time.Millisecond)
			}
			start = time.Now()
			for batch := range slices.Chunk(users, 1000) {
				if err := store.WithTx(ctx, func(q storage.Querier) error {
					for _, u := range batch {
						if _, err := q.AppendNotification(ctx, storage.Notification{UserID: u, Medium: "email",
							Address: "x@example.org", Deleted: true, Origin: "id.test", At: time.Now().UnixMilli()}); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			for range users {
				<-done
			}
			b.ReportMetric(time.Since(start).Seconds(), "s-to-notify-all")
		}
	})
}

// heapInUse returns the bytes of heap and goroutine stacks in use, after a GC.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
