package faults_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/pgclustertest"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// binDir holds the worker binaries, built at most once per test run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "taskq-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var built struct {
	once sync.Once
	err  error
}

// binaries are the paths of the worker binaries.
type binaries struct {
	// taskq is cmd/taskq.
	taskq string
	// faultworker is ./faultworker: a worker with --lease that records its
	// runs.
	faultworker string
}

// build builds both worker binaries the first time it is called, with
// "go build" from the repository root.
func build(t *testing.T) binaries {
	t.Helper()
	root := sharedtest.RepoRoot(t)
	built.once.Do(func() {
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./cmd/taskq", "./internal/testsuites/faults/faultworker")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return binaries{taskq: filepath.Join(binDir, "taskq"), faultworker: filepath.Join(binDir, "faultworker")}
}

// seededRand returns a random source whose seed is logged, and taken from
// TASKQ_FAULTS_SEED when set, to replay a run's random choices.
func seededRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TASKQ_FAULTS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("TASKQ_FAULTS_SEED: %v", err)
		}
	}
	t.Logf("random seed %d (set TASKQ_FAULTS_SEED to replay)", seed)
	return rand.New(rand.NewPCG(seed, seed>>1))
}

// proc is a worker process started by a test.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout sharedtest.Buffer
	stderr sharedtest.Buffer
	done   chan struct{}
	err    error // from Wait, once done is closed
}

// startProc starts bin with args, DATABASE_URL set to dbURL. The process is
// killed when the test ends if it is still running, and when this test
// process dies.
func startProc(t *testing.T, name, dbURL, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, tail(p.stderr.String(), 3000))
		}
	})
	return p
}

// exited tells whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and returns once the process is reaped: none of its
// code runs any more.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.done
}

// stop sends SIGTERM and waits for the graceful shutdown; the process must
// exit with status 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not shut down within a minute of SIGTERM; stderr:\n%s", p.name, tail(p.stderr.String(), 3000))
	}
	if p.err != nil {
		t.Fatalf("%s: %v; stderr:\n%s", p.name, p.err, tail(p.stderr.String(), 3000))
	}
}

// procStats are the counts a worker process prints when it stops.
type procStats struct {
	Completed, Failed, Retried, HandedBack int
}

var statsLine = regexp.MustCompile(`ran \S+: ([\d,]+) completed, ([\d,]+) failed, ([\d,]+) retried, ([\d,]+) handed back`)

// stats parses the counts a stopped process printed.
func (p *proc) stats(t *testing.T) procStats {
	t.Helper()
	m := statsLine.FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("%s printed no counts; stdout:\n%s", p.name, p.stdout.String())
	}
	// taskq separates thousands: 1,200.
	n := func(s string) int { v, _ := strconv.Atoi(strings.ReplaceAll(s, ",", "")); return v }
	return procStats{Completed: n(m[1]), Failed: n(m[2]), Retried: n(m[3]), HandedBack: n(m[4])}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// fixture is a migrated database of the shared test server with a queue on
// it.
type fixture struct {
	url   string
	pool  *pgxpool.Pool
	queue *tasks.Queue
}

func setup(t *testing.T) fixture {
	t.Helper()
	url := pgtest.URL(t, migrate.VersionLatest)
	pool := pgtest.Pool(t, url, 6)
	return fixture{url: url, pool: pool, queue: tasks.New(pool, tasks.Config{})}
}

// setupPrivate is setup on a private cluster of the test's own, for a test
// that restarts the server or would otherwise crowd the shared one.
func setupPrivate(t *testing.T) (fixture, *pgclustertest.Cluster) {
	t.Helper()
	cluster := pgclustertest.Start(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cluster.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE taskq"); err != nil {
		t.Fatal(err)
	}
	url := cluster.DatabaseURL("taskq")
	if err := (migrate.Runner{URL: url}).Up(ctx); err != nil {
		t.Fatal(err)
	}
	pool := pgtest.Pool(t, url, 4)
	return fixture{url: url, pool: pool, queue: tasks.New(pool, tasks.Config{})}, cluster
}

// jobSpec is a job to create: its concurrency limit and how many tasks.
type jobSpec struct {
	concurrency, tasks, maxRetries int
}

