package storagetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/threepidd/threepidd/storage"
)

func testSessions(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	first := storage.Session{
		SID: "sid1", ClientSecret: "secret", Medium: "email", Address: "a@example.org",
		SendAttempt: 1, NextLink: "https://example.org/next", ExpiresAt: 1000, CreatedAt: 10,
	}
	tok1 := storage.SessionToken{SID: "sid1", TokenHash: "hash1", SendAttempt: 1, ExpiresAt: 1000}
	check(t, s.CreateSession(ctx, first, tok1), "create")
	wantErr(t, s.CreateSession(ctx, first, storage.SessionToken{SID: "sid1", TokenHash: "other"}), storage.ErrConflict, "create existing sid")
	tokens, err := s.SessionTokens(ctx, "sid1")
	check(t, err, "tokens")
	equal(t, tokens, []storage.SessionToken{tok1}, "tokens after a refused create")

	got, err := s.SessionByID(ctx, "sid1")
	check(t, err, "by id")
	equal(t, got, first, "by id")
	_, err = s.SessionByID(ctx, "nope")
	wantErr(t, err, storage.ErrNotFound, "by unknown id")

	got, err = s.SessionByKey(ctx, "secret", "email", "a@example.org")
	check(t, err, "by key")
	equal(t, got, first, "by key")
	for _, key := range [][3]string{
		{"other", "email", "a@example.org"},
		{"secret", "msisdn", "a@example.org"},
		{"secret", "email", "b@example.org"},
	} {
		_, err = s.SessionByKey(ctx, key[0], key[1], key[2])
		wantErr(t, err, storage.ErrNotFound, fmt.Sprintf("by key %q", key))
	}
	// With two sessions for one key, the newest is returned.
	second := first
	second.SID, second.CreatedAt, second.ExpiresAt = "sid2", 20, 3000
	check(t, s.CreateSession(ctx, second, storage.SessionToken{SID: "sid2", TokenHash: "hash9", SendAttempt: 1, ExpiresAt: 3000}), "create second")
	got, err = s.SessionByKey(ctx, "secret", "email", "a@example.org")
	check(t, err, "by key")
	equal(t, got.SID, "sid2", "newest session by key")

	// Resends add tokens; the session keeps the highest send attempt and
	// the last expiry, and only the tokens that expire last.
	tok2 := storage.SessionToken{SID: "sid1", TokenHash: "hash2", SendAttempt: 3, ExpiresAt: 2000}
	tok3 := storage.SessionToken{SID: "sid1", TokenHash: "hash3", SendAttempt: 2, ExpiresAt: 1500}
	check(t, s.AddSessionToken(ctx, tok2, 3), "add token")
	check(t, s.AddSessionToken(ctx, tok3, 3), "add an older token")
	got, err = s.SessionByID(ctx, "sid1")
	check(t, err, "by id")
	want := first
	want.SendAttempt, want.ExpiresAt = 3, 2000
	equal(t, got, want, "after resends")
	tokens, err = s.SessionTokens(ctx, "sid1")
	check(t, err, "tokens")
	equal(t, tokens, []storage.SessionToken{tok2, tok3, tok1}, "tokens, the last to expire first")
	tok4 := storage.SessionToken{SID: "sid1", TokenHash: "hash4", SendAttempt: 4, ExpiresAt: 2500}
	check(t, s.AddSessionToken(ctx, tok4, 3), "add a fourth token")
	tokens, err = s.SessionTokens(ctx, "sid1")
	check(t, err, "tokens")
	equal(t, tokens, []storage.SessionToken{tok4, tok2, tok3}, "the three tokens that expire last")
	// The same token again (an SMS code drawn twice) is renewed.
	again := tok3
	again.SendAttempt, again.ExpiresAt = 5, 2600
	check(t, s.AddSessionToken(ctx, again, 3), "add a stored token")
	tokens, err = s.SessionTokens(ctx, "sid1")
	check(t, err, "tokens")
	equal(t, tokens, []storage.SessionToken{again, tok4, tok2}, "a renewed token")
	wantErr(t, s.AddSessionToken(ctx, storage.SessionToken{SID: "nope", TokenHash: "h"}, 3), storage.ErrNotFound, "add a token to an unknown sid")
	tokens, err = s.SessionTokens(ctx, "nope")
	check(t, err, "tokens of an unknown sid")
	equal(t, tokens, []storage.SessionToken{}, "tokens of an unknown sid")

	check(t, s.ValidateSession(ctx, "sid1", "hash2", 500), "validate")
	check(t, s.ValidateSession(ctx, "sid1", "hash2", 600), "validate again")
	check(t, s.ValidateSession(ctx, "sid1", "hash4", 700), "validate with another token")
	got, err = s.SessionByID(ctx, "sid1")
	check(t, err, "by id")
	equal(t, got.ValidatedAt, int64(500), "validated_at is set once")
	tokens, err = s.SessionTokens(ctx, "sid1")
	check(t, err, "tokens")
	used := map[string]int64{}
	for _, tok := range tokens {
		used[tok.TokenHash] = tok.UsedAt
	}
	equal(t, used, map[string]int64{"hash3": 0, "hash4": 700, "hash2": 500}, "used_at of each token, set once")
	wantErr(t, s.ValidateSession(ctx, "nope", "hash2", 1), storage.ErrNotFound, "validate an unknown sid")
	wantErr(t, s.ValidateSession(ctx, "sid1", "nope", 1), storage.ErrNotFound, "validate with an unknown token")
	wantErr(t, s.ValidateSession(ctx, "sid2", "hash2", 1), storage.ErrNotFound, "validate with another session's token")
	got, err = s.SessionByID(ctx, "sid2")
	check(t, err, "by id")
	equal(t, got.ValidatedAt, int64(0), "a session validated by nothing")

	// sid1 expires at 2600, sid2 at 3000.
	n, err := s.DeleteSessionsExpiredBefore(ctx, 2600)
	check(t, err, "delete expired")
	equal(t, n, int64(0), "sessions expired before 2600")
	n, err = s.DeleteSessionsExpiredBefore(ctx, 2700)
	check(t, err, "delete expired")
	equal(t, n, int64(1), "sessions expired before 2700")
	_, err = s.SessionByID(ctx, "sid1")
	wantErr(t, err, storage.ErrNotFound, "expired session")
	tokens, err = s.SessionTokens(ctx, "sid1")
	check(t, err, "tokens of an expired session")
	equal(t, tokens, []storage.SessionToken{}, "tokens of an expired session")

	ok, err := s.DeleteSession(ctx, "sid2")
	check(t, err, "delete")
	equal(t, ok, true, "delete existing session")
	tokens, err = s.SessionTokens(ctx, "sid2")
	check(t, err, "tokens of a deleted session")
	equal(t, tokens, []storage.SessionToken{}, "tokens of a deleted session")
	ok, err = s.DeleteSession(ctx, "sid2")
	check(t, err, "delete again")
	equal(t, ok, false, "delete deleted session")
}

