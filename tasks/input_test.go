package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/blue-banded-bee/taskq/gen"
	"github.com/blue-banded-bee/taskq/tasks"
)

// taskRecord is a row of tasks. It is gen.Task but for run_after, which
// holds '-infinity' until a task is first retried or handed back, and
// time.Time cannot.
type taskRecord struct {
	ID             string
	JobID          string
	PageID         int32
	Path           string
	Status         tasks.TaskStatus
	PriorityScore  float64
	RetryCount     int32
	CreatedAt      time.Time
	StartedAt      *time.Time
	CompletedAt    *time.Time
	Error          *string
	StatusCode     *int32
	ResponseTime   *int32
	CacheStatus    *string
	ContentType    *string
	ContentLength  *int64
	Headers        json.RawMessage
	Attempt        int32
	ClaimedBy      *string
	LeaseExpiresAt *time.Time
	RunAfter       pgtype.Timestamptz
	Shard          int16

	SourceType                *string
	SourceURL                 *string
	RedirectURL               *string
	DNSLookupTime             *int32
	TCPConnectionTime         *int32
	TLSHandshakeTime          *int32
	TTFB                      *int32
	ContentTransferTime       *int32
	SecondResponseTime        *int64
	SecondCacheStatus         *string
	SecondContentLength       *int64
	SecondHeaders             json.RawMessage
	SecondDNSLookupTime       *int32
	SecondTCPConnectionTime   *int32
	SecondTLSHandshakeTime    *int32
	SecondTTFB                *int32
	SecondContentTransferTime *int32
	CacheCheckAttempts        json.RawMessage
}

// at is a run_after value.
func at(t time.Time) pgtype.Timestamptz { return pgtype.Timestamptz{Time: t, Valid: true} }

// dbSnapshot is every row of the tables the queue writes.
type dbSnapshot struct {
	Domains []gen.Domain
	Pages   []gen.Page
	Jobs    []gen.Job
	Shards  []gen.JobShard
	Tallies []gen.JobTally
	Tasks   []taskRecord
}

func snapshot(t testing.TB, f fixture) dbSnapshot {
	t.Helper()
	var s dbSnapshot
	s.Domains = rowsOf[gen.Domain](t, f, "SELECT * FROM domains ORDER BY id")
	s.Pages = rowsOf[gen.Page](t, f, "SELECT * FROM pages ORDER BY id")
	s.Jobs = rowsOf[gen.Job](t, f, "SELECT * FROM jobs ORDER BY id")
	s.Shards = rowsOf[gen.JobShard](t, f, "SELECT * FROM job_shards ORDER BY job_id, shard")
	s.Tallies = rowsOf[gen.JobTally](t, f, "SELECT * FROM job_tallies ORDER BY job_id, shard")
	s.Tasks = rowsOf[taskRecord](t, f, "SELECT * FROM tasks ORDER BY id")
	return s
}

func rowsOf[T any](t testing.TB, f fixture, query string) []T {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByName[T])
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// inputFixture is a database holding a job in every status a transition can
// be refused from, and one claimed task.
type inputFixture struct {
	fixture
	held tasks.Task
}

const (
	runningJob   = "job-running"
	pendingJob   = "job-pending"
	pausedJob    = "job-paused"
	cancelledJob = "job-cancelled"
	completedJob = "job-completed"
)

// jobsInEveryStatus adds to f a completed, a cancelled, a paused (with
// pausedMaxPages) and a pending job, built in this order so that the one
// claimable job at each claim is the one meant.
func jobsInEveryStatus(tb testing.TB, f fixture, pausedMaxPages int) {
	tb.Helper()
	ctx := context.Background()
	f.job(tb, tasks.JobOptions{ID: completedJob, Concurrency: 1}, 1)
	if err := f.queue.Complete(ctx, claimOne(tb, f, "w0"), okResult()); err != nil {
		tb.Fatal(err)
	}
	if _, err := f.queue.Maintain(ctx); err != nil {
		tb.Fatal(err)
	}
	f.job(tb, tasks.JobOptions{ID: cancelledJob, Domain: "cancelled.example"}, 2)
	if err := f.queue.CancelJob(ctx, cancelledJob); err != nil {
		tb.Fatal(err)
	}
	f.job(tb, tasks.JobOptions{ID: pausedJob, Domain: "paused.example", MaxPages: pausedMaxPages}, 2)
	if err := f.queue.PauseJob(ctx, pausedJob); err != nil {
		tb.Fatal(err)
	}
	f.job(tb, tasks.JobOptions{ID: pendingJob, Domain: "pending.example"}, 0)
}

