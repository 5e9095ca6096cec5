package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

type fixture struct {
	pool  *pgxpool.Pool
	queue *tasks.Queue
	clock *clock
}

// clock is a settable time source for the queue's statements.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// setup returns a queue on a fresh migrated database whose statements use a
// test clock.
func setup(t testing.TB, cfg tasks.Config) fixture {
	t.Helper()
	return setupConns(t, cfg, 8)
}

func setupConns(t testing.TB, cfg tasks.Config, conns int32) fixture {
	t.Helper()
	pool := pgtest.Pool(t, pgtest.URL(t, migrate.VersionLatest), conns)
	c := &clock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	if cfg.Now == nil {
		cfg.Now = c.Now
	}
	return fixture{pool: pool, queue: tasks.New(pool, cfg), clock: c}
}

// job creates a job with n pages /p0000.. of descending priority.
func (f fixture) job(t testing.TB, spec tasks.JobOptions, n int) tasks.Job {
	t.Helper()
	ctx := context.Background()
	if spec.Domain == "" {
		spec.Domain = "example.com"
	}
	job, err := f.queue.CreateJob(ctx, spec)
	if err != nil {
		t.Fatalf("CreateJob: %v", err)
	}
	if n > 0 {
		if _, err := f.queue.Enqueue(ctx, job.ID, pages(n)); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	return job
}

func pages(n int) []tasks.Page {
	out := make([]tasks.Page, n)
	for i := range out {
		out[i] = tasks.Page{Path: fmt.Sprintf("/p%05d", i), Priority: float64(n-i) / float64(n)}
	}
	return out
}

func okResult() tasks.TaskResult {
	return tasks.TaskResult{
		StatusCode:    200,
		ResponseTime:  120 * time.Millisecond,
		CacheStatus:   "HIT",
		ContentType:   "text/html",
		ContentLength: 5120,
		Headers:       http.Header{"Cf-Cache-Status": {"HIT"}, "Content-Type": {"text/html"}},
	}
}

func TestClaimTakesBestTaskAndCompleteRecordsResult(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 2}, 3)

	task, err := f.queue.ClaimOne(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	want := tasks.Task{
		JobID:          job.ID,
		Path:           "/p00000",
		PriorityScore:  1,
		Attempt:        1,
		WorkerID:       "w1",
		StartedAt:      f.clock.Now(),
		LeaseExpiresAt: f.clock.Now().Add(time.Minute),
	}
	if diff := cmp.Diff(want, *task, cmpopts.IgnoreFields(tasks.Task{}, "ID", "PageID", "CreatedAt")); diff != "" {
		t.Fatalf("claimed task (-want +got):\n%s", diff)
	}
	if err := f.queue.Complete(ctx, *task, okResult()); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	got, err := f.queue.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantProgress := tasks.Progress{Total: 3, Completed: 1, Pending: 2, Percent: 100.0 / 3}
	if diff := cmp.Diff(wantProgress, got.Progress, approxPercent); diff != "" {
		t.Fatalf("progress (-want +got):\n%s", diff)
	}
	// A second completion of the same claim is refused and changes nothing.
	if err := f.queue.Complete(ctx, *task, okResult()); !errors.Is(err, tasks.ErrLeaseLost) {
		t.Fatalf("second Complete error = %v, want ErrLeaseLost", err)
	}
}

func TestClaimRespectsConcurrencyAndPause(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 3}, 10)

	claimed, err := f.queue.Claim(ctx, "w1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 3 {
		t.Fatalf("claimed %d tasks of a job with concurrency 3", len(claimed))
	}
	if _, err := f.queue.ClaimOne(ctx, "w2"); !errors.Is(err, tasks.ErrNoTasksAvailable) {
		t.Fatalf("claim beyond concurrency: %v, want ErrNoTasksAvailable", err)
	}
	if err := f.queue.Complete(ctx, claimed[0], okResult()); err != nil {
		t.Fatal(err)
	}
	if err := f.queue.PauseJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.queue.ClaimOne(ctx, "w2"); !errors.Is(err, tasks.ErrNoTasksAvailable) {
		t.Fatalf("claim from a paused job: %v, want ErrNoTasksAvailable", err)
	}
	if err := f.queue.ResumeJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.queue.ClaimOne(ctx, "w2"); err != nil {
		t.Fatalf("claim after resume: %v", err)
	}
}

