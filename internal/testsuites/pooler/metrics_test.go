package pooler_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/tasks"
)

// TestLockWaitQueriesThroughPooler holds a row lock on a direct connection,
// makes a second direct connection wait for it, and reads the wait through
// PgBouncer with the measurement queries (pg_stat_activity, pg_locks,
// pg_blocking_pids as int[]): they see the sessions of the whole database,
// not just the pooler's, and decode in Pooler mode.
func TestLockWaitQueriesThroughPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, pgbouncertest.Options{PoolSize: 2})
	d := f.open(t, db.Options{Pooler: true})
	id := job(t, d, tasks.JobOptions{Domain: "example.com"}, 1)

	blocker := connect(t, f.directURL, pgx.QueryExecModeCacheStatement)
	waiter := connect(t, f.directURL, pgx.QueryExecModeCacheStatement)
	var blockerPID, waiterPID int32
	for conn, pid := range map[*pgx.Conn]*int32{blocker: &blockerPID, waiter: &waiterPID} {
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(pid); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := waiter.Exec(ctx, "UPDATE jobs SET concurrency = concurrency WHERE id = $1", id)
		waited <- err
	}()

	q := d.Queue()
	var (
		waits   []tasks.LockWait
		blocked []tasks.BlockedQuery
		events  []tasks.WaitEventCount
	)
	found := func() bool {
		waits, err = q.LockWaits(ctx)
		if err != nil {
			t.Fatalf("LockWaits through pgbouncer: %v", err)
		}
		blocked, err = q.BlockedQueries(ctx)
		if err != nil {
			t.Fatalf("BlockedQueries through pgbouncer: %v", err)
		}
		events, err = q.WaitEvents(ctx)
		if err != nil {
			t.Fatalf("WaitEvents through pgbouncer: %v", err)
		}
		return slices.ContainsFunc(waits, func(w tasks.LockWait) bool {
			return w.Pid == waiterPID && slices.Contains(w.BlockedBy, blockerPID)
		}) && slices.ContainsFunc(blocked, func(b tasks.BlockedQuery) bool {
			return b.BlockedPid == waiterPID && b.BlockingPid == blockerPID
		}) && slices.ContainsFunc(events, func(e tasks.WaitEventCount) bool {
			return e.WaitEventType == "Lock" && e.Sessions >= 1
		})
	}
	// The waiter needs a moment to start waiting; give it up to a minute on
	// a loaded machine.
	for deadline := time.Now().Add(time.Minute); !found(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("lock wait of pid %d on pid %d not seen through pgbouncer:\nLockWaits %+v\nBlockedQueries %+v\nWaitEvents %+v",
				waiterPID, blockerPID, waits, blocked, events)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("the waiting update: %v", err)
	}
}
