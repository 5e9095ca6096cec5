package pooler_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/tasks"
)

// TestPoolerSaturationIsRetryable: a saturated PgBouncer ends client
// sessions with its own FATAL errors, all SQLSTATE 08P01: a statement that
// waited query_wait_timeout for a server connection gets "query_wait_timeout",
// and a new client connection beyond max_client_conn gets "no more
// connections allowed (max_client_conn)". Both mean the database is
// unavailable for now, and the next call, on a fresh connection, may well
// succeed; the queue should say so (ErrUnavailable, db.IsRetryable), as it
// does for a refused direct connection.
func TestPoolerSaturationIsRetryable(t *testing.T) {
	t.Parallel()

	t.Run("query_wait_timeout", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		f := setup(t, pgbouncertest.Options{PoolSize: 1, Settings: map[string]string{"query_wait_timeout": "1"}})
		d := f.open(t, db.Options{Pooler: true})
		id := job(t, d, tasks.JobOptions{Domain: "example.com"}, 1)

		// Another client's open transaction holds the only server
		// connection.
		other := connect(t, f.bouncer.URL, pgx.QueryExecModeSimpleProtocol)
		tx, err := other.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		_, err = d.GetJob(ctx, id)
		if err == nil || sqlState(err) != "08P01" {
			t.Fatalf("GetJob while the pool is saturated: error %v, want PgBouncer's query_wait_timeout", err)
		}
		if !errors.Is(err, db.ErrUnavailable) || !db.IsRetryable(err) {
			t.Errorf("GetJob: %v: want ErrUnavailable, retryable", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := d.GetJob(ctx, id); err != nil {
			t.Fatalf("GetJob once a server connection is free: %v", err)
		}
	})

	t.Run("max_client_conn", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		f := setup(t, pgbouncertest.Options{MaxClientConn: 2})
		d := f.open(t, db.Options{Pooler: true, MaxConns: 4}) // one client connection so far
		id := job(t, d, tasks.JobOptions{Domain: "example.com"}, 1)
		connect(t, f.bouncer.URL, pgx.QueryExecModeSimpleProtocol) // the second, and last

		held, err := d.Pool().Acquire(ctx) // the next call needs a new client connection
		if err != nil {
			t.Fatal(err)
		}
		defer held.Release()
		_, err = d.GetJob(ctx, id)
		if err == nil || sqlState(err) != "08P01" {
			t.Fatalf("GetJob beyond max_client_conn: error %v, want PgBouncer's max_client_conn refusal", err)
		}
		if !errors.Is(err, db.ErrUnavailable) || !db.IsRetryable(err) {
			t.Errorf("GetJob: %v: want ErrUnavailable, retryable", err)
		}
	})
}
