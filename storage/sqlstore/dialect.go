package sqlstore

import "context"

// Dialect is everything that differs between the backends. The SQL of the store
// is written once, with `?` placeholders; a Dialect adapts it.
type Dialect interface {
	// Rebind rewrites the `?` placeholders of query into the backend's own.
	Rebind(query string) string
	// IsUniqueViolation reports whether err is a unique or primary-key violation.
	IsUniqueViolation(err error) bool
	// SkipLocked is appended to a SELECT that claims rows, so that concurrent
	// claimers skip each other's rows (" FOR UPDATE SKIP LOCKED"), or "" where
	// writers are serialised anyway.
	SkipLocked() string
	// AutoIncrementID is the column definition of an auto-incrementing int64
	// primary key.
	AutoIncrementID() string
	// BytesType is the column type of a byte string.
	BytesType() string
	// UserLock is a statement with one argument, a key (a user ID, or
	// another name the store locks), that takes a lock on that key held
	// until the transaction ends; "" where writers are serialised anyway.
	UserLock() string
	// MigrationLock returns the statements that take and release a lock held
	// while migrations run, so that two instances starting at once migrate one
	// after the other; "" where each migration's transaction serialises them.
	MigrationLock() (lock, unlock string)
}

// Notifier is implemented by dialects whose database carries wake-ups between
// instances (Postgres LISTEN/NOTIFY). With a Dialect that does not implement
// it, the store wakes its own subscribers once a transaction that appended
// notifications commits.
type Notifier interface {
	// NotifyQuery is run in each transaction that appends a notification, with
	// one argument, a payload; the database delivers it to every listener on
	// commit, in commit order.
	NotifyQuery() string
	// Listen receives the payloads NotifyQuery sent, from every instance, and
	// passes each to deliver. Each time it has (re)connected, and before it
	// delivers anything from that connection, it calls listening, which lets the
	// store catch up on what was committed while it was not listening. Listen
	// returns an error if its first connection (or first call of listening)
	// fails; after that it reconnects until ctx ends, then returns nil. deliver
	// does not block.
	Listen(ctx context.Context, listening func(context.Context) error, deliver func(payload string)) error
}