func newInputFixture(t *testing.T) inputFixture {
	t.Helper()
	ctx := context.Background()
	f := setup(t, tasks.Config{})

	jobsInEveryStatus(t, f, 0)
	f.job(t, tasks.JobOptions{ID: runningJob, Concurrency: 2}, 3)
	held := claimOne(t, f, "w1")

	want := map[string]tasks.JobStatus{
		completedJob: tasks.JobStatusCompleted, cancelledJob: tasks.JobStatusCancelled, pausedJob: tasks.JobStatusPaused,
		pendingJob: tasks.JobStatusPending, runningJob: tasks.JobStatusRunning,
	}
	for id, status := range want {
		job, err := f.queue.Job(ctx, id)
		if err != nil || job.Status != status {
			t.Fatalf("fixture job %s: %s, %v; want %s", id, job.Status, err, status)
		}
	}
	if held.JobID != runningJob {
		t.Fatalf("fixture claimed a task of %s, want %s", held.JobID, runningJob)
	}
	return inputFixture{fixture: f, held: held}
}

// badInput is a call that must be refused with want and write nothing.
type badInput struct {
	name string
	call func(context.Context, inputFixture) error
	want error
	// arg is the refused argument when the error must be an
	// *tasks.ArgumentError; empty when it must not be one.
	arg string
}

func checkRefused(t *testing.T, f inputFixture, tests []badInput) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, f.fixture)
			err := tc.call(context.Background(), f)
			if !errors.Is(err, tc.want) {
				t.Errorf("error = %v, want %v", err, tc.want)
			}
			var argErr *tasks.ArgumentError
			switch isArg := errors.As(err, &argErr); {
			case tc.arg == "" && isArg:
				t.Errorf("error is an *ArgumentError for %q, want none", argErr.Arg)
			case tc.arg != "" && !isArg:
				t.Errorf("error %v is not an *ArgumentError, want one for %q", err, tc.arg)
			case tc.arg != "" && argErr.Arg != tc.arg:
				t.Errorf("ArgumentError.Arg = %q, want %q", argErr.Arg, tc.arg)
			}
			if diff := cmp.Diff(before, snapshot(t, f.fixture)); diff != "" {
				t.Errorf("refused call changed the database (-before +after):\n%s", diff)
			}
		})
	}
}

func claimWith(worker string, n int) func(context.Context, inputFixture) error {
	return func(ctx context.Context, f inputFixture) error {
		_, err := f.queue.Claim(ctx, worker, n)
		return err
	}
}

func enqueueWith(jobID string, pages ...tasks.Page) func(context.Context, inputFixture) error {
	return func(ctx context.Context, f inputFixture) error {
		_, err := f.queue.Enqueue(ctx, jobID, pages)
		return err
	}
}

// finishWith finishes the fixture's claimed task with the outcomes edit
// returns.
func finishWith(edit func(held tasks.Task) []tasks.Outcome) func(context.Context, inputFixture) error {
	return func(ctx context.Context, f inputFixture) error {
		_, err := f.queue.Finish(ctx, edit(f.held))
		return err
	}
}

func finishResult(r tasks.TaskResult) func(context.Context, inputFixture) error {
	return finishWith(func(held tasks.Task) []tasks.Outcome { return []tasks.Outcome{{Task: held, Result: r}} })
}

