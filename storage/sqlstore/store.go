// Package sqlstore implements storage.Store over database/sql, once for both
// backends. Its SQL is written with `?` placeholders; a [Dialect] supplies the
// few things that differ (placeholders, unique-violation detection, row
// claiming, column types, migration locking and how wake-ups travel).
//
// Each table's queries live in a file named after it. Stream positions come
// from a counter row incremented in the writing transaction, never from a
// sequence, so that positions become visible in order.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/threepidd/threepidd/metrics"
	"github.com/threepidd/threepidd/storage"
)

// Config is what [Open] needs.
type Config struct {
	// Writer runs transactions and writes (and everything else when Reader is nil).
	Writer *sql.DB
	// Reader, if set, serves reads made outside transactions. SQLite uses a
	// single-connection Writer beside a pool of readers.
	Reader *sql.DB
	// Dialect adapts the SQL to the backend.
	Dialect Dialect
}

// Store is a storage.Store over database/sql.
type Store struct {
	querier
	writer, reader *sql.DB
	dialect        Dialect
	// tokens replaces the {{tokens}} of the SQL with the dialect's text.
	tokens *strings.Replacer
	// sql holds the store's queries, completed and rebound for the dialect,
	// indexed by query.
	sql []string
	// notify is the Notifier's query, rebound; "" when wake-ups are local.
	notify string
	hub    *hub

	stopListen context.CancelFunc
	listenDone chan struct{}
	// listenPos is the stream position up to which the listener has woken
	// subscribers; listenSeen is false until it first listened. Only the
	// listener goroutine touches them.
	listenPos  int64
	listenSeen bool

	closeOnce sync.Once
	closeErr  error
}

var _ storage.Store = (*Store)(nil)

// Open migrates the database to the current schema and returns a Store over
// it. It owns the pools from then on: they are closed on error and by Close.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	s := &Store{
		writer:  cfg.Writer,
		reader:  cfg.Reader,
		dialect: cfg.Dialect,
		sql:     make([]string, len(queries)),
		hub:     newHub(),
	}
	if s.reader == nil {
		s.reader = s.writer
	}
	s.tokens = strings.NewReplacer(
		"{{autoid}}", s.dialect.AutoIncrementID(),
		"{{bytes}}", s.dialect.BytesType(),
		"{{skiplocked}}", s.dialect.SkipLocked(),
		"{{userlock}}", s.dialect.UserLock(),
	)
	for i, q := range queries {
		s.sql[i] = s.dialect.Rebind(s.tokens.Replace(q))
	}
	s.querier = querier{s: s, read: s.reader, write: s.writer}

	if err := s.migrate(ctx); err != nil {
		return nil, errors.Join(err, s.closeDBs())
	}
	if n, ok := s.dialect.(Notifier); ok {
		s.notify = s.dialect.Rebind(n.NotifyQuery())
		if err := s.startListener(ctx, n); err != nil {
			return nil, errors.Join(err, s.closeDBs())
		}
	}
	return s, nil
}

// startListener runs the Notifier's listener until Close and waits until it
// listens, so that a Subscribe made after Open misses nothing.
func (s *Store) startListener(ctx context.Context, n Notifier) error {
	lctx, stop := context.WithCancel(context.Background())
	s.stopListen = stop
	s.listenDone = make(chan struct{})
	ready := make(chan struct{})
	var readyOnce sync.Once
	listening := func(ctx context.Context) error {
		if err := s.catchUp(ctx); err != nil {
			return err
		}
		readyOnce.Do(func() { close(ready) })
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		defer close(s.listenDone)
		errc <- n.Listen(lctx, listening, s.received)
	}()
	select {
	case <-ready:
		return nil
	case err := <-errc:
		stop()
		if err == nil {
			err = errors.New("listener stopped before listening")
		}
		return fmt.Errorf("start notification listener: %w", err)
	case <-ctx.Done():
		stop()
		<-s.listenDone
		return fmt.Errorf("start notification listener: %w", ctx.Err())
	}
}

