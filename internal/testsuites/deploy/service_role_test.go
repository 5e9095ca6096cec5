package deploy_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/tasks"
)

// TestQueueRunsAsServiceRole deploys to a Supabase-shaped database and runs
// a job through the queue as service_role, the role Supabase's service key
// acts as: not the tables' owner, so every statement, trigger and function
// the queue's hot path and maintenance use (job_tallies_release and
// job_drained among them) must be granted to it, and nothing fails for
// want of a privilege.
func TestQueueRunsAsServiceRole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, migrator := pgtest.SupabaseEmptyURL(t, pgtest.SupabaseAuthClaimSub)
	mustDeploy(t, migrator, nil)

	cfg, err := pgxpool.ParseConfig(migrator)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SET ROLE service_role")
		return err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var role string
	if err := pool.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil || role != "service_role" {
		t.Fatalf("setup: statements run as %q (%v), want service_role", role, err)
	}

	q := tasks.New(pool, tasks.Config{})
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: "example.com", Concurrency: 4, MaxPages: 3, FindLinks: true})
	if err != nil {
		t.Fatal(err)
	}
	var pages []tasks.Page
	for i := range 5 {
		pages = append(pages, tasks.Page{Path: fmt.Sprintf("/p%d", i), Priority: float64(5 - i)})
	}
	res, err := q.Enqueue(ctx, job.ID, pages)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pending != 3 || res.Skipped != 2 {
		t.Fatalf("enqueue: %+v, want 3 pending and 2 skipped (max_pages 3)", res)
	}
	claimed, err := q.Claim(ctx, "w", 10)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := make([]tasks.Outcome, len(claimed))
	for i, c := range claimed {
		// A link to a page the job has: dropped as a duplicate.
		outcomes[i] = tasks.Outcome{Task: c, Result: tasks.TaskResult{StatusCode: 200, Links: []tasks.Page{{Path: "/p0"}}}}
	}
	rep, err := q.Finish(ctx, outcomes)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 3 {
		t.Fatalf("finish: %+v, want 3 completed", rep)
	}
	if _, err := q.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := q.Job(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := tasks.Progress{Total: 5, Completed: 3, Skipped: 2, Percent: 100}
	if got.Status != tasks.JobStatusCompleted || !cmp.Equal(got.Progress, want) {
		t.Errorf("job after maintenance: %s %+v, want completed %+v", got.Status, got.Progress, want)
	}
}
