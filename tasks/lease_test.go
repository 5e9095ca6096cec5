package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/tasks"
)

// taskRow reads one task's row as the database holds it.
func taskRow(t testing.TB, f fixture, id string) taskRecord {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT * FROM tasks WHERE id = $1", id)
	if err != nil {
		t.Fatal(err)
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[taskRecord])
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return row
}

// shardRunning is, per shard of the job in shard order, the tasks its
// counters say are running: job_shards.claims - job_tallies.releases.
func shardRunning(t testing.TB, f fixture, jobID string) []int64 {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `
		SELECT s.claims - r.releases
		FROM job_shards s
		JOIN job_tallies r ON r.job_id = s.job_id AND r.shard = s.shard
		WHERE s.job_id = $1
		ORDER BY s.shard`, jobID)
	if err != nil {
		t.Fatal(err)
	}
	running, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return running
}

// progress is the job's progress as the queue reports it.
func progress(t testing.TB, f fixture, jobID string) tasks.Progress {
	t.Helper()
	job, err := f.queue.Job(context.Background(), jobID)
	if err != nil {
		t.Fatalf("Job: %v", err)
	}
	return job.Progress
}

// rowProgress counts the job's task rows by status, the ground truth that
// the counters behind Job's progress must agree with.
func rowProgress(t testing.TB, f fixture, jobID string) tasks.Progress {
	t.Helper()
	var p tasks.Progress
	err := f.pool.QueryRow(context.Background(), `
		SELECT count(*),
		       count(*) FILTER (WHERE status = 'completed'),
		       count(*) FILTER (WHERE status = 'failed'),
		       count(*) FILTER (WHERE status = 'skipped'),
		       count(*) FILTER (WHERE status = 'running'),
		       count(*) FILTER (WHERE status = 'pending')
		FROM tasks WHERE job_id = $1`, jobID).
		Scan(&p.Total, &p.Completed, &p.Failed, &p.Skipped, &p.Running, &p.Pending)
	if err != nil {
		t.Fatal(err)
	}
	if p.Total > 0 {
		p.Percent = 100 * float64(p.Completed+p.Failed+p.Skipped) / float64(p.Total)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

// approxPercent: the queue's percentage is job_percent_done's real.
var approxPercent = cmpopts.EquateApprox(1e-6, 0)

func checkProgress(t testing.TB, f fixture, jobID string, want tasks.Progress) {
	t.Helper()
	if diff := cmp.Diff(want, progress(t, f, jobID), approxPercent); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, rowProgress(t, f, jobID), approxPercent); diff != "" {
		t.Errorf("task rows by status (-want +got):\n%s", diff)
	}
}

func checkShardRunning(t testing.TB, f fixture, jobID string, want []int64) {
	t.Helper()
	if diff := cmp.Diff(want, shardRunning(t, f, jobID)); diff != "" {
		t.Errorf("running per shard, claims - releases (-want +got):\n%s", diff)
	}
}

func claimOne(t testing.TB, f fixture, worker string) tasks.Task {
	t.Helper()
	task, err := f.queue.ClaimOne(context.Background(), worker)
	if err != nil {
		t.Fatalf("ClaimOne(%s): %v", worker, err)
	}
	return *task
}

func checkNothingClaimable(t testing.TB, f fixture) {
	t.Helper()
	if task, err := f.queue.ClaimOne(context.Background(), "probe"); !errors.Is(err, tasks.ErrNoTasksAvailable) {
		t.Fatalf("ClaimOne = %+v, %v; want ErrNoTasksAvailable", task, err)
	}
}

// ignoreClaimed leaves out what a claim stamps from the database's side.
var ignoreClaimed = cmpopts.IgnoreFields(tasks.Task{}, "PageID", "CreatedAt")

func TestExpiredLeaseIsRescuedAndClaimedAgain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// rescue runs the rescuer the way the case says.
		rescue func(context.Context, *tasks.Queue) ([]tasks.Rescued, error)
		// reclaimer claims the task the second time. The same worker makes
		// the attempt the only thing telling the two claims apart.
		reclaimer string
	}{
		{
			name:      "RescueExpired, another worker reclaims",
			rescue:    func(ctx context.Context, q *tasks.Queue) ([]tasks.Rescued, error) { return q.RescueExpired(ctx, 100) },
			reclaimer: "w2",
		},
		{
			name: "Maintain, the same worker reclaims",
			rescue: func(ctx context.Context, q *tasks.Queue) ([]tasks.Rescued, error) {
				rep, err := q.Maintain(ctx)
				return rep.Rescued, err
			},
			reclaimer: "w1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := setup(t, tasks.Config{Lease: time.Minute})
			// Concurrency 1: one shard of capacity 1, so the shard is full
			// while the first claim holds the task.
			job := f.job(t, tasks.JobOptions{Concurrency: 1}, 2)

			first := claimOne(t, f, "w1")
			checkShardRunning(t, f, job.ID, []int64{1})
			checkNothingClaimable(t, f)
			held := taskRow(t, f, first.ID)

			// Up to and including the expiry instant the lease holds.
			f.clock.Advance(time.Minute)
			if got, err := tc.rescue(ctx, f.queue); err != nil || len(got) != 0 {
				t.Fatalf("rescue at the expiry instant = %+v, %v; want nothing rescued", got, err)
			}
			f.clock.Advance(time.Second)
			got, err := tc.rescue(ctx, f.queue)
			if err != nil {
				t.Fatal(err)
			}
			wantRescued := []tasks.Rescued{{TaskID: first.ID, JobID: job.ID, WorkerID: "w1", Status: tasks.TaskStatusPending}}
			if diff := cmp.Diff(wantRescued, got); diff != "" {
				t.Fatalf("rescued (-want +got):\n%s", diff)
			}

			wantRow := held
			wantRow.Status = tasks.TaskStatusPending
			wantRow.RetryCount = 1
			wantRow.LeaseExpiresAt = nil
			wantRow.RunAfter = at(f.clock.Now())
			wantRow.Error = ptr("lease expired: worker w1 stopped renewing it")
			if diff := cmp.Diff(wantRow, taskRow(t, f, first.ID)); diff != "" {
				t.Fatalf("rescued task row (-want +got):\n%s", diff)
			}
			checkShardRunning(t, f, job.ID, []int64{0})
			checkProgress(t, f, job.ID, tasks.Progress{Total: 2, Pending: 2})

			second := claimOne(t, f, tc.reclaimer)
			wantSecond := first
			wantSecond.Attempt = 2
			wantSecond.RetryCount = 1
			wantSecond.WorkerID = tc.reclaimer
			wantSecond.StartedAt = f.clock.Now()
			wantSecond.LeaseExpiresAt = f.clock.Now().Add(time.Minute)
			if diff := cmp.Diff(wantSecond, second, ignoreClaimed); diff != "" {
				t.Fatalf("second claim (-want +got):\n%s", diff)
			}

			// Everything the first claim's worker may still send is refused
			// and writes nothing.
			before := snapshot(t, f)
			if err := f.queue.Complete(ctx, first, okResult()); !errors.Is(err, tasks.ErrLeaseLost) {
				t.Errorf("stale Complete = %v, want ErrLeaseLost", err)
			}
			if err := f.queue.Fail(ctx, first, errors.New("timeout"), false); !errors.Is(err, tasks.ErrLeaseLost) {
				t.Errorf("stale Fail = %v, want ErrLeaseLost", err)
			}
			if lost, err := f.queue.Release(ctx, []tasks.Task{first}); err != nil || !cmp.Equal(lost, []string{first.ID}) {
				t.Errorf("stale Release = %v, %v; want [%s] lost", lost, err, first.ID)
			}
			if ext, err := f.queue.ExtendLeases(ctx, []tasks.Task{first}); !errors.Is(err, tasks.ErrLeaseLost) || len(ext) != 0 {
				t.Errorf("stale ExtendLeases = %+v, %v; want none extended and ErrLeaseLost", ext, err)
			}
			if diff := cmp.Diff(before, snapshot(t, f)); diff != "" {
				t.Fatalf("stale calls changed the database (-before +after):\n%s", diff)
			}

			// The current holder's completion lands.
			if err := f.queue.Complete(ctx, second, okResult()); err != nil {
				t.Fatalf("Complete by the current holder: %v", err)
			}
			row := taskRow(t, f, first.ID)
			if row.Status != tasks.TaskStatusCompleted || row.Attempt != 2 || row.StatusCode == nil || *row.StatusCode != 200 || row.Error != nil {
				t.Fatalf("task after the holder's Complete: status %s, attempt %d, status code %v, error %v",
					row.Status, row.Attempt, row.StatusCode, row.Error)
			}
			checkShardRunning(t, f, job.ID, []int64{0})
			checkProgress(t, f, job.ID, tasks.Progress{Total: 2, Completed: 1, Pending: 1, Percent: 50})
		})
	}
}

