package storagetest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/storage"
)

// leased returns items as a claim leasing them until until returns them.
func leased(until int64, items ...storage.OutboxItem) []storage.OutboxItem {
	out := []storage.OutboxItem{}
	for _, it := range items {
		it.NextAttempt = until
		out = append(out, it)
	}
	return out
}

// samePayloads makes empty payloads compare equal however the driver returns them.
func samePayloads(items []storage.OutboxItem) []storage.OutboxItem {
	out := make([]storage.OutboxItem, len(items))
	for i, it := range items {
		if len(it.Payload) == 0 {
			it.Payload = nil
		}
		out[i] = it
	}
	return out
}

func testOutbox(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	enqueue := func(it storage.OutboxItem) storage.OutboxItem {
		t.Helper()
		it.Attempts = 7 // ignored
		id, err := s.EnqueueOutbox(ctx, it)
		check(t, err, "enqueue")
		it.ID, it.Attempts = id, 0
		return it
	}
	late := enqueue(storage.OutboxItem{Kind: "unbind", Key: "k1", Payload: []byte{0, 1, 2, 0xff}, NextAttempt: 100, CreatedAt: 1})
	early := enqueue(storage.OutboxItem{Kind: "unbind", Key: "k0", Payload: []byte(`{"a":1}`), NextAttempt: 50, CreatedAt: 2, LastError: "given"})
	future := enqueue(storage.OutboxItem{Kind: "unbind", Key: "k2", Payload: []byte("f"), NextAttempt: 300, CreatedAt: 3})
	event := enqueue(storage.OutboxItem{Kind: "event", NextAttempt: 10, CreatedAt: 4})
	if !(late.ID < early.ID && early.ID < future.ID && future.ID < event.ID) {
		t.Fatalf("ids not increasing: %d %d %d %d", late.ID, early.ID, future.ID, event.ID)
	}

	// A claim rolled back with its transaction leaves the items due.
	err := s.WithTx(ctx, func(q storage.Querier) error {
		got, err := q.ClaimOutbox(ctx, "unbind", 200, 1000, 10)
		check(t, err, "claim in transaction")
		equal(t, len(got), 2, "claimed in transaction")
		return errRollback
	})
	wantErr(t, err, errRollback, "WithTx")

	// Each step sees the leases of the ones before it.
	for _, c := range []struct {
		name            string
		kind            string
		now, leaseUntil int64
		limit           int
		want            []storage.OutboxItem
	}{
		{"nothing due yet", "unbind", 49, 1000, 10, leased(0)},
		{"oldest due first, limited", "unbind", 200, 1000, 1, leased(1000, early)},
		{"the rest due", "unbind", 200, 1000, 10, leased(1000, late)},
		{"leased items are not due", "unbind", 500, 2000, 10, leased(2000, future)},
		{"expired leases, by next attempt then id", "unbind", 1000, 3000, 10, leased(3000, late, early)},
		{"limit 0", "event", 10, 20, 0, leased(0)},
		{"other kind", "event", 10, 20, 5, leased(20, event)},
	} {
		got, err := s.ClaimOutbox(ctx, c.kind, c.now, c.leaseUntil, c.limit)
		check(t, err, c.name)
		equal(t, samePayloads(got), samePayloads(c.want), c.name)
	}

	check(t, s.RescheduleOutbox(ctx, late.ID, 5000, "boom"), "reschedule")
	wantErr(t, s.RescheduleOutbox(ctx, event.ID+100, 1, "x"), storage.ErrNotFound, "reschedule unknown item")
	wantLate := late
	wantLate.Attempts, wantLate.NextAttempt, wantLate.LastError = 1, 5000, "boom"
	got, err := s.PendingOutbox(ctx, "unbind", "k1")
	check(t, err, "pending")
	equal(t, got, []storage.OutboxItem{wantLate}, "pending k1 after reschedule")

	// A second pending item with the same non-empty key is refused, and inside
	// a transaction the refusal does not abort it.
	_, err = s.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "unbind", Key: "k1", Payload: []byte("dup")})
	wantErr(t, err, storage.ErrConflict, "duplicate key")
	check(t, s.WithTx(ctx, func(q storage.Querier) error {
		_, err := q.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "unbind", Key: "k1", Payload: []byte("dup")})
		wantErr(t, err, storage.ErrConflict, "duplicate key in transaction")
		_, err = q.CountOutbox(ctx, "unbind")
		return err
	}), "transaction after a refused duplicate")

	for kind, want := range map[string]int64{"unbind": 3, "event": 1, "none": 0} {
		n, err := s.CountOutbox(ctx, kind)
		check(t, err, "count")
		equal(t, n, want, "count of "+kind)
	}
	for kind, want := range map[string]int64{"unbind": 1, "event": 4, "none": 0} {
		at, err := s.OldestOutbox(ctx, kind)
		check(t, err, "oldest")
		equal(t, at, want, "oldest of "+kind)
	}

	check(t, s.DeleteOutbox(ctx, early.ID), "delete")
	wantErr(t, s.DeleteOutbox(ctx, early.ID), storage.ErrNotFound, "delete deleted item")
	got, err = s.PendingOutbox(ctx, "unbind", "k0")
	check(t, err, "pending")
	equal(t, got, []storage.OutboxItem{}, "pending k0 after delete")
	got, err = s.PendingOutbox(ctx, "event", "")
	check(t, err, "pending")
	equal(t, samePayloads(got), samePayloads(leased(20, event)), "pending of an empty key")
	got, err = s.PendingOutbox(ctx, "unbind", "k3")
	check(t, err, "pending")
	equal(t, got, []storage.OutboxItem{}, "pending of an unknown key")
}

