package tasks_test

// Fuzz targets for the queue's public API, against a real database: one
// migrated database per target (made before f.Fuzz, so once per fuzzing
// process), one pool reused by every input. Whatever the input, a call must
// not panic and must end one of two ways: refused with a typed error and
// nothing written (a count-based fingerprint of every table the queue writes
// is the same before and after), or done, with what was stored read back and
// compared with what was sent. Each input leaves the database as it found it,
// or in a state the next input's expectations do not depend on, so inputs
// can run in any order.
//
// Plain `go test` runs the seeds below and the corpus in testdata/fuzz as
// tests. To fuzz (one target at a time):
//
//	go test -run '^$' -fuzz '^FuzzEnqueue$' -fuzztime 60s ./tasks/
//
// The bugs fuzzing found are pinned by TestFuzzFindings.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/tasks"
)

// fingerprint summarises, by counts and a few sums, every table the queue
// writes: cheap enough to take twice per fuzz input, and it moves with any
// row the queue inserts, deletes, claims, finishes, releases or extends.
type fingerprint struct {
	Domains        int64
	Pages          int64
	Jobs           int64
	JobStatuses    string
	JobCounters    int64
	Tasks          int64
	TaskStatuses   string
	Attempts       int64
	Retries        int64
	Claimed        int64
	Results        int64
	Errors         int64
	LastStarted    *time.Time
	LastCompleted  *time.Time
	LastLease      *time.Time
	LastRunAfter   *time.Time
	Shards         int64
	Capacity       int64
	Claims         int64
	Releases       int64
	TallyCompleted int64
	TallyFailed    int64
}

const fingerprintQuery = `
SELECT
    (SELECT count(*) FROM domains) AS domains,
    (SELECT count(*) FROM pages) AS pages,
    j.jobs, j.job_statuses, j.job_counters,
    t.tasks, t.task_statuses, t.attempts, t.retries, t.claimed, t.results, t.errors,
    t.last_started, t.last_completed, t.last_lease, t.last_run_after,
    s.shards, s.capacity, s.claims,
    r.releases, r.tally_completed, r.tally_failed
FROM
    (SELECT count(*) AS jobs,
            coalesce(sum(total_tasks::bigint + completed_tasks + failed_tasks + skipped_tasks
                         + concurrency + max_pages + max_retries), 0)::bigint AS job_counters,
            (SELECT coalesce(string_agg(status || '=' || n, ' ' ORDER BY status), '')
             FROM (SELECT status::text, count(*) AS n FROM jobs GROUP BY 1) x) AS job_statuses
     FROM jobs) j,
    (SELECT count(*) AS tasks,
            coalesce(sum(attempt), 0)::bigint AS attempts,
            coalesce(sum(retry_count), 0)::bigint AS retries,
            count(claimed_by) AS claimed,
            count(status_code) + count(response_time) + count(cache_status) + count(content_type)
                + count(content_length) + count(headers) + count(redirect_url) + count(dns_lookup_time)
                + count(tcp_connection_time) + count(tls_handshake_time) + count(ttfb)
                + count(content_transfer_time) + count(second_response_time) + count(second_cache_status)
                + count(second_content_length) + count(second_headers) + count(second_dns_lookup_time)
                + count(second_tcp_connection_time) + count(second_tls_handshake_time) + count(second_ttfb)
                + count(second_content_transfer_time) + count(cache_check_attempts) AS results,
            count(error) AS errors,
            max(started_at) AS last_started,
            max(completed_at) AS last_completed,
            max(lease_expires_at) AS last_lease,
            max(run_after) AS last_run_after,
            (SELECT coalesce(string_agg(status || '=' || n, ' ' ORDER BY status), '')
             FROM (SELECT status::text, count(*) AS n FROM tasks GROUP BY 1) x) AS task_statuses
     FROM tasks) t,
    (SELECT count(*) AS shards, coalesce(sum(capacity), 0)::bigint AS capacity,
            coalesce(sum(claims), 0)::bigint AS claims
     FROM job_shards) s,
    (SELECT coalesce(sum(releases), 0)::bigint AS releases,
            coalesce(sum(completed), 0)::bigint AS tally_completed,
            coalesce(sum(failed), 0)::bigint AS tally_failed
     FROM job_tallies) r`

func takeFingerprint(t testing.TB, f fixture) fingerprint {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), fingerprintQuery)
	if err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	fp, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[fingerprint])
	if err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	return fp
}

// checkUnchanged fails the test if anything was written since before.
func checkUnchanged(t testing.TB, f fixture, before fingerprint, call string) {
	t.Helper()
	if diff := cmp.Diff(before, takeFingerprint(t, f)); diff != "" {
		t.Errorf("%s wrote to the database (-before +after):\n%s", call, diff)
	}
}

// checkCounters fails the test if a job shard's counters disagree with its
// tasks: claims - releases must be the shard's running tasks.
func checkCounters(t testing.TB, f fixture) {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `
		SELECT s.job_id, s.shard, s.claims - r.releases AS counted,
		       (SELECT count(*) FROM tasks t
		        WHERE t.job_id = s.job_id AND t.shard = s.shard AND t.status = 'running') AS running
		FROM job_shards s
		JOIN job_tallies r ON r.job_id = s.job_id AND r.shard = s.shard
		WHERE s.claims - r.releases <> (SELECT count(*) FROM tasks t
		        WHERE t.job_id = s.job_id AND t.shard = s.shard AND t.status = 'running')`)
	if err != nil {
		t.Fatal(err)
	}
	type mismatch struct {
		JobID   string
		Shard   int16
		Counted int64
		Running int64
	}
	bad, err := pgx.CollectRows(rows, pgx.RowToStructByName[mismatch])
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("shard counters disagree with running tasks: %+v", bad)
	}
}

// idProblem says why the queue must refuse s as a worker, job or task id,
// or "" if it is acceptable.
func idProblem(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > tasks.MaxIDLength:
		return "too long"
	}
	return textProblem(s)
}

// textProblem says why PostgreSQL text cannot hold s, or "" if it can.
func textProblem(s string) string {
	switch {
	case strings.ContainsRune(s, 0):
		return "NUL byte"
	case !utf8.ValidString(s):
		return "invalid UTF-8"
	}
	return ""
}

// checkArgumentError fails the test unless err is an *tasks.ArgumentError
// for one of args, matching tasks.ErrInvalidArgument.
func checkArgumentError(t testing.TB, err error, args ...string) {
	t.Helper()
	var argErr *tasks.ArgumentError
	switch {
	case err == nil:
		t.Fatalf("no error, want an *ArgumentError for one of %q", args)
	case !errors.As(err, &argErr):
		t.Fatalf("error %v (%T) is not an *ArgumentError, want one for one of %q", err, err, args)
	case !errors.Is(err, tasks.ErrInvalidArgument):
		t.Fatalf("error %v does not match ErrInvalidArgument", err)
	case !slices.Contains(args, argErr.Arg):
		t.Fatalf("ArgumentError for %q (%v), want one for one of %q", argErr.Arg, err, args)
	}
	checkMessage(t, err)
}