func TestRunJobToCompletion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 4, MaxPages: 20}, 25)
	var paths []string
	for {
		claimed, err := f.queue.Claim(ctx, "w1", 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(claimed) == 0 {
			break
		}
		outcomes := make([]tasks.Outcome, len(claimed))
		for i, task := range claimed {
			paths = append(paths, task.Path)
			outcomes[i] = tasks.Outcome{Task: task, Result: okResult()}
		}
		rep, err := f.queue.Finish(ctx, outcomes)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Completed != len(claimed) || len(rep.Lost) != 0 {
			t.Fatalf("finish report %+v for %d tasks", rep, len(claimed))
		}
	}
	if len(paths) != 20 {
		t.Fatalf("ran %d tasks, want max_pages = 20", len(paths))
	}
	if !sort.StringsAreSorted(paths) {
		t.Errorf("tasks ran out of priority order: %v", paths)
	}
	rep, err := f.queue.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{job.ID}, rep.Finished); diff != "" {
		t.Fatalf("finished jobs (-want +got):\n%s", diff)
	}
	got, err := f.queue.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != tasks.JobStatusCompleted {
		t.Errorf("job status %s, want completed", got.Status)
	}
	want := tasks.Progress{Total: 25, Completed: 20, Skipped: 5, Percent: 100}
	if diff := cmp.Diff(want, got.Progress); diff != "" {
		t.Fatalf("progress (-want +got):\n%s", diff)
	}
	var shards int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM job_shards WHERE job_id = $1", job.ID).Scan(&shards); err != nil {
		t.Fatal(err)
	}
	if shards != 0 {
		t.Errorf("a finished job kept %d shards", shards)
	}
	var rolled tasks.Progress
	if err := f.pool.QueryRow(ctx, `SELECT total_tasks, completed_tasks, failed_tasks, skipped_tasks
		FROM jobs WHERE id = $1`, job.ID).Scan(&rolled.Total, &rolled.Completed, &rolled.Failed, &rolled.Skipped); err != nil {
		t.Fatal(err)
	}
	rolled.Percent = 100
	if diff := cmp.Diff(want, rolled); diff != "" {
		t.Fatalf("jobs row counters after roll-up (-want +got):\n%s", diff)
	}
}

// TestSkipFinishesWithoutFetch: a worker may decide not to fetch a claimed
// page (robots.txt disallows it). Skip records it skipped with its reason,
// never retries it, enqueues none of its links, and the job's progress and
// roll-up count it.
func TestSkipFinishesWithoutFetch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 4, MaxRetries: 3}, 3)
	claimed, err := f.queue.Claim(ctx, "w1", 3)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("Claim = %d tasks, %v", len(claimed), err)
	}
	skip := tasks.TaskResult{Skip: true, Err: errors.New("robots.txt disallows it"), Links: []tasks.Page{{Path: "/never"}}}
	rep, err := f.queue.Finish(ctx, []tasks.Outcome{
		{Task: claimed[0], Result: skip},
		{Task: claimed[1], Result: tasks.TaskResult{Skip: true}},
		{Task: claimed[2], Result: okResult()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != 2 || rep.Completed != 1 || rep.Retried != 0 || rep.Failed != 0 || rep.Links.Pending != 0 {
		t.Fatalf("finish report %+v, want 2 skipped, 1 completed, no links", rep)
	}
	var status, reason string
	if err := f.pool.QueryRow(ctx, "SELECT status::text, coalesce(error, '') FROM tasks WHERE id = $1",
		claimed[0].ID).Scan(&status, &reason); err != nil {
		t.Fatal(err)
	}
	if status != "skipped" || reason != "robots.txt disallows it" {
		t.Errorf("skipped task: status %s, error %q", status, reason)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 3, Completed: 1, Skipped: 2, Percent: 100})
	// The claim is over: a second write is refused.
	if err := f.queue.Complete(ctx, claimed[0], okResult()); !errors.Is(err, tasks.ErrLeaseLost) {
		t.Errorf("Complete after Skip: %v, want ErrLeaseLost", err)
	}
	mrep, err := f.queue.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{job.ID}, mrep.Finished); diff != "" {
		t.Fatalf("finished jobs (-want +got):\n%s", diff)
	}
	var rolled tasks.Progress
	if err := f.pool.QueryRow(ctx, `SELECT total_tasks, completed_tasks, failed_tasks, skipped_tasks
		FROM jobs WHERE id = $1`, job.ID).Scan(&rolled.Total, &rolled.Completed, &rolled.Failed, &rolled.Skipped); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tasks.Progress{Total: 3, Completed: 1, Skipped: 2}, rolled); diff != "" {
		t.Errorf("jobs row counters after roll-up (-want +got):\n%s", diff)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 3, Completed: 1, Skipped: 2, Percent: 100})
}