func TestExtendLeasesKeepsTasksFromRescue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{Lease: time.Minute})
	job := f.job(t, tasks.JobOptions{Concurrency: 3}, 3)
	claimed, err := f.queue.Claim(ctx, "w1", 3)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("Claim = %d tasks, %v; want 3", len(claimed), err)
	}

	f.clock.Advance(50 * time.Second)
	extended, err := f.queue.ExtendLeases(ctx, claimed)
	if err != nil {
		t.Fatalf("ExtendLeases: %v", err)
	}
	want := append([]tasks.Task(nil), claimed...)
	for i := range want {
		want[i].LeaseExpiresAt = f.clock.Now().Add(time.Minute)
	}
	if diff := cmp.Diff(want, extended); diff != "" {
		t.Fatalf("extended (-want +got):\n%s", diff)
	}

	// Past the first leases, within the extended ones: nothing to rescue.
	f.clock.Advance(30 * time.Second)
	if rescued, err := f.queue.RescueExpired(ctx, 100); err != nil || len(rescued) != 0 {
		t.Fatalf("RescueExpired = %+v, %v; want nothing", rescued, err)
	}
	for _, task := range want {
		row := taskRow(t, f, task.ID)
		if row.Status != tasks.TaskStatusRunning || row.LeaseExpiresAt == nil || !row.LeaseExpiresAt.Equal(task.LeaseExpiresAt) {
			t.Fatalf("task %s after rescue: status %s, lease %v; want running until %v",
				task.ID, row.Status, row.LeaseExpiresAt, task.LeaseExpiresAt)
		}
	}
	checkShardRunning(t, f, job.ID, []int64{3})

	// Of three leases, one is held, one is not this worker's and one was
	// finished already: the held one is extended, the others reported.
	if err := f.queue.Complete(ctx, extended[2], okResult()); err != nil {
		t.Fatal(err)
	}
	notMine := extended[1]
	notMine.WorkerID = "w2"
	before1 := taskRow(t, f, extended[1].ID)
	before2 := taskRow(t, f, extended[2].ID)
	got, err := f.queue.ExtendLeases(ctx, []tasks.Task{extended[0], notMine, extended[2]})
	if !errors.Is(err, tasks.ErrLeaseLost) {
		t.Fatalf("ExtendLeases with leases not held: %v, want ErrLeaseLost", err)
	}
	wantHeld := extended[0]
	wantHeld.LeaseExpiresAt = f.clock.Now().Add(time.Minute)
	if diff := cmp.Diff([]tasks.Task{wantHeld}, got); diff != "" {
		t.Fatalf("extended (-want +got):\n%s", diff)
	}
	if row := taskRow(t, f, wantHeld.ID); row.LeaseExpiresAt == nil || !row.LeaseExpiresAt.Equal(wantHeld.LeaseExpiresAt) {
		t.Fatalf("held task's lease in the database: %v, want %v", row.LeaseExpiresAt, wantHeld.LeaseExpiresAt)
	}
	if diff := cmp.Diff(before1, taskRow(t, f, extended[1].ID)); diff != "" {
		t.Errorf("another worker's lease changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(before2, taskRow(t, f, extended[2].ID)); diff != "" {
		t.Errorf("a finished task changed (-before +after):\n%s", diff)
	}

	// Past the lease that was not extended again, not the one that was.
	f.clock.Advance(31 * time.Second)
	rescued, err := f.queue.RescueExpired(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	wantRescued := []tasks.Rescued{{TaskID: extended[1].ID, JobID: job.ID, WorkerID: "w1", Status: tasks.TaskStatusPending}}
	if diff := cmp.Diff(wantRescued, rescued); diff != "" {
		t.Fatalf("rescued (-want +got):\n%s", diff)
	}
	checkShardRunning(t, f, job.ID, []int64{1})
	checkProgress(t, f, job.ID, tasks.Progress{Total: 3, Completed: 1, Running: 1, Pending: 1, Percent: 100.0 / 3})
}

func TestFailRetriesWithBackoffUntilMaxRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{BackoffBase: 10 * time.Second, BackoffMax: 30 * time.Second})
	job := f.job(t, tasks.JobOptions{Concurrency: 1, MaxRetries: 4}, 1)

	// BackoffBase * 2^retries, capped at BackoffMax.
	delays := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 30 * time.Second}
	var last tasks.Task
	for i, delay := range delays {
		task := claimOne(t, f, "w1")
		if task.Attempt != int32(i+1) || task.RetryCount != int32(i) {
			t.Fatalf("claim %d: attempt %d, retry count %d", i+1, task.Attempt, task.RetryCount)
		}
		cause := fmt.Sprintf("HTTP 503 on try %d", i+1)
		held := taskRow(t, f, task.ID)
		if err := f.queue.Fail(ctx, task, errors.New(cause), false); err != nil {
			t.Fatalf("Fail %d: %v", i+1, err)
		}
		want := held
		want.Status = tasks.TaskStatusPending
		want.RetryCount = int32(i + 1)
		want.RunAfter = at(f.clock.Now().Add(delay))
		want.LeaseExpiresAt = nil
		want.Error = ptr(cause)
		if diff := cmp.Diff(want, taskRow(t, f, task.ID), cmpopts.IgnoreFields(taskRecord{}, "Headers")); diff != "" {
			t.Fatalf("task after failure %d (-want +got):\n%s", i+1, diff)
		}
		checkProgress(t, f, job.ID, tasks.Progress{Total: 1, Pending: 1})
		checkShardRunning(t, f, job.ID, []int64{0})

		// Not claimable until the clock reaches run_after.
		checkNothingClaimable(t, f)
		f.clock.Advance(delay - time.Second)
		checkNothingClaimable(t, f)
		f.clock.Advance(time.Second)
		last = task
	}

	task := claimOne(t, f, "w1")
	if task.ID != last.ID || task.Attempt != 5 || task.RetryCount != 4 {
		t.Fatalf("last claim: %+v; want attempt 5 with 4 retries", task)
	}
	held := taskRow(t, f, task.ID)
	if err := f.queue.Fail(ctx, task, errors.New("HTTP 503 on try 5"), false); err != nil {
		t.Fatal(err)
	}
	want := held
	want.Status = tasks.TaskStatusFailed
	want.CompletedAt = ptr(f.clock.Now())
	want.LeaseExpiresAt = nil
	want.Error = ptr("HTTP 503 on try 5")
	if diff := cmp.Diff(want, taskRow(t, f, task.ID), cmpopts.IgnoreFields(taskRecord{}, "Headers")); diff != "" {
		t.Fatalf("task after its last failure (-want +got):\n%s", diff)
	}
	wantProgress := tasks.Progress{Total: 1, Failed: 1, Percent: 100}
	checkProgress(t, f, job.ID, wantProgress)
	f.clock.Advance(time.Hour)
	checkNothingClaimable(t, f)

	// Rolled up into the job's row, still counted once.
	rep, err := f.queue.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{job.ID}, rep.Finished); diff != "" {
		t.Fatalf("finished jobs (-want +got):\n%s", diff)
	}
	checkProgress(t, f, job.ID, wantProgress)
	var failed, completed int
	if err := f.pool.QueryRow(ctx, "SELECT failed_tasks, completed_tasks FROM jobs WHERE id = $1", job.ID).
		Scan(&failed, &completed); err != nil {
		t.Fatal(err)
	}
	if failed != 1 || completed != 0 {
		t.Fatalf("jobs row after roll-up: failed %d, completed %d; want 1, 0", failed, completed)
	}
}

func TestFailWithoutRetriesFailsAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		spec      tasks.JobOptions
		permanent bool
	}{
		{name: "permanent failure", spec: tasks.JobOptions{Concurrency: 1, MaxRetries: 3}, permanent: true},
		{name: "job without retries", spec: tasks.JobOptions{Concurrency: 1, NoRetries: true}, permanent: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := setup(t, tasks.Config{})
			job := f.job(t, tc.spec, 1)
			task := claimOne(t, f, "w1")
			held := taskRow(t, f, task.ID)
			if err := f.queue.Fail(ctx, task, errors.New("HTTP 404"), tc.permanent); err != nil {
				t.Fatal(err)
			}
			want := held
			want.Status = tasks.TaskStatusFailed
			want.CompletedAt = ptr(f.clock.Now())
			want.LeaseExpiresAt = nil
			want.Error = ptr("HTTP 404")
			if diff := cmp.Diff(want, taskRow(t, f, task.ID), cmpopts.IgnoreFields(taskRecord{}, "Headers")); diff != "" {
				t.Fatalf("task (-want +got):\n%s", diff)
			}
			checkProgress(t, f, job.ID, tasks.Progress{Total: 1, Failed: 1, Percent: 100})
			checkShardRunning(t, f, job.ID, []int64{0})
			f.clock.Advance(time.Hour)
			checkNothingClaimable(t, f)
		})
	}
}

func TestRescueFailsTaskPastMaxRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{Lease: time.Minute})
	job := f.job(t, tasks.JobOptions{Concurrency: 1, MaxRetries: 1}, 1)

	first := claimOne(t, f, "w1")
	f.clock.Advance(time.Minute + time.Second)
	rescued, err := f.queue.RescueExpired(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]tasks.Rescued{{TaskID: first.ID, JobID: job.ID, WorkerID: "w1", Status: tasks.TaskStatusPending}}, rescued); diff != "" {
		t.Fatalf("first rescue (-want +got):\n%s", diff)
	}

	second := claimOne(t, f, "w2")
	if second.ID != first.ID || second.Attempt != 2 {
		t.Fatalf("second claim %+v, want task %s attempt 2", second, first.ID)
	}
	held := taskRow(t, f, second.ID)
	f.clock.Advance(time.Minute + time.Second)
	rep, err := f.queue.Maintain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := tasks.MaintenanceReport{
		Rescued:  []tasks.Rescued{{TaskID: first.ID, JobID: job.ID, WorkerID: "w2", Status: tasks.TaskStatusFailed}},
		Finished: []string{job.ID},
		RolledUp: 1,
	}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Fatalf("maintenance (-want +got):\n%s", diff)
	}
	wantRow := held
	wantRow.Status = tasks.TaskStatusFailed
	wantRow.CompletedAt = ptr(f.clock.Now())
	wantRow.RunAfter = at(f.clock.Now())
	wantRow.LeaseExpiresAt = nil
	wantRow.Error = ptr("lease expired: worker w2 stopped renewing it")
	// retry_count is left out: how the rescuer counts an attempt that was
	// not retried is not part of this behaviour.
	if diff := cmp.Diff(wantRow, taskRow(t, f, first.ID), cmpopts.IgnoreFields(taskRecord{}, "RetryCount")); diff != "" {
		t.Fatalf("task failed by rescue (-want +got):\n%s", diff)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 1, Failed: 1, Percent: 100})
	// The job finished and its shards were retired: nothing runs on them.
	checkShardRunning(t, f, job.ID, []int64{})
	if err := f.queue.Complete(ctx, second, okResult()); !errors.Is(err, tasks.ErrLeaseLost) {
		t.Fatalf("Complete after the task failed by rescue: %v, want ErrLeaseLost", err)
	}
}

