package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/tasks"
)

// queued is what a test checks of a task row after enqueueing.
type queued struct {
	Path     string
	Priority float64
	Status   tasks.TaskStatus
	Shard    int16
}

// queuedTasks lists a job's tasks by path.
func queuedTasks(t testing.TB, f fixture, jobID string) []queued {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `
		SELECT path, priority_score AS priority, status, shard
		FROM tasks WHERE job_id = $1 ORDER BY path`, jobID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[queued])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func enqueue(t testing.TB, f fixture, jobID string, pages ...tasks.Page) tasks.EnqueueResult {
	t.Helper()
	res, err := f.queue.Enqueue(context.Background(), jobID, pages)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return res
}

func checkEnqueued(t testing.TB, got, want tasks.EnqueueResult) {
	t.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("enqueue result (-want +got):\n%s", diff)
	}
}

func TestEnqueueDropsDuplicates(t *testing.T) {
	t.Parallel()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 1}, 0)

	// Within a batch the first occurrence wins.
	res := enqueue(t, f, job.ID, tasks.Page{Path: "/a", Priority: 0.9}, tasks.Page{Path: "/b", Priority: 0.5},
		tasks.Page{Path: "/a", Priority: 0.1}, tasks.Page{Path: "/b", Priority: 0.2})
	checkEnqueued(t, res, tasks.EnqueueResult{Pending: 2, Duplicates: 2})
	// Across batches the task already in the job is kept as it is.
	res = enqueue(t, f, job.ID, tasks.Page{Path: "/b", Priority: 0.7}, tasks.Page{Path: "/c", Priority: 0.3})
	checkEnqueued(t, res, tasks.EnqueueResult{Pending: 1, Duplicates: 1})
	res = enqueue(t, f, job.ID, tasks.Page{Path: "/a"}, tasks.Page{Path: "/c"})
	checkEnqueued(t, res, tasks.EnqueueResult{Duplicates: 2})

	want := []queued{
		{Path: "/a", Priority: 0.9, Status: tasks.TaskStatusPending},
		{Path: "/b", Priority: 0.5, Status: tasks.TaskStatusPending},
		{Path: "/c", Priority: 0.3, Status: tasks.TaskStatusPending},
	}
	if diff := cmp.Diff(want, queuedTasks(t, f, job.ID)); diff != "" {
		t.Fatalf("tasks (-want +got):\n%s", diff)
	}
	if n := len(snapshot(t, f).Pages); n != 3 {
		t.Fatalf("%d pages rows, want 3", n)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 3, Pending: 3})
}

func TestEnqueueHonoursMaxPagesAcrossBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 5, MaxPages: 5}, 0)

	res := enqueue(t, f, job.ID, tasks.Page{Path: "/a1", Priority: 0.6}, tasks.Page{Path: "/a2", Priority: 0.5},
		tasks.Page{Path: "/a3", Priority: 0.4})
	checkEnqueued(t, res, tasks.EnqueueResult{Pending: 3})
	// Two places left: the batch's two best pages take them.
	res = enqueue(t, f, job.ID, tasks.Page{Path: "/b1", Priority: 0.1}, tasks.Page{Path: "/b2", Priority: 0.9},
		tasks.Page{Path: "/b3", Priority: 0.5}, tasks.Page{Path: "/b4", Priority: 0.7})
	checkEnqueued(t, res, tasks.EnqueueResult{Pending: 2, Skipped: 2})
	// Full: new pages are skipped, pages already in the job (skipped or
	// not) are duplicates.
	res = enqueue(t, f, job.ID, tasks.Page{Path: "/c1", Priority: 1}, tasks.Page{Path: "/b1", Priority: 1},
		tasks.Page{Path: "/a1", Priority: 1}, tasks.Page{Path: "/c2"})
	checkEnqueued(t, res, tasks.EnqueueResult{Skipped: 2, Duplicates: 2})

	want := []queued{
		{Path: "/a1", Priority: 0.6, Status: tasks.TaskStatusPending},
		{Path: "/a2", Priority: 0.5, Status: tasks.TaskStatusPending},
		{Path: "/a3", Priority: 0.4, Status: tasks.TaskStatusPending},
		{Path: "/b1", Priority: 0.1, Status: tasks.TaskStatusSkipped},
		{Path: "/b2", Priority: 0.9, Status: tasks.TaskStatusPending},
		{Path: "/b3", Priority: 0.5, Status: tasks.TaskStatusSkipped},
		{Path: "/b4", Priority: 0.7, Status: tasks.TaskStatusPending},
		{Path: "/c1", Priority: 1, Status: tasks.TaskStatusSkipped},
		{Path: "/c2", Priority: 0, Status: tasks.TaskStatusSkipped},
	}
	if diff := cmp.Diff(want, queuedTasks(t, f, job.ID)); diff != "" {
		t.Fatalf("tasks (-want +got):\n%s", diff)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 9, Skipped: 4, Pending: 5, Percent: 400.0 / 9})

	// Exactly the five admitted pages run.
	claimed, err := f.queue.Claim(ctx, "w1", 10)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, task := range claimed {
		paths = append(paths, task.Path)
	}
	if diff := cmp.Diff([]string{"/b2", "/b4", "/a1", "/a2", "/a3"}, paths); diff != "" {
		t.Fatalf("claimed paths (-want +got):\n%s", diff)
	}
}

