package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/threepidd/threepidd/storage"
)

const associationColumns = `user_id, medium, address, validated_at, added_at`

var (
	qInsertAssociation = defineQuery(`INSERT INTO associations (` + associationColumns + `)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
	qAssociationsOf = defineQuery(`SELECT ` + associationColumns + ` FROM associations
		WHERE user_id = ? ORDER BY added_at, medium, address`)
	qAssociationByAddress = defineQuery(`SELECT ` + associationColumns + ` FROM associations
		WHERE medium = ? AND address = ?`)
	qDeleteAssociation = defineQuery(`DELETE FROM associations
		WHERE user_id = ? AND medium = ? AND address = ?`)
	qCountAssociations = defineQuery(`SELECT COUNT(*) FROM associations WHERE user_id = ?`)
	// qAssociationsOfUsers is completed with the placeholders of the users.
	qAssociationsOfUsers = `SELECT ` + associationColumns + ` FROM associations WHERE user_id IN (`
	qLockUser            = defineQuery(`{{userlock}}`)
)

func scanAssociation(r scanner) (a storage.Association, err error) {
	err = r.Scan(&a.UserID, &a.Medium, &a.Address, &a.ValidatedAt, &a.AddedAt)
	return a, err
}

// InsertAssociation adds a; ErrConflict if (medium, address) is held by anyone.
// A conflict does not abort the surrounding transaction.
func (q *querier) InsertAssociation(ctx context.Context, a storage.Association) error {
	n, err := q.exec(ctx, qInsertAssociation, a.UserID, a.Medium, a.Address, a.ValidatedAt, a.AddedAt)
	if err == nil && n == 0 {
		err = storage.ErrConflict
	}
	if err != nil {
		return fmt.Errorf("insert association %s %q: %w", a.Medium, a.Address, err)
	}
	return nil
}

// InsertAssociations adds every association of as whose (medium, address)
// nobody holds, in the current transaction or one of its own, and returns how
// many it added; the others are left as they are.
func (q *querier) InsertAssociations(ctx context.Context, as []storage.Association) (int, error) {
	n, err := insertRows(ctx, q, `INSERT INTO associations (`+associationColumns+`)`, `ON CONFLICT DO NOTHING`, as,
		func(a storage.Association) []any {
			return []any{a.UserID, a.Medium, a.Address, a.ValidatedAt, a.AddedAt}
		})
	if err != nil {
		return 0, fmt.Errorf("insert %d associations: %w", len(as), err)
	}
	return int(n), nil
}

// AssociationsOf lists a user's associations, ordered by added_at, medium, address.
func (q *querier) AssociationsOf(ctx context.Context, userID string) ([]storage.Association, error) {
	as, err := list(ctx, q, qAssociationsOf, scanAssociation, userID)
	if err != nil {
		return nil, fmt.Errorf("associations of %q: %w", userID, err)
	}
	return as, nil
}

// AssociationByAddress returns who holds (medium, address), or ErrNotFound.
func (q *querier) AssociationByAddress(ctx context.Context, medium, address string) (storage.Association, error) {
	a, err := one(ctx, q, q.read, qAssociationByAddress, scanAssociation, medium, address)
	if err != nil {
		return a, fmt.Errorf("association of %s %q: %w", medium, address, err)
	}
	return a, nil
}

// DeleteAssociation removes (medium, address) from userID and reports whether
// a row was removed.
func (q *querier) DeleteAssociation(ctx context.Context, userID, medium, address string) (bool, error) {
	n, err := q.exec(ctx, qDeleteAssociation, userID, medium, address)
	if err != nil {
		return false, fmt.Errorf("delete association %s %q: %w", medium, address, err)
	}
	return n > 0, nil
}

// CountAssociations returns how many 3PIDs userID holds.
func (q *querier) CountAssociations(ctx context.Context, userID string) (int, error) {
	n, err := scalar[int](ctx, q, q.read, qCountAssociations, userID)
	if err != nil {
		return 0, fmt.Errorf("count associations of %q: %w", userID, err)
	}
	return n, nil
}

// AssociationsOfUsers lists the associations of every user in userIDs,
// ordered by user, added_at, medium, address.
func (q *querier) AssociationsOfUsers(ctx context.Context, userIDs []string) ([]storage.Association, error) {
	out := []storage.Association{}
	err := inChunks(userIDs, func(chunk []any) error {
		as, err := listAd(ctx, q, qAssociationsOfUsers+placeholders(len(chunk))+`) ORDER BY user_id, added_at, medium, address`,
			scanAssociation, chunk...)
		out = append(out, as...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("associations of %d users: %w", len(userIDs), err)
	}
	slices.SortStableFunc(out, func(a, b storage.Association) int { return strings.Compare(a.UserID, b.UserID) })
	return out, nil
}

// LockUser takes the dialect's per-user lock, if it has one.
func (q *querier) LockUser(ctx context.Context, userID string) error {
	if err := q.lockKey(ctx, userID); err != nil {
		return fmt.Errorf("lock user %q: %w", userID, err)
	}
	return nil
}

// lockKey takes the dialect's lock on key (a user ID, or a name that cannot
// be one: user IDs start with "@"), held until the transaction ends.
func (q *querier) lockKey(ctx context.Context, key string) error {
	if q.s.sql[qLockUser] == "" {
		return nil
	}
	_, err := q.exec(ctx, qLockUser, key)
	return err
}