func testTokenAttempts(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	lifetime := storage.AttemptLimit{Max: 2}
	day := storage.AttemptLimit{Max: 3}
	record := func(medium, address string, at int64) bool {
		t.Helper()
		lifetime.Since, day.Since = at-100, at-1000
		ok, err := s.RecordTokenAttempt(ctx, medium, address, at, lifetime, day)
		check(t, err, "record")
		return ok
	}
	equal(t, record("email", "a@x", 1000), true, "first attempt")
	equal(t, record("email", "a@x", 1050), true, "second attempt")
	equal(t, record("email", "a@x", 1060), false, "third within the lifetime")
	equal(t, record("msisdn", "a@x", 1060), true, "another medium")
	equal(t, record("email", "b@x", 1060), true, "another address")
	equal(t, record("email", "a@x", 1101), true, "the first is out of the lifetime window")
	equal(t, record("email", "a@x", 1300), false, "the day's third attempt was the last")
	equal(t, record("email", "a@x", 2001), true, "the first is out of the day window")
	ok, err := s.RecordTokenAttempt(ctx, "email", "c@x", 1)
	check(t, err, "record without limits")
	equal(t, ok, true, "without limits")

	n, err := s.ForgetTokenAttemptsBefore(ctx, 1060)
	check(t, err, "forget")
	equal(t, n, int64(3), "attempts forgotten")
	equal(t, record("email", "a@x", 2002), true, "the day's third attempt")
	equal(t, record("email", "a@x", 2090), false, "counted with the attempts kept")
}

