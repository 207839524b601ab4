// Package storage defines the one storage interface of threepidd. Two backends
// implement it, storage/sqlite (the default) and storage/postgres, both through
// storage/sqlstore, which holds the SQL they share. storage/storagetest is the
// conformance suite both run.
//
// Every method on [Querier] works either directly on the database or inside a
// transaction opened with [Store.WithTx]; writes that must be seen together are
// made in one transaction by the service layer. Methods that list rows return
// an empty, non-nil slice when nothing matches. An ErrConflict or ErrNotFound
// inside a transaction leaves it usable.
//
// Addresses are stored in canonical form (see package threepid); the store never
// canonicalises. Times are Unix milliseconds.
package storage

import (
	"context"
	"errors"
)

// Errors the store reports. Backends translate driver errors into these.
var (
	// ErrNotFound: no such row.
	ErrNotFound = errors.New("storage: not found")
	// ErrConflict: a unique constraint refused the write (e.g. the 3PID is
	// associated with another user).
	ErrConflict = errors.New("storage: conflict")
)

// Association is a 3PID associated with a local user's account (/3pid/add).
type Association struct {
	UserID      string
	Medium      string
	Address     string
	ValidatedAt int64
	AddedAt     int64
}

// Binding records that a local user bound a 3PID on an identity server.
type Binding struct {
	UserID   string
	Medium   string
	Address  string
	IDServer string
	BoundAt  int64
}

// Session is a 3PID validation session created by requestToken. The tokens
// sent for it are [SessionToken]s.
type Session struct {
	SID          string
	ClientSecret string
	Medium       string
	Address      string
	// SendAttempt is the highest send_attempt a token was sent for.
	SendAttempt int64
	NextLink    string
	// ValidatedAt is 0 until a token of the session was submitted correctly.
	ValidatedAt int64
	// ExpiresAt is when the session's last token to expire stops being accepted.
	ExpiresAt int64
	CreatedAt int64
}

// SessionToken is a token sent for a validation session. Every token of a
// session is accepted until it expires; the token itself is never stored.
type SessionToken struct {
	SID string
	// TokenHash is the hex SHA-256 of the token.
	TokenHash   string
	SendAttempt int64
	ExpiresAt   int64
	// UsedAt is when the token validated its session, 0 while unused.
	UsedAt int64
}

// AttemptLimit bounds the attempts recorded since a time: fewer than Max
// attempts at or after Since.
type AttemptLimit struct {
	Since int64
	Max   int
}

// Notification is an entry of a user's 3PID notification stream: a binding the
// user lost (taken over or deleted on an identity server).
type Notification struct {
	// StreamID is the position, allocated from one counter for all users, strictly
	// increasing in commit order of the writing transactions.
	StreamID int64
	UserID   string
	Medium   string
	Address  string
	Deleted  bool
	// MXID is the user the 3PID is now bound to (takeover) or was bound to (deletion).
	MXID string
	// Origin is the identity server that reported the change.
	Origin string
	At     int64
}

// OutboxItem is a unit of durable background work: an unbind to retry, an
// after-event to deliver, a homeserver mirror call.
type OutboxItem struct {
	ID   int64
	Kind string
	// Key groups items: at most one item per (Kind, Key) is pending when Key is
	// non-empty (EnqueueOutbox answers ErrConflict for a second); empty for
	// ungrouped items.
	Key         string
	Payload     []byte
	Attempts    int
	NextAttempt int64
	CreatedAt   int64
	LastError   string
	// Group names what the item needs (for unbinds, the identity server):
	// ClaimOutboxGroups claims at most one item per non-empty group, and
	// DeferOutboxGroup postpones a whole group. Empty for ungrouped items.
	Group string
}

// Querier is every query the service layer can make, inside or outside a transaction.
type Querier interface {
	Sessions
	SendClaims
	TokenAttempts
	RateLimits
	Associations
	Bindings
	Notifications
	Outbox
	Replays
	// AfterCommit runs fn once the transaction the querier belongs to has
	// committed, never after a rollback; outside a transaction, at once. For
	// what must count only changes that happened (metrics).
	AfterCommit(fn func())
	SeenUsers
	Jobs
	ImportStaging
}