// createJobs creates the jobs and enqueues their tasks; it returns the job
// ids and the total number of tasks.
func createJobs(t *testing.T, q *tasks.Queue, specs []jobSpec) (ids []string, total int) {
	t.Helper()
	ctx := context.Background()
	for i, s := range specs {
		job, err := q.CreateJob(ctx, tasks.JobOptions{
			Domain: fmt.Sprintf("site%d.example", i), Concurrency: s.concurrency, MaxRetries: s.maxRetries,
		})
		if err != nil {
			t.Fatal(err)
		}
		for from := 0; from < s.tasks; from += 5000 {
			pages := make([]tasks.Page, 0, 5000)
			for j := from; j < min(from+5000, s.tasks); j++ {
				pages = append(pages, tasks.Page{Path: fmt.Sprintf("/p%06d", j), Priority: float64(j % 7)})
			}
			if _, err := q.Enqueue(ctx, job.ID, pages); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, job.ID)
		total += s.tasks
	}
	return ids, total
}

// completed counts completed tasks.
func completed(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var n int
	err := pool.QueryRow(ctx, "SELECT count(*) FROM tasks WHERE status = 'completed'").Scan(&n)
	return n, err
}

// stallLimit is how long a run may go without completing a task before the
// test fails: long enough for a task orphaned with the taskq command's
// one-minute lease to be rescued, so only a run that is stuck trips it,
// however slow the machine.
const stallLimit = 2 * time.Minute

