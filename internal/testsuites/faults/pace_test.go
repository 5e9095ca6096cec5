package faults_test

import (
	"context"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/tasks"
)

// TestSIGKILLedWorkerKeepsThePace: a worker process killed while it holds a
// paced domain's task (its handler has the result, the outcome is not
// written) leaves the task running until its lease expires; the rescued
// task is claimed again through the domain's pace like any other. Every
// claim of the domain, the killed one included, as the database recorded
// it (fault_runs.claimed_at, one row per run), is at least the interval
// after the one before.
func TestSIGKILLedWorkerKeepsThePace(t *testing.T) {
	t.Parallel()
	bin := build(t).faultworker
	f := setup(t)
	ctx := context.Background()
	if _, err := f.pool.Exec(ctx, runsSchema); err != nil {
		t.Fatal(err)
	}
	const interval = 300 * time.Millisecond
	job, err := f.queue.CreateJob(ctx, tasks.JobOptions{Domain: "paced.example", Concurrency: 8, MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	// The held page first: it has the highest priority.
	pages := []tasks.Page{{Path: "/held", Priority: 10}}
	for _, p := range []string{"/a", "/b", "/c", "/d", "/e"} {
		pages = append(pages, tasks.Page{Path: p, Priority: 1})
	}
	if _, err := f.queue.Enqueue(ctx, job.ID, pages); err != nil {
		t.Fatal(err)
	}
	if err := f.queue.SetDomainPace(ctx, "paced.example", interval); err != nil {
		t.Fatal(err)
	}

	victim := startProc(t, "victim", f.url, bin, "--id", "victim", "--workers", "4", "--lease", "2s",
		"--maintain", "-1s", "--hold", "/held")
	deadline := time.Now().Add(time.Minute)
	for {
		var held bool
		if err := f.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM fault_runs r JOIN tasks t ON t.id = r.task_id
			WHERE t.path = '/held' AND r.held_at IS NOT NULL)`).Scan(&held); err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if time.Now().After(deadline) || victim.exited() {
			t.Fatalf("the victim never held /held")
		}
		time.Sleep(10 * time.Millisecond)
	}
	victim.kill(t)

	rescuer := startProc(t, "rescuer", f.url, bin, "--id", "rescuer", "--workers", "4", "--lease", "2s",
		"--maintain", "100ms", "--poll", "50ms")
	for {
		n, err := completed(ctx, f.pool)
		if err != nil {
			t.Fatal(err)
		}
		if n == len(pages) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tasks completed within a minute", n, len(pages))
		}
		time.Sleep(20 * time.Millisecond)
	}
	rescuer.stop(t)

	rows, err := f.pool.Query(ctx, `SELECT t.path, r.process, r.attempt, r.claimed_at
		FROM fault_runs r JOIN tasks t ON t.id = r.task_id ORDER BY r.claimed_at`)
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		path, process string
		attempt       int
		claimed       time.Time
	}
	var runs []run
	for rows.Next() {
		var r run
		if err := rows.Scan(&r.path, &r.process, &r.attempt, &r.claimed); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var heldRuns []run
	for i, r := range runs {
		if r.path == "/held" {
			heldRuns = append(heldRuns, r)
		}
		if i > 0 {
			if gap := r.claimed.Sub(runs[i-1].claimed); gap < interval {
				t.Errorf("%s (attempt %d, %s) was claimed %v after %s, less than the interval %v",
					r.path, r.attempt, r.process, gap, runs[i-1].path, interval)
			}
		}
	}
	// (An attempt can be missing: a claim that missed its start budget is
	// handed back unrun, see tasks.Config.PaceStartBudget.)
	if len(heldRuns) != 2 || heldRuns[0].process != "victim" || heldRuns[1].process != "rescuer" ||
		heldRuns[1].attempt <= heldRuns[0].attempt {
		t.Errorf("runs of /held: %+v; want the victim's, then the rescuer's later attempt", heldRuns)
	}
}