// Sessions stores validation sessions and their tokens.
type Sessions interface {
	// CreateSession inserts s with its first token (whose SID is s.SID).
	// ErrConflict if s.SID exists.
	CreateSession(ctx context.Context, s Session, first SessionToken) error
	// SessionByID returns the session with that sid, or ErrNotFound.
	SessionByID(ctx context.Context, sid string) (Session, error)
	// SessionByKey returns the session for (client_secret, medium, address), or
	// ErrNotFound. The key is not unique: with several, the newest (created_at) wins.
	SessionByKey(ctx context.Context, clientSecret, medium, address string) (Session, error)
	// AddSessionToken adds a token to its session (a resend): the session's
	// send attempt and expiry become the highest of theirs and the token's,
	// and only the keep tokens of the session that expire last are kept. A
	// token already stored is renewed. ErrNotFound if the session is absent.
	AddSessionToken(ctx context.Context, t SessionToken, keep int) error
	// SessionTokens lists the tokens of sid, the one that expires last first.
	SessionTokens(ctx context.Context, sid string) ([]SessionToken, error)
	// ValidateSession marks sid validated at `at` by its token tokenHash: it
	// sets the session's validated_at and the token's used_at, each only if
	// still 0. ErrNotFound if the session or the token is absent.
	ValidateSession(ctx context.Context, sid, tokenHash string, at int64) error
	// DeleteSession removes sid (a spent session) and its tokens. It reports
	// whether a session was removed.
	DeleteSession(ctx context.Context, sid string) (bool, error)
	// DeleteSessionsExpiredBefore removes the sessions whose expiry is
	// before t, and their tokens; it returns how many sessions.
	DeleteSessionsExpiredBefore(ctx context.Context, t int64) (int64, error)
}

// SendClaims let one request of several identical ones, on any instance, send
// a validation message: the others wait for its session instead of sending
// the message again.
type SendClaims interface {
	// ClaimSend claims key at `at` and reports whether it got it: true when
	// nobody held it, or its holder claimed it before staleBefore (a request
	// that died while sending), false while another holds it.
	ClaimSend(ctx context.Context, key string, at, staleBefore int64) (bool, error)
	// ReleaseSend gives key up (the message was sent and its session
	// stored, or sending failed and a retry must send again).
	ReleaseSend(ctx context.Context, key string) error
	// ForgetSendClaimsBefore drops the claims made before t (left by
	// requests that died) and returns how many.
	ForgetSendClaimsBefore(ctx context.Context, t int64) (int64, error)
}

// TokenAttempts counts the tokens submitted for each 3PID, across its
// sessions and their resends: the limit on guessing a token.
type TokenAttempts interface {
	// RecordTokenAttempt records an attempt on (medium, address) at `at`
	// unless one of limits is reached: it reports false, recording nothing,
	// when the attempts at or after some limit's Since are Max or more.
	// Concurrent calls, from any instance sharing the database, are
	// serialised per 3PID, so that no limit is exceeded.
	RecordTokenAttempt(ctx context.Context, medium, address string, at int64, limits ...AttemptLimit) (bool, error)
	// ForgetTokenAttemptsBefore drops the attempts made before t; it returns how many.
	ForgetTokenAttemptsBefore(ctx context.Context, t int64) (int64, error)
}

// RateLimits holds the token buckets of the rate limiters, shared by every
// instance on the database. A bucket is kept as its theoretical arrival time
// (GCRA): a bucket without a row, or whose time is past, is full. Its times
// are Unix microseconds.
type RateLimits interface {
	// TakeRateLimitToken takes a token from the bucket (limiter, key) at now,
	// for a bucket that refills one token every interval and holds
	// 1 + tolerance/interval tokens. When the bucket is empty it takes
	// nothing and reports false with the wait until a token is there.
	TakeRateLimitToken(ctx context.Context, limiter, key string, now, interval, tolerance int64) (ok bool, wait int64, err error)
	// ForgetFullRateLimits drops the buckets that are full at now (their
	// absence means as much); it returns how many.
	ForgetFullRateLimits(ctx context.Context, now int64) (int64, error)
}

