package db_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/tasks"
)

// appQueue is the application's queue interface (Harvey-AU/blue-banded-bee,
// internal/jobs/interfaces.go, October 2025, with the worker's EnqueueURLs
// and CleanupStuckJobs), with this project's types. The assignment below
// breaks the build if a signature drifts.
type appQueue interface {
	GetNextTask(ctx context.Context, jobID string) (*db.Task, error)
	UpdateTaskStatus(ctx context.Context, task *db.Task) error
	Execute(ctx context.Context, fn func(*sql.Tx) error) error
	ExecuteMaintenance(ctx context.Context, fn func(*sql.Tx) error) error
	EnqueueURLs(ctx context.Context, jobID string, pages []db.Page, sourceType, sourceURL string) error
	CleanupStuckJobs(ctx context.Context) error
}

var _ appQueue = (*db.DbQueue)(nil)

// appPages are n pages /p0... with the non-zero ids an application's page
// upsert would have given them.
func appPages(prefix string, n int) []db.Page {
	pages := make([]db.Page, n)
	for i := range pages {
		pages[i] = db.Page{ID: i + 1, Path: fmt.Sprintf("/%s%d", prefix, i), Priority: float64(n - i)}
	}
	return pages
}

// statusCounts is a job's tasks by status, read through Execute.
func statusCounts(t *testing.T, q *db.DbQueue, jobID string) map[string]int {
	t.Helper()
	got := map[string]int{}
	err := q.Execute(context.Background(), func(tx *sql.Tx) error {
		rows, err := tx.Query(`SELECT status::text, count(*) FROM tasks WHERE job_id = $1 GROUP BY status`, jobID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			var n int
			if err := rows.Scan(&s, &n); err != nil {
				return err
			}
			got[s] = n
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// storedTask reads a task row as the application's Task, through Execute.
func storedTask(t *testing.T, q *db.DbQueue, id string) db.Task {
	t.Helper()
	var r db.Task
	var completedAt sql.NullTime
	err := q.Execute(context.Background(), func(tx *sql.Tx) error {
		return tx.QueryRow(`
			SELECT id, job_id, page_id, path, status::text, created_at, started_at, completed_at, retry_count,
			       coalesce(error, ''), coalesce(source_type, ''), coalesce(source_url, ''),
			       coalesce(status_code, 0), coalesce(response_time, 0), coalesce(cache_status, ''),
			       coalesce(content_type, ''), coalesce(content_length, 0), headers, coalesce(redirect_url, ''),
			       coalesce(dns_lookup_time, 0), coalesce(tcp_connection_time, 0), coalesce(tls_handshake_time, 0),
			       coalesce(ttfb, 0), coalesce(content_transfer_time, 0),
			       coalesce(second_response_time, 0), coalesce(second_cache_status, ''),
			       coalesce(second_content_length, 0), second_headers,
			       coalesce(second_dns_lookup_time, 0), coalesce(second_tcp_connection_time, 0),
			       coalesce(second_tls_handshake_time, 0), coalesce(second_ttfb, 0),
			       coalesce(second_content_transfer_time, 0), cache_check_attempts, priority_score,
			       coalesce(claimed_by, ''), attempt
			FROM tasks WHERE id = $1`, id).Scan(
			&r.ID, &r.JobID, &r.PageID, &r.Path, &r.Status, &r.CreatedAt, &r.StartedAt, &completedAt, &r.RetryCount,
			&r.Error, &r.SourceType, &r.SourceURL,
			&r.StatusCode, &r.ResponseTime, &r.CacheStatus, &r.ContentType, &r.ContentLength, &r.Headers, &r.RedirectURL,
			&r.DNSLookupTime, &r.TCPConnectionTime, &r.TLSHandshakeTime, &r.TTFB, &r.ContentTransferTime,
			&r.SecondResponseTime, &r.SecondCacheStatus, &r.SecondContentLength, &r.SecondHeaders,
			&r.SecondDNSLookupTime, &r.SecondTCPConnectionTime, &r.SecondTLSHandshakeTime, &r.SecondTTFB,
			&r.SecondContentTransferTime, &r.CacheCheckAttempts, &r.PriorityScore,
			&r.WorkerID, &r.Attempt)
	})
	if err != nil {
		t.Fatalf("read task %s: %v", id, err)
	}
	r.CompletedAt = completedAt.Time
	return r
}

// equateJSON compares JSON bytes by value: jsonb re-spaces what it stores.
var equateJSON = cmp.FilterValues(func(a, b []byte) bool { return json.Valid(a) && json.Valid(b) },
	cmp.Transformer("json", func(b []byte) any {
		var v any
		_ = json.Unmarshal(b, &v)
		return v
	}))

func TestGetNextTaskKeepsTheJobsConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := open(t, db.Options{MaxConns: 20})
	q := db.NewDbQueue(d)

	const concurrency, pages = 3, 60
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "one.example", Concurrency: concurrency})
	if err != nil {
		t.Fatal(err)
	}
	other, err := d.CreateJob(ctx, db.JobOptions{Domain: "other.example", Concurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueURLs(ctx, job.ID, appPages("p", pages), "sitemap", "https://one.example/sitemap.xml"); err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueURLs(ctx, other.ID, appPages("q", 5), "sitemap", "https://other.example/sitemap.xml"); err != nil {
		t.Fatal(err)
	}

	// 16 workers of the job: each claims, checks how many of the job's tasks
	// it and the others hold, and completes. held only counts claims that
	// committed and drops before the finish commits, so it can never exceed
	// what the database has running.
	var held, most, done atomic.Int64
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for done.Load() < pages {
				task, err := q.GetNextTask(ctx, job.ID)
				if err != nil {
					errs <- err
					return
				}
				if task == nil {
					time.Sleep(time.Millisecond) // the job's other tasks are held; look again
					continue
				}
				now := held.Add(1)
				for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
				}
				mu.Lock()
				seen[task.ID]++
				mu.Unlock()
				if task.JobID != job.ID || task.SourceType != "sitemap" {
					errs <- fmt.Errorf("claimed %+v from job %s", task, job.ID)
				}
				held.Add(-1)
				task.Status, task.StatusCode = db.TaskStatusCompleted, 200
				if err := q.UpdateTaskStatus(ctx, task); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := most.Load(); m > concurrency {
		t.Errorf("%d of the job's tasks held at once, concurrency %d", m, concurrency)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("task %s claimed %d times", id, n)
		}
	}
	if diff := cmp.Diff(map[string]int{"completed": pages}, statusCounts(t, q, job.ID)); diff != "" {
		t.Errorf("job's tasks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"pending": 5}, statusCounts(t, q, other.ID)); diff != "" {
		t.Errorf("the other job's tasks, untouched by a claim for the first (-want +got):\n%s", diff)
	}

	// Nothing left in the job: nil, nil, as the application's worker expects.
	if task, err := q.GetNextTask(ctx, job.ID); task != nil || err != nil {
		t.Errorf("GetNextTask of a drained job = %+v, %v; want nil, nil", task, err)
	}
	// "" takes any job's task.
	task, err := q.GetNextTask(ctx, "")
	if err != nil || task == nil || task.JobID != other.ID {
		t.Errorf("GetNextTask(\"\") = %+v, %v; want a task of job %s", task, err, other.ID)
	}
}

func TestUpdateTaskStatusWritesTheResult(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	d, _ := open(t, db.Options{Queue: tasks.Config{Now: clk.Now}})
	q := db.NewDbQueue(d)
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueURLs(ctx, job.ID, []db.Page{{ID: 7, Path: "/", Priority: 1}}, "manual", "https://example.com/"); err != nil {
		t.Fatal(err)
	}
	task, err := q.GetNextTask(ctx, job.ID)
	if err != nil || task == nil {
		t.Fatalf("GetNextTask = %v, %v", task, err)
	}
	task.Status = db.TaskStatusCompleted
	task.StatusCode, task.ResponseTime, task.CacheStatus, task.ContentType, task.ContentLength =
		200, 412, "MISS", "text/html", 5120
	task.Headers = []byte(`{"Cf-Cache-Status":["MISS"],"Content-Type":"text/html"}`)
	task.RedirectURL = "https://example.com/home"
	task.DNSLookupTime, task.TCPConnectionTime, task.TLSHandshakeTime, task.TTFB, task.ContentTransferTime = 3, 11, 24, 310, 64
	task.SecondResponseTime, task.SecondCacheStatus, task.SecondContentLength = 38, "HIT", 5120
	task.SecondHeaders = []byte(`{"Cf-Cache-Status":["HIT"]}`)
	task.SecondDNSLookupTime, task.SecondTCPConnectionTime, task.SecondTLSHandshakeTime, task.SecondTTFB,
		task.SecondContentTransferTime = 0, 0, 0, 30, 8
	task.CacheCheckAttempts = []byte(`[{"attempt":1,"cache_status":"MISS","delay_ms":500},{"attempt":2,"cache_status":"HIT","delay_ms":1000}]`)
	if err := q.UpdateTaskStatus(ctx, task); err != nil {
		t.Fatalf("UpdateTaskStatus completed: %v", err)
	}

	want := *task
	want.PageID = storedTask(t, q, task.ID).PageID
	want.CompletedAt = clk.Now()
	// Headers are stored in http.Header's form, a list per name.
	want.Headers = []byte(`{"Cf-Cache-Status":["MISS"],"Content-Type":["text/html"]}`)
	got := storedTask(t, q, task.ID)
	if diff := cmp.Diff(want, got, equateJSON, cmpopts.IgnoreFields(db.Task{}, "LeaseExpiresAt"),
		cmpopts.EquateApproxTime(time.Millisecond)); diff != "" {
		t.Errorf("stored task (-want +got):\n%s", diff)
	}
	if want.SourceType != "manual" || want.SourceURL != "https://example.com/" {
		t.Errorf("claimed task's source %q %q, want the enqueue's", want.SourceType, want.SourceURL)
	}
}

func TestUpdateTaskStatusAfterTheLeaseWasLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	d, _ := open(t, db.Options{Queue: tasks.Config{Now: clk.Now, Lease: time.Minute}})
	q := db.NewDbQueue(d)
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueURLs(ctx, job.ID, appPages("p", 1), "sitemap", ""); err != nil {
		t.Fatal(err)
	}
	task, err := q.GetNextTask(ctx, job.ID)
	if err != nil || task == nil {
		t.Fatalf("GetNextTask = %v, %v", task, err)
	}
	// The worker stalls past its lease; the clean-up takes the task back.
	clk.Advance(2 * time.Minute)
	if err := q.CleanupStuckJobs(ctx); err != nil {
		t.Fatal(err)
	}
	before := storedTask(t, q, task.ID)

	for _, status := range []string{db.TaskStatusCompleted, db.TaskStatusFailed, db.TaskStatusPending, db.TaskStatusRunning} {
		late := *task
		late.Status, late.StatusCode, late.Error = status, 200, "late"
		if err := q.UpdateTaskStatus(ctx, &late); !errors.Is(err, db.ErrLeaseLost) {
			t.Errorf("UpdateTaskStatus %s after the lease was lost: %v, want ErrLeaseLost", status, err)
		}
	}
	if diff := cmp.Diff(before, storedTask(t, q, task.ID), equateJSON); diff != "" {
		t.Errorf("a late update wrote (-before +after):\n%s", diff)
	}

	// Claimed again (attempt 2, same process): the first claim's update still
	// cannot land.
	again, err := q.GetNextTask(ctx, job.ID)
	if err != nil || again == nil || again.ID != task.ID || again.Attempt != 2 {
		t.Fatalf("GetNextTask again = %+v, %v; want task %s, attempt 2", again, err, task.ID)
	}
	task.Status = db.TaskStatusCompleted
	if err := q.UpdateTaskStatus(ctx, task); !errors.Is(err, db.ErrLeaseLost) {
		t.Errorf("UpdateTaskStatus of attempt 1 while attempt 2 runs: %v, want ErrLeaseLost", err)
	}
	again.Status = db.TaskStatusRunning
	if err := q.UpdateTaskStatus(ctx, again); err != nil || !again.LeaseExpiresAt.Equal(clk.Now().Add(time.Minute)) {
		t.Errorf("lease extension = %v, expiry %s; want nil, %s", err, again.LeaseExpiresAt, clk.Now().Add(time.Minute))
	}
}

func TestUpdateTaskStatusRetryFailAndSkip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	d, _ := open(t, db.Options{Queue: tasks.Config{Now: clk.Now, BackoffBase: time.Second}})
	q := db.NewDbQueue(d)
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 4, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueURLs(ctx, job.ID, appPages("p", 3), "sitemap", ""); err != nil {
		t.Fatal(err)
	}
	first, err := q.GetNextTask(ctx, job.ID)
	if err != nil || first == nil {
		t.Fatal(first, err)
	}
	first.Status = "bogus"
	if err := q.UpdateTaskStatus(ctx, first); !errors.Is(err, db.ErrInvalidArgument) {
		t.Errorf("UpdateTaskStatus bogus: %v, want ErrInvalidArgument", err)
	}
	if got := storedTask(t, q, first.ID).Status; got != db.TaskStatusRunning {
		t.Errorf("after a refused update the task is %s, want running", got)
	}
	// Pending: a retry, decided by the job's max_retries (1).
	first.Status, first.Error = db.TaskStatusPending, "HTTP 503"
	if err := q.UpdateTaskStatus(ctx, first); err != nil {
		t.Fatal(err)
	}
	got := storedTask(t, q, first.ID)
	if got.Status != db.TaskStatusPending || got.RetryCount != 1 || got.Error != "HTTP 503" {
		t.Errorf("retried task: status %s, retry_count %d, error %q", got.Status, got.RetryCount, got.Error)
	}
	clk.Advance(time.Minute)
	second, err := q.GetNextTask(ctx, job.ID)
	if err != nil || second == nil {
		t.Fatal(second, err)
	}
	second.Status, second.Error = db.TaskStatusFailed, "HTTP 410"
	if err := q.UpdateTaskStatus(ctx, second); err != nil {
		t.Fatal(err)
	}
	if got := storedTask(t, q, second.ID); got.Status != db.TaskStatusFailed || got.Error != "HTTP 410" {
		t.Errorf("failed task: status %s, error %q", got.Status, got.Error)
	}
	// Skipped: finished without a fetch, with its reason, never retried.
	third, err := q.GetNextTask(ctx, job.ID)
	if err != nil || third == nil {
		t.Fatal(third, err)
	}
	third.Status, third.Error = db.TaskStatusSkipped, "robots.txt disallows it"
	if err := q.UpdateTaskStatus(ctx, third); err != nil {
		t.Fatal(err)
	}
	if got := storedTask(t, q, third.ID); got.Status != db.TaskStatusSkipped || got.Error != "robots.txt disallows it" {
		t.Errorf("skipped task: status %s, error %q", got.Status, got.Error)
	}
	// A second write of the same claim is refused: the claim has ended.
	if err := q.UpdateTaskStatus(ctx, third); !errors.Is(err, db.ErrLeaseLost) {
		t.Errorf("UpdateTaskStatus skipped twice: %v, want ErrLeaseLost", err)
	}
	// The job's progress counts it, with the retried task still pending.
	progressed, err := d.GetJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(db.Progress{Total: 3, Failed: 1, Skipped: 1, Pending: 1, Percent: 200.0 / 3},
		progressed.Progress, cmpopts.EquateApprox(1e-6, 0)); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}
}