// testTokenAttemptRace: concurrent attempts on one 3PID never exceed a limit.
func testTokenAttemptRace(t *testing.T, _ Backend, s storage.Store) {
	const limit = 5
	recorded := concurrently(t, 20, func() (bool, error) {
		return s.RecordTokenAttempt(t.Context(), "msisdn", "441234", 100, storage.AttemptLimit{Since: 0, Max: limit})
	})
	equal(t, recorded, limit, "attempts recorded out of concurrent ones")
}

// concurrently runs fn n times at once and returns how many answered true;
// an error fails the test.
func concurrently(t *testing.T, n int, fn func() (bool, error)) int {
	var wg sync.WaitGroup
	oks := make([]bool, n)
	for i := range n {
		wg.Go(func() {
			ok, err := fn()
			if err != nil {
				t.Errorf("concurrent call: %v", err)
			}
			oks[i] = ok
		})
	}
	wg.Wait()
	count := 0
	for _, ok := range oks {
		if ok {
			count++
		}
	}
	return count
}

func testRateLimits(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	// One token every 100, a burst of 3 (tolerance 200).
	take := func(limiter, key string, now int64) (bool, int64) {
		t.Helper()
		ok, wait, err := s.TakeRateLimitToken(ctx, limiter, key, now, 100, 200)
		check(t, err, "take")
		return ok, wait
	}
	for i := range 3 {
		ok, _ := take("l", "k", 1000)
		equal(t, ok, true, fmt.Sprintf("token %d of the burst", i+1))
	}
	ok, wait := take("l", "k", 1000)
	equal(t, [2]any{ok, wait}, [2]any{false, int64(100)}, "empty bucket: the wait")
	ok, wait = take("l", "k", 1040)
	equal(t, [2]any{ok, wait}, [2]any{false, int64(60)}, "still empty: a shorter wait")
	ok, _ = take("l", "k", 1100)
	equal(t, ok, true, "a token refilled")
	ok, _ = take("l", "k", 1100)
	equal(t, ok, false, "and taken")
	ok, _ = take("l", "other", 1100)
	equal(t, ok, true, "another key")
	ok, _ = take("other", "k", 1100)
	equal(t, ok, true, "another limiter")

	// k is full again at 1400 (tat 1400), the others at 1200.
	n, err := s.ForgetFullRateLimits(ctx, 1399)
	check(t, err, "forget")
	equal(t, n, int64(2), "full buckets forgotten")
	for i := range 3 {
		ok, _ := take("l", "other", 1400)
		equal(t, ok, true, fmt.Sprintf("token %d of a forgotten bucket", i+1))
	}
	ok, _ = take("l", "k", 1399)
	equal(t, ok, true, "a bucket not yet full is kept")
	ok, _ = take("l", "k", 1399)
	equal(t, ok, true, "with the tokens it has")
	ok, _ = take("l", "k", 1399)
	equal(t, ok, false, "and no more")
}

// testRateLimitRace: concurrent takes from one bucket give out exactly its tokens.
func testRateLimitRace(t *testing.T, _ Backend, s storage.Store) {
	const burst = 4
	taken := concurrently(t, 30, func() (bool, error) {
		ok, _, err := s.TakeRateLimitToken(t.Context(), "race", "k", 1_000_000, 1_000_000, (burst-1)*1_000_000)
		return ok, err
	})
	equal(t, taken, burst, "tokens taken out of concurrent takes")
}

