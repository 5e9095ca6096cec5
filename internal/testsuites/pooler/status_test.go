package pooler_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/tasks"
)

// TestJobStatusTransitionsThroughPooler walks a job through its statuses
// through PgBouncer. The transitions pass the job_status enum as a
// parameter and the allowed "from" statuses as a []string cast to text[];
// statuses come back as the enum. With Pooler, pgx describes each statement
// (unnamed) and sends parameters of types it does not know, such as the
// enum, in text format: the same encoding as with prepared statements on a
// direct connection. Cancelling runs two statements in one transaction.
func TestJobStatusTransitionsThroughPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, pgbouncertest.Options{PoolSize: 2})
	d := f.open(t, db.Options{Pooler: true})

	id := job(t, d, tasks.JobOptions{Domain: "example.com", Concurrency: 2}, 10)
	status := func() tasks.JobStatus {
		t.Helper()
		j, err := d.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var stored string
		if err := f.direct.QueryRow(ctx, "SELECT status::text FROM jobs WHERE id = $1", id).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if string(j.Status) != stored {
			t.Fatalf("GetJob through pgbouncer says %q, the row says %q", j.Status, stored)
		}
		return j.Status
	}
	step := func(name string, err, want error, wantStatus tasks.JobStatus) {
		t.Helper()
		if !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("%s: error %v, want %v", name, err, want)
		}
		if got := status(); got != wantStatus {
			t.Fatalf("after %s: status %s, want %s", name, got, wantStatus)
		}
	}

	if got := status(); got != tasks.JobStatusRunning {
		t.Fatalf("after enqueue: status %s, want running", got)
	}
	running, err := d.ClaimNextTask(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	step("PauseJob", d.PauseJob(ctx, id), nil, tasks.JobStatusPaused)
	if _, err := d.ClaimNextTask(ctx, "w1"); !errors.Is(err, db.ErrNoTasksAvailable) {
		t.Fatalf("claim from a paused job: error %v, want ErrNoTasksAvailable", err)
	}
	step("PauseJob again", d.PauseJob(ctx, id), db.ErrInvalidTransition, tasks.JobStatusPaused)
	step("ResumeJob", d.ResumeJob(ctx, id), nil, tasks.JobStatusRunning)
	step("ResumeJob again", d.ResumeJob(ctx, id), db.ErrInvalidTransition, tasks.JobStatusRunning)
	if _, err := d.ClaimNextTask(ctx, "w1"); err != nil {
		t.Fatalf("claim after resume: %v", err)
	}
	step("CancelJob", d.CancelJob(ctx, id), nil, tasks.JobStatusCancelled)
	step("CancelJob again", d.CancelJob(ctx, id), db.ErrInvalidTransition, tasks.JobStatusCancelled)
	_, err = d.EnqueuePages(ctx, id, pages(10, 12))
	step("EnqueuePages into a cancelled job", err, db.ErrInvalidTransition, tasks.JobStatusCancelled)
	if err := d.PauseJob(ctx, "no-such-job"); !errors.Is(err, db.ErrJobNotFound) {
		t.Fatalf("PauseJob of an unknown job: error %v, want ErrJobNotFound", err)
	}
	// A task running when the job was cancelled may still record its result.
	if err := d.CompleteTask(ctx, running, tasks.TaskResult{StatusCode: 200}); err != nil {
		t.Fatalf("complete a task of the cancelled job: %v", err)
	}
	if _, err := d.Queue().Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := d.GetJob(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// 10 tasks: 2 claimed (one completed, one still running), 8 skipped.
	want := tasks.Progress{Total: 10, Completed: 1, Skipped: 8, Running: 1, Percent: 90}
	if diff := cmp.Diff(want, j.Progress); diff != "" {
		t.Fatalf("progress of the cancelled job (-want +got):\n%s", diff)
	}

	// The enum as a parameter, and a []string as a job_status[] parameter,
	// outside the generated queries.
	var n int
	if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM jobs WHERE status = $1", tasks.JobStatusCancelled).Scan(&n); err != nil || n != 1 {
		t.Fatalf("jobs with status = $1 (enum parameter): %d, %v", n, err)
	}
	if err := d.Pool().QueryRow(ctx, "SELECT count(*) FROM jobs WHERE status = ANY($1)",
		[]string{"paused", "cancelled"}).Scan(&n); err != nil || n != 1 {
		t.Fatalf("jobs with status = ANY($1) ([]string as job_status[]): %d, %v", n, err)
	}
}
