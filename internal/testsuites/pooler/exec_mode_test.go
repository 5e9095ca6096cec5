package pooler_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/tasks"
)

// sessionSettings are the startup parameters db.Open sends on a direct
// connection (and pgtest.Pool's tasks.ConfigurePool): ignoring them lets the
// default exec mode get as far as its statements.
var sessionSettings = []string{"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "plan_cache_mode", "jit"}

// TestDefaultModeRefusedAtStartup: PgBouncer refuses a connection that sends
// session settings as startup parameters, as db.Open does without Pooler;
// with Pooler it sends none it refuses (application_name is one PgBouncer
// tracks) and connects.
func TestDefaultModeRefusedAtStartup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, pgbouncertest.Options{})

	_, err := db.Open(ctx, f.bouncer.URL, db.Options{})
	if err == nil || !strings.Contains(err.Error(), "unsupported startup parameter") {
		t.Fatalf("db.Open without Pooler through pgbouncer: error %v, want unsupported startup parameter", err)
	}
	t.Logf("without Pooler: %v", err)
	if sqlState(err) != "08P01" { // protocol_violation, as PgBouncer reports it
		t.Errorf("SQLSTATE %q, want 08P01", sqlState(err))
	}
	if !errors.Is(err, db.ErrStartupRefused) || db.IsRetryable(err) {
		t.Errorf("db.Open without Pooler through pgbouncer: %v; want ErrStartupRefused, not retryable", err)
	}

	d := f.open(t, db.Options{Pooler: true})
	var app string
	if err := d.Pool().QueryRow(ctx, "SHOW application_name").Scan(&app); err != nil {
		t.Fatal(err)
	}
	if app != "taskq" {
		t.Errorf("application_name through pgbouncer = %q, want taskq", app)
	}
}