// Associations stores the 3PIDs associated with local accounts.
type Associations interface {
	// InsertAssociation adds a; ErrConflict if (medium, address) is held by anyone.
	InsertAssociation(ctx context.Context, a Association) error
	// AssociationsOf lists a user's associations, ordered by added_at, medium, address.
	AssociationsOf(ctx context.Context, userID string) ([]Association, error)
	// InsertAssociations adds every association of as whose (medium,
	// address) nobody holds (within as, the first), in the caller's
	// transaction or one of its own, and returns how many it added; the
	// others are left as they are. It is the bulk write of imports.
	InsertAssociations(ctx context.Context, as []Association) (int, error)
	// AssociationByAddress returns who holds (medium, address), or ErrNotFound.
	AssociationByAddress(ctx context.Context, medium, address string) (Association, error)
	// DeleteAssociation removes (medium, address) from userID; it reports whether a row was removed.
	DeleteAssociation(ctx context.Context, userID, medium, address string) (bool, error)
	// CountAssociations returns how many 3PIDs userID holds.
	CountAssociations(ctx context.Context, userID string) (int, error)
	// AssociationsOfUsers lists the associations of every user in userIDs,
	// ordered by user, added_at, medium, address.
	AssociationsOfUsers(ctx context.Context, userIDs []string) ([]Association, error)
	// LockUser, inside WithTx, makes other transactions that lock userID wait
	// until this one ends, so that a count of a user's associations stays
	// true until the insert that depends on it commits. Outside a transaction
	// it has no lasting effect.
	LockUser(ctx context.Context, userID string) error
}

// Bindings stores the identity-server bindings threepidd made or learned of.
type Bindings interface {
	// UpsertBinding records b (bound_at updated if it exists).
	UpsertBinding(ctx context.Context, b Binding) error
	// BindingsOf lists a user's bindings ordered by medium, address, id_server.
	BindingsOf(ctx context.Context, userID string) ([]Binding, error)
	// UpsertBindings is UpsertBinding of every binding of bs, in the caller's
	// transaction or one of its own; bs must not hold one binding twice.
	UpsertBindings(ctx context.Context, bs []Binding) error
	// BindingsOf3PID lists the bindings of (medium, address) on idServer, by any
	// user; idServer "" means on every identity server. Ordered by id_server, user.
	BindingsOf3PID(ctx context.Context, medium, address, idServer string) ([]Binding, error)
	// DeleteBinding removes one binding record; it reports whether a row was removed.
	DeleteBinding(ctx context.Context, userID, medium, address, idServer string) (bool, error)
	// UsersWithBindings returns the users of userIDs that have a binding
	// recorded, sorted.
	UsersWithBindings(ctx context.Context, userIDs []string) ([]string, error)
}

// Notifications is the per-user 3PID notification stream.
type Notifications interface {
	// AppendNotification allocates the next stream position for n (under a lock, in
	// the caller's transaction, or in its own outside one), stores n and returns
	// its position. The store wakes the listeners of n.UserID once the
	// transaction commits. A rolled-back position is allocated again: positions
	// have no gaps.
	AppendNotification(ctx context.Context, n Notification) (int64, error)
	// NotificationsSince returns userID's notifications with StreamID > after and
	// At >= notBefore, oldest first, at most limit (none if limit <= 0).
	NotificationsSince(ctx context.Context, userID string, after, notBefore int64, limit int) ([]Notification, error)
	// MaxStreamID returns the highest allocated position (0 if none). Every
	// position up to it is committed.
	MaxStreamID(ctx context.Context) (int64, error)
}

