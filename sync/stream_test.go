package sync

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/storage/storagetest"
	"github.com/threepidd/threepidd/tests/support"
)

func TestSection(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		ctx := context.Background()
		now := time.Now()
		st := New(store, Options{Retention: time.Hour, Limit: 3})
		defer st.Close()

		old := storagetest.Notify(t, store, "@alice:hs", "old@example.org", false, "@eve:other", now.Add(-2*time.Hour))
		p1 := storagetest.Notify(t, store, "@alice:hs", "a@example.org", false, "@eve:other", now)
		pb := storagetest.Notify(t, store, "@bob:hs", "b@example.org", true, "@bob:hs", now)
		p3 := storagetest.Notify(t, store, "@alice:hs", "a@example.org", true, "@eve:other", now)
		p4 := storagetest.Notify(t, store, "@alice:hs", "c@example.org", true, "", now)

		tests := []struct {
			name     string
			user     string
			tok      Token
			want     Section
			wantNext int64
		}{
			{"first sync: the retention window, latest wins", "@alice:hs", Token{}, Section{
				"a@example.org": {Deleted: true, MXID: "@eve:other", Medium: "email"},
				"c@example.org": {Deleted: true, Medium: "email"},
			}, p4},
			{"plain upstream token: now", "@alice:hs", Token{Upstream: "s1"}, nil, p4},
			{"up to date", "@alice:hs", NewToken("s1", p4), nil, p4},
			{"from a position", "@alice:hs", NewToken("s1", p1), Section{
				"a@example.org": {Deleted: true, MXID: "@eve:other", Medium: "email"},
				"c@example.org": {Deleted: true, Medium: "email"},
			}, p4},
			{"a position older than the retention: the retention window only", "@alice:hs", NewToken("s1", 0), Section{
				"a@example.org": {Deleted: true, MXID: "@eve:other", Medium: "email"},
				"c@example.org": {Deleted: true, Medium: "email"},
			}, p4},
			{"after the limit", "@alice:hs", NewToken("s1", p3), Section{
				"c@example.org": {Deleted: true, Medium: "email"},
			}, p4},
			{"a position beyond the stream: kept", "@alice:hs", NewToken("s1", p4+100), nil, p4 + 100},
			{"another user's", "@bob:hs", NewToken("s1", old), Section{
				"b@example.org": {Deleted: true, MXID: "@bob:hs", Medium: "email"},
			}, pb},
			{"nobody's", "@carol:hs", Token{}, nil, p4},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				for range 2 { // a retried token gets the same answer
					sec, next, err := st.Section(ctx, tt.user, tt.tok)
					if err != nil {
						t.Fatal(err)
					}
					if !maps.Equal(sec, tt.want) || next != tt.wantNext {
						t.Fatalf("Section = %v, next %d; want %v, next %d", sec, next, tt.want, tt.wantNext)
					}
				}
			})
		}
		t.Run("limit: the rest comes next time", func(t *testing.T) {
			limited := New(store, Options{Retention: time.Hour, Limit: 2})
			defer limited.Close()
			sec, next, err := limited.Section(ctx, "@alice:hs", NewToken("s1", old))
			want := Section{"a@example.org": {Deleted: true, MXID: "@eve:other", Medium: "email"}}
			if err != nil || !maps.Equal(sec, want) || next != p3 {
				t.Fatalf("Section = %v, next %d, %v; want %v, next %d", sec, next, err, want, p3)
			}
		})
	})
}

func TestWait(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		st := New(store, Options{})
		defer st.Close()
		ctx := context.Background()
		start := storagetest.Notify(t, store, "@alice:hs", "x@example.org", false, "@eve:other", time.Now())

		t.Run("pending: at once", func(t *testing.T) {
			sec, next, err := st.Wait(ctx, "@alice:hs", NewToken("s", start-1))
			if err != nil || len(sec) != 1 || next != start {
				t.Fatalf("Wait = %v, %d, %v", sec, next, err)
			}
		})
		t.Run("timeout: empty, position kept", func(t *testing.T) {
			tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			sec, next, err := st.Wait(tctx, "@alice:hs", NewToken("s", start))
			if err != nil || sec != nil || next != start {
				t.Fatalf("Wait = %v, %d, %v", sec, next, err)
			}
		})
		t.Run("woken by a notification, not by another user's", func(t *testing.T) {
			type result struct {
				sec  Section
				next int64
				err  error
			}
			done := make(chan result, 1)
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			go func() {
				sec, next, err := st.Wait(wctx, "@alice:hs", NewToken("s", start))
				done <- result{sec, next, err}
			}()
			support.WaitFor(t, "the condition", func() bool { return st.Hub().Waiting() == 1 }, 10*time.Second)
			// Bob's notification may wake nobody or be read as nothing new for alice.
			storagetest.Notify(t, store, "@bob:hs", "b@example.org", true, "@bob:hs", time.Now())
			pos := storagetest.Notify(t, store, "@alice:hs", "y@example.org", true, "@alice:hs", time.Now())
			select {
			case r := <-done:
				want := Section{"y@example.org": {Deleted: true, MXID: "@alice:hs", Medium: "email"}}
				if r.err != nil || !maps.Equal(r.sec, want) || r.next != pos {
					t.Fatalf("Wait = %+v; want %v at %d", r, want, pos)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Wait was not woken")
			}
		})
	})
}

// TestSectionUpToDate: "nothing new" is remembered (no query) until the
// user's next wake-up, and at most upToDateTTL when wake-ups stop coming.
func TestSectionUpToDate(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, _ storagetest.Backend, store storage.Store) {
		ctx := context.Background()
		clock := time.Now()
		st := New(store, Options{Clock: func() time.Time { return clock }})
		defer st.Close()
		pos := storagetest.Notify(t, store, "@alice:hs", "old@example.org", true, "", time.Now())
		support.WaitFor(t, "the condition", func() bool { // the wake-up of that notification has been handled
			st.fresh.mu.Lock()
			defer st.fresh.mu.Unlock()
			return st.fresh.wakes == 1
		}, 10*time.Second)
		tok := NewToken("s", pos)
		if sec, next, err := st.Section(ctx, "@alice:hs", tok); err != nil || sec != nil || next != pos {
			t.Fatalf("Section = %v, %d, %v", sec, next, err)
		}

		t.Run("a wake-up forgets", func(t *testing.T) {
			p := storagetest.Notify(t, store, "@alice:hs", "a@example.org", true, "", time.Now())
			support.WaitFor(t, "the condition", func() bool {
				sec, next, err := st.Section(ctx, "@alice:hs", tok)
				return err == nil && len(sec) == 1 && next == p
			}, 10*time.Second)
			tok = NewToken("s", p)
		})
		t.Run("without wake-ups, trusted for upToDateTTL", func(t *testing.T) {
			if sec, _, err := st.Section(ctx, "@alice:hs", tok); err != nil || sec != nil {
				t.Fatalf("Section = %v, %v", sec, err)
			}
			st.Close() // no more wake-ups
			p := storagetest.Notify(t, store, "@alice:hs", "b@example.org", true, "", time.Now())
			if sec, next, err := st.Section(ctx, "@alice:hs", tok); err != nil || sec != nil || next != tok.Pos {
				t.Fatalf("Section = %v, %d, %v; want the remembered answer", sec, next, err)
			}
			clock = clock.Add(upToDateTTL)
			if sec, next, err := st.Section(ctx, "@alice:hs", tok); err != nil || len(sec) != 1 || next != p {
				t.Fatalf("Section = %v, %d, %v after the TTL", sec, next, err)
			}
		})
	})
}
