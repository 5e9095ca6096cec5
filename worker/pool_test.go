package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

type fixture struct {
	url   string
	queue *tasks.Queue
}

func setup(t *testing.T, cfg tasks.Config) fixture {
	t.Helper()
	url := pgtest.URL(t, migrate.VersionLatest)
	pool := pgtest.Pool(t, url, 24)
	return fixture{url: url, queue: tasks.New(pool, cfg)}
}

func (f fixture) job(t *testing.T, concurrency, n int) string {
	t.Helper()
	ctx := context.Background()
	job, err := f.queue.CreateJob(ctx, tasks.JobOptions{Domain: "example.com", Concurrency: concurrency})
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		f.enqueue(t, job.ID, 0, n)
	}
	return job.ID
}

func (f fixture) enqueue(t *testing.T, jobID string, from, to int) {
	t.Helper()
	pages := make([]tasks.Page, 0, to-from)
	for i := from; i < to; i++ {
		pages = append(pages, tasks.Page{Path: fmt.Sprintf("/p%06d", i), Priority: 1})
	}
	if _, err := f.queue.Enqueue(context.Background(), jobID, pages); err != nil {
		t.Fatal(err)
	}
}

// statusCounts counts all tasks by status.
func (f fixture) statusCounts(t *testing.T) map[string]int {
	t.Helper()
	rows, err := f.queue.Pool().Query(context.Background(), "SELECT status::text, count(*) FROM tasks GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
	}
	return out
}

// recorder is a handler that counts runs per task and can be slowed down.
type recorder struct {
	delay   time.Duration
	mu      sync.Mutex
	runs    map[string]int
	running atomic.Int64
}

func (r *recorder) Handle(ctx context.Context, t tasks.Task) tasks.TaskResult {
	r.running.Add(1)
	defer r.running.Add(-1)
	r.mu.Lock()
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	r.runs[t.ID]++
	r.mu.Unlock()
	if r.delay > 0 {
		select {
		case <-time.After(r.delay):
		case <-ctx.Done():
			return tasks.TaskResult{Err: ctx.Err()}
		}
	}
	return tasks.TaskResult{StatusCode: 200, ResponseTime: r.delay, ContentType: "text/html"}
}

func (r *recorder) ranTwice() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.runs {
		if c > 1 {
			n++
		}
	}
	return n
}

// runUntil runs the pool until cond holds (checked every 20ms) or 2 minutes
// pass, then stops it and returns its stats.
func runUntil(t *testing.T, p *worker.Pool, cond func() bool) worker.Stats {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.After(2 * time.Minute)
	for !cond() {
		select {
		case <-deadline:
			cancel()
			<-done
			t.Fatalf("condition not met within 2 minutes; stats %+v", p.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	return p.Stats()
}

func TestPoolDrainsJobsExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 50} {
		t.Run(fmt.Sprintf("claim batch %d", batch), func(t *testing.T) {
			t.Parallel()
			f := setup(t, tasks.Config{})
			jobs := []string{f.job(t, 6, 700), f.job(t, 40, 1300)}
			h := &recorder{}
			p := worker.New(f.queue, h, worker.Config{Workers: 12, ClaimBatch: batch, ListenURL: f.url, MaintainInterval: 50 * time.Millisecond})
			stats := runUntil(t, p, func() bool { return f.statusCounts(t)["completed"] == 2000 })

			if diff := cmp.Diff(map[string]int{"completed": 2000}, f.statusCounts(t)); diff != "" {
				t.Fatalf("tasks by status (-want +got):\n%s", diff)
			}
			if n := h.ranTwice(); n != 0 {
				t.Fatalf("%d tasks ran more than once", n)
			}
			if stats.Completed != 2000 || stats.Lost != 0 || stats.Unrecorded != 0 {
				t.Fatalf("stats %+v", stats)
			}
			// The pool stopped at the last completion, maybe before its next
			// maintenance pass; run one, as any other process would.
			if _, err := f.queue.Maintain(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, id := range jobs {
				job, err := f.queue.Job(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				if job.Status != tasks.JobStatusCompleted || job.Progress.Completed != job.Progress.Total {
					t.Errorf("job %s: status %s, progress %+v", id, job.Status, job.Progress)
				}
			}
			if stats.ClaimLatency.Count == 0 || stats.ClaimLatency.P99 < stats.ClaimLatency.P50 {
				t.Errorf("claim latency summary %+v", stats.ClaimLatency)
			}
		})
	}
}

// claimsInFlight counts the claim statements running at once on a
// connection pool, and the most it saw.
type claimsInFlight struct{ now, most atomic.Int64 }

func (c *claimsInFlight) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(d.SQL, "-- name: TaskClaim ") {
		n := c.now.Add(1)
		for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
		}
		return context.WithValue(ctx, c, true)
	}
	return ctx
}

func (c *claimsInFlight) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if ctx.Value(c) != nil {
		c.now.Add(-1)
	}
}

