// Package importer copies the 3PIDs a homeserver already holds into
// threepidd's store (threepidd import): the step before the reverse proxy
// sends the 3PID endpoints to threepidd.
//
// A [Source] reads every active local account's 3PIDs: [Synapse] through the
// admin API, [Dendrite] read-only from its user database. The [Importer]
// canonicalises each address as threepidd stores it and writes what it can
// give to exactly one account:
//
//   - an address that does not canonicalise (or a row that belongs to no
//     active local account) is not imported and is listed;
//   - an address held by several homeserver accounts (possible once spellings
//     are canonicalised, e.g. Alice@example.org and alice@example.org) is a
//     conflict: listed, imported for none of them;
//   - an address threepidd already holds for another account is a conflict:
//     listed, left as threepidd has it;
//   - an address threepidd already holds for the same account is skipped and
//     counted, so running the import again changes nothing.
//
// Imported 3PIDs fire no after-events and are not mirrored: the homeserver
// holds them already.
//
// The import holds a page of accounts in memory at a time, not the
// homeserver: it stages what it reads in the store (storage.ImportStaging),
// then resolves the staged addresses in order, a page at a time, then marks
// the accounts read seen. Its position is a cursor in the store's jobs
// (JobName), saved in the transaction of each page, so an interrupted import
// run again continues where it stopped; one import runs at a time (a lease,
// which an import killed on the same host does not keep).
// A [Source] that is not a [Pager] is read whole, as one page.
package importer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/internal/lease"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

const (
	// JobName names the import in the store's jobs (its lease and cursor).
	JobName = "import"
	// Lease is how long an import keeps its lease without renewing it; it
	// is renewed with every page.
	Lease = 5 * time.Minute
	// writeBatch is how many staged rows one resolving or marking
	// transaction covers.
	writeBatch = 500
	// maxReported bounds the conflicts and the rejected 3PIDs a report
	// lists (all are counted).
	maxReported = 10_000
	// maxPages bounds each paged loop against a source that never ends.
	maxPages = 10_000_000
)

// Conflict reasons.
const (
	ReasonSeveralAccounts = "held by several homeserver accounts"
	ReasonHeldElsewhere   = "held by another account in threepidd"
)

// Record is one 3PID of one homeserver account, as the homeserver holds it.
// Its fields are those of storage.Association, which it converts to and from.
type Record struct {
	UserID  string
	Medium  string
	Address string
	// ValidatedAt and AddedAt are Unix milliseconds; 0 when the homeserver
	// does not keep them (the import time is stored then).
	ValidatedAt int64
	AddedAt     int64
}

// stored is r as threepidd stores it: at stands for the timestamps the
// homeserver does not keep.
func (r Record) stored(at int64) storage.Association {
	a := storage.Association(r)
	a.ValidatedAt, a.AddedAt = cmp.Or(a.ValidatedAt, at), cmp.Or(a.AddedAt, at)
	return a
}

// Rejected is a homeserver 3PID that was not imported, and why.
type Rejected struct {
	Record
	Reason string
}

// Conflict is an address threepidd cannot give to one account without guessing.
type Conflict struct {
	Medium string
	// Address is canonical.
	Address string
	// Users are the homeserver accounts holding it, sorted.
	Users []string
	// HeldBy is the account threepidd has it on (ReasonHeldElsewhere).
	HeldBy string
	Reason string
}

// Snapshot is what a Source read.
type Snapshot struct {
	// Users is how many accounts were read.
	Users int
	// Seen are the accounts whose 3PIDs were all read (a source that can
	// tell): marked seen, so that the read-through of their first request
	// does not read them again.
	Seen     []string
	Records  []Record
	Rejected []Rejected
}

// Source reads a homeserver's 3PIDs.
type Source interface {
	// Describe names the source for the report.
	Describe() string
	// Read returns the 3PIDs of the homeserver's active local accounts,
	// telling progress as it goes.
	Read(ctx context.Context, progress func(format string, args ...any)) (Snapshot, error)
	// Close releases the source.
	Close() error
}