func TestBadArgumentsAreRefusedWritingNothing(t *testing.T) {
	t.Parallel()
	f := newInputFixture(t)
	long := strings.Repeat("w", tasks.MaxIDLength+1)
	withStatus := func(code int) tasks.TaskResult { r := okResult(); r.StatusCode = code; return r }
	checkRefused(t, f, []badInput{
		{name: "claim: empty worker id", call: claimWith("", 1), want: tasks.ErrInvalidArgument, arg: "workerID"},
		{name: "claim: worker id with NUL", call: claimWith("w\x001", 1), want: tasks.ErrInvalidArgument, arg: "workerID"},
		{name: "claim: worker id not UTF-8", call: claimWith("w\xff", 1), want: tasks.ErrInvalidArgument, arg: "workerID"},
		{name: "claim: worker id too long", call: claimWith(long, 1), want: tasks.ErrInvalidArgument, arg: "workerID"},
		{name: "claim: batch 0", call: claimWith("w2", 0), want: tasks.ErrInvalidArgument, arg: "n"},
		{name: "claim: batch -1", call: claimWith("w2", -1), want: tasks.ErrInvalidArgument, arg: "n"},
		{name: "claim: batch above MaxBatch", call: claimWith("w2", tasks.MaxBatch+1), want: tasks.ErrInvalidArgument, arg: "n"},
		{name: "claim one: empty worker id", want: tasks.ErrInvalidArgument, arg: "workerID",
			call: func(ctx context.Context, f inputFixture) error { _, err := f.queue.ClaimOne(ctx, ""); return err }},

		{name: "enqueue: nil pages", call: enqueueWith(runningJob), want: tasks.ErrInvalidArgument, arg: "pages"},
		{name: "enqueue: empty job id", call: enqueueWith("", tasks.Page{Path: "/new"}), want: tasks.ErrInvalidArgument, arg: "jobID"},
		{name: "enqueue: empty path", want: tasks.ErrInvalidArgument, arg: "pages[1].Path",
			call: enqueueWith(runningJob, tasks.Page{Path: "/new"}, tasks.Page{Path: ""})},
		{name: "enqueue: path too long", want: tasks.ErrInvalidArgument, arg: "pages[1].Path",
			call: enqueueWith(runningJob, tasks.Page{Path: "/new"}, tasks.Page{Path: "/" + strings.Repeat("a", tasks.MaxPathLength)})},
		{name: "enqueue: path with NUL", want: tasks.ErrInvalidArgument, arg: "pages[0].Path",
			call: enqueueWith(runningJob, tasks.Page{Path: "/a\x00b"})},
		{name: "enqueue: path not UTF-8", want: tasks.ErrInvalidArgument, arg: "pages[0].Path",
			call: enqueueWith(runningJob, tasks.Page{Path: "/caf\xe9"})},
		// A fetcher appends the path to the job's domain: these would fetch
		// from another host, or from nowhere.
		{name: "enqueue: absolute URL", want: tasks.ErrInvalidArgument, arg: "pages[1].Path",
			call: enqueueWith(runningJob, tasks.Page{Path: "/new"}, tasks.Page{Path: "https://other.example/x"})},
		{name: "enqueue: path moving the host", want: tasks.ErrInvalidArgument, arg: "pages[0].Path",
			call: enqueueWith(runningJob, tasks.Page{Path: "@other.example/x"})},
		{name: "enqueue: relative path", want: tasks.ErrInvalidArgument, arg: "pages[0].Path",
			call: enqueueWith(runningJob, tasks.Page{Path: "page.html"})},
		{name: "enqueue: NaN priority", want: tasks.ErrInvalidArgument, arg: "pages[2].Priority",
			call: enqueueWith(runningJob, tasks.Page{Path: "/x"}, tasks.Page{Path: "/y"}, tasks.Page{Path: "/z", Priority: math.NaN()})},
		{name: "enqueue: infinite priority", want: tasks.ErrInvalidArgument, arg: "pages[0].Priority",
			call: enqueueWith(runningJob, tasks.Page{Path: "/x", Priority: math.Inf(-1)})},

		{name: "finish: no outcomes", call: finishWith(func(tasks.Task) []tasks.Outcome { return nil }),
			want: tasks.ErrInvalidArgument, arg: "outcomes"},
		{name: "finish: more than MaxBatch outcomes", want: tasks.ErrInvalidArgument, arg: "outcomes",
			call: finishWith(func(tasks.Task) []tasks.Outcome { return make([]tasks.Outcome, tasks.MaxBatch+1) })},
		{name: "finish: duplicate task ids", want: tasks.ErrInvalidArgument, arg: "outcomes[1]",
			call: finishWith(func(held tasks.Task) []tasks.Outcome {
				return []tasks.Outcome{{Task: held, Result: okResult()}, {Task: held, Result: tasks.TaskResult{Err: errors.New("x")}}}
			})},
		{name: "finish: empty task id", want: tasks.ErrInvalidArgument, arg: "outcomes[0].Task.ID",
			call: finishWith(func(held tasks.Task) []tasks.Outcome {
				held.ID = ""
				return []tasks.Outcome{{Task: held, Result: okResult()}}
			})},
		{name: "finish: worker id with NUL", want: tasks.ErrInvalidArgument, arg: "outcomes[0].Task.WorkerID",
			call: finishWith(func(held tasks.Task) []tasks.Outcome {
				held.WorkerID = "w\x001"
				return []tasks.Outcome{{Task: held, Result: okResult()}}
			})},
		{name: "finish: worker id not UTF-8", want: tasks.ErrInvalidArgument, arg: "outcomes[0].Task.WorkerID",
			call: finishWith(func(held tasks.Task) []tasks.Outcome {
				held.WorkerID = "w\xff"
				return []tasks.Outcome{{Task: held, Result: okResult()}}
			})},
		{name: "finish: worker id too long", want: tasks.ErrInvalidArgument, arg: "outcomes[0].Task.WorkerID",
			call: finishWith(func(held tasks.Task) []tasks.Outcome {
				held.WorkerID = long
				return []tasks.Outcome{{Task: held, Result: okResult()}}
			})},
		{name: "finish: status code 99", call: finishResult(withStatus(99)),
			want: tasks.ErrInvalidArgument, arg: "outcomes[0].Result.StatusCode"},
		{name: "finish: status code 1000", call: finishResult(withStatus(1000)),
			want: tasks.ErrInvalidArgument, arg: "outcomes[0].Result.StatusCode"},
		{name: "finish: negative status code", call: finishResult(withStatus(-200)),
			want: tasks.ErrInvalidArgument, arg: "outcomes[0].Result.StatusCode"},
		{name: "finish: negative response time", want: tasks.ErrInvalidArgument, arg: "outcomes[0].Result",
			call: finishResult(func() tasks.TaskResult { r := okResult(); r.ResponseTime = -time.Millisecond; return r }())},
		{name: "complete: status code 42", want: tasks.ErrInvalidArgument, arg: "outcomes[0].Result.StatusCode",
			call: func(ctx context.Context, f inputFixture) error { return f.queue.Complete(ctx, f.held, withStatus(42)) }},
		{name: "fail: nil cause", want: tasks.ErrInvalidArgument, arg: "cause",
			call: func(ctx context.Context, f inputFixture) error { return f.queue.Fail(ctx, f.held, nil, false) }},

		{name: "release: no tasks", want: tasks.ErrInvalidArgument, arg: "tasks",
			call: func(ctx context.Context, f inputFixture) error { _, err := f.queue.Release(ctx, nil); return err }},
		{name: "extend: no tasks", want: tasks.ErrInvalidArgument, arg: "tasks",
			call: func(ctx context.Context, f inputFixture) error { _, err := f.queue.ExtendLeases(ctx, nil); return err }},
		{name: "rescue: max 0", want: tasks.ErrInvalidArgument, arg: "max",
			call: func(ctx context.Context, f inputFixture) error { _, err := f.queue.RescueExpired(ctx, 0); return err }},
		{name: "rescue: max above MaxBatch", want: tasks.ErrInvalidArgument, arg: "max",
			call: func(ctx context.Context, f inputFixture) error {
				_, err := f.queue.RescueExpired(ctx, tasks.MaxBatch+1)
				return err
			}},

		{name: "create job: empty domain", want: tasks.ErrInvalidArgument, arg: "spec.Domain",
			call: func(ctx context.Context, f inputFixture) error {
				_, err := f.queue.CreateJob(ctx, tasks.JobOptions{})
				return err
			}},
		{name: "create job: domain with NUL", want: tasks.ErrInvalidArgument, arg: "spec.Domain",
			call: func(ctx context.Context, f inputFixture) error {
				_, err := f.queue.CreateJob(ctx, tasks.JobOptions{Domain: "a\x00.example"})
				return err
			}},
		{name: "create job: negative concurrency", want: tasks.ErrInvalidArgument, arg: "spec.Concurrency",
			call: func(ctx context.Context, f inputFixture) error {
				_, err := f.queue.CreateJob(ctx, tasks.JobOptions{Domain: "new.example", Concurrency: -1})
				return err
			}},
		{name: "create job: negative max pages", want: tasks.ErrInvalidArgument, arg: "spec.MaxPages",
			call: func(ctx context.Context, f inputFixture) error {
				_, err := f.queue.CreateJob(ctx, tasks.JobOptions{Domain: "new.example", MaxPages: -1})
				return err
			}},
		{name: "create job: too many retries", want: tasks.ErrInvalidArgument, arg: "spec.MaxRetries",
			call: func(ctx context.Context, f inputFixture) error {
				_, err := f.queue.CreateJob(ctx, tasks.JobOptions{Domain: "new.example", MaxRetries: 1001})
				return err
			}},
		{name: "pause: job id not UTF-8", want: tasks.ErrInvalidArgument, arg: "id",
			call: func(ctx context.Context, f inputFixture) error { return f.queue.PauseJob(ctx, "job-\xff") }},
		{name: "cancel: empty job id", want: tasks.ErrInvalidArgument, arg: "id",
			call: func(ctx context.Context, f inputFixture) error { return f.queue.CancelJob(ctx, "") }},
		{name: "job: id too long", want: tasks.ErrInvalidArgument, arg: "id",
			call: func(ctx context.Context, f inputFixture) error { _, err := f.queue.Job(ctx, long); return err }},
	})
}

