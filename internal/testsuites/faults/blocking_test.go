package faults_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/tasks"
)

// blocker is a session holding locks in an open transaction, so that the
// statements under test wait.
type blocker struct {
	conn *pgx.Conn
	tx   pgx.Tx
	pid  uint32
}

// block opens a session on url and runs lockSQL in a transaction that stays
// open until release.
func block(t *testing.T, url, lockSQL string, args ...any) *blocker {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, lockSQL, args...); err != nil {
		t.Fatal(err)
	}
	return &blocker{conn: conn, tx: tx, pid: conn.PgConn().PID()}
}

// release ends the blocking transaction.
func (b *blocker) release(t *testing.T) {
	t.Helper()
	if err := b.tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waitBlocked waits until a session waits for a lock b holds, and returns
// that session's backend pid.
func (b *blocker) waitBlocked(t *testing.T, admin *pgxpool.Pool) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pid int
		err := admin.QueryRow(context.Background(),
			"SELECT pid FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid)) LIMIT 1", int(b.pid)).Scan(&pid)
		if err == nil {
			return pid
		}
		if err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no session came to wait for the blocker's locks within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitStatementOver waits until backend pid is no longer running a
// statement: it went idle or its session ended.
func waitStatementOver(t *testing.T, admin *pgxpool.Pool, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		err := admin.QueryRow(context.Background(),
			"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state <> 'idle')", pid).Scan(&active)
		if err != nil {
			t.Fatal(err)
		}
		if !active {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d still runs its statement 30s after the lock it waited for was released", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// taskState is what a test compares of a task.
type taskState struct {
	Path      string
	Status    string
	Attempt   int32
	ClaimedBy *string
}

// queueState is every task of the database, and its shard counters summed.
type queueState struct {
	Tasks                         []taskState
	Claims, Releases, Done, Fails int64
}

func readState(t *testing.T, pool *pgxpool.Pool) queueState {
	t.Helper()
	ctx := context.Background()
	var s queueState
	rows, err := pool.Query(ctx, "SELECT path, status::text, attempt, claimed_by FROM tasks ORDER BY path")
	if err != nil {
		t.Fatal(err)
	}
	s.Tasks, err = pgx.CollectRows(rows, pgx.RowToStructByPos[taskState])
	if err != nil {
		t.Fatal(err)
	}
	err = pool.QueryRow(ctx, `
		SELECT (SELECT coalesce(sum(claims), 0) FROM job_shards),
		       (SELECT coalesce(sum(releases), 0) FROM job_tallies),
		       (SELECT coalesce(sum(completed), 0) FROM job_tallies),
		       (SELECT coalesce(sum(failed), 0) FROM job_tallies)`).Scan(&s.Claims, &s.Releases, &s.Done, &s.Fails)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// assertUnchanged fails t if the queue's state differs from before.
func assertUnchanged(t *testing.T, pool *pgxpool.Pool, before queueState) {
	t.Helper()
	if diff := cmp.Diff(before, readState(t, pool)); diff != "" {
		t.Errorf("the queue changed although the statement failed (-before +after):\n%s", diff)
	}
}

// pendingJob creates a running job of concurrency 4 with n pending tasks.
func pendingJob(t *testing.T, q *tasks.Queue, n int) string {
	t.Helper()
	ids, _ := createJobs(t, q, []jobSpec{{concurrency: 4, tasks: n}})
	return ids[0]
}

func okOutcomes(claimed []tasks.Task) []tasks.Outcome {
	out := make([]tasks.Outcome, len(claimed))
	for i, task := range claimed {
		out[i] = tasks.Outcome{Task: task, Result: tasks.TaskResult{StatusCode: 200, ContentType: "text/html"}}
	}
	return out
}
