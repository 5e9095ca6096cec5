package tasks_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/tasks"
)

// TestFinishWritesLinksWithTheOutcome: a completed task's links become tasks
// of its job; links that are not a storable path are dropped and counted,
// and the outcome is written all the same; a failed task's links are not
// enqueued; links into a cancelled job are refused without failing Finish.
func TestFinishWritesLinksWithTheOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 4, FindLinks: true}, 2)
	claimed, err := f.queue.Claim(ctx, "w", 2)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("Claim = %d, %v", len(claimed), err)
	}
	ok := okResult()
	ok.Links = []tasks.Page{
		{Path: "/new", Priority: 0.5},
		{Path: "/café", Priority: 0.5},
		{Path: "/new", Priority: 0.4},  // repeated
		{Path: "/p00000", Priority: 1}, // in the job already
	}
	for _, b := range badLinks {
		ok.Links = append(ok.Links, b.link)
	}
	failed := tasks.TaskResult{Err: context.DeadlineExceeded, Links: []tasks.Page{{Path: "/from-a-failure"}}}
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
	if rep.LinksInvalid != len(badLinks) || rep.LinksRefused != 0 {
		t.Errorf("links invalid %d, refused %d; want %d, 0", rep.LinksInvalid, rep.LinksRefused, len(badLinks))
	}
	var paths []string
	for _, q := range queuedTasks(t, f, job.ID) {
		paths = append(paths, q.Path)
	}
	if diff := cmp.Diff([]string{"/café", "/new", "/p00000", "/p00001"}, paths); diff != "" {
		t.Errorf("the job's tasks (-want +got):\n%s", diff)
	}
	var linked int
	if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM tasks WHERE job_id = $1 AND source_type = 'link'`,
		job.ID).Scan(&linked); err != nil || linked != 2 {
		t.Errorf("tasks found as links: %d, %v; want 2 (/new, /café)", linked, err)
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

// badLinks are links a handler may return that are not a page of the job:
// Enqueue refuses each with an *ArgumentError, and Finish drops each and
// counts it in LinksInvalid (the documented drop), writing the outcome.
var badLinks = []struct {
	why  string
	link tasks.Page
}{
	{"empty", tasks.Page{Path: ""}},
	{"an absolute URL of another domain", tasks.Page{Path: "https://other.example/"}},
	{"an absolute URL of the job's own domain", tasks.Page{Path: "https://example.com/x"}},
	// A fetcher appends the path to the job's domain: these would fetch
	// from other.example and from example.com.other.example.
	{"a path that moves the fetch to another host", tasks.Page{Path: "@other.example/x"}},
	{"a path that extends the host name", tasks.Page{Path: ".other.example/x"}},
	{"a relative path", tasks.Page{Path: "page.html"}},
	{"a mailto: link", tasks.Page{Path: "mailto:hi@example.com"}},
	{"a NUL byte", tasks.Page{Path: "/nul\x00"}},
	{"a byte that is not UTF-8", tasks.Page{Path: "/\xff"}},
	{"a UTF-16 surrogate encoded as UTF-8", tasks.Page{Path: "/\xed\xa0\x80"}},
	{"an overlong encoding of /", tasks.Page{Path: "/\xc0\xaf"}},
	{"one byte too long", tasks.Page{Path: "/" + strings.Repeat("x", tasks.MaxPathLength)}},
	{"too long by a two-byte character", tasks.Page{Path: "/" + strings.Repeat("x", tasks.MaxPathLength-2) + "é"}},
	{"a NaN priority", tasks.Page{Path: "/nan", Priority: math.NaN()}},
	{"an infinite priority", tasks.Page{Path: "/inf", Priority: math.Inf(-1)}},
}

// TestBadLinkIsDroppedAndTheOutcomeWritten finishes one task per bad link,
// with that link alone: the task completes with its result recorded, the
// link is counted as invalid, and neither a task nor a page is written for
// it. Enqueue, which handlers that add their links themselves call, refuses
// the same link with an *ArgumentError. Odd links that are paths (unicode
// in either normal form, exactly MaxPathLength bytes) become tasks.
func TestBadLinkIsDroppedAndTheOutcomeWritten(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 1, FindLinks: true}, len(badLinks)+1)
	before := queuedTasks(t, f, job.ID)
	pagesBefore := len(snapshot(t, f).Pages)

	for _, b := range badLinks {
		t.Run(b.why, func(t *testing.T) {
			var argErr *tasks.ArgumentError
			if _, err := f.queue.Enqueue(ctx, job.ID, []tasks.Page{b.link}); !errors.As(err, &argErr) ||
				!strings.HasPrefix(argErr.Arg, "pages[0].") {
				t.Errorf("Enqueue = %v, want an *ArgumentError for pages[0]", err)
			}
			task := claimOne(t, f, "w")
			res := okResult()
			res.Links = []tasks.Page{b.link}
			rep, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: task, Result: res}})
			if err != nil {
				t.Fatal(err)
			}
			want := tasks.FinishReport{Completed: 1, Jobs: []string{job.ID}, Linked: []string{task.ID}, LinksInvalid: 1}
			if diff := cmp.Diff(want, rep); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
			row := rowsOf[taskRecord](t, f, "SELECT * FROM tasks WHERE id = '"+task.ID+"'")[0]
			if row.Status != tasks.TaskStatusCompleted || row.StatusCode == nil || *row.StatusCode != 200 {
				t.Errorf("task after Finish: status %s, status code %v; want completed, 200", row.Status, row.StatusCode)
			}
			var paths []string
			for _, q := range queuedTasks(t, f, job.ID) {
				paths = append(paths, q.Path)
			}
			var wantPaths []string
			for _, q := range before {
				wantPaths = append(wantPaths, q.Path)
			}
			if diff := cmp.Diff(wantPaths, paths); diff != "" {
				t.Errorf("the job's tasks (-want +got):\n%s", diff)
			}
			if n := len(snapshot(t, f).Pages); n != pagesBefore {
				t.Errorf("%d pages rows, want %d: the bad link was written", n, pagesBefore)
			}
		})
	}

	odd := []tasks.Page{
		{Path: "/" + strings.Repeat("x", tasks.MaxPathLength-1)}, // exactly MaxPathLength bytes
		{Path: "/" + strings.Repeat("x", tasks.MaxPathLength-3) + "é"},
		{Path: "/café"},       // NFC
		{Path: "/cafe\u0301"}, // NFD: another path, as a server sees it
		{Path: "/日本語/ページ"},
		{Path: "/🦀?q=a b"},
		{Path: "/%00"},              // an escaped NUL is text
		{Path: "//other.example/x"}, // a path of the job's domain: the fetcher keeps its host
	}
	task := claimOne(t, f, "w")
	res := okResult()
	res.Links = odd
	rep, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: task, Result: res}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tasks.EnqueueResult{Pending: len(odd)}, rep.Links); diff != "" || rep.LinksInvalid != 0 {
		t.Errorf("odd but valid links: %d invalid, enqueued (-want +got):\n%s", rep.LinksInvalid, diff)
	}
}

// TestPrepareLinksCreatesPagesAhead: PrepareLinks creates the pages of the
// links a completed outcome would enqueue, and nothing else (no task, no
// page for a failed or skipped outcome's links, none for a link Finish
// would drop); Finish then writes the links' tasks and reports them as it
// does without it. Into a cancelled job it creates nothing and fails
// nothing.
func TestPrepareLinksCreatesPagesAhead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 4, FindLinks: true}, 3)
	claimed, err := f.queue.Claim(ctx, "w", 3)
	if err != nil || len(claimed) != 3 {
		t.Fatalf("Claim = %d, %v", len(claimed), err)
	}
	ok := okResult()
	ok.Links = []tasks.Page{{Path: "/a"}, {Path: "/b"}, {Path: "/a"}, {Path: "/p00000"}, badLinks[0].link}
	outcomes := []tasks.Outcome{
		{Task: claimed[0], Result: ok},
		{Task: claimed[1], Result: tasks.TaskResult{Err: errors.New("boom"), Links: []tasks.Page{{Path: "/from-a-failure"}}}},
		{Task: claimed[2], Result: tasks.TaskResult{Skip: true, Links: []tasks.Page{{Path: "/from-a-skip"}}}},
	}
	if err := f.queue.PrepareLinks(ctx, outcomes); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/a", "/b", "/p00000", "/p00001", "/p00002"}, domainPages(t, f, job.ID)); diff != "" {
		t.Errorf("the domain's pages after PrepareLinks (-want +got):\n%s", diff)
	}
	if n := len(queuedTasks(t, f, job.ID)); n != 3 {
		t.Errorf("%d tasks after PrepareLinks, want the 3 claimed: it writes no task", n)
	}
	rep, err := f.queue.Finish(ctx, outcomes)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tasks.EnqueueResult{Pending: 2, Duplicates: 2}, rep.Links); diff != "" || rep.LinksInvalid != 1 {
		t.Errorf("links (-want +got):\n%s; invalid %d, want 1", diff, rep.LinksInvalid)
	}
	var paths []string
	for _, q := range queuedTasks(t, f, job.ID) {
		paths = append(paths, q.Path)
	}
	if diff := cmp.Diff([]string{"/a", "/b", "/p00000", "/p00001", "/p00002"}, paths); diff != "" {
		t.Errorf("the job's tasks (-want +got):\n%s", diff)
	}

	next := f.job(t, tasks.JobOptions{Domain: "cancelled.example", Concurrency: 4, FindLinks: true}, 1)
	held, err := f.queue.ClaimJob(ctx, "w", next.ID, 1)
	if err != nil || len(held) != 1 {
		t.Fatalf("Claim = %d, %v", len(held), err)
	}
	if err := f.queue.CancelJob(ctx, next.ID); err != nil {
		t.Fatal(err)
	}
	ok.Links = []tasks.Page{{Path: "/after-cancel"}}
	late := []tasks.Outcome{{Task: held[0], Result: ok}}
	if err := f.queue.PrepareLinks(ctx, late); err != nil {
		t.Fatalf("PrepareLinks into a cancelled job: %v", err)
	}
	if diff := cmp.Diff([]string{"/p00000"}, domainPages(t, f, next.ID)); diff != "" {
		t.Errorf("pages of a cancelled job's domain (-want +got):\n%s", diff)
	}
	if rep, err := f.queue.Finish(ctx, late); err != nil || rep.Completed != 1 || rep.LinksRefused != 1 {
		t.Errorf("Finish into a cancelled job = %+v, %v; want 1 completed, 1 link refused", rep, err)
	}
}

// domainPages is the paths of the pages of the job's domain, in order.
func domainPages(t *testing.T, f fixture, jobID string) []string {
	t.Helper()
	var paths []string
	err := f.pool.QueryRow(context.Background(), `
		SELECT array_agg(p.path ORDER BY p.path) FROM pages p JOIN jobs j ON j.domain_id = p.domain_id
		WHERE j.id = $1`, jobID).Scan(&paths)
	if err != nil {
		t.Fatal(err)
	}
	return paths
}
