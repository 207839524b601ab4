package sqlstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/threepidd/threepidd/storage"
)

const bindingColumns = `user_id, medium, address, id_server, bound_at`

var (
	qUpsertBinding = defineQuery(`INSERT INTO bindings (` + bindingColumns + `) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (user_id, medium, address, id_server) DO UPDATE SET bound_at = excluded.bound_at`)
	qBindingsOf = defineQuery(`SELECT ` + bindingColumns + ` FROM bindings
		WHERE user_id = ? ORDER BY medium, address, id_server`)
	qBindingsOf3PID = defineQuery(`SELECT ` + bindingColumns + ` FROM bindings
		WHERE medium = ? AND address = ? AND id_server = ? ORDER BY user_id`)
	qBindingsOf3PIDAnywhere = defineQuery(`SELECT ` + bindingColumns + ` FROM bindings
		WHERE medium = ? AND address = ? ORDER BY id_server, user_id`)
	qDeleteBinding = defineQuery(`DELETE FROM bindings
		WHERE user_id = ? AND medium = ? AND address = ? AND id_server = ?`)
	// qUsersWithBindings is completed with the placeholders of the users.
	qUsersWithBindings = `SELECT DISTINCT user_id FROM bindings WHERE user_id IN (`
)

func scanBinding(r scanner) (b storage.Binding, err error) {
	err = r.Scan(&b.UserID, &b.Medium, &b.Address, &b.IDServer, &b.BoundAt)
	return b, err
}

// UpsertBinding records b (bound_at updated if it exists).
func (q *querier) UpsertBinding(ctx context.Context, b storage.Binding) error {
	if _, err := q.exec(ctx, qUpsertBinding, b.UserID, b.Medium, b.Address, b.IDServer, b.BoundAt); err != nil {
		return fmt.Errorf("upsert binding %s %q on %q: %w", b.Medium, b.Address, b.IDServer, err)
	}
	return nil
}

// UpsertBindings records every binding of bs (bound_at updated where it
// exists), in the current transaction or one of its own. bs must not hold
// one binding twice.
func (q *querier) UpsertBindings(ctx context.Context, bs []storage.Binding) error {
	_, err := insertRows(ctx, q, `INSERT INTO bindings (`+bindingColumns+`)`,
		`ON CONFLICT (user_id, medium, address, id_server) DO UPDATE SET bound_at = excluded.bound_at`, bs,
		func(b storage.Binding) []any { return []any{b.UserID, b.Medium, b.Address, b.IDServer, b.BoundAt} })
	if err != nil {
		return fmt.Errorf("upsert %d bindings: %w", len(bs), err)
	}
	return nil
}

// BindingsOf lists a user's bindings ordered by medium, address, id_server.
func (q *querier) BindingsOf(ctx context.Context, userID string) ([]storage.Binding, error) {
	bs, err := list(ctx, q, qBindingsOf, scanBinding, userID)
	if err != nil {
		return nil, fmt.Errorf("bindings of %q: %w", userID, err)
	}
	return bs, nil
}

// BindingsOf3PID lists the bindings of (medium, address) on idServer (every
// identity server if ""), ordered by id_server and user.
func (q *querier) BindingsOf3PID(ctx context.Context, medium, address, idServer string) ([]storage.Binding, error) {
	var (
		bs  []storage.Binding
		err error
	)
	if idServer == "" {
		bs, err = list(ctx, q, qBindingsOf3PIDAnywhere, scanBinding, medium, address)
	} else {
		bs, err = list(ctx, q, qBindingsOf3PID, scanBinding, medium, address, idServer)
	}
	if err != nil {
		return nil, fmt.Errorf("bindings of %s %q: %w", medium, address, err)
	}
	return bs, nil
}

// DeleteBinding removes one binding record and reports whether a row was removed.
func (q *querier) DeleteBinding(ctx context.Context, userID, medium, address, idServer string) (bool, error) {
	n, err := q.exec(ctx, qDeleteBinding, userID, medium, address, idServer)
	if err != nil {
		return false, fmt.Errorf("delete binding %s %q on %q: %w", medium, address, idServer, err)
	}
	return n > 0, nil
}

// UsersWithBindings returns the users of userIDs that have a binding recorded, sorted.
func (q *querier) UsersWithBindings(ctx context.Context, userIDs []string) ([]string, error) {
	out := []string{}
	err := inChunks(userIDs, func(chunk []any) error {
		users, err := listAd(ctx, q, qUsersWithBindings+placeholders(len(chunk))+`)`,
			func(r scanner) (u string, err error) { return u, r.Scan(&u) }, chunk...)
		out = append(out, users...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("users with bindings among %d: %w", len(userIDs), err)
	}
	slices.Sort(out)
	return out, nil
}
