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

// testImportStaging: staged addresses come back grouped with their holders
// (an account's rows merged, earliest known timestamps), in pages that never
// split an address; accounts and rejected rows page by user; clearing empties.
func testImportStaging(t *testing.T, _ Backend, s storage.Store) {
	ctx := t.Context()
	row := func(user, address string, validated, added int64, reason string) storage.Staged {
		return storage.Staged{Association: storage.Association{UserID: user, Medium: "email", Address: address, ValidatedAt: validated, AddedAt: added}, Reason: reason}
	}
	account := func(user string) storage.Staged {
		return storage.Staged{Association: storage.Association{UserID: user}}
	}
	check(t, s.StageImport(ctx, []storage.Staged{
		account("@b:hs"), account("@a:hs"), account("@c:hs"), account("@a:hs"),
		row("@a:hs", "a@hs", 5, 0, ""),
		row("@a:hs", "a@hs", 3, 7, ""), // a second spelling of a@hs by @a
		row("@b:hs", "shared@hs", 1, 1, ""),
		row("@a:hs", "shared@hs", 2, 2, ""),
		row("@c:hs", "c@hs", 4, 4, ""),
		row("@c:hs", "not an address", 0, 0, "invalid"),
		row("@a:hs", "bad", 0, 0, "invalid"),
	}), "stage")
	holder := func(user, address string, validated, added int64) storage.Association {
		return storage.Association{UserID: user, Medium: "email", Address: address, ValidatedAt: validated, AddedAt: added}
	}
	all := []storage.StagedAddress{
		{Medium: "email", Address: "a@hs", Holders: []storage.Association{holder("@a:hs", "a@hs", 3, 7)}},
		{Medium: "email", Address: "c@hs", Holders: []storage.Association{holder("@c:hs", "c@hs", 4, 4)}},
		{Medium: "email", Address: "shared@hs", Holders: []storage.Association{holder("@a:hs", "shared@hs", 2, 2), holder("@b:hs", "shared@hs", 1, 1)}},
	}
	got, err := s.StagedAddresses(ctx, "", "", 100)
	check(t, err, "staged addresses")
	equal(t, got, all, "staged addresses")
	got, err = s.StagedAddresses(ctx, "email", "a@hs", 3)
	check(t, err, "staged addresses, a page")
	equal(t, got, all[1:2], "a page ending inside an address leaves it to the next")
	got, err = s.StagedAddresses(ctx, "email", "c@hs", 1)
	check(t, err, "staged addresses, a short page")
	equal(t, got, []storage.StagedAddress{{Medium: "email", Address: "shared@hs", Holders: all[2].Holders[:1]}}, "an address alone over the limit")

	users, err := s.StagedUsers(ctx, "", 2)
	check(t, err, "staged users")
	equal(t, users, []string{"@a:hs", "@b:hs"}, "staged users")
	users, err = s.StagedUsers(ctx, "@b:hs", 2)
	check(t, err, "staged users after @b")
	equal(t, users, []string{"@c:hs"}, "staged users after @b")

	rejected, err := s.StagedRejected(ctx, "", "", "", 1)
	check(t, err, "rejected")
	equal(t, rejected, []storage.Staged{row("@a:hs", "bad", 0, 0, "invalid")}, "rejected, first page")
	rejected, err = s.StagedRejected(ctx, "@a:hs", "email", "bad", 10)
	check(t, err, "rejected")
	equal(t, rejected, []storage.Staged{row("@c:hs", "not an address", 0, 0, "invalid")}, "rejected, next page")

	check(t, s.ClearImportStaging(ctx), "clear")
	got, err = s.StagedAddresses(ctx, "", "", 100)
	check(t, err, "staged addresses after clear")
	equal(t, len(got), 0, "staged addresses after clear")
}