func TestReleaseHandsTaskBackWithoutRetry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{BackoffBase: time.Hour})
	// No retries: a release that counted as a failure would fail the task.
	job := f.job(t, tasks.JobOptions{Concurrency: 1, NoRetries: true}, 1)

	first := claimOne(t, f, "w1")
	held := taskRow(t, f, first.ID)
	f.clock.Advance(10 * time.Second)
	lost, err := f.queue.Release(ctx, []tasks.Task{first})
	if err != nil || len(lost) != 0 {
		t.Fatalf("Release = %v, %v; want nothing lost", lost, err)
	}
	want := held
	want.Status = tasks.TaskStatusPending
	want.LeaseExpiresAt = nil
	want.RunAfter = at(f.clock.Now())
	if diff := cmp.Diff(want, taskRow(t, f, first.ID)); diff != "" {
		t.Fatalf("released task (-want +got):\n%s", diff)
	}
	checkShardRunning(t, f, job.ID, []int64{0})
	checkProgress(t, f, job.ID, tasks.Progress{Total: 1, Pending: 1})

	// Claimable again at once, with no retry counted.
	second := claimOne(t, f, "w2")
	if second.ID != first.ID || second.Attempt != 2 || second.RetryCount != 0 {
		t.Fatalf("claim after release: %+v; want task %s attempt 2, 0 retries", second, first.ID)
	}
	before := snapshot(t, f)
	if lost, err := f.queue.Release(ctx, []tasks.Task{first}); err != nil || !cmp.Equal(lost, []string{first.ID}) {
		t.Fatalf("Release of the earlier claim = %v, %v; want it lost", lost, err)
	}
	if diff := cmp.Diff(before, snapshot(t, f)); diff != "" {
		t.Fatalf("releasing a claim no longer held changed the database (-before +after):\n%s", diff)
	}
	if err := f.queue.Complete(ctx, second, okResult()); err != nil {
		t.Fatal(err)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 1, Completed: 1, Percent: 100})
}

