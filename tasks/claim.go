package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/blue-banded-bee/taskq/gen"
)

// Task is a claimed task: what a worker needs to run it and to report back.
type Task struct {
	ID            string
	JobID         string
	PageID        int32
	Path          string
	PriorityScore float64
	// RetryCount is how many times the task failed and was retried before.
	RetryCount int32
	// Attempt numbers this claim (1 for the first); with WorkerID it
	// identifies the claim when the task is finished.
	Attempt        int32
	WorkerID       string
	CreatedAt      time.Time
	StartedAt      time.Time
	LeaseExpiresAt time.Time
	// Source is where the task's page was found, as enqueued.
	Source Source
	// Paced: the task's domain is paced (SetDomainPace, robots.txt, or
	// learned from responses), and this claim moved its next allowed start.
	// Its result feeds the pace (see TaskResult.BackOff).
	Paced bool
	// StartBy, for a paced task, is the latest time (this process's clock)
	// at which its request may still go out: PaceStartBudget, plus the
	// slack the claim held the domain's next start back by (its queue's
	// average claim duration), after the earliest the pace's reference time
	// can have been here (the claim statement's sending, plus how long the
	// server took from receiving it to stamping the pace), so a request
	// sent by then keeps the site's gap within Config.PaceStartBudget of
	// the interval, whatever the database's clock says. A handler that
	// cannot start by then returns ErrPaceMissed and the worker pool hands
	// the task back.
	// Zero for an unpaced task.
	StartBy time.Time
}

// ClaimOne claims a pending task for workerID (the best of the first free
// job shard it finds), or returns ErrNoTasksAvailable.
func (q *Queue) ClaimOne(ctx context.Context, workerID string) (*Task, error) {
	claimed, err := q.Claim(ctx, workerID, 1)
	if err != nil {
		return nil, err
	}
	if len(claimed) == 0 {
		return nil, ErrNoTasksAvailable
	}
	return &claimed[0], nil
}

// Claim claims up to n pending tasks of a running job for workerID in one
// statement: the best (priority_score descending, then oldest) of the first
// job shard with free capacity and claimable tasks that no other claimer is
// using. A paced domain's shard (see SetDomainPace) is taken only once the
// domain's next allowed start has come, and then for one task. Priority is exact within a shard; a job's tasks are dealt to its
// shards round-robin in priority order, so across the job it interleaves.
// Jobs are not ordered against each other. Never more than a job's
// concurrency runs at once. It returns an empty slice, not an error, when
// nothing is claimable.
func (q *Queue) Claim(ctx context.Context, workerID string, n int) ([]Task, error) {
	return q.claim(ctx, workerID, "", n)
}

// ClaimJob is Claim limited to the tasks of one job, as the application's
// GetNextTask(ctx, jobID) asks: the same shard locking, the same exact
// concurrency limit. It returns an empty slice, not an error, when the job
// has nothing claimable (an unknown job has nothing claimable either).
func (q *Queue) ClaimJob(ctx context.Context, workerID, jobID string, n int) ([]Task, error) {
	if err := checkID("jobID", jobID); err != nil {
		return nil, err
	}
	return q.claim(ctx, workerID, jobID, n)
}

// claim is Claim, or ClaimJob when jobID is not empty.
func (q *Queue) claim(ctx context.Context, workerID, jobID string, n int) ([]Task, error) {
	if err := checkID("workerID", workerID); err != nil {
		return nil, err
	}
	if err := checkBatch("n", n); err != nil {
		return nil, err
	}
	var job *string // any job
	if jobID != "" {
		job = &jobID
	}
	var out []Task
	err := q.run(ctx, func(db gen.DBTX) error {
		for attempt := 0; ; attempt++ {
			// A paced claim holds its domain's next start back by this much
			// more than the interval, and its request may go out that much
			// later: the time a claim's rows take to come back and a worker
			// to start would otherwise count against PaceStartBudget, and a
			// claimer whose round trip exceeds it (a distant database, a
			// loaded machine) would hand back every paced task it claims.
			slack := q.paceSlack()
			sent := time.Now()
			rows, err := q.q.TaskClaim(ctx, db, gen.TaskClaimParams{
				JobID: job, Now: q.now(), MaxTasks: int32(n), WorkerID: workerID, LeaseMs: q.cfg.Lease.Milliseconds(),
				PaceSlackMs: slack.Milliseconds(),
			})
			if err != nil {
				return fmt.Errorf("claim %d tasks for %s: %w", n, workerID, err)
			}
			q.claimTook(time.Since(sent))
			if len(rows) > 0 || attempt == q.cfg.ClaimRetries {
				out = tasksFromRows(rows, workerID)
				for i, r := range rows {
					if out[i].Paced {
						// The statement reached the server after it was
						// sent, and stamped the pace paced_after_us later
						// (server clock, a duration): the pace's reference
						// time is no earlier than sent + that, here. Bounded
						// by what elapsed here, for a test clock's stamps.
						after := time.Duration(r.PacedAfterUs) * time.Microsecond
						after = max(0, min(after, time.Since(sent)))
						out[i].StartBy = sent.Add(after + q.cfg.PaceStartBudget + slack.Truncate(time.Millisecond))
					}
				}
				return nil
			}
			// Nothing claimed: either nothing is claimable, or every free
			// shard was locked by another claimer at that instant. Only the
			// second is worth an immediate retry.
			claimable, err := q.q.TaskClaimableExists(ctx, db, gen.TaskClaimableExistsParams{JobID: job, Now: q.now()})
			if err != nil {
				return fmt.Errorf("claim %d tasks for %s: %w", n, workerID, err)
			}
			if !claimable {
				return nil
			}
			if err := pause(ctx, attempt); err != nil {
				return err
			}
		}
	})
	return out, err
}

func tasksFromRows(rows []gen.TaskClaimRow, workerID string) []Task {
	out := make([]Task, len(rows))
	for i, r := range rows {
		out[i] = Task{
			ID:             r.ID,
			JobID:          r.JobID,
			PageID:         r.PageID,
			Path:           r.Path,
			PriorityScore:  r.PriorityScore,
			RetryCount:     r.RetryCount,
			Attempt:        r.Attempt,
			WorkerID:       workerID,
			CreatedAt:      r.CreatedAt,
			StartedAt:      r.StartedAt,
			LeaseExpiresAt: r.LeaseExpiresAt,
			Source:         Source{Type: deref(r.SourceType), URL: deref(r.SourceUrl)},
			Paced:          r.PacedDomainID != 0,
		}
	}
	return out
}

// deref is an optional column's value, "" for NULL.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// maxPaceSlack bounds the pace slack: a claim that takes longer is a fault,
// not a round trip to plan for.
const maxPaceSlack = time.Second

// claimTook folds a claim statement's duration into the moving average.
func (q *Queue) claimTook(d time.Duration) {
	old := q.claimTrip.Load()
	q.claimTrip.Store(old + (int64(d)-old)/8)
}

// paceSlack is how much later than its stamp a paced claim's request may
// go out: the average claim's duration, at most maxPaceSlack. None under a
// test clock (Config.Now), whose time moves only when told to.
func (q *Queue) paceSlack() time.Duration {
	if q.cfg.Now != nil {
		return 0
	}
	return min(time.Duration(q.claimTrip.Load()), maxPaceSlack)
}