// WithTx runs fn in one transaction, committed if fn returns nil and rolled
// back on an error or a panic (which is re-raised). fn must make its queries
// through q: on SQLite the transaction holds the store's only write connection.
func (s *Store) WithTx(ctx context.Context, fn func(q storage.Querier) error) error {
	done, err := s.inTx(ctx, fn)
	if err != nil {
		return err
	}
	if s.notify == "" {
		s.hub.publish(done.woken)
	}
	for _, f := range done.after {
		f()
	}
	return nil
}

// inTx runs fn in a transaction and returns what it left for after the
// commit.
func (s *Store) inTx(ctx context.Context, fn func(q storage.Querier) error) (*txState, error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		countError(err)
		return nil, fmt.Errorf("begin transaction: %w", err)
	}
	q := &querier{s: s, read: tx, write: tx, tx: &txState{}}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(q); err != nil {
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return nil, errors.Join(err, fmt.Errorf("roll back: %w", rbErr))
		}
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		countError(err)
		return nil, fmt.Errorf("commit: %w", err)
	}
	return q.tx, nil
}

// Subscribe calls fn with the user ID of every notification appended after it
// committed, until ctx ends or the store closes. Each subscription has its own
// goroutine and queue, so a slow fn delays only itself; IDs queued and not yet
// delivered are coalesced.
func (s *Store) Subscribe(ctx context.Context, fn func(userID string)) {
	s.hub.subscribe(ctx, fn)
}

// Ping checks the database is reachable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	if s.reader != s.writer {
		if err := s.reader.PingContext(ctx); err != nil {
			return fmt.Errorf("ping database readers: %w", err)
		}
	}
	return nil
}

// Close stops the listener and the subscriptions and closes the database.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stopListen != nil {
			s.stopListen()
			<-s.listenDone
		}
		s.hub.close()
		s.closeErr = s.closeDBs()
	})
	return s.closeErr
}

func (s *Store) closeDBs() error {
	err := s.writer.Close()
	if s.reader != s.writer {
		err = errors.Join(err, s.reader.Close())
	}
	if err != nil {
		return fmt.Errorf("close database: %w", err)
	}
	return nil
}

// catchUp is called by the listener each time it starts listening: it wakes
// the users of every notification committed since the last one it received,
// which it missed while reconnecting.
func (s *Store) catchUp(ctx context.Context) error {
	pos, err := s.MaxStreamID(ctx)
	if err != nil {
		return err
	}
	if s.listenSeen && pos > s.listenPos {
		users, err := s.usersSince(ctx, s.listenPos, pos)
		if err != nil {
			return err
		}
		s.hub.publish(users)
	}
	s.listenPos, s.listenSeen = max(s.listenPos, pos), true
	return nil
}

// wakePayload is what the transaction appending a notification at pos for
// userID sends to the listeners: "<pos> <userID>".
func wakePayload(pos int64, userID string) string {
	return strconv.FormatInt(pos, 10) + " " + userID
}

// received wakes the subscribers for a payload the listener received.
// Payloads arrive in commit order, that is in position order; one at or below
// listenPos was committed before catchUp read the position, so it was woken
// already (or before Open returned, when nobody could subscribe yet).
func (s *Store) received(payload string) {
	p, userID, ok := strings.Cut(payload, " ")
	pos, err := strconv.ParseInt(p, 10, 64)
	if !ok || err != nil || pos <= s.listenPos {
		return
	}
	s.listenPos = pos
	s.hub.publishOne(userID)
}

// query identifies one of the store's SQL statements, registered with
// defineQuery at package initialisation and rebound for the dialect by Open.
type query int

// queries holds the SQL of every query, as written: with `?` placeholders and
// the tokens {{autoid}}, {{bytes}} (column types) and {{skiplocked}} (see
// Dialect.SkipLocked).
var queries []string

// defineQuery registers sql and returns its query.
func defineQuery(sql string) query {
	queries = append(queries, sql)
	return query(len(queries) - 1)
}

// dbtx is what *sql.DB and *sql.Tx have in common.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// querier implements storage.Querier on the database or in a transaction.
type querier struct {
	s *Store
	// read serves queries, write changes; both are the transaction inside one.
	read, write dbtx
	// tx is nil outside a transaction.
	tx *txState
}

