package pooler_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// SQLSTATEs of a named prepared statement that a pooler made disappear, or
// that another client had already prepared on the same server connection.
const (
	sqlStateStatementMissing = "26000" // invalid_sql_statement_name
	sqlStateStatementExists  = "42P05" // duplicate_prepared_statement
)

// fixture is a migrated database with a PgBouncer in front of it.
type fixture struct {
	directURL string
	// direct is a pool straight to the database, for checks that must not
	// depend on the pooler.
	direct  *pgxpool.Pool
	bouncer *pgbouncertest.Bouncer
}

func setup(t *testing.T, opts pgbouncertest.Options) fixture {
	t.Helper()
	url := pgtest.URL(t, migrate.VersionLatest)
	return fixture{
		directURL: url,
		direct:    pgtest.Pool(t, url, 4),
		bouncer:   pgbouncertest.Start(t, url, opts),
	}
}

// open opens the application's pool through the pooler, closed when the
// test ends (before PgBouncer stops).
func (f fixture) open(t *testing.T, opts db.Options) *db.DB {
	t.Helper()
	d, err := db.Open(context.Background(), f.bouncer.URL, opts)
	if err != nil {
		t.Fatalf("db.Open through pgbouncer (Pooler: %v): %v", opts.Pooler, err)
	}
	t.Cleanup(d.Close)
	return d
}

// job creates a job with pages /p00000 ... of descending priority.
func job(t *testing.T, d *db.DB, spec tasks.JobOptions, n int) string {
	t.Helper()
	ctx := context.Background()
	j, err := d.CreateJob(ctx, spec)
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	if n > 0 {
		if _, err := d.EnqueuePages(ctx, j.ID, pages(0, n)); err != nil {
			t.Fatalf("EnqueuePages: %v", err)
		}
	}
	return j.ID
}

func pages(from, to int) []db.Page {
	out := make([]db.Page, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, db.Page{Path: fmt.Sprintf("/p%05d", i), Priority: 1 / float64(1+i)})
	}
	return out
}

// taskRow is a task as stored, read over the direct connection.
type taskRow struct {
	Status     string
	Attempt    int32
	RetryCount int32
}

// taskRows maps the path of each task of jobID to its row.
func (f fixture) taskRows(t *testing.T, jobID string) map[string]taskRow {
	t.Helper()
	rows, err := f.direct.Query(context.Background(),
		"SELECT path, status::text, attempt, retry_count FROM tasks WHERE job_id = $1", jobID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]taskRow{}
	for rows.Next() {
		var path string
		var r taskRow
		if err := rows.Scan(&path, &r.Status, &r.Attempt, &r.RetryCount); err != nil {
			t.Fatal(err)
		}
		out[path] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sqlState is the SQLSTATE of the PostgreSQL error in err's chain, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// connect opens a single connection to url in the given exec mode, closed
// when the test ends.
func connect(t *testing.T, url string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