// checkMessage fails the test unless err's message can be logged as it is.
func checkMessage(t testing.TB, err error) {
	t.Helper()
	if msg := err.Error(); msg == "" || !utf8.ValidString(msg) {
		t.Errorf("error message %q is empty or not valid UTF-8", msg)
	}
}

// queueErrors are the queue's typed errors.
var queueErrors = []error{
	tasks.ErrNoTasksAvailable, tasks.ErrNotFound, tasks.ErrJobNotFound, tasks.ErrInvalidTransition,
	tasks.ErrJobExists, tasks.ErrLeaseLost, tasks.ErrInvalidArgument, tasks.ErrUnavailable, tasks.ErrTimeout, tasks.ErrConflict,
}

func isQueueError(err error) bool {
	return slices.ContainsFunc(queueErrors, func(target error) bool { return errors.Is(err, target) })
}

// cleanText is what the queue stores for text a crawled server sent:
// PostgreSQL text holds neither NUL bytes nor invalid UTF-8, so each NUL
// byte, and each run of bytes that is not UTF-8, becomes U+FFFD.
func cleanText(s string) string {
	var b strings.Builder
	inRun := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			if !inRun {
				b.WriteRune(utf8.RuneError)
			}
			inRun = true
		case r == 0:
			b.WriteRune(utf8.RuneError)
			inRun = false
		default:
			b.WriteString(s[i : i+size])
			inRun = false
		}
		i += size
	}
	return b.String()
}

// jobFixture is a database holding a job in every status, as the
// ErrJobNotFound and ErrInvalidTransition checks need.
type jobFixture struct {
	fixture
	status map[string]tasks.JobStatus
}

const failedJob = "job-failed"

func newJobFixture(tb testing.TB) jobFixture {
	tb.Helper()
	ctx := context.Background()
	f := setup(tb, tasks.Config{})
	jobsInEveryStatus(tb, f, 3)
	// No call fails a job; the application may.
	f.job(tb, tasks.JobOptions{ID: failedJob, Domain: "failed.example"}, 0)
	if _, err := f.pool.Exec(ctx, "UPDATE jobs SET status = 'failed' WHERE id = $1", failedJob); err != nil {
		tb.Fatal(err)
	}
	f.job(tb, tasks.JobOptions{ID: runningJob, Concurrency: 40}, 20)

	status := map[string]tasks.JobStatus{
		completedJob: tasks.JobStatusCompleted, cancelledJob: tasks.JobStatusCancelled, pausedJob: tasks.JobStatusPaused,
		pendingJob: tasks.JobStatusPending, failedJob: tasks.JobStatusFailed, runningJob: tasks.JobStatusRunning,
	}
	for id, want := range status {
		if job, err := f.queue.Job(ctx, id); err != nil || job.Status != want {
			tb.Fatalf("fixture job %s: %s, %v; want %s", id, job.Status, err, want)
		}
	}
	return jobFixture{fixture: f, status: status}
}

// fuzzJobs are the fixture's jobs, for inputs to pick by number.
var fuzzJobs = []string{runningJob, pendingJob, pausedJob, completedJob, cancelledJob, failedJob}

// enqueueSeed is one FuzzEnqueue input.
type enqueueSeed struct {
	pick         uint8 // 1-6 (modulo 8): fuzzJobs[pick-1] instead of jobID
	jobID        string
	paths        string // split on "\n"; "" for no pages at all
	grow         uint16 // the last path grows by grow>>1 units, "é" if grow is odd else "x"
	prio1, prio2 float64
}

// enqueuePages turns a FuzzEnqueue input into the call's arguments.
func enqueuePages(pick uint8, jobID, paths string, grow uint16, prio1, prio2 float64) (string, []tasks.Page) {
	if p := int(pick) % 8; p >= 1 && p <= len(fuzzJobs) {
		jobID = fuzzJobs[p-1]
	}
	if paths == "" {
		return jobID, nil
	}
	parts := strings.Split(paths, "\n")
	unit := "x"
	if grow%2 == 1 {
		unit = "é"
	}
	parts[len(parts)-1] += strings.Repeat(unit, int(grow>>1))
	pages := make([]tasks.Page, len(parts))
	for i, p := range parts {
		pages[i] = tasks.Page{Path: p, Priority: prio1}
		if i%2 == 1 {
			pages[i].Priority = prio2
		}
	}
	return jobID, pages
}

// enqueueRefusal lists the arguments Enqueue may name in refusing the call
// (the first bad page's bad fields), or nil if it must not refuse it.
func enqueueRefusal(jobID string, pages []tasks.Page) []string {
	if idProblem(jobID) != "" {
		return []string{"jobID"}
	}
	if len(pages) == 0 {
		return []string{"pages"}
	}
	for i, p := range pages {
		var args []string
		if !strings.HasPrefix(p.Path, "/") || len(p.Path) > tasks.MaxPathLength || textProblem(p.Path) != "" {
			args = append(args, fmt.Sprintf("pages[%d].Path", i))
		}
		if math.IsNaN(p.Priority) || math.IsInf(p.Priority, 0) {
			args = append(args, fmt.Sprintf("pages[%d].Priority", i))
		}
		if args != nil {
			return args
		}
	}
	return nil
}