// TestEnqueueReopensCompletedJob: a crawl finds pages as it goes, so its
// queue can drain and the job complete between two batches; the next batch
// reopens it, with shards to claim from again.
func TestEnqueueReopensCompletedJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 8}, 3)
	for {
		claimed, err := f.queue.Claim(ctx, "w", 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(claimed) == 0 {
			break
		}
		for _, task := range claimed {
			if err := f.queue.Complete(ctx, task, okResult()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := f.queue.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.queue.Job(ctx, job.ID); got.Status != tasks.JobStatusCompleted {
		t.Fatalf("setup: job %s, want completed", got.Status)
	}

	more := []tasks.Page{{Path: "/found-later", Priority: 0.5}, {Path: "/p00000"}}
	res, err := f.queue.Enqueue(ctx, job.ID, more)
	if err != nil {
		t.Fatalf("Enqueue into a completed job: %v", err)
	}
	if diff := cmp.Diff(tasks.EnqueueResult{Pending: 1, Duplicates: 1}, res); diff != "" {
		t.Fatalf("enqueue result (-want +got):\n%s", diff)
	}
	got, err := f.queue.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := tasks.Progress{Total: 4, Completed: 3, Pending: 1, Percent: 75}
	if got.Status != tasks.JobStatusRunning || got.CompletedAt != nil {
		t.Fatalf("reopened job: status %s, completed_at %v", got.Status, got.CompletedAt)
	}
	if diff := cmp.Diff(want, got.Progress); diff != "" {
		t.Fatalf("progress (-want +got):\n%s", diff)
	}
	task, err := f.queue.ClaimOne(ctx, "w")
	if err != nil {
		t.Fatalf("claim from the reopened job: %v", err)
	}
	if task.Path != "/found-later" {
		t.Fatalf("claimed %s", task.Path)
	}
}

// TestReopenedJobDealsToEveryShard: the batch that reopens a completed job
// (whose shards maintenance removed) is dealt over all of the shards the job
// gets back, not piled on shard 0.
func TestReopenedJobDealsToEveryShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 8}, 1)
	if err := f.queue.Complete(ctx, claimOne(t, f, "w"), okResult()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.queue.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	var shards int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM job_shards WHERE job_id = $1", job.ID).Scan(&shards); err != nil || shards != 0 {
		t.Fatalf("setup: completed job has %d shards (%v), want 0", shards, err)
	}

	more := make([]tasks.Page, 8)
	for i := range more {
		more[i] = tasks.Page{Path: fmt.Sprintf("/later-%d", i), Priority: float64(i)}
	}
	if res, err := f.queue.Enqueue(ctx, job.ID, more); err != nil || res.Pending != 8 {
		t.Fatalf("Enqueue into the completed job = %+v, %v; want 8 pending", res, err)
	}
	perShard := map[int16]int{}
	for _, q := range queuedTasks(t, f, job.ID) {
		if q.Status == tasks.TaskStatusPending {
			perShard[q.Shard]++
		}
	}
	if diff := cmp.Diff(map[int16]int{0: 4, 1: 4}, perShard); diff != "" {
		t.Errorf("pending tasks per shard of the reopened job (-want +got):\n%s", diff)
	}
}

