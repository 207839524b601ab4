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
package importer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/threepidd/threepidd/internal/clock"
	"github.com/threepidd/threepidd/storage"
	"github.com/threepidd/threepidd/threepid"
)

// writeBatch is how many 3PIDs one transaction writes.
const writeBatch = 200

// Conflict reasons.
const (
	ReasonSeveralAccounts = "held by several homeserver accounts"
	ReasonHeldElsewhere   = "held by another account in threepidd"
)

// Record is one 3PID of one homeserver account, as the homeserver holds it.
type Record struct {
	UserID  string
	Medium  string
	Address string
	// ValidatedAt and AddedAt are Unix milliseconds; 0 when the homeserver
	// does not keep them (the import time is stored then).
	ValidatedAt int64
	AddedAt     int64
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

// Report is the outcome of an import.
type Report struct {
	Source string
	// Users is how many accounts were read; Found how many 3PIDs they hold.
	Users, Found int
	// Imported were written; Present were already in threepidd for the same account.
	Imported, Present int
	Conflicts         []Conflict
	Rejected          []Rejected
}

// Importer writes a Source's 3PIDs into Store.
type Importer struct {
	Store  storage.Store
	Source Source
	// Progress receives progress lines; nil: none.
	Progress io.Writer
	Clock    clock.Func
}

func (im *Importer) progress(format string, args ...any) {
	if im.Progress != nil {
		fmt.Fprintf(im.Progress, "import: "+format+"\n", args...)
	}
}

// Run reads the source and writes its 3PIDs. Conflicts and rejected rows are
// reported, not errors; an error means the import could not finish (what was
// written stays, and running it again continues).
func (im *Importer) Run(ctx context.Context) (Report, error) {
	snap, err := im.Source.Read(ctx, im.progress)
	if err != nil {
		return Report{}, fmt.Errorf("read %s: %w", im.Source.Describe(), err)
	}
	rep := Report{Source: im.Source.Describe(), Users: snap.Users, Found: len(snap.Records) + len(snap.Rejected),
		Rejected: slices.Clone(snap.Rejected)}
	owners := im.group(snap.Records, &rep)
	keys := make([]key, 0, len(owners))
	for k := range owners {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.medium, b.medium), cmp.Compare(a.address, b.address)) })
	var todo []Record
	for _, k := range keys {
		recs := owners[k]
		if len(recs) > 1 {
			users := make([]string, 0, len(recs))
			for _, r := range recs {
				users = append(users, r.UserID)
			}
			rep.Conflicts = append(rep.Conflicts, Conflict{Medium: k.medium, Address: k.address, Users: users, Reason: ReasonSeveralAccounts})
			continue
		}
		todo = append(todo, recs[0])
	}
	for start := 0; start < len(todo); start += writeBatch {
		if err := im.write(ctx, todo[start:min(start+writeBatch, len(todo))], &rep); err != nil {
			return rep, err
		}
		im.progress("%d/%d 3PIDs written or checked", min(start+writeBatch, len(todo)), len(todo))
	}
	for start := 0; start < len(snap.Seen); start += writeBatch {
		if err := im.Store.MarkUsersSeen(ctx, snap.Seen[start:min(start+writeBatch, len(snap.Seen))], im.Clock.Now().UnixMilli()); err != nil {
			return rep, err
		}
	}
	slices.SortFunc(rep.Conflicts, func(a, b Conflict) int {
		return cmp.Or(cmp.Compare(a.Medium, b.Medium), cmp.Compare(a.Address, b.Address))
	})
	slices.SortFunc(rep.Rejected, func(a, b Rejected) int {
		return cmp.Or(cmp.Compare(a.UserID, b.UserID), cmp.Compare(a.Medium, b.Medium), cmp.Compare(a.Address, b.Address))
	})
	return rep, nil
}

type key struct{ medium, address string }

// group canonicalises the records and groups them by 3PID, one record per
// account (an account's spellings of one address are merged, keeping the
// earliest timestamps), accounts sorted. Addresses that do not canonicalise
// are rejected into rep.
func (im *Importer) group(records []Record, rep *Report) map[key][]Record {
	owners := map[key][]Record{}
	for _, r := range records {
		canonical, err := threepid.CanonicalAddress(r.Medium, r.Address)
		if err != nil {
			rep.Rejected = append(rep.Rejected, Rejected{Record: r, Reason: err.Error()})
			continue
		}
		r.Address = canonical
		k := key{r.Medium, canonical}
		i := slices.IndexFunc(owners[k], func(x Record) bool { return x.UserID == r.UserID })
		if i < 0 {
			owners[k] = append(owners[k], r)
			continue
		}
		held := &owners[k][i]
		held.ValidatedAt, held.AddedAt = earliest(held.ValidatedAt, r.ValidatedAt), earliest(held.AddedAt, r.AddedAt)
	}
	for _, recs := range owners {
		slices.SortFunc(recs, func(a, b Record) int { return strings.Compare(a.UserID, b.UserID) })
	}
	return owners
}

// earliest returns the smaller of two timestamps, 0 meaning unknown.
func earliest(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// write inserts one batch in one transaction: present rows are counted, rows
// another account holds are conflicts.
func (im *Importer) write(ctx context.Context, batch []Record, rep *Report) error {
	at := im.Clock.Now().UnixMilli()
	var imported, present int
	var conflicts []Conflict
	err := im.Store.WithTx(ctx, func(q storage.Querier) error {
		imported, present, conflicts = 0, 0, nil
		for _, r := range batch {
			outcome, holder, err := Insert(ctx, q, r, at)
			switch {
			case err != nil:
				return err
			case outcome == Imported:
				imported++
			case outcome == Present:
				present++
			default:
				conflicts = append(conflicts, Conflict{Medium: r.Medium, Address: r.Address, Users: []string{r.UserID},
					HeldBy: holder, Reason: ReasonHeldElsewhere})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	rep.Imported += imported
	rep.Present += present
	rep.Conflicts = append(rep.Conflicts, conflicts...)
	return nil
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
	a := storage.Association{UserID: r.UserID, Medium: r.Medium, Address: r.Address,
		ValidatedAt: cmp.Or(r.ValidatedAt, at), AddedAt: cmp.Or(r.AddedAt, at)}
	err := q.InsertAssociation(ctx, a)
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
	fmt.Fprintf(&b, "  conflicts:        %d\n", len(r.Conflicts))
	fmt.Fprintf(&b, "  not imported:     %d\n", len(r.Rejected))
	for _, c := range r.Conflicts {
		fmt.Fprintf(&b, "conflict: %s %q: %s: %s", c.Medium, c.Address, c.Reason, strings.Join(c.Users, ", "))
		if c.HeldBy != "" {
			fmt.Fprintf(&b, " on the homeserver, %s in threepidd", c.HeldBy)
		}
		b.WriteString("\n")
	}
	for _, x := range r.Rejected {
		fmt.Fprintf(&b, "not imported: %s %s %q: %s\n", x.UserID, x.Medium, x.Address, x.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