// TestBackoffStaysCappedAfterManyRetries: a job may allow up to 1000
// retries, and the delay before each is capped at BackoffMax however many
// came before.
func TestBackoffStaysCappedAfterManyRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{BackoffBase: time.Second, BackoffMax: time.Minute})
	job := f.job(t, tasks.JobOptions{Concurrency: 1, MaxRetries: 70}, 1)
	for i := range 70 {
		task := claimOne(t, f, "w1")
		if err := f.queue.Fail(ctx, task, errors.New("HTTP 503"), false); err != nil {
			t.Fatalf("Fail after %d retries: %v", i, err)
		}
		delay := time.Minute
		if i < 6 {
			delay = min(time.Minute, time.Second<<i)
		}
		if got := taskRow(t, f, task.ID).RunAfter; !got.Time.Equal(f.clock.Now().Add(delay)) {
			t.Fatalf("after %d retries run_after = %v, want now + %s", i, got, delay)
		}
		f.clock.Advance(delay)
	}
	task := claimOne(t, f, "w1")
	if err := f.queue.Fail(ctx, task, errors.New("HTTP 503"), false); err != nil {
		t.Fatal(err)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 1, Failed: 1, Percent: 100})
}

// TestFinishWritesThroughAMomentaryLock: a claimer scanning for pending
// tasks can hold a running task's row locked for an instant. Finish waits
// that out and writes the outcome; only if the lock outlasts ctx does it
// hand the outcome back in FinishReport.Busy, with nothing written.
func TestFinishWritesThroughAMomentaryLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 2}, 2)
	first, second := claimOne(t, f, "w1"), claimOne(t, f, "w1")

	lock := func(id string) pgx.Tx {
		tx, err := f.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1 FROM tasks WHERE id = $1 FOR NO KEY UPDATE", id); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(ctx) })
		return tx
	}

	// Held until ctx ends: handed back, nothing written. (Should ctx end
	// during a statement rather than between two, as on a loaded machine,
	// the statement is cancelled instead: ctx's error, nothing written,
	// whether or not an earlier attempt had already found the row busy.)
	tx := lock(first.ID)
	before := snapshot(t, f)
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	rep, err := f.queue.Finish(sctx, []tasks.Outcome{{Task: first, Result: okResult()}})
	cancel()
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded) && rep.Completed == 0:
		t.Logf("ctx ended during a statement: %v", err)
	case err != nil || len(rep.Busy) != 1 || rep.Busy[0].Task.ID != first.ID || rep.Completed != 0:
		t.Fatalf("Finish while the row stays locked = %+v, %v; want the outcome back in Busy", rep, err)
	}
	if diff := cmp.Diff(before, snapshot(t, f)); diff != "" {
		t.Fatalf("a busy outcome changed the database (-before +after):\n%s", diff)
	}
	if err := f.queue.Complete(sctx, first, okResult()); err == nil {
		t.Fatal("Complete with an ended context while the row is locked succeeded")
	}

	// Released while Finish waits: both outcomes written in one call.
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(20 * time.Millisecond)
		_ = tx.Rollback(ctx)
	}()
	rep, err = f.queue.Finish(ctx, []tasks.Outcome{{Task: first, Result: okResult()}, {Task: second, Result: okResult()}})
	<-released
	if err != nil || rep.Completed != 2 || len(rep.Busy) != 0 || len(rep.Lost) != 0 || !cmp.Equal(rep.Jobs, []string{job.ID}) {
		t.Fatalf("Finish through a lock released meanwhile = %+v, %v; want 2 completed", rep, err)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 2, Completed: 2, Percent: 100})
}