func testAssociations(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	a1 := storage.Association{UserID: "@u:hs", Medium: "email", Address: "x@hs", ValidatedAt: 19, AddedAt: 20}
	a2 := storage.Association{UserID: "@u:hs", Medium: "email", Address: "w@hs", ValidatedAt: 9, AddedAt: 10}
	a3 := storage.Association{UserID: "@u:hs", Medium: "msisdn", Address: "441234", ValidatedAt: 19, AddedAt: 20}
	for _, a := range []storage.Association{a1, a2, a3} {
		check(t, s.InsertAssociation(ctx, a), "insert")
	}
	other := a1
	other.UserID = "@other:hs"
	wantErr(t, s.InsertAssociation(ctx, other), storage.ErrConflict, "insert address held by another user")
	wantErr(t, s.InsertAssociation(ctx, a1), storage.ErrConflict, "insert address held by the same user")

	got, err := s.AssociationsOf(ctx, "@u:hs")
	check(t, err, "associations of")
	equal(t, got, []storage.Association{a2, a1, a3}, "ordered by added_at, medium, address")
	got, err = s.AssociationsOf(ctx, "@nobody:hs")
	check(t, err, "associations of nobody")
	equal(t, got, []storage.Association{}, "associations of nobody")

	holder, err := s.AssociationByAddress(ctx, "email", "x@hs")
	check(t, err, "by address")
	equal(t, holder, a1, "by address")
	_, err = s.AssociationByAddress(ctx, "msisdn", "x@hs")
	wantErr(t, err, storage.ErrNotFound, "by address, other medium")

	n, err := s.CountAssociations(ctx, "@u:hs")
	check(t, err, "count")
	equal(t, n, 3, "count")

	ok, err := s.DeleteAssociation(ctx, "@other:hs", "email", "x@hs")
	check(t, err, "delete by non-holder")
	equal(t, ok, false, "delete by non-holder")
	ok, err = s.DeleteAssociation(ctx, "@u:hs", "email", "x@hs")
	check(t, err, "delete")
	equal(t, ok, true, "delete")
	n, err = s.CountAssociations(ctx, "@u:hs")
	check(t, err, "count")
	equal(t, n, 2, "count after delete")
	// The address is free again.
	check(t, s.InsertAssociation(ctx, other), "insert freed address")
}

// testAssociationRace has 20 users claim one address at once, half directly,
// half in a transaction that checks first: exactly one wins.
func testAssociationRace(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const n = 20
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a := storage.Association{UserID: fmt.Sprintf("@u%d:hs", i), Medium: "email", Address: "race@hs", AddedAt: int64(i)}
			<-start
			if i%2 == 0 {
				errs[i] = s.InsertAssociation(ctx, a)
				return
			}
			errs[i] = s.WithTx(ctx, func(q storage.Querier) error {
				if _, err := q.AssociationByAddress(ctx, a.Medium, a.Address); err == nil {
					return storage.ErrConflict
				}
				return q.InsertAssociation(ctx, a)
			})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("users %d and %d both got the address", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, storage.ErrConflict):
			t.Errorf("user %d: got %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("nobody got the address")
	}
	holder, err := s.AssociationByAddress(ctx, "email", "race@hs")
	check(t, err, "by address")
	equal(t, holder.UserID, fmt.Sprintf("@u%d:hs", winner), "holder")
}

// testLockUser: transactions that lock a user, count their associations and
// add one below a limit never take the user past it, however many race.
func testLockUser(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const n, limit = 20, 3
	errLimit := errors.New("limit reached")
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.WithTx(ctx, func(q storage.Querier) error {
				if err := q.LockUser(ctx, "@limited:hs"); err != nil {
					return err
				}
				count, err := q.CountAssociations(ctx, "@limited:hs")
				if err != nil {
					return err
				}
				if count >= limit {
					return errLimit
				}
				return q.InsertAssociation(ctx, storage.Association{UserID: "@limited:hs", Medium: "email", Address: fmt.Sprintf("l%d@hs", i)})
			})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, errLimit) {
			t.Errorf("transaction %d: %v", i, err)
		}
	}
	count, err := s.CountAssociations(ctx, "@limited:hs")
	check(t, err, "count")
	equal(t, count, limit, "associations after the race")
	// Outside a transaction it takes nothing that lasts.
	check(t, s.LockUser(ctx, "@limited:hs"), "lock outside a transaction")
	check(t, s.WithTx(ctx, func(q storage.Querier) error { return q.LockUser(ctx, "@limited:hs") }), "lock again")
}

