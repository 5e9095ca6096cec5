package faults_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
)

// runsSchema is where faultworker records its handler runs (held_at: the
// run holds its result, see its --hold), and the test the moments it saw
// its killed processes reaped.
const runsSchema = `
CREATE TABLE fault_runs (
    id         bigserial PRIMARY KEY,
    task_id    text        NOT NULL,
    attempt    integer     NOT NULL,
    process    text        NOT NULL,
    worker_id  text        NOT NULL,
    started_at timestamptz NOT NULL,
    claimed_at timestamptz,
    ended_at   timestamptz,
    held_at    timestamptz
);
CREATE INDEX ON fault_runs (task_id);
CREATE TABLE fault_deaths (
    process text PRIMARY KEY,
    died_at timestamptz NOT NULL
);`

// TestSIGKILLedWorkersNeverRunATaskTwiceAtOnce runs 20,000 tasks on four
// faultworker processes with a 3s lease and kills one or two of them with
// SIGKILL at six random moments, starting a replacement for each. A killed
// process's tasks stay running until their lease expires; then a rescuer
// returns them with retry_count + 1 and another process runs them again.
//
// "Never at the same time" is shown directly, not argued from the lease
// columns (tasks keeps only its latest claim, so those columns cannot show
// what an earlier attempt did): every handler run is recorded in fault_runs
// with the server's clock_timestamp() before the simulated fetch starts and
// after it ends. A run of a killed process never records its end; it ended
// at the latest when the test saw the process reaped, which the test
// records (fault_deaths, same server clock) right after wait(2) returned.
// No two runs of one task may overlap, counting a killed run as lasting
// until its process's death; no (task, attempt) may run twice; every run
// of a live process must have ended.
//
// The end state: every task completed, none pending or running, every
// claim beyond the first accounted for by a rescue within the job's
// retries, the completing attempt's run recorded, shard counters balanced,
// job progress exact. A monitor checks concurrency and counters throughout.
func TestSIGKILLedWorkersNeverRunATaskTwiceAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 tasks and repeated SIGKILLs")
	}
	t.Parallel()
	bin := build(t).faultworker
	rng := seededRand(t)
	f, _ := setupPrivate(t)
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, runsSchema); err != nil {
		t.Fatal(err)
	}
	jobs, total := createJobs(t, f.queue, []jobSpec{
		{concurrency: 3, tasks: 2000, maxRetries: 10}, {concurrency: 5, tasks: 3000, maxRetries: 10},
		{concurrency: 8, tasks: 5000, maxRetries: 10}, {concurrency: 16, tasks: 10000, maxRetries: 10},
	})
	mon := startMonitor(t, f.pool, false)

	started := 0
	start := func() *proc {
		name := fmt.Sprintf("fw%02d", started)
		batch := []string{"1", "8"}[started%2]
		started++
		return startProc(t, name, f.url, bin, "--id", name, "--workers", "6", "--claim-batch", batch,
			"--lease", "3s", "--delay", "20ms", "--poll", "100ms", "--maintain", "250ms")
	}
	live := []*proc{start(), start(), start(), start()}
	var killed []*proc

	// Kill at six random points of the run, each a random moment within a
	// short random wait after a random share of the tasks completed.
	points := make([]float64, 6)
	for i := range points {
		points[i] = 0.05 + 0.75*rng.Float64()
	}
	slices.Sort(points)
	for _, p := range points {
		waitCompleted(t, f.pool, int(p*float64(total)), func() []*proc { return live })
		time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
		// One or two distinct victims among the processes running now.
		for _, i := range rng.Perm(len(live))[:1+rng.IntN(2)] {
			victim := live[i]
			killRecorded(t, f, victim)
			killed = append(killed, victim)
			live[i] = start()
			t.Logf("killed %s at %.0f%% of the tasks; started %s", victim.name, 100*p, live[i].name)
		}
	}
	waitCompleted(t, f.pool, total, func() []*proc { return live })
	for _, p := range live {
		p.stop(t)
	}
	mon.finish(t)
	checkFinal(t, f.pool, f.queue, jobs, total, 0, false)

	// The kills must have hit running work, or this test proved nothing.
	var rescued, unfinishedRuns int
	err := f.pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM tasks WHERE retry_count > 0),
		       (SELECT count(*) FROM fault_runs WHERE ended_at IS NULL)`).Scan(&rescued, &unfinishedRuns)
	if err != nil {
		t.Fatal(err)
	}
	if rescued == 0 {
		t.Errorf("%d processes were killed, yet no task was rescued", len(killed))
	}
	t.Logf("%d processes killed; %d tasks rescued and run again; %d runs cut short by a kill",
		len(killed), rescued, unfinishedRuns)

	checkRuns(t, f)
}

// killRecorded kills p with SIGKILL and records in fault_deaths, with the
// server's clock, that it was reaped: its runs ended by then.
func killRecorded(t *testing.T, f fixture, p *proc) {
	t.Helper()
	p.kill(t)
	if _, err := f.pool.Exec(context.Background(), "INSERT INTO fault_deaths VALUES ($1, clock_timestamp())", p.name); err != nil {
		t.Fatal(err)
	}
}

// runChecks are the checks of fault_runs, each a query returning one line
// per violation.
var runChecks = []struct{ what, sql string }{
	{"runs of the same claim (task, attempt) more than once", `
		SELECT task_id || ' attempt ' || attempt || ': ' || count(*) || ' runs'
		FROM fault_runs GROUP BY task_id, attempt HAVING count(*) > 1`},
	{"runs never ended in a process that was not killed", `
		SELECT r.task_id || ' attempt ' || r.attempt || ' on ' || r.process
		FROM fault_runs r
		WHERE r.ended_at IS NULL AND NOT EXISTS (SELECT 1 FROM fault_deaths d WHERE d.process = r.process)`},
	// A killed run lasts until its process was reaped; greatest() covers a
	// start the server recorded after the death (the INSERT was sent just
	// before it).
	{"runs of one task that overlapped in time", `
		WITH r AS (
		    SELECT f.task_id, f.attempt, f.process, f.started_at,
		           coalesce(f.ended_at, greatest(d.died_at, f.started_at)) AS ended_at
		    FROM fault_runs f
		    LEFT JOIN fault_deaths d ON d.process = f.process
		    WHERE f.ended_at IS NOT NULL OR d.died_at IS NOT NULL
		)
		SELECT a.task_id || ': attempt ' || a.attempt || ' on ' || a.process
		       || ' [' || a.started_at || ', ' || a.ended_at || '] and attempt ' || b.attempt
		       || ' on ' || b.process || ' [' || b.started_at || ', ' || b.ended_at || ']'
		FROM r a
		JOIN r b ON b.task_id = a.task_id AND b.attempt > a.attempt
		WHERE tstzrange(a.started_at, a.ended_at, '[]') && tstzrange(b.started_at, b.ended_at, '[]')`},
	{"completed tasks whose completing attempt has no finished run", `
		SELECT t.id || ' attempt ' || t.attempt
		FROM tasks t
		WHERE t.status = 'completed' AND NOT EXISTS (
		    SELECT 1 FROM fault_runs r
		    WHERE r.task_id = t.id AND r.attempt = t.attempt AND r.ended_at IS NOT NULL
		)`},
	{"runs of an attempt later than the task's last claim", `
		SELECT r.task_id || ' attempt ' || r.attempt || ' > ' || t.attempt
		FROM fault_runs r JOIN tasks t ON t.id = r.task_id
		WHERE r.attempt > t.attempt`},
}

// runViolations runs the checks of fault_runs and returns what each found.
func runViolations(ctx context.Context, pool *pgxpool.Pool) (map[string][]string, error) {
	found := map[string][]string{}
	for _, c := range runChecks {
		rows, err := pool.Query(ctx, c.sql)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
		if len(lines) > 0 {
			found[c.what] = lines
		}
	}
	return found, nil
}

// checkRuns checks fault_runs: no (task, attempt) ran twice, no two runs of
// a task overlapped in time, only killed processes left runs unfinished, and
// every completed task's completing attempt has a finished run.
func checkRuns(t *testing.T, f fixture) {
	t.Helper()
	ctx := context.Background()
	found, err := runViolations(ctx, f.pool)
	if err != nil {
		t.Fatal(err)
	}
	for what, lines := range found {
		t.Errorf("%d %s, e.g. %v", len(lines), what, lines[:min(5, len(lines))])
	}
	var runs int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM fault_runs").Scan(&runs); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d handler runs recorded", runs)
}

// TestRunChecksFindViolations feeds the checks of fault_runs made-up runs,
// one history per violation, plus a history that is fine, so that a clean
// result of the SIGKILL test means something.
func TestRunChecksFindViolations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.URL(t, migrate.VersionLatest), 2)
	if _, err := pool.Exec(ctx, runsSchema); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(ctx, `
		INSERT INTO fault_deaths VALUES ('dead', '2026-01-01 12:00:10+00');
		INSERT INTO fault_runs (task_id, attempt, process, worker_id, started_at, ended_at) VALUES
		    -- fine: killed at 12:00:10, run again at 12:00:13 after a rescue
		    ('ok', 1, 'dead', 'dead-w0', '2026-01-01 12:00:09+00', NULL),
		    ('ok', 2, 'live', 'live-w0', '2026-01-01 12:00:13+00', '2026-01-01 12:00:14+00'),
		    -- the second run started before the first ended
		    ('overlap', 1, 'a', 'a-w0', '2026-01-01 12:00:00+00', '2026-01-01 12:00:05+00'),
		    ('overlap', 2, 'b', 'b-w0', '2026-01-01 12:00:04+00', '2026-01-01 12:00:06+00'),
		    -- the second run started before the killed first run's process died
		    ('killed-overlap', 1, 'dead', 'dead-w1', '2026-01-01 12:00:08+00', NULL),
		    ('killed-overlap', 2, 'c', 'c-w0', '2026-01-01 12:00:09+00', '2026-01-01 12:00:09.5+00'),
		    -- one claim run twice
		    ('twice', 1, 'a', 'a-w1', '2026-01-01 12:00:00+00', '2026-01-01 12:00:01+00'),
		    ('twice', 1, 'a', 'a-w2', '2026-01-01 12:00:02+00', '2026-01-01 12:00:03+00'),
		    -- a run that never ended in a process nobody killed
		    ('hung', 1, 'a', 'a-w3', '2026-01-01 12:00:00+00', NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	found, err := runViolations(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"runs of the same claim (task, attempt) more than once": {"twice attempt 1: 2 runs"},
		"runs never ended in a process that was not killed":     {"hung attempt 1 on a"},
	}
	if diff := cmp.Diff(want, found, cmpopts.IgnoreMapEntries(func(k string, _ []string) bool {
		return k == "runs of one task that overlapped in time"
	})); diff != "" {
		t.Errorf("violations found (-want +got):\n%s", diff)
	}
	var overlapping []string
	for _, line := range found["runs of one task that overlapped in time"] {
		overlapping = append(overlapping, strings.SplitN(line, ":", 2)[0])
	}
	slices.Sort(overlapping)
	if diff := cmp.Diff([]string{"killed-overlap", "overlap"}, overlapping); diff != "" {
		t.Errorf("overlapping runs found (-want +got):\n%s", diff)
	}
}
