package storagetest

import (
	"fmt"
	"testing"

	"github.com/threepidd/threepidd/storage"
)

// bulkUsers is how many users testBulkWrites writes: more than one
// multi-row statement's worth of rows.
const bulkUsers = 1200

// testBulkWrites: InsertAssociations adds what nobody holds and counts it,
// UpsertBindings records and updates bindings, MarkUsersSeen marks many
// users, each in bulk, and a rolled-back transaction keeps none of it.
func testBulkWrites(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	user := func(i int) string { return fmt.Sprintf("@bulk%d:hs", i) }
	address := func(i int) string { return fmt.Sprintf("bulk%d@hs", i) }
	check(t, s.InsertAssociation(ctx, storage.Association{UserID: "@other:hs", Medium: "email", Address: address(7), ValidatedAt: 1, AddedAt: 1}), "insert one")
	var as []storage.Association
	var bs []storage.Binding
	ids := make([]string, bulkUsers)
	for i := range bulkUsers {
		ids[i] = user(i)
		as = append(as, storage.Association{UserID: user(i), Medium: "email", Address: address(i), ValidatedAt: 2, AddedAt: 3})
		bs = append(bs, storage.Binding{UserID: user(i), Medium: "email", Address: address(i), IDServer: "is1", BoundAt: 4})
	}
	// A second spelling of the same row in the same call: the first wins.
	as = append(as, storage.Association{UserID: "@late:hs", Medium: "email", Address: address(0), ValidatedAt: 5, AddedAt: 5})

	err := s.WithTx(ctx, func(q storage.Querier) error {
		n, err := q.InsertAssociations(ctx, as)
		check(t, err, "insert in a transaction")
		equal(t, n, bulkUsers-1, "inserted in a transaction")
		check(t, q.UpsertBindings(ctx, bs), "bindings in a transaction")
		check(t, q.MarkUsersSeen(ctx, ids, 9), "seen in a transaction")
		return errRollback
	})
	wantErr(t, err, errRollback, "WithTx")
	got, err := s.AssociationsOf(ctx, user(0))
	check(t, err, "associations after rollback")
	equal(t, got, []storage.Association{}, "associations after rollback")

	n, err := s.InsertAssociations(ctx, as)
	check(t, err, "insert")
	equal(t, n, bulkUsers-1, "inserted: all but the address @other holds and the repeat")
	n, err = s.InsertAssociations(ctx, as)
	check(t, err, "insert again")
	equal(t, n, 0, "inserted again")
	check(t, s.UpsertBindings(ctx, bs), "bindings")
	bs[bulkUsers-1].BoundAt = 6
	check(t, s.UpsertBindings(ctx, bs[bulkUsers-1:]), "update a binding")
	check(t, s.MarkUsersSeen(ctx, ids, 9), "seen")

	for _, c := range []struct {
		i    int
		want []storage.Association
	}{
		{0, []storage.Association{as[0]}},
		{7, []storage.Association{}},
		{bulkUsers - 1, []storage.Association{as[bulkUsers-1]}},
	} {
		got, err := s.AssociationsOf(ctx, user(c.i))
		check(t, err, "associations of")
		equal(t, got, c.want, "associations of "+user(c.i))
	}
	holder, err := s.AssociationByAddress(ctx, "email", address(7))
	check(t, err, "holder")
	equal(t, holder.UserID, "@other:hs", "holder of an address held before")
	gotBindings, err := s.BindingsOf(ctx, user(bulkUsers-1))
	check(t, err, "bindings of")
	equal(t, gotBindings, []storage.Binding{bs[bulkUsers-1]}, "updated binding")
	gotBindings, err = s.BindingsOf(ctx, user(0))
	check(t, err, "bindings of")
	equal(t, gotBindings, []storage.Binding{bs[0]}, "binding")
	for _, u := range []string{user(0), user(bulkUsers - 1)} {
		seen, err := s.UserSeen(ctx, u)
		check(t, err, "seen")
		equal(t, seen, true, u+" seen")
	}
}
