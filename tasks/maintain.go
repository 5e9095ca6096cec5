package tasks

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/gen"
)

// Rescued is a task the rescuer took back from a worker whose lease expired.
type Rescued struct {
	TaskID   string
	JobID    string
	WorkerID string
	// Status is pending when the task will run again, failed when it has
	// used its retries.
	Status TaskStatus
}

// RescueExpired returns up to max running tasks whose lease expired to
// pending (or failed, past the job's max_retries). Safe to run from many
// processes at once.
func (q *Queue) RescueExpired(ctx context.Context, max int) ([]Rescued, error) {
	if err := checkBatch("max", max); err != nil {
		return nil, err
	}
	var rows []gen.TaskRescueExpiredRow
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.TaskRescueExpired(ctx, db, gen.TaskRescueExpiredParams{Now: q.now(), MaxTasks: int32(max)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rescue expired leases: %w", err)
	}
	out := make([]Rescued, len(rows))
	for i, r := range rows {
		out[i] = Rescued{TaskID: r.ID, JobID: r.JobID, WorkerID: r.ClaimedBy, Status: r.Status}
	}
	return out, nil
}

// MaintenanceReport says what one Maintain pass did.
type MaintenanceReport struct {
	Rescued []Rescued
	// Finished are jobs that had nothing left to run and were completed.
	Finished []string
	// RolledUp are jobs whose counters were folded into their rows.
	RolledUp int
}

// Maintain does the queue's periodic work, in this order: rescue tasks whose
// lease expired, complete running jobs that have nothing left to run, skip
// tasks handed back into cancelled jobs, deal pending tasks stranded on
// shards a concurrency change removed, fold the tallies and admission slots
// into the jobs rows (once per job, however many tasks finished or were
// added), and retire finished jobs' shards. Run it every second or so
// from one or more processes; each step is safe to run concurrently.
func (q *Queue) Maintain(ctx context.Context) (MaintenanceReport, error) {
	var rep MaintenanceReport
	for {
		rescued, err := q.RescueExpired(ctx, 1000)
		if err != nil {
			return rep, err
		}
		rep.Rescued = append(rep.Rescued, rescued...)
		if len(rescued) < 1000 {
			break
		}
	}
	// See JobLockDrained: the jobs are locked against enqueues in one
	// statement and completed in the next, whose snapshot comes after the
	// locks.
	err := q.tx(ctx, func(tx pgx.Tx) error {
		drained, err := q.q.JobLockDrained(ctx, tx)
		if err != nil || len(drained) == 0 {
			return err
		}
		rep.Finished, err = q.q.JobFinishDrained(ctx, tx, gen.JobFinishDrainedParams{Now: q.now(), Ids: drained})
		if err != nil || len(rep.Finished) == 0 {
			return err
		}
		return q.q.JobAdmissionsClose(ctx, tx, rep.Finished)
	})
	if err != nil {
		return rep, fmt.Errorf("finish drained jobs: %w", err)
	}
	err = q.run(ctx, func(db gen.DBTX) error {
		if _, err := q.q.JobSweepCancelled(ctx, db); err != nil {
			return fmt.Errorf("sweep cancelled jobs: %w", err)
		}
		if _, err := q.q.TaskRedealOrphans(ctx, db); err != nil {
			return fmt.Errorf("re-deal tasks on removed shards: %w", err)
		}
		rolled, err := q.q.JobRollUp(ctx, db)
		if err != nil {
			return fmt.Errorf("roll up job counters: %w", err)
		}
		rep.RolledUp = len(rolled)
		if _, err := q.q.JobShardsRetire(ctx, db); err != nil {
			return fmt.Errorf("retire finished jobs' shards: %w", err)
		}
		return nil
	})
	return rep, err
}
