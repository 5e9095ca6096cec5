package tasks_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/internal/tasks"
)

// TestFinishWritesLinksWithTheOutcome: a completed task's links become tasks
// of its job; links that are not a storable path are dropped and counted,
// and the outcome is written all the same; a failed task's links are not
// enqueued; links into a cancelled job are refused without failing Finish.
func TestFinishWritesLinksWithTheOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobSpec{Concurrency: 4, FindLinks: true}, 2)
	claimed, err := f.queue.Claim(ctx, "w", 2)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("Claim = %d, %v", len(claimed), err)
	}
	ok := okResult()
	ok.Links = []tasks.Page{
		{Path: "/new", Priority: 0.5},
		{Path: "/café", Priority: 0.5},
		{Path: "/new", Priority: 0.4},                          // repeated
		{Path: "/p00000", Priority: 1},                         // in the job already
		{Path: ""},                                             // empty
		{Path: "https://other.example/"},                       // not a path on the job's domain
		{Path: "/nul\x00"},                                     // NUL
		{Path: "/\xff"},                                        // not UTF-8
		{Path: "/" + strings.Repeat("x", tasks.MaxPathLength)}, // too long
	}
	failed := tasks.Result{Err: context.DeadlineExceeded, Links: []tasks.Page{{Path: "/from-a-failure"}}}
	rep, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: claimed[0], Result: ok}, {Task: claimed[1], Result: failed}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Completed != 1 || rep.Retried != 1 || len(rep.Lost) != 0 {
		t.Fatalf("report %+v", rep)
	}
	want := tasks.EnqueueResult{Pending: 2, Duplicates: 2}
	if diff := cmp.Diff(want, rep.Links); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}
	if rep.LinksInvalid != 5 || rep.LinksRefused != 0 {
		t.Errorf("links invalid %d, refused %d; want 5, 0", rep.LinksInvalid, rep.LinksRefused)
	}
	var paths []string
	for _, q := range queuedTasks(t, f, job.ID) {
		paths = append(paths, q.Path)
	}
	if diff := cmp.Diff([]string{"/café", "/new", "/p00000", "/p00001"}, paths); diff != "" {
		t.Errorf("the job's tasks (-want +got):\n%s", diff)
	}

	// Links found by a task of a job cancelled meanwhile are refused.
	next, err := f.queue.Claim(ctx, "w", 1)
	if err != nil || len(next) != 1 {
		t.Fatalf("Claim = %d, %v", len(next), err)
	}
	if err := f.queue.CancelJob(ctx, job.ID); err != nil {
		t.Fatal(err)
	}
	ok.Links = []tasks.Page{{Path: "/after-cancel"}}
	rep, err = f.queue.Finish(ctx, []tasks.Outcome{{Task: next[0], Result: ok}})
	if err != nil || rep.Completed != 1 || rep.LinksRefused != 1 {
		t.Fatalf("Finish into a cancelled job = %+v, %v; want 1 completed, 1 link refused", rep, err)
	}
}
