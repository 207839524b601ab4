package sqlstore

import (
	"context"
	"fmt"

	"github.com/threepidd/threepidd/storage"
)

var (
	// qStagedAddresses merges an account's rows of one address (staged
	// twice, or in several spellings): the earliest known timestamps.
	qStagedAddresses = defineQuery(`SELECT medium, address, user_id,
			COALESCE(MIN(NULLIF(validated_at, 0)), 0), COALESCE(MIN(NULLIF(added_at, 0)), 0)
		FROM import_staging WHERE reason = '' AND medium <> '' AND (medium, address) > (?, ?)
		GROUP BY medium, address, user_id ORDER BY medium, address, user_id LIMIT ?`)
	qStagedUsers = defineQuery(`SELECT DISTINCT user_id FROM import_staging
		WHERE medium = '' AND user_id > ? ORDER BY user_id LIMIT ?`)
	qStagedRejected = defineQuery(`SELECT DISTINCT user_id, medium, address, validated_at, added_at, reason
		FROM import_staging WHERE reason <> '' AND (user_id, medium, address) > (?, ?, ?)
		ORDER BY user_id, medium, address LIMIT ?`)
	qClearImportStaging = defineQuery(`DELETE FROM import_staging`)
)

// StageImport adds rows to the staging table.
func (q *querier) StageImport(ctx context.Context, rows []storage.Staged) error {
	_, err := insertRows(ctx, q, `INSERT INTO import_staging (medium, address, user_id, validated_at, added_at, reason)`, ``, rows,
		func(r storage.Staged) []any {
			return []any{r.Medium, r.Address, r.UserID, r.ValidatedAt, r.AddedAt, r.Reason}
		})
	if err != nil {
		return fmt.Errorf("stage %d import rows: %w", len(rows), err)
	}
	return nil
}

// StagedAddresses returns the staged addresses after (medium, address).
func (q *querier) StagedAddresses(ctx context.Context, medium, address string, limit int) ([]storage.StagedAddress, error) {
	rows, err := list(ctx, q, qStagedAddresses, scanAssociationByAddress, medium, address, limit)
	if err != nil {
		return nil, fmt.Errorf("staged addresses after %s %q: %w", medium, address, err)
	}
	var out []storage.StagedAddress
	for _, a := range rows {
		if n := len(out); n > 0 && out[n-1].Medium == a.Medium && out[n-1].Address == a.Address {
			out[n-1].Holders = append(out[n-1].Holders, a)
			continue
		}
		out = append(out, storage.StagedAddress{Medium: a.Medium, Address: a.Address, Holders: []storage.Association{a}})
	}
	// A full page may end inside an address: leave it to the next call,
	// unless it is the only one.
	if len(rows) == limit && len(out) > 1 {
		out = out[:len(out)-1]
	}
	return out, nil
}

func scanAssociationByAddress(r scanner) (a storage.Association, err error) {
	err = r.Scan(&a.Medium, &a.Address, &a.UserID, &a.ValidatedAt, &a.AddedAt)
	return a, err
}

// StagedUsers returns the staged accounts after userID.
func (q *querier) StagedUsers(ctx context.Context, userID string, limit int) ([]string, error) {
	users, err := list(ctx, q, qStagedUsers, func(r scanner) (u string, err error) { return u, r.Scan(&u) }, userID, limit)
	if err != nil {
		return nil, fmt.Errorf("staged users after %q: %w", userID, err)
	}
	return users, nil
}

// StagedRejected returns the staged rows with a reason after (userID, medium, address).
func (q *querier) StagedRejected(ctx context.Context, userID, medium, address string, limit int) ([]storage.Staged, error) {
	rows, err := list(ctx, q, qStagedRejected, func(r scanner) (s storage.Staged, err error) {
		return s, r.Scan(&s.UserID, &s.Medium, &s.Address, &s.ValidatedAt, &s.AddedAt, &s.Reason)
	}, userID, medium, address, limit)
	if err != nil {
		return nil, fmt.Errorf("staged rejections: %w", err)
	}
	return rows, nil
}

// ClearImportStaging empties the staging table.
func (q *querier) ClearImportStaging(ctx context.Context) error {
	if _, err := q.exec(ctx, qClearImportStaging); err != nil {
		return fmt.Errorf("clear the import's staging table: %w", err)
	}
	return nil
}