// Pager is a Source that reads a page of accounts at a time.
type Pager interface {
	// ReadPage reads the page at cursor ("": the first) and returns the
	// cursor of the next page ("" after the last) and how many accounts the
	// homeserver lists in all. A cursor stays valid across processes.
	ReadPage(ctx context.Context, cursor string) (page Snapshot, next string, total int, err error)
}

// Report is the outcome of an import.
type Report struct {
	Source string
	// Resumed is true when the run continued an interrupted import.
	Resumed bool
	// Users is how many accounts were read; Found how many 3PIDs they hold.
	Users, Found int
	// Imported were written; Present were already in threepidd for the same account.
	Imported, Present int
	// ConflictCount and RejectedCount count every conflict and every 3PID
	// not imported; Conflicts and Rejected list the first maxReported (of a
	// resumed import, the conflicts found since it resumed).
	ConflictCount, RejectedCount int
	Conflicts                    []Conflict
	Rejected                     []Rejected
}

func (r *Report) conflict(c Conflict) {
	r.ConflictCount++
	if len(r.Conflicts) < maxReported {
		r.Conflicts = append(r.Conflicts, c)
	}
}

// Importer writes a Source's 3PIDs into Store.
type Importer struct {
	Store  storage.Store
	Source Source
	// Progress receives progress lines; nil: none.
	Progress io.Writer
	Clock    clock.Func
	// Holder names this process in the lease; "" picks host/pid/random.
	Holder string
}

// cursor is the position of an import, saved in its job.
type cursor struct {
	// Phase is "read" (Next is the source's cursor), "resolve" (Medium and
	// Address the last address resolved) or "seen" (User the last account
	// marked seen).
	Phase     string `json:"phase"`
	Next      string `json:"next,omitempty"`
	Medium    string `json:"medium,omitempty"`
	Address   string `json:"address,omitempty"`
	User      string `json:"user,omitempty"`
	Users     int    `json:"users"`
	Found     int    `json:"found"`
	Imported  int    `json:"imported"`
	Present   int    `json:"present"`
	Conflicts int    `json:"conflicts"`
}

// Import phases.
const (
	phaseRead    = "read"
	phaseResolve = "resolve"
	phaseSeen    = "seen"
)

func (im *Importer) progress(format string, args ...any) {
	if im.Progress != nil {
		fmt.Fprintf(im.Progress, "import: "+format+"\n", args...)
	}
}