// Outbox is durable background work.
type Outbox interface {
	// EnqueueOutbox stores item (ID, Attempts ignored) and returns its ID;
	// ErrConflict (without aborting a transaction) if an item of that kind with
	// that non-empty Key is pending.
	EnqueueOutbox(ctx context.Context, item OutboxItem) (int64, error)
	// ClaimOutbox returns up to limit items of kind due at or before now (oldest
	// NextAttempt first; none if limit <= 0) and pushes their NextAttempt to
	// leaseUntil (the returned items show it), so no other worker (or instance)
	// claims them meanwhile.
	ClaimOutbox(ctx context.Context, kind string, now, leaseUntil int64, limit int) ([]OutboxItem, error)
	// RescheduleOutbox records a failed attempt: attempts+1, next attempt, last
	// error. ErrNotFound if the item is gone.
	RescheduleOutbox(ctx context.Context, id int64, nextAttempt int64, lastErr string) error
	// ReleaseOutbox ends the lease of a claimed item that was not attempted
	// (its worker shuts down): it is due again at nextAttempt, its attempts
	// unchanged. ErrNotFound if the item is gone.
	ReleaseOutbox(ctx context.Context, id int64, nextAttempt int64) error
	// DeleteOutbox removes a finished (or abandoned) item. ErrNotFound if it is
	// gone already.
	DeleteOutbox(ctx context.Context, id int64) error
	// PendingOutbox lists pending items of kind whose Key is key, by ID.
	PendingOutbox(ctx context.Context, kind, key string) ([]OutboxItem, error)
	// CountOutbox returns how many items of kind are pending.
	CountOutbox(ctx context.Context, kind string) (int64, error)
	// OldestOutbox returns the CreatedAt of the oldest pending item of kind,
	// 0 when none is pending.
	OldestOutbox(ctx context.Context, kind string) (int64, error)
	// ClaimOutboxGroups is ClaimOutbox taking at most one item of each
	// non-empty Group: the due item of the group with the oldest NextAttempt
	// (then the lowest ID). Items without a group are each a group of their own.
	ClaimOutboxGroups(ctx context.Context, kind string, now, leaseUntil int64, limit int) ([]OutboxItem, error)
	// DeferOutboxGroup pushes the NextAttempt of every pending item of kind in
	// group to at least until (later ones keep theirs) and returns how many
	// moved; group must not be empty.
	DeferOutboxGroup(ctx context.Context, kind, group string, until int64) (int64, error)
	// CountOutboxKeyPrefix returns how many items of kind whose Key starts
	// with prefix (non-empty) are pending.
	CountOutboxKeyPrefix(ctx context.Context, kind, prefix string) (int64, error)
}

// Replays remembers the requests already applied, so a replay is a no-op.
type Replays interface {
	// RememberRequest stores hash (seen at `at`); it returns false if it was already
	// stored, in which case the caller must not apply the request again.
	RememberRequest(ctx context.Context, hash string, at int64) (bool, error)
	// ForgetRequestsBefore drops remembered hashes older than t.
	ForgetRequestsBefore(ctx context.Context, t int64) (int64, error)
}

// SeenUsers remembers the users whose homeserver 3PIDs were imported at
// least once (the read-through of a user's first request, an import, a
// reconcile pass), so that they are not imported on every request again.
type SeenUsers interface {
	// UserSeen reports whether userID was marked seen.
	UserSeen(ctx context.Context, userID string) (bool, error)
	// MarkUsersSeen marks every user of userIDs seen at `at` (users already
	// seen keep their time).
	MarkUsersSeen(ctx context.Context, userIDs []string, at int64) error
}

// Staged is a row of the import's staging table: a 3PID an account holds on
// the homeserver (Address canonical unless Reason says why it is not
// imported), or, with Medium and Address "", an account that was read.
type Staged struct {
	Association
	Reason string
}

// StagedAddress is an address the import staged, with one entry per account
// holding it (the earliest timestamps of that account's spellings; 0 when
// unknown), ordered by user.
type StagedAddress struct {
	Medium, Address string
	Holders         []Association
}