func FuzzEnqueue(f *testing.F) {
	long := "/" + strings.Repeat("a", tasks.MaxPathLength-1) // exactly MaxPathLength bytes
	seeds := []enqueueSeed{
		// From input_test.go.
		{pick: 1, paths: ""},                                          // no pages
		{jobID: "", paths: "/new"},                                    // empty job id
		{pick: 1, paths: "/new\n"},                                    // empty path (pages[1])
		{pick: 1, paths: "/new\n/", grow: tasks.MaxPathLength << 1},   // pages[1] one byte too long
		{pick: 1, paths: "/a\x00b"},                                   // NUL
		{pick: 1, paths: "/caf\xe9"},                                  // Latin-1, not UTF-8
		{pick: 1, paths: "/x\n/y\n/z", prio1: 0.5, prio2: math.NaN()}, // NaN priority (pages[1])
		{pick: 1, paths: "/x", prio1: math.Inf(-1)},
		{pick: 1, paths: "/x", prio1: math.Inf(1)},
		{pick: 1, paths: "/x\nhttps://other.example/"},    // an absolute URL (pages[1])
		{pick: 1, paths: "@other.example/x"},              // would move the fetch to another host
		{pick: 1, paths: "/x\n/y\npage.html", prio1: 0.5}, // relative (pages[2])
		{jobID: "no-such-job", paths: "/fresh-1\n/fresh-2", prio1: 1},
		{pick: 5, paths: "/fresh-1\n/fresh-2", prio1: 1}, // cancelled
		{pick: 6, paths: "/fresh-1"},                     // failed
		// Accepted: unicode, odd but valid text, boundaries.
		{pick: 1, paths: "/café\n/cafe\u0301\n/日本語/ページ\n/emoji/🦀\n/rtl/\u202eevil", prio1: 1, prio2: -1},
		{pick: 1, paths: "/\uFFFD\n/\uFEFFbom\n/%00\n/a b\t\r\n/new\n//line", prio1: math.MaxFloat64, prio2: -math.MaxFloat64},
		{pick: 1, paths: "/dup\n/dup\n/dup", prio1: 0.25, prio2: 0.75},
		{pick: 1, paths: long, prio1: math.SmallestNonzeroFloat64},
		{pick: 1, paths: long[:tasks.MaxPathLength-2], grow: 3, prio1: math.Copysign(0, -1)}, // 2048 bytes ending in é
		{pick: 1, paths: long[:tasks.MaxPathLength-1], grow: 3},                              // 2049 bytes: é straddles the limit
		{pick: 1, paths: "/huge", grow: 65535},
		{pick: 2, paths: "/starts-pending"},
		{pick: 3, paths: "/p1\n/p2\n/p3\n/p4", prio1: 2}, // paused, max_pages 3
		{pick: 4, paths: "/reopens", prio1: 1},           // completed
		// Bad job ids.
		{jobID: runningJob + "\x00", paths: "/x"},
		{jobID: "job-\xff", paths: "/x"},
		{jobID: strings.Repeat("j", tasks.MaxIDLength), paths: "/x"},
		{jobID: strings.Repeat("j", tasks.MaxIDLength+1), paths: "/x"},
		{jobID: "job-é", paths: "/x"},
		{jobID: "JOB-RUNNING", paths: "/x"},
		{jobID: runningJob + " ", paths: "/x"},
	}
	for _, s := range seeds {
		f.Add(s.pick, s.jobID, s.paths, s.grow, s.prio1, s.prio2)
	}
	jf := newJobFixture(f)
	ctx := context.Background()

	f.Fuzz(func(t *testing.T, pick uint8, jobID, paths string, grow uint16, prio1, prio2 float64) {
		jobID, pages := enqueuePages(pick, jobID, paths, grow, prio1, prio2)
		before := takeFingerprint(t, jf.fixture)
		refusal := enqueueRefusal(jobID, pages)
		status, known := jf.status[jobID]
		var distinct []string // the batch's paths, first occurrence first
		first := map[string]float64{}
		if refusal == nil {
			for _, p := range pages {
				if _, ok := first[p.Path]; !ok {
					first[p.Path] = p.Priority
					distinct = append(distinct, p.Path)
				}
			}
		}
		var had map[string]bool // of distinct, those the job had already
		if refusal == nil && known {
			had = storedPaths(t, jf.fixture, jobID, distinct)
		}

		res, err := jf.queue.Enqueue(ctx, jobID, pages)
		call := fmt.Sprintf("Enqueue(%q, %d pages)", jobID, len(pages))
		switch {
		case refusal != nil:
			checkArgumentError(t, err, refusal...)
			checkUnchanged(t, jf.fixture, before, call)
			return
		case !known || status == tasks.JobStatusCancelled || status == tasks.JobStatusFailed:
			want := tasks.ErrJobNotFound
			if known {
				want = tasks.ErrInvalidTransition
			}
			var argErr *tasks.ArgumentError
			if !errors.Is(err, want) || errors.As(err, &argErr) {
				t.Fatalf("%s: error %v, want %v", call, err, want)
			}
			checkMessage(t, err)
			checkUnchanged(t, jf.fixture, before, call)
			return
		case err != nil:
			t.Fatalf("%s into a %s job: %v", call, status, err)
		}

		added := 0
		for _, p := range distinct {
			if !had[p] {
				added++
			}
		}
		if res.Pending+res.Skipped != added || res.Duplicates != len(pages)-added {
			t.Errorf("%s: result %+v, want %d added (pending + skipped) and %d duplicates",
				call, res, added, len(pages)-added)
		}
		if status != tasks.JobStatusPaused && res.Skipped != 0 { // only the paused job has max_pages
			t.Errorf("%s: %d skipped in a job without max_pages", call, res.Skipped)
		}
		after := takeFingerprint(t, jf.fixture)
		if after.Tasks-before.Tasks != int64(added) {
			t.Errorf("%s: %d task rows added, want %d", call, after.Tasks-before.Tasks, added)
		}
		checkStoredPages(t, jf.fixture, jobID, distinct, first, had)
		checkCounters(t, jf.fixture)
	})
}

// storedPaths returns which of paths the job has a task for, compared byte
// for byte.
func storedPaths(t testing.TB, f fixture, jobID string, paths []string) map[string]bool {
	t.Helper()
	rows, err := f.pool.Query(context.Background(),
		"SELECT path FROM tasks WHERE job_id = $1 AND path = ANY($2::text[])", jobID, paths)
	if err != nil {
		t.Fatal(err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	had := map[string]bool{}
	for _, p := range found {
		had[p] = true
	}
	return had
}

// checkStoredPages checks that every path of the batch is now a task of the
// job whose path, and whose page's path, are the bytes sent, with the
// priority of its first occurrence when the batch added it.
func checkStoredPages(t testing.TB, f fixture, jobID string, paths []string, first map[string]float64, had map[string]bool) {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `
		SELECT t.path AS task_path, p.path AS page_path, t.priority_score
		FROM tasks t JOIN pages p ON p.id = t.page_id
		WHERE t.job_id = $1 AND t.path = ANY($2::text[])`, jobID, paths)
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		TaskPath      string
		PagePath      string
		PriorityScore float64
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByName[stored])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range got {
		prio, sent := first[s.TaskPath]
		switch {
		case !sent:
			t.Errorf("stored path %q was not sent", s.TaskPath)
		case seen[s.TaskPath]:
			t.Errorf("path %q stored twice in job %s", s.TaskPath, jobID)
		case s.PagePath != s.TaskPath:
			t.Errorf("task path %q, its page's path %q", s.TaskPath, s.PagePath)
		case !had[s.TaskPath] && s.PriorityScore != prio:
			t.Errorf("path %q stored with priority %v, sent %v", s.TaskPath, s.PriorityScore, prio)
		}
		seen[s.TaskPath] = true
	}
	for _, p := range paths {
		if !seen[p] {
			t.Errorf("path %q (%d bytes) sent, not stored as sent", p, len(p))
		}
	}
}

