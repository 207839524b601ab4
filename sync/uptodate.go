package sync

import (
	"sync"
	"time"
)

const (
	// upToDateTTL bounds how long a "nothing new" answer is trusted without
	// asking the database again, should a wake-up ever be lost.
	upToDateTTL = time.Minute
	// upToDateSize bounds the users remembered; past it all are forgotten.
	upToDateSize = 100_000
)

// upToDate remembers, per user, a position after which the user had no
// notification when last asked, so that a client that is up to date (most
// syncs) costs no query. A wake-up for the user forgets it.
//
// A query runs concurrently with wake-ups: its answer is remembered only if no
// wake-up at all came between its start and its end (wakes counts them), so a
// notification committed meanwhile is never hidden.
type upToDate struct {
	mu    sync.Mutex
	users map[string]cleanMark
	wakes uint64
}

// cleanMark says the user had no notification after pos, as of at.
type cleanMark struct {
	pos int64
	at  time.Time
}

// seq returns the wake-up count, to pass to mark.
func (u *upToDate) seq() uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.wakes
}

// has reports whether userID is known to have no notification after pos.
func (u *upToDate) has(userID string, pos int64, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	m, ok := u.users[userID]
	return ok && m.pos <= pos && now.Sub(m.at) < upToDateTTL
}

// mark records that userID had no notification after pos, found by a query
// that started when the wake-up count was seq.
func (u *upToDate) mark(userID string, pos int64, seq uint64, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.wakes != seq {
		return
	}
	if u.users == nil || len(u.users) >= upToDateSize {
		u.users = make(map[string]cleanMark)
	}
	u.users[userID] = cleanMark{pos: pos, at: now}
}

// forget drops what is known of userID: a notification was appended for it.
func (u *upToDate) forget(userID string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.wakes++
	delete(u.users, userID)
}