// txState is what a transaction remembers for after its commit.
type txState struct {
	// woken holds the user IDs of the notifications appended.
	woken []string
	// after holds the functions AfterCommit was given.
	after []func()
}

// AfterCommit runs fn once the transaction commits; outside one, at once.
func (q *querier) AfterCommit(fn func()) {
	if q.tx == nil {
		fn()
		return
	}
	q.tx.after = append(q.tx.after, fn)
}

// inTx runs fn in the current transaction, or in a new one outside a transaction.
func (q *querier) inTx(ctx context.Context, fn func(q *querier) error) error {
	if q.tx != nil {
		return fn(q)
	}
	return q.s.WithTx(ctx, func(tq storage.Querier) error { return fn(tq.(*querier)) })
}

// exec runs a change and returns how many rows it affected.
func (q *querier) exec(ctx context.Context, id query, args ...any) (int64, error) {
	res, err := q.write.ExecContext(ctx, q.s.sql[id], args...)
	if err != nil {
		return 0, q.s.translate(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("rows affected: %w", err)
	}
	return n, nil
}

// execOne runs a change that must affect a row: ErrNotFound if it did not.
func (q *querier) execOne(ctx context.Context, id query, args ...any) error {
	n, err := q.exec(ctx, id, args...)
	if err == nil && n == 0 {
		err = storage.ErrNotFound
	}
	return err
}

// one runs a query (or, with db = q.write, a change with RETURNING) that
// yields at most one row and scans it; ErrNotFound if there is none.
func one[T any](ctx context.Context, q *querier, db dbtx, id query, scan func(scanner) (T, error), args ...any) (T, error) {
	v, err := scan(db.QueryRowContext(ctx, q.s.sql[id], args...))
	return v, q.s.translate(err)
}

// scalar is one for a single column.
func scalar[T any](ctx context.Context, q *querier, db dbtx, id query, args ...any) (T, error) {
	return one(ctx, q, db, id, func(r scanner) (v T, err error) { return v, r.Scan(&v) }, args...)
}

// list runs a query and scans every row with scan.
func list[T any](ctx context.Context, q *querier, id query, scan func(scanner) (T, error), args ...any) ([]T, error) {
	rows, err := q.read.QueryContext(ctx, q.s.sql[id], args...)
	if err != nil {
		return nil, q.s.translate(err)
	}
	return scanRows(q.s, rows, scan)
}

// scanRows scans every row with scan and closes rows.
func scanRows[T any](s *Store, rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, s.translate(err)
	}
	return out, nil
}

// listAd is list for SQL made at run time (an IN list of a given length),
// rebound for the dialect here.
func listAd[T any](ctx context.Context, q *querier, sqlText string, scan func(scanner) (T, error), args ...any) ([]T, error) {
	rows, err := q.read.QueryContext(ctx, q.s.dialect.Rebind(q.s.tokens.Replace(sqlText)), args...)
	if err != nil {
		return nil, q.s.translate(err)
	}
	return scanRows(q.s, rows, scan)
}

// inChunk is how many values one IN list holds at most.
const inChunk = 500

// inChunks calls fn with the values, inChunk at a time, as query arguments.
func inChunks(values []string, fn func(chunk []any) error) error {
	for start := 0; start < len(values); start += inChunk {
		chunk := make([]any, 0, min(inChunk, len(values)-start))
		for _, v := range values[start:min(start+inChunk, len(values))] {
			chunk = append(chunk, v)
		}
		if err := fn(chunk); err != nil {
			return err
		}
	}
	return nil
}

// scanner is *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// translate maps driver errors to the storage errors.
func (s *Store) translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return storage.ErrNotFound
	case s.dialect.IsUniqueViolation(err):
		return fmt.Errorf("%w: %w", storage.ErrConflict, err)
	}
	countError(err)
	return err
}

// storeErrors counts database failures: not "not found" or a refused
// duplicate, which are answers, and not a request that went away.
var storeErrors = metrics.Factory.NewCounter(metrics.CounterOpts("store_errors_total",
	"Database operations that failed (connection lost, timeout, constraint, ...)."))

func countError(err error) {
	if !errors.Is(err, context.Canceled) {
		storeErrors.Inc()
	}
}

// placeholders returns n comma-separated `?`.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}