func testBindings(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	b1 := storage.Binding{UserID: "@u:hs", Medium: "email", Address: "a@hs", IDServer: "is1", BoundAt: 10}
	b2 := storage.Binding{UserID: "@u:hs", Medium: "email", Address: "a@hs", IDServer: "is2", BoundAt: 11}
	b3 := storage.Binding{UserID: "@v:hs", Medium: "email", Address: "a@hs", IDServer: "is1", BoundAt: 12}
	b4 := storage.Binding{UserID: "@u:hs", Medium: "msisdn", Address: "441234", IDServer: "is1", BoundAt: 13}
	for _, b := range []storage.Binding{b4, b3, b2, b1} {
		check(t, s.UpsertBinding(ctx, b), "upsert")
	}
	b1.BoundAt = 20
	check(t, s.UpsertBinding(ctx, b1), "upsert existing")

	got, err := s.BindingsOf(ctx, "@u:hs")
	check(t, err, "bindings of")
	equal(t, got, []storage.Binding{b1, b2, b4}, "bindings of, by medium, address, id_server")
	got, err = s.BindingsOf(ctx, "@nobody:hs")
	check(t, err, "bindings of nobody")
	equal(t, got, []storage.Binding{}, "bindings of nobody")

	for _, c := range []struct {
		medium, address, idServer string
		want                      []storage.Binding
	}{
		{"email", "a@hs", "is1", []storage.Binding{b1, b3}},
		{"email", "a@hs", "is2", []storage.Binding{b2}},
		{"email", "a@hs", "", []storage.Binding{b1, b3, b2}},
		{"email", "a@hs", "is3", []storage.Binding{}},
		{"msisdn", "a@hs", "", []storage.Binding{}},
	} {
		got, err := s.BindingsOf3PID(ctx, c.medium, c.address, c.idServer)
		check(t, err, "bindings of 3pid")
		equal(t, got, c.want, fmt.Sprintf("bindings of %s %s on %q", c.medium, c.address, c.idServer))
	}

	ok, err := s.DeleteBinding(ctx, "@u:hs", "email", "a@hs", "is1")
	check(t, err, "delete")
	equal(t, ok, true, "delete")
	ok, err = s.DeleteBinding(ctx, "@u:hs", "email", "a@hs", "is1")
	check(t, err, "delete again")
	equal(t, ok, false, "delete again")
	got, err = s.BindingsOf3PID(ctx, "email", "a@hs", "is1")
	check(t, err, "bindings of 3pid")
	equal(t, got, []storage.Binding{b3}, "after delete")
}

func testReplays(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	for _, c := range []struct {
		hash string
		at   int64
		want bool
	}{
		{"h1", 10, true},
		{"h1", 11, false},
		{"h2", 20, true},
	} {
		fresh, err := s.RememberRequest(ctx, c.hash, c.at)
		check(t, err, "remember")
		equal(t, fresh, c.want, fmt.Sprintf("remember %s at %d", c.hash, c.at))
	}
	n, err := s.ForgetRequestsBefore(ctx, 20)
	check(t, err, "forget")
	equal(t, n, int64(1), "forgotten before 20")
	fresh, err := s.RememberRequest(ctx, "h1", 30)
	check(t, err, "remember forgotten")
	equal(t, fresh, true, "remember forgotten hash")
	fresh, err = s.RememberRequest(ctx, "h2", 30)
	check(t, err, "remember kept")
	equal(t, fresh, false, "remember kept hash")
}

// testReplayRace replays one request from several goroutines: one applies it.
func testReplayRace(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	const n = 10
	fresh := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { fresh[i], errs[i] = s.RememberRequest(ctx, "same", 1) })
	}
	wg.Wait()
	count := 0
	for i := range n {
		check(t, errs[i], "remember")
		if fresh[i] {
			count++
		}
	}
	equal(t, count, 1, "callers told the request is new")
}

func testSendClaims(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	for _, c := range []struct {
		what            string
		key             string
		at, staleBefore int64
		release         bool
		want            bool
	}{
		{what: "a free key", key: "k1", at: 10, staleBefore: 0, want: true},
		{what: "a key held since 10", key: "k1", at: 11, staleBefore: 5, want: false},
		{what: "another key", key: "k2", at: 12, staleBefore: 5, want: true},
		{what: "a key held since before the stale time", key: "k1", at: 20, staleBefore: 15, want: true},
		{what: "a key taken over at 20", key: "k1", at: 21, staleBefore: 15, want: false},
		{what: "a released key", key: "k2", at: 22, staleBefore: 5, release: true, want: true},
	} {
		if c.release {
			check(t, s.ReleaseSend(ctx, c.key), "release")
		}
		got, err := s.ClaimSend(ctx, c.key, c.at, c.staleBefore)
		check(t, err, "claim")
		equal(t, got, c.want, "claim "+c.what)
	}
	n, err := s.ForgetSendClaimsBefore(ctx, 21)
	check(t, err, "forget")
	equal(t, n, int64(1), "claims forgotten before 21") // k1 (20); k2 was claimed again at 22
	got, err := s.ClaimSend(ctx, "k1", 30, 0)
	check(t, err, "claim forgotten")
	equal(t, got, true, "claim a forgotten key")
}