// ImportStaging is where `threepidd import` keeps what it read until it has
// read everything, so that an address several accounts hold is seen with
// all of them, in bounded memory, and an interrupted import resumes.
type ImportStaging interface {
	// StageImport adds rows (in the caller's transaction or its own).
	// Staging a row twice is harmless: reads merge them.
	StageImport(ctx context.Context, rows []Staged) error
	// StagedAddresses returns the staged addresses (Reason "") after
	// (medium, address) in that order, at most limit rows' worth: an address
	// is never split over two calls, unless it alone has more than limit
	// holders (then only the first limit are given).
	StagedAddresses(ctx context.Context, medium, address string, limit int) ([]StagedAddress, error)
	// StagedUsers returns up to limit staged accounts after userID, in order.
	StagedUsers(ctx context.Context, userID string, limit int) ([]string, error)
	// StagedRejected returns up to limit staged rows with a Reason, after
	// (userID, medium, address) in that order.
	StagedRejected(ctx context.Context, userID, medium, address string, limit int) ([]Staged, error)
	// ClearImportStaging empties the staging table.
	ClearImportStaging(ctx context.Context) error
}

// Job is the state of a periodic background job that walks a long listing:
// who holds its lease, where an unfinished pass stopped, when the next is due.
type Job struct {
	Name string
	// Holder is the lease holder ("" when free) and LeaseUntil when its lease
	// ends, whether or not it released it.
	Holder     string
	LeaseUntil int64
	// Cursor is where the unfinished pass resumes; "" when no pass is under way.
	Cursor string
	// StartedAt is when the current (or last) pass started, FinishedAt when
	// the last one finished (0: never), NextRun when the next is due.
	StartedAt, FinishedAt, NextRun int64
}

// Jobs stores the state of periodic jobs. One holder at a time runs a job:
// the lease is taken and renewed in the database, so instances sharing it
// take turns, and a holder that died is replaced once its lease ends.
type Jobs interface {
	// ClaimJob takes the lease of job name for holder until leaseUntil when
	// it is free, expired (at or before now) or already holder's, and the
	// job has work: a pass under way (a cursor), a pass due (NextRun at or
	// before now), or force. A job never seen before is created with
	// NextRun = firstRun. It returns the job as claimed (StartedAt set to now
	// when a new pass begins) and true, or the job as it is and false.
	ClaimJob(ctx context.Context, name, holder string, now, leaseUntil, firstRun int64, force bool) (Job, bool, error)
	// SaveJobCursor records where holder's pass has got to and extends its
	// lease; ErrNotFound if holder no longer holds the lease.
	SaveJobCursor(ctx context.Context, name, holder, cursor string, leaseUntil int64) error
	// FinishJob ends holder's pass: cursor cleared, FinishedAt and NextRun
	// set, lease released; ErrNotFound if holder no longer holds the lease.
	FinishJob(ctx context.Context, name, holder string, finishedAt, nextRun int64) error
	// ReleaseJob gives holder's lease up, keeping the cursor for the next
	// holder; nothing happens if holder does not hold it.
	ReleaseJob(ctx context.Context, name, holder string) error
}

// Store is a database.
type Store interface {
	Querier
	// WithTx runs fn in one transaction, committed if fn returns nil and rolled
	// back on an error or a panic (which is re-raised). fn must query through q,
	// never the Store: on SQLite the transaction holds the only write connection,
	// so a write through the Store would wait for it until ctx ends.
	WithTx(ctx context.Context, fn func(q Querier) error) error
	// Subscribe calls fn with the user ID of every notification appended after it
	// committed, by this process or (Postgres) by any instance sharing the database,
	// until ctx ends. fn must not block.
	Subscribe(ctx context.Context, fn func(userID string))
	// Ping checks the database is reachable.
	Ping(ctx context.Context) error
	// Close releases the database.
	Close() error
}