func FuzzClaim(f *testing.F) {
	seeds := []struct {
		worker string
		n      int
		one    bool
	}{
		// From input_test.go.
		{"", 1, false}, {"w\x001", 1, false}, {"w\xff", 1, false},
		{strings.Repeat("w", tasks.MaxIDLength+1), 1, false},
		{"w2", 0, false}, {"w2", -1, false}, {"w2", tasks.MaxBatch + 1, false}, {"", 0, true},
		// Accepted.
		{"w1", 1, false}, {"w1", 3, false}, {"w1", tasks.MaxBatch, false}, {"w1", 7, true},
		{strings.Repeat("w", tasks.MaxIDLength), 2, false},
		{strings.Repeat("é", tasks.MaxIDLength/2), 1, false},
		{"worker-日本-🦀", 5, false}, {"\uFFFD", 1, true}, {" ", 1, false}, {"w\n\t", 1, false},
		// Huge and negative batches.
		{"w1", math.MaxInt, false}, {"w1", math.MinInt, false}, {"w1", math.MaxInt32 + 1, false},
		{"w1", -tasks.MaxBatch, false},
	}
	for _, s := range seeds {
		f.Add(s.worker, s.n, s.one)
	}
	jf := newJobFixture(f)
	ctx := context.Background()

	f.Fuzz(func(t *testing.T, workerID string, n int, one bool) {
		before := takeFingerprint(t, jf.fixture)
		var claimed []tasks.Task
		var err error
		call := fmt.Sprintf("Claim(%q, %d)", workerID, n)
		if one {
			call = fmt.Sprintf("ClaimOne(%q)", workerID)
			var task *tasks.Task
			if task, err = jf.queue.ClaimOne(ctx, workerID); task != nil {
				claimed = []tasks.Task{*task}
			}
		} else {
			claimed, err = jf.queue.Claim(ctx, workerID, n)
		}

		var refusal string
		switch {
		case idProblem(workerID) != "":
			refusal = "workerID"
		case !one && (n < 1 || n > tasks.MaxBatch):
			refusal = "n"
		}
		if refusal != "" {
			checkArgumentError(t, err, refusal)
			if len(claimed) != 0 {
				t.Errorf("%s refused, yet returned %d tasks", call, len(claimed))
			}
			checkUnchanged(t, jf.fixture, before, call)
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", call, err)
		}
		// The running job always has pending tasks: every input hands back
		// what it claimed.
		if len(claimed) == 0 || (!one && len(claimed) > n) {
			t.Fatalf("%s claimed %d tasks", call, len(claimed))
		}
		now := jf.clock.Now()
		for _, task := range claimed {
			row := taskRow(t, jf.fixture, task.ID)
			switch {
			case task.JobID != runningJob:
				t.Errorf("%s claimed task %s of job %s, want only %s's", call, task.ID, task.JobID, runningJob)
			case task.WorkerID != workerID || row.ClaimedBy == nil || *row.ClaimedBy != workerID:
				t.Errorf("%s: task %s claimed by %q, stored %v", call, task.ID, task.WorkerID, row.ClaimedBy)
			case row.Status != tasks.TaskStatusRunning || row.Attempt != task.Attempt || task.Attempt < 1:
				t.Errorf("%s: task %s stored %s attempt %d, returned attempt %d",
					call, task.ID, row.Status, row.Attempt, task.Attempt)
			case !task.StartedAt.Equal(now) || !task.LeaseExpiresAt.Equal(now.Add(time.Minute)):
				t.Errorf("%s: task %s started %s, lease until %s; want %s and a minute later",
					call, task.ID, task.StartedAt, task.LeaseExpiresAt, now)
			}
		}
		lost, err := jf.queue.Release(ctx, claimed)
		if err != nil || len(lost) != 0 {
			t.Fatalf("Release of the %d tasks %s claimed: lost %v, %v", len(claimed), call, lost, err)
		}
		after := takeFingerprint(t, jf.fixture)
		if after.Tasks != before.Tasks || after.TaskStatuses != before.TaskStatuses {
			t.Errorf("claim and release changed the tasks: %d %q, then %d %q",
				before.Tasks, before.TaskStatuses, after.Tasks, after.TaskStatuses)
		}
		checkCounters(t, jf.fixture)
	})
}

// Job operations FuzzJobByID calls.
const (
	opJob = iota
	opPause
	opResume
	opCancel
	opJobCount
)

// FuzzJobByID: Job, PauseJob, ResumeJob and CancelJob take a job id. A
// change that succeeds is undone (a pause by a resume and the other way
// round); a cancel that would succeed is not made, since nothing undoes it.
func FuzzJobByID(f *testing.F) {
	for _, id := range []string{"", "no-such-job", "job-\xff", runningJob + "\x00", strings.Repeat("j", tasks.MaxIDLength+1),
		strings.Repeat("j", tasks.MaxIDLength), "job-é", "JOB-RUNNING"} {
		for op := range uint8(opJobCount) {
			f.Add(uint8(0), id, op)
		}
	}
	for pick := range uint8(len(fuzzJobs)) {
		for op := range uint8(opJobCount) {
			f.Add(pick+1, "", op)
		}
	}
	jf := newJobFixture(f)
	ctx := context.Background()
	from := map[uint8][]tasks.JobStatus{
		opPause:  {tasks.JobStatusRunning},
		opResume: {tasks.JobStatusPaused},
		opCancel: {tasks.JobStatusPending, tasks.JobStatusRunning, tasks.JobStatusPaused},
	}

	f.Fuzz(func(t *testing.T, pick uint8, jobID string, op uint8) {
		if p := int(pick) % 8; p >= 1 && p <= len(fuzzJobs) {
			jobID = fuzzJobs[p-1]
		}
		op %= opJobCount
		status, known := jf.status[jobID]
		allowed := slices.Contains(from[op], status)
		if known && op == opCancel && allowed {
			return
		}
		before := takeFingerprint(t, jf.fixture)
		var job tasks.Job
		var err error
		var call string
		switch op {
		case opJob:
			call = fmt.Sprintf("Job(%q)", jobID)
			job, err = jf.queue.Job(ctx, jobID)
		case opPause:
			call = fmt.Sprintf("PauseJob(%q)", jobID)
			err = jf.queue.PauseJob(ctx, jobID)
		case opResume:
			call = fmt.Sprintf("ResumeJob(%q)", jobID)
			err = jf.queue.ResumeJob(ctx, jobID)
		case opCancel:
			call = fmt.Sprintf("CancelJob(%q)", jobID)
			err = jf.queue.CancelJob(ctx, jobID)
		}
		switch {
		case idProblem(jobID) != "":
			checkArgumentError(t, err, "id")
		case !known:
			if !errors.Is(err, tasks.ErrJobNotFound) {
				t.Fatalf("%s: error %v, want ErrJobNotFound", call, err)
			}
			checkMessage(t, err)
		case op == opJob:
			if err != nil || job.ID != jobID || job.Status != status {
				t.Fatalf("%s = %s %s, %v; want %s", call, job.ID, job.Status, err, status)
			}
		case !allowed:
			if !errors.Is(err, tasks.ErrInvalidTransition) {
				t.Fatalf("%s of a %s job: error %v, want ErrInvalidTransition", call, status, err)
			}
			checkMessage(t, err)
		default:
			if err != nil {
				t.Fatalf("%s of a %s job: %v", call, status, err)
			}
			undo := jf.queue.ResumeJob
			if op == opResume {
				undo = jf.queue.PauseJob
			}
			if err := undo(ctx, jobID); err != nil {
				t.Fatalf("undoing %s: %v", call, err)
			}
		}
		checkUnchanged(t, jf.fixture, before, call)
	})
}

// finishJob is the job whose tasks FuzzFinish claims, finishes and hands
// back; with one retry, a failure is retried once and then final.
const (
	finishJob        = "job-finish"
	finishWorker     = "w-finish"
	finishMaxRetries = 1
)

// Finish operations FuzzFinish applies to the task it holds.
const (
	opFinish = iota
	opRelease
	opExtend
	opCount
)