func TestEnqueueURLsKeepsMaxPagesExact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := open(t, db.Options{MaxConns: 20})
	q := db.NewDbQueue(d)
	const maxPages = 25
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 4, MaxPages: maxPages})
	if err != nil {
		t.Fatal(err)
	}
	// 16 enqueuers of 10 pages each, one of them without an id (skipped, as
	// the application did) and one repeated.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			pages := appPages(fmt.Sprintf("g%d-", g), 10)
			pages[9].ID = 0
			pages = append(pages, pages[0])
			if err := q.EnqueueURLs(ctx, job.ID, pages, "link", fmt.Sprintf("https://example.com/g%d", g)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if diff := cmp.Diff(map[string]int{"pending": maxPages, "skipped": 16*9 - maxPages}, statusCounts(t, q, job.ID)); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
	var unsourced int
	if err := q.Execute(ctx, func(tx *sql.Tx) error {
		return tx.QueryRow(`SELECT count(*) FROM tasks WHERE job_id = $1
			AND (source_type IS DISTINCT FROM 'link' OR source_url NOT LIKE 'https://example.com/g%')`, job.ID).Scan(&unsourced)
	}); err != nil {
		t.Fatal(err)
	}
	if unsourced != 0 {
		t.Errorf("%d tasks without the enqueue's source type and url", unsourced)
	}
}

func TestExecuteCommitsAndRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := open(t, db.Options{})
	q := db.NewDbQueue(d)
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	setMaxPages := func(n int) func(*sql.Tx) error {
		return func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE jobs SET max_pages = $1 WHERE id = $2`, n, job.ID)
			return err
		}
	}
	maxPages := func() (n int) {
		if err := q.Execute(ctx, func(tx *sql.Tx) error {
			return tx.QueryRow(`SELECT max_pages FROM jobs WHERE id = $1`, job.ID).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := q.Execute(ctx, setMaxPages(40)); err != nil {
		t.Fatal(err)
	}
	if got := maxPages(); got != 40 {
		t.Errorf("after a committed Execute max_pages = %d, want 40", got)
	}
	refused := errors.New("the application's own error")
	err = q.ExecuteMaintenance(ctx, func(tx *sql.Tx) error {
		if err := setMaxPages(90)(tx); err != nil {
			return err
		}
		var timeout string
		if err := tx.QueryRow(`SHOW statement_timeout`).Scan(&timeout); err != nil {
			return err
		}
		if timeout != "1min" {
			t.Errorf("maintenance statement_timeout %s, want 1min", timeout)
		}
		return refused
	})
	if !errors.Is(err, refused) {
		t.Errorf("ExecuteMaintenance = %v, want fn's error", err)
	}
	if got := maxPages(); got != 40 {
		t.Errorf("after a rolled-back Execute max_pages = %d, want 40", got)
	}
	// The driver's errors come back as the queue's.
	err = q.Execute(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`SET LOCAL statement_timeout = '10ms'`); err != nil {
			return err
		}
		_, err := tx.Exec(`SELECT pg_sleep(5)`)
		return err
	})
	if !errors.Is(err, db.ErrTimeout) {
		t.Errorf("Execute past statement_timeout = %v, want ErrTimeout", err)
	}
}

func TestExecuteTxCommitsAndRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := open(t, db.Options{})
	q := db.NewDbQueue(d)
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	setMaxPages := func(tx pgx.Tx, n int) error {
		_, err := tx.Exec(ctx, `UPDATE jobs SET max_pages = $1 WHERE id = $2`, n, job.ID)
		return err
	}
	maxPages := func() int {
		got, err := d.GetJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.MaxPages
	}
	if err := q.ExecuteTx(ctx, func(tx pgx.Tx) error { return setMaxPages(tx, 40) }); err != nil {
		t.Fatal(err)
	}
	if got := maxPages(); got != 40 {
		t.Errorf("after a committed ExecuteTx max_pages = %d, want 40", got)
	}
	refused := errors.New("the application's own error")
	err = q.ExecuteTx(ctx, func(tx pgx.Tx) error {
		if err := setMaxPages(tx, 90); err != nil {
			return err
		}
		return refused
	})
	if !errors.Is(err, refused) {
		t.Errorf("ExecuteTx = %v, want fn's error", err)
	}
	if got := maxPages(); got != 40 {
		t.Errorf("after a rolled-back ExecuteTx max_pages = %d, want 40", got)
	}
	err = q.ExecuteTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = '10ms'`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_sleep(5)`)
		return err
	})
	if !errors.Is(err, db.ErrTimeout) {
		t.Errorf("ExecuteTx past statement_timeout = %v, want ErrTimeout", err)
	}
}

func TestConcurrentFinishesEachGetTheirOwnResult(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := open(t, db.Options{MaxConns: 20})
	q := db.NewDbQueue(d)
	const n = 32
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: n})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.EnqueueURLs(ctx, job.ID, appPages("p", n), "sitemap", ""); err != nil {
		t.Fatal(err)
	}
	var claimed []*db.Task
	for range n {
		task, err := q.GetNextTask(ctx, job.ID)
		if err != nil || task == nil {
			t.Fatalf("GetNextTask = %v, %v", task, err)
		}
		claimed = append(claimed, task)
	}
	// Every task finished at once, whichever batches they fall into: task 0
	// with a status no HTTP response has (refused, alone), task 1 twice (one
	// of the two finds the claim gone), the rest completed or retried.
	type call struct {
		task *db.Task
		err  error
	}
	calls := []*call{{task: claimed[0]}, {task: claimed[1]}}
	dup := *claimed[1]
	calls = append(calls, &call{task: &dup})
	for _, task := range claimed[2:] {
		calls = append(calls, &call{task: task})
	}
	for i, c := range calls {
		c.task.Status, c.task.StatusCode = db.TaskStatusCompleted, 200
		if i%2 == 1 && i > 2 {
			c.task.Status, c.task.Error = db.TaskStatusPending, "HTTP 503"
		}
	}
	calls[0].task.StatusCode = 42
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() { c.err = q.UpdateTaskStatus(ctx, c.task) })
	}
	wg.Wait()
	if !errors.Is(calls[0].err, db.ErrInvalidArgument) {
		t.Errorf("finish with status 42: %v, want ErrInvalidArgument", calls[0].err)
	}
	if a, b := calls[1].err, calls[2].err; !(a == nil && errors.Is(b, db.ErrLeaseLost) || b == nil && errors.Is(a, db.ErrLeaseLost)) {
		t.Errorf("one task finished twice: %v and %v, want nil and ErrLeaseLost", a, b)
	}
	for _, c := range calls[3:] {
		if c.err != nil {
			t.Errorf("finish of task %s: %v", c.task.ID, c.err)
		}
	}
	want := map[string]int{"running": 1, "completed": 1 + (n-2)/2, "pending": (n - 2) / 2}
	if diff := cmp.Diff(want, statusCounts(t, q, job.ID)); diff != "" {
		t.Errorf("tasks (-want +got):\n%s", diff)
	}
}