func TestEnqueueSharesPagesBetweenJobsOfADomain(t *testing.T) {
	t.Parallel()
	f := setup(t, tasks.Config{})
	first := f.job(t, tasks.JobOptions{Domain: "shared.example"}, 0)
	second := f.job(t, tasks.JobOptions{Domain: "shared.example"}, 0)
	other := f.job(t, tasks.JobOptions{Domain: "other.example"}, 0)
	checkEnqueued(t, enqueue(t, f, first.ID, tasks.Page{Path: "/x"}, tasks.Page{Path: "/y"}), tasks.EnqueueResult{Pending: 2})
	checkEnqueued(t, enqueue(t, f, second.ID, tasks.Page{Path: "/y"}, tasks.Page{Path: "/x"}), tasks.EnqueueResult{Pending: 2})
	checkEnqueued(t, enqueue(t, f, other.ID, tasks.Page{Path: "/x"}), tasks.EnqueueResult{Pending: 1})

	type page struct{ Domain, Path string }
	rows, err := f.pool.Query(context.Background(), `
		SELECT d.name AS domain, p.path FROM pages p JOIN domains d ON d.id = p.domain_id ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[page])
	if err != nil {
		t.Fatal(err)
	}
	want := []page{{"other.example", "/x"}, {"shared.example", "/x"}, {"shared.example", "/y"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("pages (-want +got):\n%s", diff)
	}

	// Both jobs' tasks for a path point at the one page of their domain.
	type pageTasks struct {
		Path  string
		Pages int
		Jobs  int
	}
	rows, err = f.pool.Query(context.Background(), `
		SELECT t.path, count(DISTINCT t.page_id)::int AS pages, count(DISTINCT t.job_id)::int AS jobs
		FROM tasks t JOIN pages p ON p.id = t.page_id AND p.path = t.path
		JOIN jobs j ON j.id = t.job_id AND j.domain_id = p.domain_id
		WHERE t.job_id IN ($1, $2) GROUP BY t.path ORDER BY t.path`, first.ID, second.ID)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := pgx.CollectRows(rows, pgx.RowToStructByName[pageTasks])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]pageTasks{{"/x", 1, 2}, {"/y", 1, 2}}, shared); diff != "" {
		t.Fatalf("tasks per page of the shared domain (-want +got):\n%s", diff)
	}
}

func TestEnqueueStartsPendingJobAndLeavesPausedJobPaused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})

	pending := f.job(t, tasks.JobOptions{Domain: "pending.example"}, 0)
	if pending.Status != tasks.JobStatusPending || pending.StartedAt != nil {
		t.Fatalf("new job: status %s, started %v; want pending, not started", pending.Status, pending.StartedAt)
	}
	checkEnqueued(t, enqueue(t, f, pending.ID, pages(2)...), tasks.EnqueueResult{Pending: 2})
	started, err := f.queue.Job(ctx, pending.ID)
	if err != nil {
		t.Fatal(err)
	}
	if started.Status != tasks.JobStatusRunning || started.StartedAt == nil {
		t.Fatalf("job after enqueue: status %s, started %v; want running, started", started.Status, started.StartedAt)
	}
	if task := claimOne(t, f, "w1"); task.JobID != pending.ID {
		t.Fatalf("claimed a task of %s, want %s", task.JobID, pending.ID)
	}

	paused := f.job(t, tasks.JobOptions{Domain: "paused.example"}, 1)
	if err := f.queue.PauseJob(ctx, paused.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.queue.PauseJob(ctx, pending.ID); err != nil {
		t.Fatal(err)
	}
	checkEnqueued(t, enqueue(t, f, paused.ID, tasks.Page{Path: "/later"}), tasks.EnqueueResult{Pending: 1})
	got, err := f.queue.Job(ctx, paused.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != tasks.JobStatusPaused {
		t.Fatalf("paused job after enqueue: %s, want paused", got.Status)
	}
	checkProgress(t, f, paused.ID, tasks.Progress{Total: 2, Pending: 2})
	checkNothingClaimable(t, f)
	if err := f.queue.ResumeJob(ctx, paused.ID); err != nil {
		t.Fatal(err)
	}
	if task := claimOne(t, f, "w1"); task.JobID != paused.ID {
		t.Fatalf("claimed a task of %s after resume, want %s", task.JobID, paused.ID)
	}
}

func TestJobShardsSplitConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	for _, concurrency := range []int{1, 3, 4, 7, 8, 13, 127, 128, 129, 1000} {
		job := f.job(t, tasks.JobOptions{Domain: fmt.Sprintf("c%d.example", concurrency), Concurrency: concurrency}, 0)
		// job_shard_count: least(32, concurrency/4), at least 1; the
		// capacity is split evenly, the first shards taking the remainder.
		shards := max(1, min(32, concurrency/4))
		want := make([]int32, shards)
		for i := range want {
			want[i] = int32(concurrency / shards)
			if i < concurrency%shards {
				want[i]++
			}
		}
		rows, err := f.pool.Query(ctx, "SELECT capacity FROM job_shards WHERE job_id = $1 ORDER BY shard", job.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("concurrency %d: shard capacities (-want +got):\n%s", concurrency, diff)
		}
	}
}

func TestEnqueueDealsTasksToShardsRoundRobin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	// Concurrency 12: three shards of capacity 4.
	job := f.job(t, tasks.JobOptions{Concurrency: 12}, 0)

	// In priority order (ties in batch order) a batch's tasks go to
	// consecutive shards, from wherever the admission slot it used left off.
	batches := [][]tasks.Page{
		{{Path: "/a", Priority: 0.2}, {Path: "/b", Priority: 0.8}, {Path: "/c", Priority: 0.5},
			{Path: "/d", Priority: 0.9}, {Path: "/e", Priority: 0.1}},
		{{Path: "/f", Priority: 0.3}, {Path: "/g", Priority: 0.6}, {Path: "/h", Priority: 0.6},
			{Path: "/i", Priority: 0}},
	}
	inPriorityOrder := [][]string{{"/d", "/b", "/c", "/a", "/e"}, {"/g", "/h", "/f", "/i"}}
	for _, b := range batches {
		enqueue(t, f, job.ID, b...)
	}
	shardOf := map[string]int16{}
	for _, q := range queuedTasks(t, f, job.ID) {
		shardOf[q.Path] = q.Shard
	}
	for _, paths := range inPriorityOrder {
		first := shardOf[paths[0]]
		var want, got []int16
		for i, p := range paths {
			want = append(want, (first+int16(i))%3)
			got = append(got, shardOf[p])
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("shards of %v (-want +got):\n%s", paths, diff)
		}
	}

	// A claim takes the best tasks of one shard, so every claim gets a fair
	// share of the best tasks.
	claimed, err := f.queue.Claim(ctx, "w1", 12)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, task := range claimed {
		paths = append(paths, task.Path)
	}
	var wantPaths []string
	for _, q := range queuedTasks(t, f, job.ID) {
		if q.Shard == shardOf[paths[0]] {
			wantPaths = append(wantPaths, q.Path)
		}
	}
	priority := map[string]float64{}
	for _, b := range batches {
		for _, p := range b {
			priority[p.Path] = p.Priority
		}
	}
	// Best first; ties (none here) in path order.
	sort.SliceStable(wantPaths, func(i, j int) bool { return priority[wantPaths[i]] > priority[wantPaths[j]] })
	if diff := cmp.Diff(wantPaths, paths); diff != "" {
		t.Fatalf("one claim's paths (-want +got):\n%s", diff)
	}
}

// TestConcurrentEnqueueNeverAdmitsMoreThanMaxPages has 32 enqueuers, each on
// a connection of its own so that the database sees them at once, send five
// batches of six pages into one job: pages of their own, pages overlapping
// their neighbours', or the same 30 pages each in its own order; with
// max_pages 50 and with no cap. No call fails: none met a deadlock
// (ErrConflict) or waited out the admission slots (ErrUnavailable). Exactly
// min(max_pages, distinct pages) tasks are admitted, all of them without a
// cap; every distinct page sent is one task of the job, pending or (past
// max_pages) skipped, and one page row of its domain, and nothing else is;
// the calls' results add up to the rows, every repeat a duplicate; progress
// is exact and the slots' quota left is max_pages minus the admitted.
func TestConcurrentEnqueueNeverAdmitsMoreThanMaxPages(t *testing.T) {
	t.Parallel()
	const (
		enqueuers = 32
		batches   = 5
		batchSize = 6
		perSender = batches * batchSize
	)
	shapes := []struct {
		name string
		// path of enqueuer g's i-th page.
		path func(g, i int) string
		// distinct pages over all enqueuers.
		distinct int
	}{
		{
			name:     "distinct pages",
			path:     func(g, i int) string { return fmt.Sprintf("/g%02d/%02d", g, i) },
			distinct: enqueuers * perSender,
		},
		{
			// Enqueuer g sends pages g*10 .. g*10+29: neighbours share 20.
			name:     "overlapping pages",
			path:     func(g, i int) string { return fmt.Sprintf("/p%03d", g*10+i) },
			distinct: (enqueuers-1)*10 + perSender,
		},
		{
			// 7 is prime to 30: each enqueuer sends all 30 pages, starting
			// and so batching them differently.
			name:     "the same pages in every order",
			path:     func(g, i int) string { return fmt.Sprintf("/s%02d", (7*i+g)%perSender) },
			distinct: perSender,
		},
	}
	for _, maxPages := range []int{50, 0} {
		for _, shape := range shapes {
			// One after another: each holds 34 connections of the shared
			// server.
			t.Run(fmt.Sprintf("%s, max_pages %d", shape.name, maxPages), func(t *testing.T) {
				ctx := context.Background()
				f := setupConns(t, tasks.Config{}, enqueuers+2)
				job := f.job(t, tasks.JobOptions{Concurrency: 8, MaxPages: maxPages}, 0)
				warmUp(t, f, enqueuers)

				var (
					wg      sync.WaitGroup
					mu      sync.Mutex
					sum     tasks.EnqueueResult
					errs    []error
					startCh = make(chan struct{})
				)
				for g := range enqueuers {
					wg.Go(func() {
						<-startCh
						for b := range batches {
							batch := make([]tasks.Page, batchSize)
							for k := range batch {
								i := b*batchSize + k
								batch[k] = tasks.Page{Path: shape.path(g, i), Priority: float64((g*7+i*13)%10) / 10}
							}
							res, err := f.queue.Enqueue(ctx, job.ID, batch)
							mu.Lock()
							if err != nil {
								errs = append(errs, err)
							}
							sum.Pending += res.Pending
							sum.Skipped += res.Skipped
							sum.Duplicates += res.Duplicates
							mu.Unlock()
						}
					})
				}
				close(startCh)
				wg.Wait()
				for _, err := range errs {
					if errors.Is(err, tasks.ErrConflict) {
						t.Errorf("deadlock: %v", err)
					} else {
						t.Error(err)
					}
				}
				if len(errs) > 0 {
					t.FailNow()
				}

				admitted := shape.distinct
				if maxPages > 0 {
					admitted = min(maxPages, shape.distinct)
				}
				rows := rowProgress(t, f, job.ID)
				if rows.Pending != admitted {
					t.Errorf("%d tasks admitted of %d distinct pages with max_pages %d, want %d",
						rows.Pending, shape.distinct, maxPages, admitted)
				}
				// Nothing lost, nothing twice: the job's tasks are the
				// distinct pages sent, each once, and so are the domain's
				// pages.
				offered := map[string]bool{}
				for g := range enqueuers {
					for i := range perSender {
						offered[shape.path(g, i)] = true
					}
				}
				want := slices.Sorted(maps.Keys(offered))
				var paths []string
				for _, q := range queuedTasks(t, f, job.ID) {
					paths = append(paths, q.Path)
				}
				if diff := cmp.Diff(want, paths); diff != "" {
					t.Errorf("the job's tasks (-want +got):\n%s", diff)
				}
				var pagePaths []string
				for _, p := range snapshot(t, f).Pages {
					pagePaths = append(pagePaths, p.Path)
				}
				slices.Sort(pagePaths)
				if diff := cmp.Diff(want, pagePaths); diff != "" {
					t.Errorf("the domain's pages (-want +got):\n%s", diff)
				}
				// Every page sent is accounted for once, and the results
				// add up to the rows.
				wantSum := tasks.EnqueueResult{
					Pending:    rows.Pending,
					Skipped:    rows.Skipped,
					Duplicates: enqueuers*perSender - shape.distinct,
				}
				if diff := cmp.Diff(wantSum, sum); diff != "" {
					t.Errorf("sum of the enqueue results (-want +got):\n%s", diff)
				}
				checkProgress(t, f, job.ID, rows)
				var quota *int64
				if err := f.pool.QueryRow(ctx, "SELECT sum(quota) FROM job_admissions WHERE job_id = $1", job.ID).Scan(&quota); err != nil {
					t.Fatal(err)
				}
				switch {
				case maxPages == 0 && quota != nil:
					t.Errorf("a job without max_pages has a quota of %d", *quota)
				case maxPages > 0 && (quota == nil || *quota != int64(maxPages-admitted)):
					t.Errorf("quota left %v, want %d", quota, maxPages-admitted)
				}
			})
		}
	}
}

// warmUp opens n connections of the fixture's pool, so that n goroutines
// starting at once each find one and none waits for a connection to open.
func warmUp(t testing.TB, f fixture, n int) {
	t.Helper()
	conns := make([]*pgxpool.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { conns[i], errs[i] = f.pool.Acquire(context.Background()) })
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Release()
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestCancelJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 3}, 7)
	claimed, err := f.queue.Claim(ctx, "w1", 3)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("Claim = %d tasks, %v; want 3", len(claimed), err)
	}

	if err := f.queue.CancelJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	cancelled, err := f.queue.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cancelled.Status != tasks.JobStatusCancelled || cancelled.CompletedAt == nil {
		t.Fatalf("job after cancel: status %s, completed %v", cancelled.Status, cancelled.CompletedAt)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 7, Skipped: 4, Running: 3, Percent: 400.0 / 7})
	checkNothingClaimable(t, f)

	// The running tasks still report: a success lands, a failure is final
	// (a cancelled job retries nothing), a hand-back is swept into skipped.
	if err := f.queue.Complete(ctx, claimed[0], okResult()); err != nil {
		t.Fatalf("Complete in a cancelled job: %v", err)
	}
	if err := f.queue.Fail(ctx, claimed[1], errors.New("HTTP 500"), false); err != nil {
		t.Fatalf("Fail in a cancelled job: %v", err)
	}
	if lost, err := f.queue.Release(ctx, claimed[2:]); err != nil || len(lost) != 0 {
		t.Fatalf("Release in a cancelled job = %v, %v", lost, err)
	}
	if _, err := f.queue.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 7, Completed: 1, Failed: 1, Skipped: 5, Percent: 100})
	checkNothingClaimable(t, f)

	after, err := f.queue.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != tasks.JobStatusCancelled {
		t.Errorf("job after maintenance: %s, want cancelled", after.Status)
	}
	s := snapshot(t, f)
	if len(s.Shards) != 0 || len(s.Tallies) != 0 {
		t.Errorf("the cancelled job kept its shards: %+v, %+v", s.Shards, s.Tallies)
	}
	type counters struct{ Total, Completed, Failed, Skipped int32 }
	if diff := cmp.Diff(counters{7, 1, 1, 5}, counters{
		s.Jobs[0].TotalTasks, s.Jobs[0].CompletedTasks, s.Jobs[0].FailedTasks, s.Jobs[0].SkippedTasks,
	}); diff != "" {
		t.Errorf("jobs row counters (-want +got):\n%s", diff)
	}
}

func TestCancelJobShardsRetiredOnlyOnceNothingRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 2}, 3)
	task := claimOne(t, f, "w1")
	if err := f.queue.CancelJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.queue.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	checkShardRunning(t, f, job.ID, []int64{1})
	if err := f.queue.Complete(ctx, task, okResult()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.queue.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	checkShardRunning(t, f, job.ID, []int64{})
	checkProgress(t, f, job.ID, tasks.Progress{Total: 3, Completed: 1, Skipped: 2, Percent: 100})
}

// waitForLockWaiters returns once n sessions of the test's database wait for
// a lock: a condition to wait for, not a timing.
func waitForLockWaiters(t testing.TB, f fixture, n int) {
	t.Helper()
	for range 12000 {
		var waiting int
		if err := f.pool.QueryRow(context.Background(), `
			SELECT count(*) FROM pg_catalog.pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("fewer than %d sessions ever waited for a lock", n)
}

// TestEnqueueRacingDuplicateDoesNotSkipAdmissiblePages: two batches of one
// job wait for each other on the job row; the second repeats a page of the
// first. The repeated page is a duplicate, and the job's remaining room
// must still admit the second batch's other pages.
func TestEnqueueRacingDuplicateDoesNotSkipAdmissiblePages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setupConns(t, tasks.Config{}, 6)
	// The pages exist already (another job of the domain), so neither batch
	// waits on the other's page inserts, only on the job row.
	earlier := f.job(t, tasks.JobOptions{Domain: "race.example"}, 0)
	enqueue(t, f, earlier.ID, tasks.Page{Path: "/x"}, tasks.Page{Path: "/y"}, tasks.Page{Path: "/z"})
	job := f.job(t, tasks.JobOptions{Domain: "race.example", MaxPages: 3}, 0)

	lock, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.ID); err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res tasks.EnqueueResult
		err error
	}
	first, second := make(chan outcome, 1), make(chan outcome, 1)
	go func() {
		res, err := f.queue.Enqueue(ctx, job.ID, []tasks.Page{{Path: "/x", Priority: 1}})
		first <- outcome{res, err}
	}()
	waitForLockWaiters(t, f, 1)
	go func() {
		res, err := f.queue.Enqueue(ctx, job.ID, []tasks.Page{{Path: "/x", Priority: 1}, {Path: "/y", Priority: 0.5}, {Path: "/z", Priority: 0.2}})
		second <- outcome{res, err}
	}()
	waitForLockWaiters(t, f, 2)
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	o1, o2 := <-first, <-second
	if o1.err != nil || o2.err != nil {
		t.Fatalf("Enqueue: %v, %v", o1.err, o2.err)
	}
	want := []queued{
		{Path: "/x", Priority: 1, Status: tasks.TaskStatusPending},
		{Path: "/y", Priority: 0.5, Status: tasks.TaskStatusPending},
		{Path: "/z", Priority: 0.2, Status: tasks.TaskStatusPending},
	}
	if diff := cmp.Diff(want, queuedTasks(t, f, job.ID), cmpopts.IgnoreFields(queued{}, "Shard")); diff != "" {
		t.Errorf("tasks of a job with max_pages 3 and 3 distinct pages (-want +got):\n%s", diff)
	}
	// Whichever batch went first, the two add up to the three pages and one
	// duplicate.
	sum := tasks.EnqueueResult{
		Pending:    o1.res.Pending + o2.res.Pending,
		Skipped:    o1.res.Skipped + o2.res.Skipped,
		Duplicates: o1.res.Duplicates + o2.res.Duplicates,
	}
	if diff := cmp.Diff(tasks.EnqueueResult{Pending: 3, Duplicates: 1}, sum); diff != "" {
		t.Errorf("sum of the enqueue results (-want +got):\n%s", diff)
	}
}

