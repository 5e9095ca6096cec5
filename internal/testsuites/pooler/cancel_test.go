package pooler_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
)

// TestCancelledStatementsThroughPooler ends contexts during statements
// through PgBouncer, as a stopping worker pool does, at every moment: before
// the statement reaches the server, while it runs, as it returns. Each
// ended context sends a cancel request to PgBouncer; PgBouncer 1.18 exits
// when a client hangs up such a request before PgBouncer has finished it,
// which pgx's own handler does whenever the statement returns first. The
// pooler must survive them all, a statement cancelled in flight must stop on
// the server, and statements that were not cancelled must not be hit by a
// late cancel.
func TestCancelledStatementsThroughPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, pgbouncertest.Options{PoolSize: 2})
	d := f.open(t, db.Options{Pooler: true, MaxConns: 8})

	const goroutines, rounds = 8, 150
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*rounds)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range rounds {
				sctx, cancel := context.WithTimeout(ctx, time.Duration(r.IntN(4000))*time.Microsecond)
				_, err := d.Pool().Exec(sctx, "SELECT pg_sleep($1::float8)", float64(r.IntN(3000))/1e6)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) && sctx.Err() == nil {
					errs <- err // failed although its context had not ended
				}
				// A statement whose context lives on must not be cancelled
				// by a cancel request meant for an earlier one.
				if _, err := d.Pool().Exec(ctx, "SELECT pg_sleep(0.001)"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("statement not cancelled by its own context failed: %v", err)
	}
	if log := f.bouncer.Log(); strings.Contains(log, "FATAL") {
		t.Fatalf("pgbouncer died:\n%s", log)
	}

	// A long statement cancelled in flight stops on the server.
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := d.Pool().Exec(sctx, "SELECT pg_sleep(60) /* cancelled */"); err == nil {
		t.Fatal("a 60 s sleep under a 200 ms context succeeded")
	}
	waitFor(t, func() bool {
		var running int
		if err := f.direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND query LIKE '%/* cancelled */%' AND pid <> pg_backend_pid()`).Scan(&running); err != nil {
			t.Fatal(err)
		}
		return running == 0
	})
	if err := d.Ping(ctx); err != nil {
		t.Fatalf("ping through pgbouncer after the cancels: %v\npgbouncer log:\n%s", err, f.bouncer.Log())
	}
}