// Workers claiming for themselves send at most Config.Claimers claim
// statements at once, however many workers are idle, and still drain the
// queue exactly once.
func TestPoolBoundsClaimsInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	job := f.job(t, 64, 600)
	cfg, err := db.PoolConfig(f.url, db.Options{MaxConns: 24})
	if err != nil {
		t.Fatal(err)
	}
	claims := &claimsInFlight{}
	cfg.ConnConfig.Tracer = claims
	traced, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(traced.Close)
	h := &recorder{}
	p := worker.New(tasks.New(traced, tasks.Config{}), h, worker.Config{Workers: 16, Claimers: 2, MaintainInterval: 50 * time.Millisecond})
	if got := p.Config().Claimers; got != 2 {
		t.Fatalf("Config().Claimers = %d, want 2", got)
	}
	stats := runUntil(t, p, jobsDone(t, f.queue, job))
	t.Logf("at most %d claim statements at once, %d claims", claims.most.Load(), stats.ClaimCalls)
	if most := claims.most.Load(); most > 2 || most < 1 {
		t.Errorf("at most %d claim statements ran at once, want 1 or 2 (Claimers 2)", most)
	}
	if stats.Completed != 600 || h.ranTwice() != 0 {
		t.Errorf("completed %d, %d tasks ran twice", stats.Completed, h.ranTwice())
	}
	if got := worker.New(f.queue, h, worker.Config{}).Config().Claimers; got != 8 {
		t.Errorf("default Claimers = %d, want 8", got)
	}
}

// TestPoolShutdownHandsBackUnfinished stops a pool whose handlers are slow:
// running handlers are cancelled after ShutdownTimeout and their tasks, and
// claimed tasks not started, go back to pending; nothing stays running and
// no failure is recorded.
func TestPoolShutdownHandsBackUnfinished(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 20} {
		t.Run(fmt.Sprintf("claim batch %d", batch), func(t *testing.T) {
			t.Parallel()
			f := setup(t, tasks.Config{})
			f.job(t, 50, 200)
			h := &recorder{delay: time.Hour}
			p := worker.New(f.queue, h, worker.Config{
				Workers: 5, ClaimBatch: batch, ShutdownTimeout: 100 * time.Millisecond,
			})
			stats := runUntil(t, p, func() bool { return h.running.Load() == 5 })

			got := f.statusCounts(t)
			if diff := cmp.Diff(map[string]int{"pending": 200}, got); diff != "" {
				t.Fatalf("tasks by status after shutdown (-want +got):\n%s", diff)
			}
			if stats.Failed != 0 || stats.Retried != 0 || stats.Completed != 0 {
				t.Fatalf("shutdown recorded outcomes: %+v", stats)
			}
			if stats.Released != stats.Claimed {
				t.Fatalf("claimed %d tasks, handed back %d", stats.Claimed, stats.Released)
			}
			var running, retried int
			err := f.queue.Pool().QueryRow(context.Background(), `
				SELECT (SELECT coalesce(sum(claims), 0) FROM job_shards) - (SELECT coalesce(sum(releases), 0) FROM job_tallies),
				       (SELECT count(*) FROM tasks WHERE retry_count > 0)`).Scan(&running, &retried)
			if err != nil {
				t.Fatal(err)
			}
			if running != 0 || retried != 0 {
				t.Fatalf("after hand-back: %d running per the shards, %d tasks with retries counted", running, retried)
			}
		})
	}
}