// finishInput is one FuzzFinish input.
type finishInput struct {
	op            uint8  // opFinish, opRelease or opExtend, modulo opCount
	taskID        string // used for the held task's id when useTaskID
	useTaskID     bool
	workerID      string // used for the held task's worker when useWorkerID
	useWorkerID   bool
	attemptDelta  int32 // added to the held task's attempt
	batch         int   // outcomes in all: the held task's, then unknown ones
	statusCode    int
	responseTime  int64
	contentLength int64
	cacheStatus   string
	contentType   string
	failed        bool // the result carries errors.New(errText)
	permanent     bool
	errText       string
	headers       uint8 // 0: nil; 1: the first header; 2: both
	name1, value1 string
	name2, value2 string
}

func (in finishInput) add(f *testing.F) {
	f.Add(in.op, in.taskID, in.useTaskID, in.workerID, in.useWorkerID, in.attemptDelta, in.batch,
		in.statusCode, in.responseTime, in.contentLength, in.cacheStatus, in.contentType,
		in.failed, in.permanent, in.errText, in.headers, in.name1, in.value1, in.name2, in.value2)
}

func (in finishInput) result() tasks.TaskResult {
	r := tasks.TaskResult{
		StatusCode:    in.statusCode,
		ResponseTime:  time.Duration(in.responseTime),
		ContentLength: in.contentLength,
		CacheStatus:   in.cacheStatus,
		ContentType:   in.contentType,
	}
	if in.headers%3 >= 1 {
		// Raw map keys: a server's header names arrive as sent.
		r.Headers = http.Header{in.name1: {in.value1}}
	}
	if in.headers%3 == 2 {
		r.Headers[in.name2] = append(r.Headers[in.name2], in.value2)
	}
	if in.failed {
		r.Err = errors.New(in.errText)
		r.Permanent = in.permanent
	}
	return r
}

// outcomes builds the call's outcomes: the held task (edited as the input
// says) first, then tasks no worker holds, batch in all (MaxBatch + 1 for
// any larger batch).
func (in finishInput) outcomes(held tasks.Task) []tasks.Outcome {
	n := min(max(in.batch, 0), tasks.MaxBatch+1)
	if n == 0 {
		return nil
	}
	task := held
	if in.useTaskID {
		task.ID = in.taskID
	}
	if in.useWorkerID {
		task.WorkerID = in.workerID
	}
	task.Attempt += in.attemptDelta
	out := make([]tasks.Outcome, n)
	out[0] = tasks.Outcome{Task: task, Result: in.result()}
	for i := 1; i < n; i++ {
		out[i] = tasks.Outcome{
			Task:   tasks.Task{ID: fmt.Sprintf("unheld-%d", i), WorkerID: finishWorker, Attempt: 1},
			Result: okResult(),
		}
	}
	return out
}

// finishRefusal lists the arguments the operation may name in refusing
// outcomes (the first bad outcome's bad fields), or nil if it must accept
// them.
func finishRefusal(op uint8, outcomes []tasks.Outcome) []string {
	list, item := "outcomes", "outcomes[%d]"
	if op != opFinish {
		list, item = "tasks", "tasks[%d]"
	}
	if len(outcomes) < 1 || len(outcomes) > tasks.MaxBatch {
		return []string{list}
	}
	seen := map[string]bool{}
	for i, o := range outcomes {
		at := fmt.Sprintf(item, i)
		var args []string
		if idProblem(o.Task.ID) != "" {
			args = append(args, at+".ID")
		}
		if idProblem(o.Task.WorkerID) != "" {
			args = append(args, at+".WorkerID")
		}
		if op == opFinish {
			for j := range args {
				args[j] = strings.Replace(args[j], at+".", at+".Task.", 1)
			}
			if seen[o.Task.ID] {
				args = append(args, at)
			}
			seen[o.Task.ID] = true
			if r := o.Result; r.StatusCode != 0 {
				if r.StatusCode < 100 || r.StatusCode > 999 {
					args = append(args, at+".Result.StatusCode")
				}
				if r.ResponseTime < 0 || r.ContentLength < -1 {
					args = append(args, at+".Result")
				}
			}
		}
		if args != nil {
			return args
		}
	}
	return nil
}

// wantHeaders is what the queue must store for h: every name and value
// cleaned, and no value lost when two names clean to the same one.
func wantHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		for _, v := range vs {
			out[cleanText(k)] = append(out[cleanText(k)], cleanText(v))
		}
	}
	for _, vs := range out {
		slices.Sort(vs)
	}
	return out
}

