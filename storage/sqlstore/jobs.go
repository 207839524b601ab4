package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/threepidd/threepidd/storage"
)

const jobColumns = `name, holder, lease_until, cursor, started_at, finished_at, next_run`

var (
	qCreateJob = defineQuery(`INSERT INTO jobs (` + jobColumns + `) VALUES (?, '', 0, '', 0, 0, ?)
		ON CONFLICT DO NOTHING`)
	// qClaimJob: the lease is free, expired or the holder's own, and there is
	// work (a cursor, a pass due, or force). A new pass starts now.
	qClaimJob = defineQuery(`UPDATE jobs SET holder = ?, lease_until = ?,
			started_at = CASE WHEN cursor = '' THEN ? ELSE started_at END
		WHERE name = ? AND (holder = '' OR holder = ? OR lease_until <= ?)
			AND (cursor <> '' OR next_run <= ? OR ?)
		RETURNING ` + jobColumns)
	qJob           = defineQuery(`SELECT ` + jobColumns + ` FROM jobs WHERE name = ?`)
	qSaveJobCursor = defineQuery(`UPDATE jobs SET cursor = ?, lease_until = ? WHERE name = ? AND holder = ?`)
	qFinishJob     = defineQuery(`UPDATE jobs SET cursor = '', finished_at = ?, next_run = ?, holder = '', lease_until = 0 WHERE name = ? AND holder = ?`)
	qReleaseJob    = defineQuery(`UPDATE jobs SET holder = '', lease_until = 0 WHERE name = ? AND holder = ?`)
)

func scanJob(r scanner) (j storage.Job, err error) {
	err = r.Scan(&j.Name, &j.Holder, &j.LeaseUntil, &j.Cursor, &j.StartedAt, &j.FinishedAt, &j.NextRun)
	return j, err
}

// ClaimJob takes the lease of job name for holder when it is free and the job has work.
func (q *querier) ClaimJob(ctx context.Context, name, holder string, now, leaseUntil, firstRun int64, force bool) (storage.Job, bool, error) {
	var job storage.Job
	var claimed bool
	err := q.inTx(ctx, func(q *querier) error {
		if _, err := q.exec(ctx, qCreateJob, name, firstRun); err != nil {
			return err
		}
		j, err := one(ctx, q, q.write, qClaimJob, scanJob, holder, leaseUntil, now, name, holder, now, now, force)
		if err == nil {
			job, claimed = j, true
			return nil
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		job, err = one(ctx, q, q.write, qJob, scanJob, name)
		return err
	})
	if err != nil {
		return storage.Job{}, false, fmt.Errorf("claim job %s: %w", name, err)
	}
	return job, claimed, nil
}

// SaveJobCursor records holder's progress and extends its lease.
func (q *querier) SaveJobCursor(ctx context.Context, name, holder, cursor string, leaseUntil int64) error {
	if err := q.execOne(ctx, qSaveJobCursor, cursor, leaseUntil, name, holder); err != nil {
		return fmt.Errorf("save cursor of job %s: %w", name, err)
	}
	return nil
}

// FinishJob ends holder's pass and releases the lease.
func (q *querier) FinishJob(ctx context.Context, name, holder string, finishedAt, nextRun int64) error {
	if err := q.execOne(ctx, qFinishJob, finishedAt, nextRun, name, holder); err != nil {
		return fmt.Errorf("finish job %s: %w", name, err)
	}
	return nil
}

// ReleaseJob gives holder's lease up, keeping the cursor.
func (q *querier) ReleaseJob(ctx context.Context, name, holder string) error {
	if _, err := q.exec(ctx, qReleaseJob, name, holder); err != nil {
		return fmt.Errorf("release job %s: %w", name, err)
	}
	return nil
}