// TestHandBackWithBadWorkerIDs: Release and ExtendLeases take the tasks a
// worker holds, whose worker ids Finish checks; they must refuse the same
// ids, before anything is sent.
func TestHandBackWithBadWorkerIDs(t *testing.T) {
	t.Parallel()
	f := newInputFixture(t)
	release := func(worker string) func(context.Context, inputFixture) error {
		return func(ctx context.Context, f inputFixture) error {
			task := f.held
			task.WorkerID = worker
			_, err := f.queue.Release(ctx, []tasks.Task{task})
			return err
		}
	}
	extend := func(worker string) func(context.Context, inputFixture) error {
		return func(ctx context.Context, f inputFixture) error {
			task := f.held
			task.WorkerID = worker
			_, err := f.queue.ExtendLeases(ctx, []tasks.Task{task})
			return err
		}
	}
	checkRefused(t, f, []badInput{
		{name: "release: worker id with NUL", call: release("w\x001"), want: tasks.ErrInvalidArgument, arg: "tasks[0].WorkerID"},
		{name: "release: worker id not UTF-8", call: release("w\xff"), want: tasks.ErrInvalidArgument, arg: "tasks[0].WorkerID"},
		{name: "extend: worker id with NUL", call: extend("w\x001"), want: tasks.ErrInvalidArgument, arg: "tasks[0].WorkerID"},
		{name: "extend: worker id not UTF-8", call: extend("w\xff"), want: tasks.ErrInvalidArgument, arg: "tasks[0].WorkerID"},
	})
}

