package sqlstore

import (
	"context"
	"strings"
)

// bulkRows is how many rows one multi-row INSERT writes at most: with five
// columns, 2,500 arguments, well within both backends' limits.
const bulkRows = 500

// insertRows writes rows with multi-row INSERTs of at most bulkRows rows, in
// the current transaction or one of its own, and returns how many rows they
// affected. head is the statement up to VALUES (exclusive), tail what follows
// the value lists (an ON CONFLICT clause); values gives one row's arguments,
// always as many.
func insertRows[T any](ctx context.Context, q *querier, head, tail string, rows []T, values func(T) []any) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	cols := len(values(rows[0]))
	row := "(" + placeholders(cols) + ")"
	var total int64
	err := q.inTx(ctx, func(q *querier) error {
		for start := 0; start < len(rows); start += bulkRows {
			chunk := rows[start:min(start+bulkRows, len(rows))]
			var sb strings.Builder
			sb.WriteString(head)
			sb.WriteString(" VALUES ")
			args := make([]any, 0, len(chunk)*cols)
			for i, r := range chunk {
				if i > 0 {
					sb.WriteByte(',')
				}
				sb.WriteString(row)
				args = append(args, values(r)...)
			}
			sb.WriteString(" ")
			sb.WriteString(tail)
			res, err := q.write.ExecContext(ctx, q.s.dialect.Rebind(sb.String()), args...)
			if err != nil {
				return q.s.translate(err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	return total, err
}