// testOutboxConcurrentClaims has several workers drain one queue: every item
// is claimed exactly once.
func testOutboxConcurrentClaims(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const items, workers, batch = 60, 6, 4
	for i := range items {
		_, err := s.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "work", Payload: []byte(fmt.Sprint(i)), NextAttempt: int64(i)})
		check(t, err, "enqueue")
	}
	var (
		mu      sync.Mutex
		claimed = map[int64]int{}
		wg      sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range items { // bounded: each round claims at least one item or stops
				got, err := s.ClaimOutbox(ctx, "work", items, 1<<40, batch)
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, it := range got {
					claimed[it.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	equal(t, len(claimed), items, "items claimed")
	for id, n := range claimed {
		if n != 1 {
			t.Errorf("item %d claimed %d times", id, n)
		}
	}
}

// testOutboxGroups: ClaimOutboxGroups takes the due head of each group (an
// item without a group being a group of its own), DeferOutboxGroup postpones
// a whole group.
func testOutboxGroups(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	enqueue := func(key, group string, next int64) storage.OutboxItem {
		t.Helper()
		it := storage.OutboxItem{Kind: "grouped", Key: key, Group: group, Payload: []byte(key), NextAttempt: next, CreatedAt: next}
		id, err := s.EnqueueOutbox(ctx, it)
		check(t, err, "enqueue")
		it.ID = id
		return it
	}
	a1, a2, a3 := enqueue("a1", "id-a.example", 10), enqueue("a2", "id-a.example", 20), enqueue("a3", "id-a.example", 900)
	b1, b2 := enqueue("b1", "id-b.example", 15), enqueue("b2", "id-b.example", 15)
	u1, u2 := enqueue("u1", "", 5), enqueue("u2", "", 30)
	_, err := s.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "other", Group: "id-a.example", NextAttempt: 1})
	check(t, err, "enqueue another kind")
	for _, c := range []struct {
		name            string
		now, leaseUntil int64
		limit           int
		want            []storage.OutboxItem
	}{
		{"the head of each group, oldest first", 100, 1000, 10, leased(1000, u1, a1, b1, u2)},
		{"the next heads, the leased ones not due", 100, 1000, 10, leased(1000, b2, a2)},
		{"limited", 1000, 2000, 1, leased(2000, a3)},
		{"expired leases: by next attempt, then id", 1000, 3000, 10, leased(3000, a1, b1, u1, u2)},
	} {
		got, err := s.ClaimOutboxGroups(ctx, "grouped", c.now, c.leaseUntil, c.limit)
		check(t, err, c.name)
		equal(t, got, c.want, c.name)
	}

	n, err := s.DeferOutboxGroup(ctx, "grouped", "id-a.example", 2500)
	check(t, err, "defer")
	equal(t, n, int64(2), "items deferred")
	_, err = s.DeferOutboxGroup(ctx, "grouped", "", 2500)
	if err == nil {
		t.Error("DeferOutboxGroup of the empty group succeeded")
	}
	pending := func(key string) int64 {
		t.Helper()
		got, err := s.PendingOutbox(ctx, "grouped", key)
		check(t, err, "pending "+key)
		equal(t, len(got), 1, "pending "+key)
		equal(t, got[0].Group, map[byte]string{'a': "id-a.example", 'b': "id-b.example", 'u': ""}[key[0]], "group of "+key)
		return got[0].NextAttempt
	}
	// a2 (1000) and a3 (2000) moved to 2500; a1 (3000) and the other group kept theirs.
	equal(t, []int64{pending("a1"), pending("a2"), pending("a3"), pending("b2"), pending("u1")}, []int64{3000, 2500, 2500, 1000, 3000}, "next attempts after the deferral")
	got, err := s.ClaimOutboxGroups(ctx, "grouped", 2499, 4000, 10)
	check(t, err, "claim before the deferral ends")
	equal(t, got, leased(4000, b2), "claimed before the deferral ends")
}

func testOutboxRelease(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	id, err := s.EnqueueOutbox(ctx, storage.OutboxItem{Kind: "release", Payload: []byte("p"), NextAttempt: 10, CreatedAt: 1})
	check(t, err, "enqueue")
	got, err := s.ClaimOutbox(ctx, "release", 10, 1000, 10)
	check(t, err, "claim")
	equal(t, len(got), 1, "claimed")
	got, err = s.ClaimOutbox(ctx, "release", 20, 1000, 10)
	check(t, err, "claim leased")
	equal(t, len(got), 0, "claimed while leased")
	check(t, s.ReleaseOutbox(ctx, id, 20), "release")
	got, err = s.ClaimOutbox(ctx, "release", 20, 1000, 10)
	check(t, err, "claim released")
	if len(got) != 1 || got[0].ID != id || got[0].Attempts != 0 {
		t.Fatalf("claimed after the release: %+v, want item %d with 0 attempts", got, id)
	}
	wantErr(t, s.ReleaseOutbox(ctx, id+1000, 20), storage.ErrNotFound, "release a missing item")
}
