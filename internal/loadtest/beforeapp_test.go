package loadtest

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/gensql"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
)

// before-app, the application's claim and finish on the base schema, runs
// every task exactly once in both workloads: none lost or run twice, every
// page of the +discover sites reached, and at the end each job's row is
// exact: running_tasks back to 0 (one decrement per claim), and the
// trigger's counters matching the job's tasks (every outcome written by the
// batch writer, with every fetch column).
func TestBeforeAppRunsEveryTaskOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server := pgtest.Server(t).URL
	const tasks, jobs = 300, 3
	results, err := Run(ctx, Config{
		ServerURL: server, Modes: []Mode{ModeBeforeApp, ModeBeforeAppDiscover}, Tasks: tasks, Jobs: jobs,
		Workers: 8, DashboardSamples: 1, MaxDuration: 2 * time.Minute, Keep: true,
	})
	for _, r := range results {
		t.Cleanup(func() { dropDatabase(t, server, r.Database) })
	}
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		Mode                                                          Mode
		Completed, Failed, Duplicates, Lost, Unfinished, Undiscovered int
		TimedOut                                                      bool
	}
	type jobRow struct{ Tasks, Total, Completed, Running int }
	for _, r := range results {
		got := outcome{r.Mode, r.Completed, r.Failed, r.Duplicates, r.Lost, r.Unfinished, r.Undiscovered, r.TimedOut}
		if diff := cmp.Diff(outcome{Mode: r.Mode, Completed: tasks}, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", r.Mode, diff)
		}
		checkCompletions(t, r)

		conn := connectTo(t, server, r.Database)
		rows, err := conn.Query(ctx, `
			SELECT (SELECT count(*) FROM tasks WHERE job_id = j.id)::int, j.total_tasks, j.completed_tasks, j.running_tasks
			FROM jobs j ORDER BY j.id`)
		if err != nil {
			t.Fatal(err)
		}
		jobRows, err := pgx.CollectRows(rows, pgx.RowToStructByPos[jobRow])
		if err != nil {
			t.Fatal(err)
		}
		if len(jobRows) != jobs {
			t.Fatalf("%s: %d jobs, want %d", r.Mode, len(jobRows), jobs)
		}
		for _, j := range jobRows {
			if want := (jobRow{j.Tasks, j.Tasks, j.Tasks, 0}); j != want {
				t.Errorf("%s: job row %+v, want %+v", r.Mode, j, want)
			}
		}
		// The batch writer fills every fetch column, as the application's
		// did: none left NULL.
		var partial int
		if err := conn.QueryRow(ctx, `
			SELECT count(*) FROM tasks
			WHERE status = 'completed' AND (headers IS NULL OR redirect_url IS NULL OR ttfb IS NULL
			   OR second_cache_status IS NULL OR second_headers IS NULL OR cache_check_attempts IS NULL)`).Scan(&partial); err != nil {
			t.Fatal(err)
		}
		if partial != 0 {
			t.Errorf("%s: %d completed tasks with fetch columns left NULL", r.Mode, partial)
		}
	}
}

// before-app's claim, in the generic plan its sessions run on a database
// never analysed (as in the load test), reads the job's pending tasks in
// order through the application's claim index and locks them with the job's
// row, as the application's did: no sort of the job's tasks, which would
// charge the old claim a cost the application did not pay.
func TestBeforeAppClaimReadsTheApplicationsIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.URL(t, migrate.VersionBaseSchema)
	if err := addBeforeAppSchema(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `
		INSERT INTO domains (name) VALUES ('site.example');
		INSERT INTO jobs (id, domain_id, status) VALUES ('job', 1, 'running');
		INSERT INTO pages (domain_id, path) SELECT 1, '/p' || g FROM generate_series(1, 5000) g;
		INSERT INTO tasks (job_id, page_id, path, priority_score) SELECT 'job', id, path, random() FROM pages;
		SET plan_cache_mode = force_generic_plan;
		PREPARE claim(text) AS `+gensql.MustQuery("LegacyAppTaskClaim")); err != nil {
		t.Fatal(err)
	}
	var plan strings.Builder
	rows, err := conn.Query(ctx, "EXPLAIN (COSTS OFF) EXECUTE claim('job')")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	p := plan.String()
	if !strings.Contains(p, "LockRows") || !strings.Contains(p, "Index Scan using idx_tasks_claim_optimised on tasks t") ||
		strings.Contains(p, "Sort") {
		t.Fatalf("want the pending tasks locked in the order of idx_tasks_claim_optimised, no sort; the plan:\n%s", p)
	}
}

// connectTo opens the database name on server for the test's length.
func connectTo(t *testing.T, server, name string) *pgx.Conn {
	t.Helper()
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	conn, err := pgx.Connect(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func dropDatabase(t *testing.T, server, name string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Error(err)
	}
}