// Run reads the source and writes its 3PIDs, or continues an interrupted
// import at its cursor. Conflicts and rejected rows are reported, not
// errors; an error means the import could not finish (what was written
// stays, and running it again continues). Another import holding the lease
// is a *lease.BusyError.
func (im *Importer) Run(ctx context.Context) (rep Report, err error) {
	rep.Source = im.Source.Describe()
	holder := lease.Holder(im.Holder)
	now := im.Clock.Now()
	job, claimed, err := lease.Claim(ctx, im.Store, JobName, holder, now.UnixMilli(), now.Add(Lease).UnixMilli(), 0, true)
	if err != nil {
		return Report{}, err
	}
	if !claimed {
		return Report{}, &lease.BusyError{Job: JobName, Holder: job.Holder, Until: time.UnixMilli(job.LeaseUntil)}
	}
	defer func() {
		if err != nil { // give the lease up, keeping the cursor
			if rerr := im.Store.ReleaseJob(context.WithoutCancel(ctx), JobName, holder); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}()
	var c cursor
	if job.Cursor != "" {
		if err := json.Unmarshal([]byte(job.Cursor), &c); err != nil {
			return Report{}, fmt.Errorf("the saved import cursor %q: %w", job.Cursor, err)
		}
		rep.Resumed = true
		im.progress("continuing the import started %s (%s phase, %d accounts read)",
			time.UnixMilli(job.StartedAt).UTC().Format(time.RFC3339), c.Phase, c.Users)
	} else {
		c.Phase = phaseRead
		if err := im.Store.ClearImportStaging(ctx); err != nil {
			return Report{}, err
		}
	}
	defer func() { // what this import has done so far, even when it stops
		rep.Users, rep.Found, rep.Imported, rep.Present, rep.ConflictCount = c.Users, c.Found, c.Imported, c.Present, c.Conflicts
	}()
	step := &pass{im: im, holder: holder, c: &c, rep: &rep}
	for _, ph := range []struct {
		name string
		run  func(context.Context) error
	}{{phaseRead, step.read}, {phaseResolve, step.resolve}, {phaseSeen, step.markSeen}} {
		if c.Phase != ph.name {
			continue
		}
		if err := ph.run(ctx); err != nil {
			return rep, err
		}
	}
	if err := step.rejected(ctx); err != nil {
		return rep, err
	}
	slices.SortFunc(rep.Conflicts, func(a, b Conflict) int {
		return cmp.Or(cmp.Compare(a.Medium, b.Medium), cmp.Compare(a.Address, b.Address))
	})
	if err := im.Store.ClearImportStaging(ctx); err != nil {
		return rep, err
	}
	done := im.Clock.Now().UnixMilli()
	if err := im.Store.FinishJob(ctx, JobName, holder, done, done); err != nil {
		return rep, err
	}
	return rep, nil
}

// pass is one run of an import: its cursor and report.
type pass struct {
	im     *Importer
	holder string
	c      *cursor
	rep    *Report
}

// save records the cursor in q (the transaction of the page it follows).
func (p *pass) save(ctx context.Context, q storage.Querier) error {
	b, err := json.Marshal(p.c)
	if err != nil {
		return fmt.Errorf("encode the import cursor: %w", err)
	}
	if err := q.SaveJobCursor(ctx, JobName, p.holder, string(b), p.im.Clock.Now().Add(Lease).UnixMilli()); err != nil {
		return fmt.Errorf("lost the import's lease: %w", err)
	}
	return nil
}

// read stages the source's accounts and 3PIDs, a page per transaction.
func (p *pass) read(ctx context.Context) error {
	pager, paged := p.im.Source.(Pager)
	start, users := time.Now(), 0
	for range maxPages {
		var (
			page  Snapshot
			next  string
			total int
			err   error
		)
		if paged {
			page, next, total, err = pager.ReadPage(ctx, p.c.Next)
		} else {
			page, err = p.im.Source.Read(ctx, p.im.progress)
			total = page.Users
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", p.im.Source.Describe(), err)
		}
		rows := stagedRows(page)
		p.c.Users += page.Users
		p.c.Found += len(page.Records) + len(page.Rejected)
		p.c.Next = next
		if next == "" {
			p.c.Phase = phaseResolve
		}
		err = p.im.Store.WithTx(ctx, func(q storage.Querier) error {
			if err := q.StageImport(ctx, rows); err != nil {
				return err
			}
			return p.save(ctx, q)
		})
		if err != nil {
			return err
		}
		users += page.Users
		p.im.progress("%d/%d accounts read, %d 3PIDs, %.0f accounts/s", p.c.Users, total, p.c.Found,
			float64(users)/max(time.Since(start).Seconds(), 0.001))
		if next == "" {
			return nil
		}
	}
	return fmt.Errorf("read %s: the listing did not end after %d pages", p.im.Source.Describe(), maxPages)
}

// stagedRows turns a page into staging rows: an account row per account
// read, each record canonical (or rejected with the reason), each rejection.
func stagedRows(page Snapshot) []storage.Staged {
	rows := make([]storage.Staged, 0, len(page.Seen)+len(page.Records)+len(page.Rejected))
	for _, u := range page.Seen {
		rows = append(rows, storage.Staged{Association: storage.Association{UserID: u}})
	}
	row := func(r Record, reason string) storage.Staged {
		return storage.Staged{Association: storage.Association(r), Reason: reason}
	}
	for _, r := range page.Records {
		canonical, err := threepid.CanonicalAddress(r.Medium, r.Address)
		if err != nil {
			rows = append(rows, row(r, err.Error()))
			continue
		}
		r.Address = canonical
		rows = append(rows, row(r, ""))
	}
	for _, x := range page.Rejected {
		rows = append(rows, row(x.Record, x.Reason))
	}
	return rows
}

// resolve writes the staged addresses in order, a page per transaction: an
// address several accounts hold is a conflict, the others are written.
func (p *pass) resolve(ctx context.Context) error {
	resolved := 0
	for range maxPages {
		addrs, err := p.im.Store.StagedAddresses(ctx, p.c.Medium, p.c.Address, writeBatch)
		if err != nil {
			return err
		}
		if len(addrs) == 0 {
			p.c.Phase = phaseSeen
			return p.im.Store.WithTx(ctx, func(q storage.Querier) error { return p.save(ctx, q) })
		}
		var todo []Record
		for _, a := range addrs {
			if len(a.Holders) > 1 {
				users := make([]string, len(a.Holders))
				for i, h := range a.Holders {
					users[i] = h.UserID
				}
				slices.Sort(users)
				p.c.Conflicts++
				p.rep.conflict(Conflict{Medium: a.Medium, Address: a.Address, Users: users, Reason: ReasonSeveralAccounts})
				continue
			}
			todo = append(todo, Record(a.Holders[0]))
		}
		last := addrs[len(addrs)-1]
		p.c.Medium, p.c.Address = last.Medium, last.Address
		if err := p.write(ctx, todo); err != nil {
			return err
		}
		resolved += len(addrs)
		p.im.progress("%d addresses resolved: %d imported, %d present, %d conflicts", resolved, p.c.Imported, p.c.Present, p.c.Conflicts)
	}
	return fmt.Errorf("resolving did not end after %d pages", maxPages)
}

// markSeen marks the staged accounts seen, a page per transaction.
func (p *pass) markSeen(ctx context.Context) error {
	for range maxPages {
		users, err := p.im.Store.StagedUsers(ctx, p.c.User, writeBatch)
		if err != nil {
			return err
		}
		if len(users) == 0 {
			return nil
		}
		p.c.User = users[len(users)-1]
		err = p.im.Store.WithTx(ctx, func(q storage.Querier) error {
			if err := q.MarkUsersSeen(ctx, users, p.im.Clock.Now().UnixMilli()); err != nil {
				return err
			}
			return p.save(ctx, q)
		})
		if err != nil {
			return err
		}
	}
	return fmt.Errorf("marking accounts seen did not end after %d pages", maxPages)
}

// rejected lists the staged rejections into the report.
func (p *pass) rejected(ctx context.Context) error {
	var after storage.Staged
	for range maxPages {
		rows, err := p.im.Store.StagedRejected(ctx, after.UserID, after.Medium, after.Address, writeBatch)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			break
		}
		for _, r := range rows {
			p.rep.RejectedCount++
			if len(p.rep.Rejected) < maxReported {
				p.rep.Rejected = append(p.rep.Rejected, Rejected{Record: Record(r.Association), Reason: r.Reason})
			}
		}
		after = rows[len(rows)-1]
	}
	slices.SortFunc(p.rep.Rejected, func(a, b Rejected) int {
		return cmp.Or(cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.Medium, b.Medium), cmp.Compare(a.Address, b.Address))
	})
	return nil
}