// waitCompleted waits until at least n tasks are completed. It fails the
// test when a process in procs exits meanwhile, or when no task completes
// for stallLimit.
func waitCompleted(t *testing.T, pool *pgxpool.Pool, n int, procs func() []*proc) {
	t.Helper()
	last, lastChange := -1, time.Now()
	for {
		done, err := completed(context.Background(), pool)
		if err == nil {
			if done >= n {
				return
			}
			if done != last {
				last, lastChange = done, time.Now()
			}
		}
		for _, p := range procs() {
			if p.exited() {
				t.Fatalf("%s exited during the run: %v; stderr:\n%s", p.name, p.err, tail(p.stderr.String(), 3000))
			}
		}
		if time.Since(lastChange) > stallLimit {
			t.Fatalf("no task completed for %s: %d of %d (last error: %v)", stallLimit, last, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// monitor checks, over and over during a run and in one snapshot each time,
// that no job has more tasks running than its concurrency, and that its
// shards' counters (claims - releases) equal the tasks actually running.
type monitor struct {
	stop      context.CancelFunc
	done      chan struct{}
	snapshots atomic.Int64
	failed    atomic.Int64 // snapshots that could not be taken
	mu        sync.Mutex
	errs      []error
	peak      map[string]int64 // most tasks seen running, by job
}

// startMonitor starts a monitor on pool. With tolerant, a snapshot that
// fails (the server is restarting) is skipped rather than reported.
func startMonitor(t *testing.T, pool *pgxpool.Pool, tolerant bool) *monitor {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	m := &monitor{stop: stop, done: make(chan struct{}), peak: map[string]int64{}}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := m.snapshot(ctx, pool); err != nil && ctx.Err() == nil {
				if !tolerant {
					m.fail(err)
					return
				}
				m.failed.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { stop(); <-m.done })
	return m
}

func (m *monitor) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.errs) < 20 {
		m.errs = append(m.errs, err)
	}
}

func (m *monitor) snapshot(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, `
		SELECT j.id, j.concurrency,
		       (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = 'running'),
		       (SELECT coalesce(sum(claims), 0) FROM job_shards s WHERE s.job_id = j.id)
		       - (SELECT coalesce(sum(releases), 0) FROM job_tallies r WHERE r.job_id = j.id)
		FROM jobs j`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var concurrency, running, counted int64
		if err := rows.Scan(&id, &concurrency, &running, &counted); err != nil {
			return err
		}
		if running > concurrency {
			m.fail(fmt.Errorf("job %s had %d tasks running, limit %d", id, running, concurrency))
		}
		if running != counted {
			m.fail(fmt.Errorf("job %s: %d tasks running but its shards count %d", id, running, counted))
		}
		m.mu.Lock()
		m.peak[id] = max(m.peak[id], running)
		m.mu.Unlock()
	}
	if err := rows.Err(); err != nil {
		return err
	}
	m.snapshots.Add(1)
	return nil
}

// finish stops the monitor and reports what it saw.
func (m *monitor) finish(t *testing.T) {
	t.Helper()
	m.stop()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, err := range m.errs {
		t.Error(err)
	}
	if n := m.snapshots.Load(); n < 10 {
		t.Errorf("the monitor took only %d snapshots during the run", n)
	}
	t.Logf("monitor: %d snapshots (%d skipped while the server was away); peak running by job %v",
		m.snapshots.Load(), m.failed.Load(), m.peak)
}

// checkFinal checks the end state of a run, once every worker has stopped:
// total tasks completed and skipped tasks skipped (never claimed), none
// pending or running; attempts accounted for (with firstAttempt, every task
// that ran was claimed exactly once; otherwise every claim beyond the first
// was taken back by a rescue, within the job's retries); each job's shard
// counters balanced; and after one Maintain pass each job completed with
// progress exact, its tasks' rows counted, and its shards retired.
func checkFinal(t *testing.T, pool *pgxpool.Pool, q *tasks.Queue, jobIDs []string, total, skipped int, firstAttempt bool) {
	t.Helper()
	ctx := context.Background()
	byStatus := map[string]int{}
	rows, err := pool.Query(ctx, "SELECT status::text, count(*) FROM tasks GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		byStatus[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"completed": total}
	if skipped > 0 {
		want["skipped"] = skipped
	}
	if diff := cmp.Diff(want, byStatus); diff != "" {
		t.Errorf("tasks by status (-want +got):\n%s", diff)
	}

	var notFirst, unaccounted, overLimit, rescued, skippedClaimed int
	err = pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE t.status <> 'skipped' AND t.attempt <> 1),
		       count(*) FILTER (WHERE t.status <> 'skipped' AND t.attempt <> t.retry_count + 1),
		       count(*) FILTER (WHERE t.retry_count > j.max_retries),
		       count(*) FILTER (WHERE t.retry_count > 0),
		       count(*) FILTER (WHERE t.status = 'skipped' AND t.attempt <> 0)
		FROM tasks t JOIN jobs j ON j.id = t.job_id`).Scan(&notFirst, &unaccounted, &overLimit, &rescued, &skippedClaimed)
	if err != nil {
		t.Fatal(err)
	}
	if firstAttempt && notFirst != 0 {
		t.Errorf("%d tasks were claimed more than once", notFirst)
	}
	if unaccounted != 0 {
		t.Errorf("%d tasks have an attempt count that is not 1 + their retries: a claim was lost or counted twice", unaccounted)
	}
	if overLimit != 0 {
		t.Errorf("%d tasks were retried more often than their job allows", overLimit)
	}
	if skippedClaimed != 0 {
		t.Errorf("%d skipped tasks were claimed", skippedClaimed)
	}
	t.Logf("%d tasks completed; %d of them after a rescue", byStatus["completed"], rescued)

	// Shards not yet retired by a worker's maintenance must balance: every
	// claim (one per attempt) released exactly once.
	rows, err = pool.Query(ctx, `
		SELECT s.job_id, s.claims, s.releases, (SELECT sum(attempt) FROM tasks t WHERE t.job_id = s.job_id)
		FROM (SELECT s.job_id, sum(s.claims) AS claims, sum(r.releases) AS releases
		      FROM job_shards s JOIN job_tallies r USING (job_id, shard)
		      GROUP BY s.job_id) s`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var claims, releases, attempts int64
		if err := rows.Scan(&id, &claims, &releases, &attempts); err != nil {
			t.Fatal(err)
		}
		if claims != attempts || releases != claims {
			t.Errorf("job %s: shards count %d claims and %d releases; its tasks were claimed %d times", id, claims, releases, attempts)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	if _, err := q.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, id := range jobIDs {
		job, err := q.Job(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var want tasks.Progress
		err = pool.QueryRow(ctx, `
			SELECT count(*), count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'skipped')
			FROM tasks WHERE job_id = $1`, id).Scan(&want.Total, &want.Completed, &want.Skipped)
		if err != nil {
			t.Fatal(err)
		}
		want.Percent = 100
		sum += job.Progress.Total
		if diff := cmp.Diff(want, job.Progress); diff != "" || job.Status != tasks.JobStatusCompleted {
			t.Errorf("job %s: status %s, progress against its tasks' rows (-want +got):\n%s", id, job.Status, diff)
		}
	}
	if sum != total+skipped {
		t.Errorf("the jobs count %d tasks in all, want %d", sum, total+skipped)
	}
	var shards int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM job_shards").Scan(&shards); err != nil {
		t.Fatal(err)
	}
	if shards != 0 {
		t.Errorf("%d shards of completed jobs were not retired: their counters do not balance", shards)
	}
}