func FuzzFinish(f *testing.F) {
	ok := finishInput{batch: 1, statusCode: 200, responseTime: int64(120 * time.Millisecond), contentLength: 5120,
		cacheStatus: "HIT", contentType: "text/html", headers: 2, name1: "Cf-Cache-Status", value1: "HIT",
		name2: "Content-Type", value2: "text/html"}
	with := func(edit func(*finishInput)) finishInput { in := ok; edit(&in); return in }
	seeds := []finishInput{
		ok,
		with(func(in *finishInput) { in.batch = 0 }),
		with(func(in *finishInput) { in.batch = tasks.MaxBatch + 1 }),
		with(func(in *finishInput) { in.batch = math.MaxInt }),
		with(func(in *finishInput) { in.batch = math.MinInt }),
		with(func(in *finishInput) { in.batch = 3 }),
		with(func(in *finishInput) { in.useTaskID = true; in.taskID = "" }),
		with(func(in *finishInput) { in.useTaskID = true; in.taskID = "unheld-1"; in.batch = 2 }), // duplicate
		with(func(in *finishInput) { in.useTaskID = true; in.taskID = "no-such-task" }),
		with(func(in *finishInput) { in.useTaskID = true; in.taskID = "t\x00" }),
		with(func(in *finishInput) { in.useTaskID = true; in.taskID = strings.Repeat("t", tasks.MaxIDLength+1) }),
		with(func(in *finishInput) { in.useWorkerID = true; in.workerID = "w\x001" }),
		with(func(in *finishInput) { in.useWorkerID = true; in.workerID = "w\xff" }),
		with(func(in *finishInput) { in.useWorkerID = true; in.workerID = strings.Repeat("w", tasks.MaxIDLength+1) }),
		with(func(in *finishInput) { in.useWorkerID = true; in.workerID = "someone-else" }),
		with(func(in *finishInput) { in.attemptDelta = 1 }),
		with(func(in *finishInput) { in.attemptDelta = math.MaxInt32 }), // wraps around
		with(func(in *finishInput) { in.statusCode = 99 }),
		with(func(in *finishInput) { in.statusCode = 1000 }),
		with(func(in *finishInput) { in.statusCode = -200 }),
		with(func(in *finishInput) { in.statusCode = 999 }),
		with(func(in *finishInput) { in.statusCode = 100 }),
		with(func(in *finishInput) { in.responseTime = -int64(time.Millisecond) }),
		with(func(in *finishInput) { in.responseTime = math.MaxInt64 }),
		with(func(in *finishInput) { in.responseTime = int64(time.Millisecond) - 1 }),
		with(func(in *finishInput) { in.contentLength = -1 }),
		with(func(in *finishInput) { in.contentLength = -2 }),
		with(func(in *finishInput) { in.contentLength = math.MaxInt64 }),
		with(func(in *finishInput) { in.statusCode = 0; in.responseTime = -1; in.contentLength = -5 }), // no response
		// Text from the outside world: kept, cleaned.
		with(func(in *finishInput) { in.cacheStatus = "HIT\x00"; in.contentType = "text/html; charset=\xff" }),
		with(func(in *finishInput) { in.cacheStatus = ""; in.contentType = "" }),
		with(func(in *finishInput) { in.cacheStatus = "\xff\xfe\x00\xff"; in.contentType = "\xe2\x82" }),
		with(func(in *finishInput) { in.headers = 1; in.name1 = "X-Odd"; in.value1 = "caf\xe9" }),
		with(func(in *finishInput) { in.headers = 1; in.name1 = "X-Odd"; in.value1 = "a\x00b" }),
		with(func(in *finishInput) { in.headers = 1; in.name1 = "X-\x00\xff"; in.value1 = "\u2028\u2029\\\"" }),
		with(func(in *finishInput) { in.headers = 2; in.name1 = "X-Same"; in.name2 = "X-Same" }),
		with(func(in *finishInput) { in.headers = 2; in.name1 = "X-A\x00"; in.name2 = "X-A\xff" }), // clean alike
		with(func(in *finishInput) { in.headers = 0 }),
		with(func(in *finishInput) { in.headers = 1; in.name1 = ""; in.value1 = "" }),
		with(func(in *finishInput) { in.failed = true; in.errText = "bad \x00 byte in \xff body" }),
		with(func(in *finishInput) { in.failed = true; in.errText = "" }),
		with(func(in *finishInput) { in.failed = true; in.permanent = true; in.errText = "410 gone ✗" }),
		with(func(in *finishInput) { in.failed = true; in.statusCode = 0; in.errText = "timeout" }),
		with(func(in *finishInput) { in.failed = true; in.errText = strings.Repeat("\xff", 1000) }),
		// Handing back and extending.
		with(func(in *finishInput) { in.op = opRelease }),
		with(func(in *finishInput) { in.op = opRelease; in.batch = 0 }),
		with(func(in *finishInput) { in.op = opRelease; in.batch = 4 }),
		with(func(in *finishInput) { in.op = opRelease; in.useWorkerID = true; in.workerID = "w\xff" }),
		with(func(in *finishInput) { in.op = opRelease; in.attemptDelta = -1 }),
		with(func(in *finishInput) { in.op = opExtend }),
		with(func(in *finishInput) { in.op = opExtend; in.batch = tasks.MaxBatch + 1 }),
		with(func(in *finishInput) { in.op = opExtend; in.batch = 2 }),
		with(func(in *finishInput) { in.op = opExtend; in.useTaskID = true; in.taskID = "t\x00" }),
		with(func(in *finishInput) { in.op = opExtend; in.useWorkerID = true; in.workerID = "someone-else" }),
	}
	for _, s := range seeds {
		s.add(f)
	}

	ctx := context.Background()
	ff := setup(f, tasks.Config{BackoffBase: time.Millisecond, BackoffMax: time.Millisecond})
	if _, err := ff.queue.CreateJob(ctx, tasks.JobOptions{ID: finishJob, Domain: "finish.example",
		Concurrency: 4, MaxRetries: finishMaxRetries}); err != nil {
		f.Fatal(err)
	}
	supplied := 0
	// hold claims a task, adding pages to the job when none is claimable.
	hold := func(t *testing.T) tasks.Task {
		for {
			task, err := ff.queue.ClaimOne(ctx, finishWorker)
			if err == nil {
				return *task
			}
			if !errors.Is(err, tasks.ErrNoTasksAvailable) {
				t.Fatalf("ClaimOne: %v", err)
			}
			batch := make([]tasks.Page, 32)
			for i := range batch {
				batch[i] = tasks.Page{Path: fmt.Sprintf("/f%07d", supplied)}
				supplied++
			}
			if _, err := ff.queue.Enqueue(ctx, finishJob, batch); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
		}
	}

	f.Fuzz(func(t *testing.T, op uint8, taskID string, useTaskID bool, workerID string, useWorkerID bool,
		attemptDelta int32, batch, statusCode int, responseTime, contentLength int64, cacheStatus, contentType string,
		failed, permanent bool, errText string, headers uint8, name1, value1, name2, value2 string) {
		in := finishInput{op: op % opCount, taskID: taskID, useTaskID: useTaskID, workerID: workerID,
			useWorkerID: useWorkerID, attemptDelta: attemptDelta, batch: batch, statusCode: statusCode,
			responseTime: responseTime, contentLength: contentLength, cacheStatus: cacheStatus,
			contentType: contentType, failed: failed, permanent: permanent, errText: errText, headers: headers,
			name1: name1, value1: value1, name2: name2, value2: value2}
		// Retried tasks (1 ms backoff) become claimable again.
		ff.clock.Advance(time.Second)
		held := hold(t)
		// Later than the claim, so that an extended lease differs.
		ff.clock.Advance(time.Second)
		now := ff.clock.Now()
		outcomes := in.outcomes(held)
		held0 := len(outcomes) > 0 && outcomes[0].Task.ID == held.ID &&
			outcomes[0].Task.WorkerID == held.WorkerID && outcomes[0].Task.Attempt == held.Attempt
		heldTasks := make([]tasks.Task, len(outcomes))
		var unheld []string
		for i, o := range outcomes {
			heldTasks[i] = o.Task
			if i > 0 || !held0 {
				unheld = append(unheld, o.Task.ID)
			}
		}
		refusal := finishRefusal(in.op, outcomes)
		before := takeFingerprint(t, ff)

		var call string
		var err error
		switch in.op {
		case opFinish:
			call = fmt.Sprintf("Finish(%d outcomes)", len(outcomes))
			var rep tasks.FinishReport
			rep, err = ff.queue.Finish(ctx, outcomes)
			if refusal != nil || err != nil {
				break
			}
			var wantJobs []string
			if held0 {
				wantJobs = []string{finishJob}
			}
			if rep.Completed+rep.Retried+rep.Failed != len(wantJobs) || len(rep.Busy) != 0 ||
				!slices.Equal(rep.Lost, unheld) || !slices.Equal(rep.Jobs, wantJobs) {
				t.Errorf("%s: report %+v; want %d recorded, lost %d", call, rep, len(wantJobs), len(unheld))
			}
			if held0 {
				checkFinished(t, ff, held, in, rep)
			}
		case opRelease:
			call = fmt.Sprintf("Release(%d tasks)", len(heldTasks))
			var lost []string
			lost, err = ff.queue.Release(ctx, heldTasks)
			if refusal != nil || err != nil {
				break
			}
			if !slices.Equal(lost, unheld) {
				t.Errorf("%s: lost %d, want %d", call, len(lost), len(unheld))
			}
			if row := taskRow(t, ff, held.ID); held0 &&
				(row.Status != tasks.TaskStatusPending || row.LeaseExpiresAt != nil || !row.RunAfter.Time.Equal(now)) {
				t.Errorf("%s: released task stored %s, lease %v, run after %v", call, row.Status, row.LeaseExpiresAt, row.RunAfter)
			}
		case opExtend:
			call = fmt.Sprintf("ExtendLeases(%d tasks)", len(heldTasks))
			var extended []tasks.Task
			extended, err = ff.queue.ExtendLeases(ctx, heldTasks)
			if refusal != nil {
				break
			}
			switch {
			case len(unheld) > 0 && !errors.Is(err, tasks.ErrLeaseLost):
				t.Errorf("%s with %d tasks not held: error %v, want ErrLeaseLost", call, len(unheld), err)
			case len(unheld) == 0 && err != nil:
				t.Errorf("%s: %v", call, err)
			}
			if err != nil {
				checkMessage(t, err)
			}
			err = nil
			if held0 {
				row := taskRow(t, ff, held.ID)
				if len(extended) != 1 || !extended[0].LeaseExpiresAt.Equal(now.Add(time.Minute)) ||
					row.LeaseExpiresAt == nil || !row.LeaseExpiresAt.Equal(now.Add(time.Minute)) {
					t.Errorf("%s: extended %+v, stored lease %v; want %s", call, extended, row.LeaseExpiresAt, now.Add(time.Minute))
				}
			} else if len(extended) != 0 {
				t.Errorf("%s extended %d tasks not held", call, len(extended))
			}
		}
		switch {
		case refusal != nil:
			checkArgumentError(t, err, refusal...)
			checkUnchanged(t, ff, before, call)
		case err != nil:
			t.Fatalf("%s: %v (%T), want no error", call, err, err)
		case !held0:
			// Only the held task, named as its claim, may change.
			checkUnchanged(t, ff, before, call)
		}

		// Hand back the held task if it is still running.
		if row := taskRow(t, ff, held.ID); row.Status == tasks.TaskStatusRunning {
			if lost, err := ff.queue.Release(ctx, []tasks.Task{held}); err != nil || len(lost) != 0 {
				t.Fatalf("Release of the held task: lost %v, %v", lost, err)
			}
		}
		checkCounters(t, ff)
	})
}

