package faults_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// openQueue opens a queue of one connection on url as the application does
// (db.Open's pool configuration, which has pgx cancel the server-side
// statement when a context ends).
func openQueue(t *testing.T, url string) *tasks.Queue {
	t.Helper()
	cfg, err := db.PoolConfig(url, db.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return tasks.New(pool, tasks.Config{})
}

// checkCancelError checks that a call whose context was cancelled says so,
// rather than reporting the server's "canceling statement" (57014, the code
// a statement_timeout also produces) as a timeout.
func checkCancelError(t *testing.T, call string, err error) {
	t.Helper()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("%s after its context was cancelled: %v, want context.Canceled", call, err)
	}
}

// TestCancelledClaimRollsBack cancels a Claim while its statement waits
// for a lock (another session holds job_shards in EXCLUSIVE mode, which the
// claim's FOR NO KEY UPDATE of a shard must wait for; a row lock on the
// shards would not do, since the claim skips locked shards). Claim returns
// the context's error; once the lock is free and the server is done with
// the statement, nothing changed: every task is pending and unclaimed, the
// shard counters are unchanged, and the tasks are claimable.
func TestCancelledClaimRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t, migrate.VersionLatest)
	admin := pgtest.Pool(t, url, 2)
	q := openQueue(t, url)
	// Prepare the claim's statements on the queue's one connection
	// while nothing is claimable, so that the cancelled call waits
	// inside the statement itself, not in its Parse.
	jobID := pendingJob(t, q, 0)
	if claimed, err := q.Claim(ctx, "warm-up", 1); err != nil || len(claimed) != 0 {
		t.Fatalf("Claim with nothing to claim: %d tasks, %v", len(claimed), err)
	}
	if _, err := q.Enqueue(ctx, jobID, []tasks.Page{{Path: "/a"}, {Path: "/b"}, {Path: "/c"}}); err != nil {
		t.Fatal(err)
	}
	before := readState(t, admin)

	b := block(t, url, "LOCK TABLE job_shards IN EXCLUSIVE MODE")
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		claimed, err := q.Claim(cctx, "cancelled", 2)
		if err == nil {
			t.Errorf("Claim returned %d tasks while the lock was held", len(claimed))
		}
		result <- err
	}()
	pid := b.waitBlocked(t, admin)
	cancel()
	cancelErr := <-result
	b.release(t)
	waitStatementOver(t, admin, pid)
	assertUnchanged(t, admin, before)

	claimed, err := q.Claim(ctx, "next", 2)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("Claim after the cancelled one: %d tasks, %v; want 2", len(claimed), err)
	}
	t.Run("reports the cancellation", func(t *testing.T) { checkCancelError(t, "Claim", cancelErr) })
}

// TestCancelledFinishRollsBack cancels a Finish of two tasks while its
// statement waits for the job's tally rows, which another transaction holds
// FOR UPDATE (the finish has by then updated the tasks in its CTE). Finish
// returns the context's error; once the lock is free and the server is
// done with the statement, nothing changed: both tasks are still running
// under the same claim and the counters are unchanged, so writing the
// outcomes again succeeds.
func TestCancelledFinishRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t, migrate.VersionLatest)
	admin := pgtest.Pool(t, url, 2)
	q := openQueue(t, url)
	jobID := pendingJob(t, q, 3)
	claimed, err := q.Claim(ctx, "w1", 2)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("Claim: %d tasks, %v", len(claimed), err)
	}
	before := readState(t, admin)

	b := block(t, url, "SELECT 1 FROM job_tallies WHERE job_id = $1 FOR UPDATE", jobID)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		_, err := q.Finish(cctx, okOutcomes(claimed))
		result <- err
	}()
	pid := b.waitBlocked(t, admin)
	cancel()
	cancelErr := <-result
	b.release(t)
	waitStatementOver(t, admin, pid)
	assertUnchanged(t, admin, before)

	rep, err := q.Finish(ctx, okOutcomes(claimed))
	if err != nil || rep.Completed != 2 {
		t.Fatalf("Finish again: %+v, %v; want 2 completed", rep, err)
	}
	t.Run("reports the cancellation", func(t *testing.T) { checkCancelError(t, "Finish", cancelErr) })
}