// write inserts one batch of canonical records, each held by one account,
// in one transaction with the cursor: rows threepidd holds for the same
// account are counted present, rows another account holds are conflicts.
func (p *pass) write(ctx context.Context, batch []Record) error {
	at := p.im.Clock.Now().UnixMilli()
	var imported, present int
	var conflicts []Conflict
	err := p.im.Store.WithTx(ctx, func(q storage.Querier) error {
		imported, present, conflicts = 0, 0, nil
		held, err := heldBy(ctx, q, batch)
		if err != nil {
			return err
		}
		var fresh []storage.Association
		for _, r := range batch {
			if held[key{r.Medium, r.Address}] == r.UserID {
				present++
				continue
			}
			fresh = append(fresh, r.stored(at))
		}
		n, err := q.InsertAssociations(ctx, fresh)
		if err != nil {
			return err
		}
		imported = n
		if n < len(fresh) { // some are held by other accounts: name them
			for _, a := range fresh {
				owner, err := q.AssociationByAddress(ctx, a.Medium, a.Address)
				if err != nil {
					return fmt.Errorf("look up the holder of a %s of %s: %w", a.Medium, a.UserID, err)
				}
				if owner.UserID != a.UserID {
					conflicts = append(conflicts, Conflict{Medium: a.Medium, Address: a.Address, Users: []string{a.UserID},
						HeldBy: owner.UserID, Reason: ReasonHeldElsewhere})
				}
			}
		}
		p.c.Imported += imported
		p.c.Present += present
		p.c.Conflicts += len(conflicts)
		if err := p.save(ctx, q); err != nil {
			p.c.Imported -= imported
			p.c.Present -= present
			p.c.Conflicts -= len(conflicts)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range conflicts {
		p.rep.conflict(c)
	}
	return nil
}

// key is a 3PID.
type key struct{ medium, address string }

// heldBy returns who holds, in threepidd, those of batch's addresses that
// the batch's accounts hold.
func heldBy(ctx context.Context, q storage.Querier, batch []Record) (map[key]string, error) {
	users := make([]string, 0, len(batch))
	for _, r := range batch {
		users = append(users, r.UserID)
	}
	slices.Sort(users)
	as, err := q.AssociationsOfUsers(ctx, slices.Compact(users))
	if err != nil {
		return nil, err
	}
	held := make(map[key]string, len(as))
	for _, a := range as {
		held[key{a.Medium, a.Address}] = a.UserID
	}
	return held, nil
}

// Outcome is what [Insert] did with a record.
type Outcome int

// Outcomes of [Insert].
const (
	// Imported: the 3PID is now the record's account's.
	Imported Outcome = iota
	// Present: threepidd held it for that account already.
	Present
	// HeldElsewhere: threepidd holds it for another account, left as it is.
	HeldElsewhere
)

// Insert writes one canonical record in q, without after-events (the
// homeserver holds it already): its timestamps, or at where the homeserver
// keeps none. It reports the holder when another account holds it.
func Insert(ctx context.Context, q storage.Querier, r Record, at int64) (Outcome, string, error) {
	err := q.InsertAssociation(ctx, r.stored(at))
	if err == nil {
		return Imported, "", nil
	}
	if !errors.Is(err, storage.ErrConflict) {
		return 0, "", fmt.Errorf("import %s of %s: %w", r.Medium, r.UserID, err)
	}
	owner, err := q.AssociationByAddress(ctx, r.Medium, r.Address)
	if err != nil {
		return 0, "", fmt.Errorf("look up the holder of a %s of %s: %w", r.Medium, r.UserID, err)
	}
	if owner.UserID == r.UserID {
		return Present, "", nil
	}
	return HeldElsewhere, owner.UserID, nil
}

// Write prints the report: the counts, then every conflict and every 3PID not
// imported, one per line.
func (r Report) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "threepidd import from %s\n", r.Source)
	fmt.Fprintf(&b, "  accounts read:    %d\n", r.Users)
	fmt.Fprintf(&b, "  3PIDs found:      %d\n", r.Found)
	fmt.Fprintf(&b, "  imported:         %d\n", r.Imported)
	fmt.Fprintf(&b, "  already present:  %d\n", r.Present)
	fmt.Fprintf(&b, "  conflicts:        %d\n", max(r.ConflictCount, len(r.Conflicts)))
	fmt.Fprintf(&b, "  not imported:     %d\n", max(r.RejectedCount, len(r.Rejected)))
	for _, c := range r.Conflicts {
		fmt.Fprintf(&b, "conflict: %s %q: %s: %s", c.Medium, c.Address, c.Reason, strings.Join(c.Users, ", "))
		if c.HeldBy != "" {
			fmt.Fprintf(&b, " on the homeserver, %s in threepidd", c.HeldBy)
		}
		b.WriteString("\n")
	}
	if r.ConflictCount > len(r.Conflicts) {
		fmt.Fprintf(&b, "... and %d more conflicts\n", r.ConflictCount-len(r.Conflicts))
	}
	for _, x := range r.Rejected {
		fmt.Fprintf(&b, "not imported: %s %s %q: %s\n", x.UserID, x.Medium, x.Address, x.Reason)
	}
	if r.RejectedCount > len(r.Rejected) {
		fmt.Fprintf(&b, "... and %d more not imported\n", r.RejectedCount-len(r.Rejected))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