// checkFinished checks the held task's row after Finish recorded in for it.
func checkFinished(t *testing.T, f fixture, held tasks.Task, in finishInput, rep tasks.FinishReport) {
	t.Helper()
	r := in.result()
	row := taskRow(t, f, held.ID)
	wantStatus, count := tasks.TaskStatusCompleted, rep.Completed
	switch {
	case r.Err == nil:
	case !r.Permanent && held.RetryCount < finishMaxRetries:
		wantStatus, count = tasks.TaskStatusPending, rep.Retried
	default:
		wantStatus, count = tasks.TaskStatusFailed, rep.Failed
	}
	if row.Status != wantStatus || count != 1 {
		t.Errorf("finished task stored %s, report %+v; want %s", row.Status, rep, wantStatus)
	}

	type recorded struct {
		Error         *string
		StatusCode    *int32
		ResponseTime  *int32
		CacheStatus   *string
		ContentType   *string
		ContentLength *int64
	}
	nonEmpty := func(s string) *string {
		if s == "" {
			return nil
		}
		return ptr(cleanText(s))
	}
	var want recorded
	if r.Err != nil {
		msg := in.errText
		if msg == "" {
			msg = fmt.Sprintf("%T", r.Err)
		}
		want.Error = ptr(cleanText(msg))
	}
	if r.StatusCode != 0 {
		want.StatusCode = ptr(int32(r.StatusCode))
		want.ResponseTime = ptr(int32(min(r.ResponseTime.Milliseconds(), math.MaxInt32)))
		want.CacheStatus = nonEmpty(r.CacheStatus)
		want.ContentType = nonEmpty(r.ContentType)
		if r.ContentLength != -1 {
			want.ContentLength = ptr(r.ContentLength)
		}
	}
	got := recorded{row.Error, row.StatusCode, row.ResponseTime, row.CacheStatus, row.ContentType, row.ContentLength}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored result (-want +got):\n%s", diff)
	}

	var gotHeaders http.Header
	if row.Headers != nil {
		if err := json.Unmarshal(row.Headers, &gotHeaders); err != nil {
			t.Fatalf("stored headers %s: %v", row.Headers, err)
		}
		for _, vs := range gotHeaders {
			slices.Sort(vs)
		}
	}
	var wantH http.Header
	if r.StatusCode != 0 && r.Headers != nil {
		wantH = wantHeaders(r.Headers)
	}
	if diff := cmp.Diff(wantH, gotHeaders); diff != "" {
		t.Errorf("stored headers (-want +got):\n%s", diff)
	}
}

const (
	existingJob    = "job-existing"
	existingDomain = "existing.example"
)