// TestPoolWakesOnNotify: with polling effectively off (one hour), an idle pool
// runs tasks enqueued after it started, so the notification is what woke it.
func TestPoolWakesOnNotify(t *testing.T) {
	t.Parallel()
	f := setup(t, tasks.Config{})
	jobID := f.job(t, 10, 0)
	p := worker.New(f.queue, &recorder{}, worker.Config{
		Workers: 4, ListenURL: f.url, PollInterval: time.Hour, MaintainInterval: -1,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()

	// Let the workers find the queue empty and go idle first.
	waitFor(t, func() bool { return p.Stats().ClaimCalls >= 4 })
	time.Sleep(100 * time.Millisecond)
	enqueued := time.Now()
	f.enqueue(t, jobID, 0, 10)
	waitFor(t, func() bool { return p.Stats().Completed == 10 })
	t.Logf("10 tasks enqueued after the pool went idle were done %v later", time.Since(enqueued))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPoolPollOnly: without LISTEN (as behind a transaction pooler), idle
// workers still find new tasks by polling.
func TestPoolPollOnly(t *testing.T) {
	t.Parallel()
	f := setup(t, tasks.Config{})
	jobID := f.job(t, 10, 0)
	p := worker.New(f.queue, &recorder{}, worker.Config{Workers: 2, PollInterval: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, func() bool { return p.Stats().ClaimCalls >= 2 })
	f.enqueue(t, jobID, 0, 10)
	waitFor(t, func() bool { return p.Stats().Completed == 10 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPoolRecoversFromPanickingHandler(t *testing.T) {
	t.Parallel()
	f := setup(t, tasks.Config{BackoffBase: time.Millisecond})
	jobID, err := f.queue.CreateJob(context.Background(), tasks.JobOptions{Domain: "example.com", NoRetries: true})
	if err != nil {
		t.Fatal(err)
	}
	f.enqueue(t, jobID.ID, 0, 20)
	h := worker.HandlerFunc(func(_ context.Context, t tasks.Task) tasks.TaskResult {
		if t.Path == "/p000007" {
			panic("boom")
		}
		return tasks.TaskResult{StatusCode: 200}
	})
	p := worker.New(f.queue, h, worker.Config{Workers: 3})
	stats := runUntil(t, p, func() bool { return p.Stats().Completed+p.Stats().Failed == 20 })
	if stats.Completed != 19 || stats.Failed != 1 {
		t.Fatalf("stats %+v, want 19 completed and 1 failed", stats)
	}
	var msg string
	if err := f.queue.Pool().QueryRow(context.Background(),
		"SELECT error FROM tasks WHERE path = '/p000007' AND status = 'failed'").Scan(&msg); err != nil {
		t.Fatal(err)
	}
	if msg != "handler panicked: boom" {
		t.Errorf("recorded error %q", msg)
	}
}

// TestPoolExtendsLeasesOfLongTasks runs a task for three times its lease,
// with the rescuer active: the lease is extended, so it is never rescued and
// runs once.
func TestPoolExtendsLeasesOfLongTasks(t *testing.T) {
	t.Parallel()
	f := setup(t, tasks.Config{Lease: 300 * time.Millisecond})
	f.job(t, 5, 2)
	h := &recorder{delay: 900 * time.Millisecond}
	p := worker.New(f.queue, h, worker.Config{Workers: 2, MaintainInterval: 50 * time.Millisecond})
	stats := runUntil(t, p, func() bool { return p.Stats().Completed == 2 })
	if n := h.ranTwice(); n != 0 || stats.Lost != 0 {
		t.Fatalf("%d tasks ran twice, %d outcomes lost: the leases expired", n, stats.Lost)
	}
	var attempts int
	if err := f.queue.Pool().QueryRow(context.Background(), "SELECT max(attempt) FROM tasks").Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if attempts != 1 {
		t.Fatalf("tasks were claimed %d times", attempts)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
