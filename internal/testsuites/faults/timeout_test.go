package faults_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// sessionSettings reads the timeouts of every connection of the pool at
// once (each held while the next is acquired, so they are distinct
// sessions).
func sessionSettings(t *testing.T, pool *pgxpool.Pool) []map[string]string {
	t.Helper()
	ctx := context.Background()
	var out []map[string]string
	var held []*pgxpool.Conn
	defer func() {
		for _, c := range held {
			c.Release()
		}
	}()
	for range pool.Config().MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		s := map[string]string{}
		for _, name := range []string{"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"} {
			var v string
			if err := c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
				t.Fatal(err)
			}
			s[name] = v
		}
		out = append(out, s)
	}
	return out
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// TestSessionsCarryTimeouts: every session db.Open's pool opens carries
// statement_timeout, lock_timeout and idle_in_transaction_session_timeout,
// the defaults or the ones given.
func TestSessionsCarryTimeouts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t, migrate.VersionLatest)
	for _, c := range []struct {
		name string
		opts db.Options
		want map[string]string
	}{
		{"defaults", db.Options{MaxConns: 3},
			map[string]string{"statement_timeout": "30s", "lock_timeout": "5s", "idle_in_transaction_session_timeout": "1min"}},
		{"given", db.Options{MaxConns: 3, StatementTimeout: 1500 * time.Millisecond, LockTimeout: 250 * time.Millisecond, IdleInTransactionTimeout: 2 * time.Second},
			map[string]string{"statement_timeout": "1500ms", "lock_timeout": "250ms", "idle_in_transaction_session_timeout": "2s"}},
		{"disabled", db.Options{MaxConns: 3, StatementTimeout: -1, LockTimeout: -1, IdleInTransactionTimeout: -1},
			map[string]string{"statement_timeout": "0", "lock_timeout": "0", "idle_in_transaction_session_timeout": "0"}},
	} {
		d, err := db.Open(ctx, url, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		got := sessionSettings(t, d.Pool())
		d.Close()
		if diff := cmp.Diff(repeat(c.want, 3), got); diff != "" {
			t.Errorf("%s: session settings (-want +got):\n%s", c.name, diff)
		}
	}
}

// TestBlockedStatementsTimeOut: a Claim or a Finish blocked behind a lock
// another transaction holds fails with ErrTimeout, by lock_timeout or by
// statement_timeout (the other disabled), instead of waiting for as long as
// the lock is held. Nothing it did is kept, and the pool works afterwards on
// every one of its connections.
func TestBlockedStatementsTimeOut(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		opts db.Options
		code string
	}{
		{"lock_timeout", db.Options{LockTimeout: 200 * time.Millisecond, StatementTimeout: time.Minute}, "55P03"},
		{"statement_timeout", db.Options{LockTimeout: -1, StatementTimeout: 300 * time.Millisecond}, "57014"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// A guard only: a statement that hangs fails the test with a
			// context error instead of ErrTimeout.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			url := pgtest.URL(t, migrate.VersionLatest)
			admin := pgtest.Pool(t, url, 2)
			c.opts.MaxConns = 3
			d, err := db.Open(ctx, url, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			q := d.Queue()
			// Set up without the short timeouts: on a loaded machine a
			// set-up statement may take longer than 300 ms.
			setup := tasks.New(admin, tasks.Config{})
			jobID := pendingJob(t, setup, 4)
			held, err := setup.Claim(ctx, "w1", 2)
			if err != nil || len(held) != 2 {
				t.Fatalf("Claim: %d tasks, %v", len(held), err)
			}
			before := readState(t, admin)

			checkTimeout := func(call string, err error) {
				t.Helper()
				var pgErr *pgconn.PgError
				switch {
				case !errors.Is(err, tasks.ErrTimeout):
					t.Errorf("%s blocked behind a lock: %v, want ErrTimeout", call, err)
				case !errors.As(err, &pgErr) || pgErr.Code != c.code:
					t.Errorf("%s blocked behind a lock: %v, want SQLSTATE %s", call, err, c.code)
				case !db.IsRetryable(err):
					t.Errorf("%s: %v is not retryable", call, err)
				}
			}

			// The claim must lock a shard; another session holds the table.
			b := block(t, url, "LOCK TABLE job_shards IN EXCLUSIVE MODE")
			claimed, err := q.Claim(ctx, "w2", 2)
			checkTimeout("Claim", err)
			if len(claimed) != 0 {
				t.Errorf("the timed-out Claim returned %d tasks", len(claimed))
			}
			b.release(t)
			assertUnchanged(t, admin, before)

			// The finish must lock the job's tallies; another session holds
			// them.
			b = block(t, url, "SELECT 1 FROM job_tallies WHERE job_id = $1 FOR UPDATE", jobID)
			_, err = q.Finish(ctx, okOutcomes(held))
			checkTimeout("Finish", err)
			b.release(t)
			assertUnchanged(t, admin, before)

			// Every connection of the pool still works, and so does the queue.
			for i, s := range sessionSettings(t, d.Pool()) {
				if s["statement_timeout"] == "" {
					t.Errorf("connection %d: no settings", i)
				}
			}
			// On a loaded machine an unblocked statement can still take
			// longer than 300 ms; such a statement is rolled back whole, so
			// it is sent again (a few times: a connection left broken would
			// fail every time, or otherwise than by a timeout).
			var rep tasks.FinishReport
			err = againOnTimeout(func() (err error) { rep, err = q.Finish(ctx, okOutcomes(held)); return err })
			if err != nil || rep.Completed != 2 {
				t.Fatalf("Finish after the timeouts: %+v, %v; want 2 completed", rep, err)
			}
			err = againOnTimeout(func() (err error) { claimed, err = q.Claim(ctx, "w3", 2); return err })
			if err != nil || len(claimed) != 2 {
				t.Fatalf("Claim after the timeouts: %d tasks, %v; want 2", len(claimed), err)
			}
		})
	}
}

// againOnTimeout calls f until it returns something other than a timeout,
// at most 10 times.
func againOnTimeout(f func() error) error {
	var err error
	for range 10 {
		if err = f(); !errors.Is(err, tasks.ErrTimeout) {
			return err
		}
	}
	return err
}