// TestDefaultModeDropsSessionSettings: a PgBouncer told to ignore those
// startup parameters (as some deployments are) accepts the connection and
// drops the settings: the statement timeout db.Open asked for is not in
// force. Hence ALTER ROLE ... SET (docs/operations/POOLERS.md).
func TestDefaultModeDropsSessionSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, pgbouncertest.Options{IgnoreStartupParameters: sessionSettings})
	show := func(d *db.DB) string {
		t.Helper()
		var v string
		if err := d.Pool().QueryRow(ctx, "SHOW statement_timeout", pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	direct, err := db.Open(ctx, f.directURL, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if got := show(direct); got != "30s" {
		t.Fatalf("statement_timeout on a direct connection = %q, want db.Open's 30s", got)
	}
	if got := show(f.open(t, db.Options{})); got != "0" {
		t.Fatalf("statement_timeout through pgbouncer = %q, want 0 (the setting dropped)", got)
	}
}

// TestDefaultExecModeBreaksThroughPooler runs the queue's own calls with
// pgx's default exec mode (each statement prepared once per connection
// under a name derived from its SQL, stmtcache_<hash>, then only bound) and
// with Pooler (no named statements), through the same PgBouncer. The
// sequences are deterministic: which server connection PgBouncer hands out
// is forced by holding the others.
func TestDefaultExecModeBreaksThroughPooler(t *testing.T) {
	t.Parallel()

	// Two client connections, one server connection: the second client's
	// Parse of a statement the first already prepared there collides.
	t.Run("statement already exists", func(t *testing.T) {
		t.Parallel()
		f := setup(t, pgbouncertest.Options{PoolSize: 1, IgnoreStartupParameters: sessionSettings})
		for _, pooler := range []bool{false, true} {
			err := createJobOnSecondClient(t, f.open(t, db.Options{Pooler: pooler, MaxConns: 2}))
			switch {
			case pooler && err != nil:
				t.Fatalf("Pooler: CreateJob on a second client: %v", err)
			case !pooler && (sqlState(err) != sqlStateStatementExists || !strings.Contains(err.Error(), `prepared statement "stmtcache_`)):
				t.Fatalf("default mode: CreateJob on a second client: error %v, want SQLSTATE %s (prepared statement stmtcache_... already exists)", err, sqlStateStatementExists)
			case !pooler:
				t.Logf("default mode, second client: %v", err)
			}
		}
	})

	// One client, two server connections: its statements were prepared on
	// the first, which another client's transaction holds when it next runs
	// one, so it runs on the second, which never saw them.
	t.Run("statement does not exist", func(t *testing.T) {
		t.Parallel()
		f := setup(t, pgbouncertest.Options{PoolSize: 2, IgnoreStartupParameters: sessionSettings})
		for _, pooler := range []bool{false, true} {
			err := getJobOnOtherServer(t, f, f.open(t, db.Options{Pooler: pooler, MaxConns: 1}))
			switch {
			case pooler && err != nil:
				t.Fatalf("Pooler: GetJob on another server connection: %v", err)
			case !pooler && (sqlState(err) != sqlStateStatementMissing || !strings.Contains(err.Error(), `prepared statement "stmtcache_`)):
				t.Fatalf("default mode: GetJob on another server connection: error %v, want SQLSTATE %s (prepared statement stmtcache_... does not exist)", err, sqlStateStatementMissing)
			case !pooler:
				t.Logf("default mode, other server: %v", err)
			}
		}
	})

	// The queue's ordinary traffic, 8 goroutines on 2 server connections:
	// in the default mode calls fail with exactly those two errors; with
	// Pooler none does.
	t.Run("concurrent queue calls", func(t *testing.T) {
		t.Parallel()
		f := setup(t, pgbouncertest.Options{PoolSize: 2, IgnoreStartupParameters: sessionSettings})
		for _, pooler := range []bool{false, true} {
			errs := queueTraffic(f.open(t, db.Options{Pooler: pooler, MaxConns: 8}), 8)
			byState := map[string]int{}
			for _, err := range errs {
				byState[sqlState(err)]++
			}
			t.Logf("Pooler %v: %d failed calls, by SQLSTATE %v", pooler, len(errs), byState)
			if pooler {
				if len(errs) > 0 {
					t.Fatalf("Pooler: %d calls failed, first: %v", len(errs), errs[0])
				}
				continue
			}
			if len(errs) == 0 {
				t.Fatal("default mode: no call failed")
			}
			for _, err := range errs {
				if s := sqlState(err); s != sqlStateStatementExists && s != sqlStateStatementMissing {
					t.Errorf("default mode: unexpected failure %v", err)
				}
			}
		}
	})
}

// createJobOnSecondClient creates a job (preparing the statements on the
// pool's first connection), then, holding that connection, creates another
// on a second one.
func createJobOnSecondClient(t *testing.T, d *db.DB) error {
	t.Helper()
	ctx := context.Background()
	if _, err := d.CreateJob(ctx, tasks.JobOptions{Domain: "first.example"}); err != nil {
		t.Fatalf("CreateJob on the first client: %v", err)
	}
	first, err := d.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	_, err = d.CreateJob(ctx, tasks.JobOptions{Domain: "second.example"})
	return err
}

// getJobOnOtherServer creates a job on the pool's only connection (the
// statements are prepared on the server connection PgBouncer opened when it
// started, its only one), then, while another client's transaction holds
// that server connection, reads the job back.
func getJobOnOtherServer(t *testing.T, f fixture, d *db.DB) error {
	t.Helper()
	ctx := context.Background()
	j, err := d.CreateJob(ctx, tasks.JobOptions{Domain: "example.com"})
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	other := connect(t, f.bouncer.URL, pgx.QueryExecModeSimpleProtocol)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // nothing to keep
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	_, err = d.GetJob(ctx, j.ID)
	return err
}

// queueTraffic runs n goroutines, each creating a job of 20 pages and
// draining it with claims and completions, and returns the errors of the
// calls that failed.
func queueTraffic(d *db.DB, n int) []error {
	ctx := context.Background()
	var mu sync.Mutex
	var errs []error
	record := func(err error) bool {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		return err != nil
	}
	var wg sync.WaitGroup
	for g := range n {
		wg.Go(func() {
			worker := fmt.Sprintf("w%d", g)
			var jobID string
			for range 5 { // until the job exists
				j, err := d.CreateJob(ctx, tasks.JobOptions{Domain: worker + ".example", Concurrency: 20})
				if !record(err) {
					jobID = j.ID
					break
				}
			}
			if jobID == "" {
				return
			}
			for range 5 {
				if _, err := d.EnqueuePages(ctx, jobID, pages(0, 20)); !record(err) {
					break
				}
			}
			for range 40 {
				claimed, err := d.ClaimTasks(ctx, worker, 5)
				if record(err) {
					continue
				}
				for i := range claimed {
					record(d.CompleteTask(ctx, &claimed[i], tasks.TaskResult{StatusCode: 200}))
				}
				_, err = d.GetJob(ctx, jobID)
				record(err)
			}
		})
	}
	wg.Wait()
	return errs
}