// TestLoweringConcurrencyStrandsNoTask: cutting a job's concurrency takes
// shards away; a task running on one of them that later fails and is retried
// comes back on a removed shard, and maintenance deals it to a live one.
func TestLoweringConcurrencyStrandsNoTask(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{BackoffBase: time.Millisecond, BackoffMax: time.Millisecond})
	job := f.job(t, tasks.JobOptions{Concurrency: 40}, 40) // 10 shards of 4
	var onLast tasks.Task
	for onLast.ID == "" {
		claimed, err := f.queue.Claim(ctx, "w", 4)
		if err != nil || len(claimed) == 0 {
			t.Fatalf("claim: %v (%d)", err, len(claimed))
		}
		for _, task := range claimed {
			var shard int
			if err := f.pool.QueryRow(ctx, "SELECT shard FROM tasks WHERE id = $1", task.ID).Scan(&shard); err != nil {
				t.Fatal(err)
			}
			if shard == 9 {
				onLast = task
			}
		}
	}
	if _, err := f.pool.Exec(ctx, "UPDATE jobs SET concurrency = 8 WHERE id = $1", job.ID); err != nil { // 2 shards
		t.Fatal(err)
	}
	if err := f.queue.Fail(ctx, onLast, errors.New("timeout"), false); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Second)
	if _, err := f.queue.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	var stranded int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'pending' AND shard >= 2`,
		job.ID).Scan(&stranded); err != nil {
		t.Fatal(err)
	}
	if stranded != 0 {
		t.Fatalf("%d pending tasks left on removed shards", stranded)
	}
}

// TestJobsListsNewestFirstWithProgress: Jobs lists jobs newest first with
// their domains and exact progress, filtered by status and limited; Job
// reads the same.
func TestJobsListsNewestFirstWithProgress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	first := f.job(t, tasks.JobOptions{ID: "first", Domain: "a.example"}, 3)
	f.job(t, tasks.JobOptions{ID: "second", Domain: "b.example"}, 0)
	third := f.job(t, tasks.JobOptions{ID: "third", Domain: "a.example"}, 2)
	if err := f.queue.PauseJob(ctx, third.ID); err != nil {
		t.Fatal(err)
	}

	ids := func(jobs []tasks.Job) []string {
		var out []string
		for _, j := range jobs {
			out = append(out, j.ID)
		}
		return out
	}
	all, err := f.queue.Jobs(ctx, tasks.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"third", "second", "first"}, ids(all)); diff != "" {
		t.Errorf("Jobs (-want +got):\n%s", diff)
	}
	got, err := f.queue.Job(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, all[2]); diff != "" || got.Domain != "a.example" || got.Progress.Pending != 3 {
		t.Errorf("Jobs' first job differs from Job's (-Job +Jobs):\n%s\n%+v", diff, got)
	}
	if first.Domain != "a.example" {
		t.Errorf("CreateJob's job has domain %q, want a.example", first.Domain)
	}

	some, err := f.queue.Jobs(ctx, tasks.JobFilter{Statuses: []tasks.JobStatus{tasks.JobStatusPending, tasks.JobStatusPaused}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"third", "second"}, ids(some)); diff != "" {
		t.Errorf("Jobs pending or paused (-want +got):\n%s", diff)
	}
	one, err := f.queue.Jobs(ctx, tasks.JobFilter{Limit: 1})
	if err != nil || len(one) != 1 || one[0].ID != "third" {
		t.Errorf("Jobs limit 1 = %v, %v; want third", ids(one), err)
	}
	for _, bad := range []tasks.JobFilter{{Limit: -1}, {Statuses: []tasks.JobStatus{"sideways"}}} {
		if _, err := f.queue.Jobs(ctx, bad); !errors.Is(err, tasks.ErrInvalidArgument) {
			t.Errorf("Jobs(%+v) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}