func FuzzCreateJob(f *testing.F) {
	type seed struct {
		id, domain                        string
		concurrency, maxPages, maxRetries int
		noRetries                         bool
		owner                             uint8 // 1: known organisation and user; 2: unknown organisation; 3: unknown user
	}
	seeds := []seed{
		// From input_test.go.
		{domain: ""}, {domain: "a\x00.example"}, {domain: "new.example", concurrency: -1},
		{domain: "new.example", maxPages: -1}, {domain: "new.example", maxRetries: 1001},
		// Accepted.
		{domain: "example.com"}, {id: "job-1", domain: "new.example", concurrency: 3, maxPages: 10, maxRetries: 2},
		{domain: "new.example", noRetries: true}, {domain: "new.example", maxRetries: 1000},
		{domain: "new.example", concurrency: math.MaxInt32, maxPages: math.MaxInt32},
		{domain: "bücher.example"}, {domain: "xn--bcher-kva.example"}, {domain: "日本.example"},
		{domain: "🦀.example", id: "job-🦀"}, {domain: " "}, {domain: "UPPER.example"},
		{domain: strings.Repeat("d", tasks.MaxIDLength)}, {id: strings.Repeat("j", tasks.MaxIDLength), domain: "x"},
		{domain: existingDomain, owner: 1},
		// Refused.
		{domain: strings.Repeat("d", tasks.MaxIDLength+1)}, {domain: "d\xff"},
		{id: "j\x00", domain: "x"}, {id: "j\xe9", domain: "x"}, {id: strings.Repeat("j", tasks.MaxIDLength+1), domain: "x"},
		{domain: "x", concurrency: math.MaxInt32 + 1}, {domain: "x", concurrency: math.MinInt},
		{domain: "x", maxPages: math.MaxInt32 + 1}, {domain: "x", maxPages: math.MinInt},
		{domain: "x", maxRetries: -1}, {domain: "x", maxRetries: math.MaxInt}, {domain: "x", noRetries: true, maxRetries: -1},
		// The database refuses: a job id taken, an unknown organisation or user.
		{id: existingJob, domain: existingDomain}, {id: existingJob, domain: "fresh.example"},
		{domain: "fresh.example", owner: 2}, {domain: existingDomain, owner: 3},
	}
	for _, s := range seeds {
		f.Add(s.id, s.domain, s.concurrency, s.maxPages, s.maxRetries, s.noRetries, s.owner)
	}
	ctx := context.Background()
	cf := setup(f, tasks.Config{})
	org, user := uuid.New(), uuid.New()
	if _, err := cf.pool.Exec(ctx, `INSERT INTO organisations (id, name) VALUES ($1, 'Org');
		`, org); err != nil {
		f.Fatal(err)
	}
	if _, err := cf.pool.Exec(ctx, `INSERT INTO users (id, email, organisation_id) VALUES ($1, 'u@example.com', $2)`,
		user, org); err != nil {
		f.Fatal(err)
	}
	cf.job(f, tasks.JobOptions{ID: existingJob, Domain: existingDomain}, 1)

	f.Fuzz(func(t *testing.T, id, domain string, concurrency, maxPages, maxRetries int, noRetries bool, owner uint8) {
		spec := tasks.JobOptions{ID: id, Domain: domain, Concurrency: concurrency, MaxPages: maxPages,
			MaxRetries: maxRetries, NoRetries: noRetries}
		unknownOwner := false
		switch owner % 4 {
		case 1:
			spec.OrganisationID, spec.UserID = &org, &user
		case 2:
			spec.OrganisationID, unknownOwner = ptr(uuid.New()), true
		case 3:
			spec.UserID, unknownOwner = ptr(uuid.New()), true
		}
		before := takeFingerprint(t, cf)
		job, err := cf.queue.CreateJob(ctx, spec)
		call := fmt.Sprintf("CreateJob(%+v)", spec)

		wantConcurrency, wantRetries := concurrency, maxRetries
		if wantConcurrency == 0 {
			wantConcurrency = 5
		}
		if wantRetries == 0 && !noRetries {
			wantRetries = 3
		}
		var refusal []string
		switch {
		case id != "" && idProblem(id) != "":
			refusal = []string{"spec.ID"}
		case idProblem(domain) != "":
			refusal = []string{"spec.Domain"}
		default:
			if wantConcurrency < 1 || wantConcurrency > math.MaxInt32 {
				refusal = append(refusal, "spec.Concurrency")
			}
			if maxPages < 0 || maxPages > math.MaxInt32 {
				refusal = append(refusal, "spec.MaxPages")
			}
			if wantRetries < 0 || wantRetries > 1000 {
				refusal = append(refusal, "spec.MaxRetries")
			}
		}
		if refusal != nil {
			checkArgumentError(t, err, refusal...)
			checkUnchanged(t, cf, before, call)
			return
		}
		if id == existingJob || unknownOwner {
			// The database must refuse it: a typed error, nothing written.
			after := takeFingerprint(t, cf)
			if err != nil && isQueueError(err) && cmp.Equal(before, after) {
				checkMessage(t, err)
				return
			}
			t.Fatalf("%s: error %v (%T), want a typed error; fingerprint (-before +after):\n%s",
				call, err, err, cmp.Diff(before, after))
		}
		if err != nil {
			t.Fatalf("%s: %v", call, err)
		}

		want := tasks.Job{ID: id, Domain: spec.Domain, Status: tasks.JobStatusPending, Concurrency: wantConcurrency, MaxPages: maxPages,
			MaxRetries: wantRetries, OrganisationID: spec.OrganisationID, UserID: spec.UserID}
		if id == "" {
			if _, err := uuid.Parse(job.ID); err != nil {
				t.Errorf("%s: generated id %q is not a UUID", call, job.ID)
			}
			want.ID = job.ID
		}
		if diff := cmp.Diff(want, job, cmpIgnoreJobVolatile); diff != "" {
			t.Errorf("%s (-want +got):\n%s", call, diff)
		}
		var stored string
		var shards int
		if err := cf.pool.QueryRow(ctx, `SELECT d.name, (SELECT count(*) FROM job_shards s WHERE s.job_id = $2)
			FROM domains d WHERE d.id = $1`, job.DomainID, job.ID).Scan(&stored, &shards); err != nil {
			t.Fatal(err)
		}
		if stored != domain {
			t.Errorf("%s: domain stored as %q", call, stored)
		}
		if want := min(32, max(1, wantConcurrency/4)); shards != want {
			t.Errorf("%s: %d shards, want %d", call, shards, want)
		}

		// Back to the fixture's state, so that ids and domains are new again.
		if _, err := cf.pool.Exec(ctx, "DELETE FROM jobs WHERE id = $1", job.ID); err != nil {
			t.Fatal(err)
		}
		if takeFingerprint(t, cf).Domains != before.Domains {
			deleteDomain(t, cf, domain)
		}
		checkUnchanged(t, cf, before, "CreateJob, then deleting the job and its new domain")
	})
}

var cmpIgnoreJobVolatile = cmp.FilterPath(func(p cmp.Path) bool {
	switch p.String() {
	case "DomainID", "CreatedAt", "StartedAt", "CompletedAt":
		return true
	}
	return false
}, cmp.Ignore())

func deleteDomain(t testing.TB, f fixture, name string) {
	t.Helper()
	tag, err := f.pool.Exec(context.Background(), `DELETE FROM domains d WHERE d.name = $1
		AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.domain_id = d.id)
		AND NOT EXISTS (SELECT 1 FROM pages p WHERE p.domain_id = d.id)`, name)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("delete domain %q: %v (%d rows)", name, err, tag.RowsAffected())
	}
}

// TestFuzzFindings pins the bugs fuzzing found: each input here once broke
// a promise of the API.
func TestFuzzFindings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	// Finish kept one value of two header names that sanitize alike.
	t.Run("header names that clean alike", func(t *testing.T) {
		t.Parallel()
		f := setup(t, tasks.Config{})
		f.job(t, tasks.JobOptions{Concurrency: 1}, 1)
		task := claimOne(t, f, "w1")
		r := okResult()
		r.Headers = http.Header{"X-A\x00": {"sent with a NUL"}, "X-A\xff": {"sent with Latin-1"}}
		if err := f.queue.Complete(ctx, task, r); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		var got http.Header
		if err := json.Unmarshal(taskRow(t, f, task.ID).Headers, &got); err != nil {
			t.Fatal(err)
		}
		want := http.Header{"X-A\uFFFD": {"sent with a NUL", "sent with Latin-1"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stored headers (-want +got):\n%s", diff)
		}
	})

	// CreateJob that the database refused returned the raw driver error
	// and kept the domain its first statement had inserted.
	createRefused := func(t *testing.T, want error, edit func(*tasks.JobOptions)) {
		f := setup(t, tasks.Config{})
		f.job(t, tasks.JobOptions{ID: existingJob, Domain: existingDomain}, 0)
		spec := tasks.JobOptions{Domain: "fresh.example"}
		edit(&spec)
		before := takeFingerprint(t, f)
		_, err := f.queue.CreateJob(ctx, spec)
		if !errors.Is(err, want) {
			t.Errorf("CreateJob(%+v): error %v (%T), want %v", spec, err, err, want)
		}
		checkMessage(t, err)
		checkUnchanged(t, f, before, "CreateJob refused by the database")
	}
	t.Run("create job with a taken id", func(t *testing.T) {
		t.Parallel()
		createRefused(t, tasks.ErrJobExists, func(spec *tasks.JobOptions) { spec.ID = existingJob })
	})
	t.Run("create job for an unknown organisation", func(t *testing.T) {
		t.Parallel()
		createRefused(t, tasks.ErrInvalidArgument, func(spec *tasks.JobOptions) { spec.OrganisationID = ptr(uuid.New()) })
	})
	t.Run("create job for an unknown user", func(t *testing.T) {
		t.Parallel()
		createRefused(t, tasks.ErrInvalidArgument, func(spec *tasks.JobOptions) { spec.UserID = ptr(uuid.New()) })
	})
}