func TestUnknownJobsAndRefusedTransitionsWriteNothing(t *testing.T) {
	t.Parallel()
	pause := func(id string) func(context.Context, inputFixture) error {
		return func(ctx context.Context, f inputFixture) error { return f.queue.PauseJob(ctx, id) }
	}
	resume := func(id string) func(context.Context, inputFixture) error {
		return func(ctx context.Context, f inputFixture) error { return f.queue.ResumeJob(ctx, id) }
	}
	cancel := func(id string) func(context.Context, inputFixture) error {
		return func(ctx context.Context, f inputFixture) error { return f.queue.CancelJob(ctx, id) }
	}
	fresh := []tasks.Page{{Path: "/fresh-1", Priority: 1}, {Path: "/fresh-2"}}
	f := newInputFixture(t)
	checkRefused(t, f, []badInput{
		{name: "enqueue into an unknown job", call: enqueueWith("no-such-job", fresh...), want: tasks.ErrJobNotFound},
		{name: "job: unknown", want: tasks.ErrJobNotFound,
			call: func(ctx context.Context, f inputFixture) error { _, err := f.queue.Job(ctx, "no-such-job"); return err }},
		{name: "pause an unknown job", call: pause("no-such-job"), want: tasks.ErrJobNotFound},
		{name: "resume an unknown job", call: resume("no-such-job"), want: tasks.ErrJobNotFound},
		{name: "cancel an unknown job", call: cancel("no-such-job"), want: tasks.ErrJobNotFound},

		{name: "resume a running job", call: resume(runningJob), want: tasks.ErrInvalidTransition},
		{name: "resume a pending job", call: resume(pendingJob), want: tasks.ErrInvalidTransition},
		{name: "resume a cancelled job", call: resume(cancelledJob), want: tasks.ErrInvalidTransition},
		{name: "pause a paused job", call: pause(pausedJob), want: tasks.ErrInvalidTransition},
		{name: "pause a pending job", call: pause(pendingJob), want: tasks.ErrInvalidTransition},
		{name: "pause a completed job", call: pause(completedJob), want: tasks.ErrInvalidTransition},
		{name: "cancel a cancelled job", call: cancel(cancelledJob), want: tasks.ErrInvalidTransition},
		{name: "cancel a completed job", call: cancel(completedJob), want: tasks.ErrInvalidTransition},
		// New paths: the pages the enqueue creates first must go too. (A
		// completed job is reopened by new pages: see enqueue_test.go.)
		{name: "enqueue into a cancelled job", call: enqueueWith(cancelledJob, fresh...), want: tasks.ErrInvalidTransition},
	})
}