// An Enqueue outside a transaction that the server picks as a deadlock's
// victim sends its round again: its caller sees the pages placed, not
// ErrConflict. The deadlock: another transaction holds its insert of /b
// while Enqueue, having inserted /a, waits for it, then inserts /a itself.
// Enqueue waited first, so its backend's deadlock check (deadlock_timeout
// after) finds the cycle and aborts it.
func TestEnqueueSendsADeadlockedRoundAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 4}, 0)
	_, err := f.pool.Exec(ctx, `INSERT INTO pages (domain_id, path)
		SELECT domain_id, p FROM jobs, unnest('{/a,/b}'::text[]) p WHERE id = $1`, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx) //nolint:errcheck // committed below
	insert := `INSERT INTO tasks (job_id, page_id, path)
		SELECT $1, p.id, p.path FROM jobs j JOIN pages p ON p.domain_id = j.domain_id WHERE j.id = $1 AND p.path = $2`
	if _, err := other.Exec(ctx, insert, job.ID, "/b"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var res tasks.EnqueueResult
	go func() {
		var err error
		res, err = f.queue.Enqueue(ctx, job.ID, []tasks.Page{{Path: "/a"}, {Path: "/b"}})
		done <- err
	}()
	// Enqueue waits for /b; then the other transaction inserts /a.
	for waiting := false; !waiting; {
		if err := f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%TaskEnqueue%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := other.Exec(ctx, insert, job.ID, "/a"); err != nil {
		t.Fatalf("the other transaction's insert of /a: %v (the deadlock's victim should have been Enqueue)", err)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	checkEnqueued(t, res, tasks.EnqueueResult{Duplicates: 2})
}