// TestRollUpPassesOverLockedTallies: the roll-up leaves a tally that a
// finishing worker holds locked for a later pass instead of waiting for it
// (maintenance never waits on workers), and progress is exact meanwhile.
func TestRollUpPassesOverLockedTallies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 8}, 8) // two shards of four
	var outcomes []tasks.Outcome
	for range 8 {
		outcomes = append(outcomes, tasks.Outcome{Task: claimOne(t, f, "w"), Result: okResult()})
	}
	if rep, err := f.queue.Finish(ctx, outcomes); err != nil || rep.Completed != 8 {
		t.Fatalf("Finish: %+v, %v", rep, err)
	}

	// A finisher in the middle of its statement holds shard 1's tally.
	holder, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx) //nolint:errcheck // released below
	if _, err := holder.Exec(ctx, "SELECT 1 FROM job_tallies WHERE job_id = $1 AND shard = 1 FOR NO KEY UPDATE", job.ID); err != nil {
		t.Fatal(err)
	}
	// Waiting for the holder, Maintain would never return (the holder lets
	// go only afterwards): the deadline turns that into a failure.
	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := f.queue.Maintain(mctx); err != nil {
		t.Fatalf("Maintain with a tally locked: %v", err)
	}
	counts := func() (rolled, left int) {
		t.Helper()
		err := f.pool.QueryRow(ctx, `
			SELECT j.completed_tasks, (SELECT completed FROM job_tallies WHERE job_id = j.id AND shard = 1)
			FROM jobs j WHERE j.id = $1`, job.ID).Scan(&rolled, &left)
		if err != nil {
			t.Fatal(err)
		}
		return rolled, left
	}
	if rolled, left := counts(); rolled != 4 || left != 4 {
		t.Errorf("with shard 1's tally locked: %d rolled up, %d left in it; want 4 and 4", rolled, left)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 8, Completed: 8, Percent: 100})

	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.queue.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	var completed int
	if err := f.pool.QueryRow(ctx, "SELECT completed_tasks FROM jobs WHERE id = $1", job.ID).Scan(&completed); err != nil {
		t.Fatal(err)
	}
	if completed != 8 {
		t.Errorf("after the next pass: %d rolled up, want 8", completed)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 8, Completed: 8, Percent: 100})
}