// TestResultTextIsStoredSanitized: what a crawled server sent is evidence,
// kept with replacement characters rather than refused, so a task whose
// response carries a NUL byte or invalid UTF-8 still finishes.
func TestResultTextIsStoredSanitized(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 2, NoRetries: true}, 2)
	completed := claimOne(t, f, "w1")
	failed := claimOne(t, f, "w1")

	r := okResult()
	r.CacheStatus = "HIT\x00"
	r.ContentType = "text/html; charset=\xff"
	r.Headers.Set("X-Odd", "caf\xe9")
	if err := f.queue.Complete(ctx, completed, r); err != nil {
		t.Fatalf("Complete with odd text: %v", err)
	}
	if err := f.queue.Fail(ctx, failed, errors.New("bad \x00 byte in \xff body"), false); err != nil {
		t.Fatalf("Fail with odd text: %v", err)
	}
	type text struct {
		Status      tasks.TaskStatus
		CacheStatus *string
		ContentType *string
		Headers     http.Header
		Error       *string
	}
	got := func(id string) text {
		row := taskRow(t, f, id)
		var h http.Header
		if row.Headers != nil {
			if err := json.Unmarshal(row.Headers, &h); err != nil {
				t.Fatalf("stored headers %s: %v", row.Headers, err)
			}
		}
		return text{row.Status, row.CacheStatus, row.ContentType, h, row.Error}
	}
	want := []text{
		{Status: tasks.TaskStatusCompleted, CacheStatus: ptr("HIT\uFFFD"), ContentType: ptr("text/html; charset=\uFFFD"),
			Headers: http.Header{"X-Odd": {"caf\uFFFD"}, "Content-Type": {"text/html"}, "Cf-Cache-Status": {"HIT"}}},
		{Status: tasks.TaskStatusFailed, Error: ptr("bad \uFFFD byte in \uFFFD body")},
	}
	if diff := cmp.Diff(want, []text{got(completed.ID), got(failed.ID)}); diff != "" {
		t.Fatalf("stored results (-want +got):\n%s", diff)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 2, Completed: 1, Failed: 1, Percent: 100})
}

// TestResultHeaderWithNULIsStored: the same holds for a header value with a
// NUL byte, which a misbehaving server can send.
func TestResultHeaderWithNULIsStored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, tasks.JobOptions{Concurrency: 1}, 1)
	task := claimOne(t, f, "w1")
	r := okResult()
	r.Headers.Set("X-Odd", "a\x00b")
	if err := f.queue.Complete(ctx, task, r); err != nil {
		t.Fatalf("Complete with a NUL byte in a header: %v", err)
	}
	if row := taskRow(t, f, task.ID); row.Status != tasks.TaskStatusCompleted {
		t.Fatalf("task %s, want completed", row.Status)
	}
	checkProgress(t, f, job.ID, tasks.Progress{Total: 1, Completed: 1, Percent: 100})
}
