package pooler_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/tasks"
)

// action is what a claimer does with a claimed task.
type action int

const (
	complete action = iota
	release         // hand back unfinished: pending again, claimed again
	retry           // fail, retryable: pending again after the backoff
	failHard        // fail permanently
)

// ruleFor decides by page number and attempt, so that the final state of
// every task is known in advance: pages ending in 3 are handed back on
// their first claim, those ending in 5 fail once and are retried, those
// ending in 7 fail for good; everything else (and every second attempt)
// completes.
func ruleFor(path string, attempt int32) action {
	n, _ := strconv.Atoi(strings.TrimPrefix(path, "/p"))
	switch {
	case n%10 == 3 && attempt == 1:
		return release
	case n%10 == 5 && attempt == 1:
		return retry
	case n%10 == 7:
		return failHard
	}
	return complete
}

// TestQueueThroughPoolerExactlyOnce runs the whole queue through PgBouncer
// in transaction mode with 2 server connections shared by 16 goroutines,
// each on its own client connection: enqueueing in overlapping batches
// (multi-row inserts from unnest arrays, deduplicated) into a job while it
// is being claimed, single and batch claims, lease extensions, batched
// completions and failures, hand-backs, maintenance, job progress and the
// measurement queries, all at once. Every task ends exactly as its rule
// says, each claim (task, attempt) was handed out once, progress is exact,
// and the measurement queries agree with a direct connection.
func TestQueueThroughPoolerExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const (
		goroutines = 16
		poolSize   = 2
		batches    = 6 // of 250 pages, overlapping by 50: 1250 distinct
		capPages   = 300
	)
	f := setup(t, pgbouncertest.Options{PoolSize: poolSize})
	cfg := tasks.Config{BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond}
	d := f.open(t, db.Options{Pooler: true, MaxConns: goroutines + 2, Queue: cfg})
	q := d.Queue()

	big := job(t, d, tasks.JobOptions{Domain: "big.example", Concurrency: 40}, 0)
	capped := job(t, d, tasks.JobOptions{Domain: "capped.example", Concurrency: 8, MaxPages: capPages}, 400)
	wantFinal := 1250 + capPages // tasks that end completed or failed

	var (
		claims    sync.Map // "id/attempt" -> *atomic.Int32
		paths     sync.Map // id -> path
		finalised atomic.Int64
		errMu     sync.Mutex
		errs      []error
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}

	// Enqueue the big job's pages in overlapping batches from several
	// goroutines while the claimers run.
	var enqueued sync.WaitGroup
	var pending, duplicates atomic.Int64
	for b := range batches {
		enqueued.Go(func() {
			res, err := d.EnqueuePages(ctx, big, pages(b*200, b*200+250))
			if err != nil {
				fail(fmt.Errorf("enqueue batch %d: %w", b, err))
				return
			}
			pending.Add(int64(res.Pending))
			duplicates.Add(int64(res.Duplicates))
		})
	}

	// handle applies the rule to claimed tasks: batch claimers extend their
	// leases and write all outcomes in one Finish; single claimers use the
	// one-task calls.
	handle := func(claimed []tasks.Task, batch bool) {
		for _, c := range claimed {
			paths.Store(c.ID, c.Path)
			n, _ := claims.LoadOrStore(fmt.Sprintf("%s/%d", c.ID, c.Attempt), new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}
		if batch {
			extended, err := q.ExtendLeases(ctx, claimed)
			if err != nil || len(extended) != len(claimed) {
				fail(fmt.Errorf("ExtendLeases of %d tasks: %d extended, %w", len(claimed), len(extended), err))
				return
			}
			for i := range extended {
				if extended[i].ID != claimed[i].ID || extended[i].LeaseExpiresAt.Before(claimed[i].LeaseExpiresAt) {
					fail(fmt.Errorf("ExtendLeases: %s until %s, was %s until %s", extended[i].ID,
						extended[i].LeaseExpiresAt, claimed[i].ID, claimed[i].LeaseExpiresAt))
				}
			}
			claimed = extended
		}
		var outcomes []tasks.Outcome
		var handBack []tasks.Task
		for _, c := range claimed {
			var err error
			a := ruleFor(c.Path, c.Attempt)
			switch {
			case a == release:
				handBack = append(handBack, c)
				continue
			case batch:
				r := tasks.TaskResult{StatusCode: 200, ContentType: "text/html"}
				if a != complete {
					r = tasks.TaskResult{Err: errors.New("boom"), Permanent: a == failHard}
				}
				outcomes = append(outcomes, tasks.Outcome{Task: c, Result: r})
				continue
			case a == complete:
				err = d.CompleteTask(ctx, &c, tasks.TaskResult{StatusCode: 200})
			case a == retry:
				err = d.FailTask(ctx, &c, errors.New("boom"))
			case a == failHard:
				err = d.FailTaskPermanently(ctx, &c, errors.New("gone"))
			}
			if err != nil {
				fail(fmt.Errorf("finish %s: %w", c.Path, err))
			} else if a != retry {
				finalised.Add(1)
			}
		}
		for len(outcomes) > 0 {
			rep, err := q.Finish(ctx, outcomes)
			if err != nil {
				fail(err)
				return
			}
			if len(rep.Lost) > 0 {
				fail(fmt.Errorf("finish: leases lost %v", rep.Lost))
			}
			finalised.Add(int64(rep.Completed + rep.Failed))
			outcomes = rep.Busy
		}
		if len(handBack) > 0 {
			if lost, err := q.Release(ctx, handBack); err != nil || len(lost) > 0 {
				fail(fmt.Errorf("release %d tasks: lost %v, %w", len(handBack), lost, err))
			}
		}
	}

	runCtx, stop := context.WithTimeout(ctx, 5*time.Minute)
	defer stop()
	done := func() bool { return finalised.Load() >= int64(wantFinal) || runCtx.Err() != nil }
	var workers sync.WaitGroup
	for g := range goroutines {
		workers.Go(func() {
			id := fmt.Sprintf("w%02d", g)
			batch := g%2 == 1
			for !done() {
				var claimed []tasks.Task
				var err error
				if batch {
					claimed, err = d.ClaimTasks(runCtx, id, 10)
				} else {
					var c *tasks.Task
					c, err = d.ClaimNextTask(runCtx, id)
					if c != nil {
						claimed = []tasks.Task{*c}
					}
					if errors.Is(err, db.ErrNoTasksAvailable) {
						err = nil
					}
				}
				if err != nil {
					if runCtx.Err() == nil {
						fail(fmt.Errorf("%s claim: %w", id, err))
					}
					return
				}
				if len(claimed) == 0 {
					time.Sleep(2 * time.Millisecond) // retries wait out their backoff
					continue
				}
				handle(claimed, batch)
			}
		})
	}

	// Meanwhile: maintenance, progress and the measurement queries through
	// the pooler, and PgBouncer's own view of the sharing.
	var maxClients, maxServers, depthSeen int
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for !done() {
			if _, err := q.Maintain(runCtx); err != nil && runCtx.Err() == nil {
				fail(fmt.Errorf("Maintain: %w", err))
			}
			for _, id := range []string{big, capped} {
				if _, err := d.GetJob(runCtx, id); err != nil && runCtx.Err() == nil {
					fail(fmt.Errorf("GetJob: %w", err))
				}
			}
			depth, err := q.QueueDepth(runCtx)
			depthSeen = max(depthSeen, len(depth))
			for _, err2 := range []error{err, second(q.Throughput(runCtx, time.Hour)),
				second(q.WaitEvents(runCtx)), second(q.LockWaits(runCtx)), second(q.BlockedQueries(runCtx))} {
				if err2 != nil && runCtx.Err() == nil {
					fail(fmt.Errorf("measurement query: %w", err2))
				}
			}
			if s, err := f.bouncer.Stats(runCtx); err == nil {
				maxClients = max(maxClients, s.ClientsActive+s.ClientsWaiting)
				maxServers = max(maxServers, s.Servers)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	enqueued.Wait()
	workers.Wait()
	<-monitorDone
	for i, err := range errs {
		if i == 5 {
			t.Fatalf("... %d errors in all", len(errs))
		}
		t.Error(err)
	}
	if runCtx.Err() != nil {
		t.Fatalf("not drained within 5 minutes: %d of %d tasks finished", finalised.Load(), wantFinal)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The pooler really shared its 2 server connections between the
	// clients (a direct pool would have had one backend per client).
	if maxServers > poolSize || maxClients <= poolSize || d.Pool().Stat().TotalConns() <= poolSize {
		t.Errorf("PgBouncer pool: at most %d server connections for %d clients (pgx pool holds %d); "+
			"want at most %d servers shared by more clients", maxServers, maxClients, d.Pool().Stat().TotalConns(), poolSize)
	}
	t.Logf("PgBouncer: up to %d client connections on at most %d server connections", maxClients, maxServers)
	if depthSeen == 0 {
		t.Error("QueueDepth never returned a row during the run")
	}
	if pending.Load() != 1250 || duplicates.Load() != int64(batches*250-1250) {
		t.Errorf("enqueue: %d pending, %d duplicates; want 1250 and %d", pending.Load(), duplicates.Load(), batches*250-1250)
	}

	// Exactly once: each claim (task, attempt) was handed out once, and
	// each task was claimed as often as its rule says.
	claims.Range(func(key, n any) bool {
		if got := n.(*atomic.Int32).Load(); got != 1 {
			t.Errorf("claim %s handed out %d times", key, got)
		}
		return true
	})
	wantRow := func(path string) taskRow {
		switch ruleFor(path, 1) {
		case release:
			return taskRow{Status: "completed", Attempt: 2}
		case retry:
			return taskRow{Status: "completed", Attempt: 2, RetryCount: 1}
		case failHard:
			return taskRow{Status: "failed", Attempt: 1}
		}
		return taskRow{Status: "completed", Attempt: 1}
	}
	want := map[string]taskRow{}
	for _, p := range pages(0, 1250) {
		want[p.Path] = wantRow(p.Path)
	}
	if diff := cmp.Diff(want, f.taskRows(t, big)); diff != "" {
		t.Errorf("big job's tasks (-want +got):\n%s", diff)
	}
	want = map[string]taskRow{}
	for i, p := range pages(0, 400) {
		want[p.Path] = taskRow{Status: "skipped"}
		if i < capPages { // the best capPages pages are admitted
			want[p.Path] = wantRow(p.Path)
		}
	}
	if diff := cmp.Diff(want, f.taskRows(t, capped)); diff != "" {
		t.Errorf("capped job's tasks (-want +got):\n%s", diff)
	}
	nClaims := 0
	claims.Range(func(any, any) bool { nClaims++; return true })
	var wantClaims int
	for _, rows := range []map[string]taskRow{f.taskRows(t, big), f.taskRows(t, capped)} {
		for _, r := range rows {
			wantClaims += int(r.Attempt)
		}
	}
	if nClaims != wantClaims {
		t.Errorf("%d distinct claims seen by the claimers, %d recorded in the database", nClaims, wantClaims)
	}

	// Exact progress, once maintenance has folded the tallies in.
	if _, err := q.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]tasks.Progress{}
	for _, id := range []string{big, capped} {
		j, err := d.GetJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != tasks.JobStatusCompleted || j.CompletedAt == nil {
			t.Errorf("job %s: status %s, completed at %v; want completed", id, j.Status, j.CompletedAt)
		}
		got[id] = j.Progress
	}
	wantProgress := map[string]tasks.Progress{
		big:    {Total: 1250, Completed: 1125, Failed: 125, Percent: 100},
		capped: {Total: 400, Completed: 270, Failed: 30, Skipped: 100, Percent: 100},
	}
	if diff := cmp.Diff(wantProgress, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}

	// The measurement queries answer through the pooler what they answer
	// on a direct connection.
	directQ := tasks.New(f.direct, cfg)
	for name, read := range map[string]func(*tasks.Queue) (any, error){
		"Throughput": func(q *tasks.Queue) (any, error) { return q.Throughput(ctx, time.Hour) },
		"QueueDepth": func(q *tasks.Queue) (any, error) { return q.QueueDepth(ctx) },
	} {
		viaPooler, err := read(q)
		if err != nil {
			t.Fatalf("%s through pgbouncer: %v", name, err)
		}
		viaDirect, err := read(directQ)
		if err != nil {
			t.Fatalf("%s direct: %v", name, err)
		}
		if diff := cmp.Diff(viaDirect, viaPooler); diff != "" {
			t.Errorf("%s (-direct +pgbouncer):\n%s", name, diff)
		}
	}
	throughput, _ := q.Throughput(ctx, time.Hour)
	finished := 0
	for _, m := range throughput {
		finished += int(m.TasksCompleted)
	}
	if finished < wantFinal {
		t.Errorf("Throughput counts %d finished tasks in the last hour, want at least %d", finished, wantFinal)
	}
}

func second[T any](_ T, err error) error { return err }

// TestCopyFromThroughPooler: the queue enqueues with multi-row inserts from
// unnest arrays (above), not COPY; should bulk loading ever use COPY, pgx's
// CopyFrom works through the pooler in Pooler mode too: it describes the
// target columns with an unnamed statement, and COPY FROM STDIN is one
// statement, so one transaction on one server connection.
func TestCopyFromThroughPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, pgbouncertest.Options{PoolSize: 2})
	d := f.open(t, db.Options{Pooler: true})
	var domain int32
	if err := d.Pool().QueryRow(ctx, "INSERT INTO domains (name) VALUES ('copy.example') RETURNING id").Scan(&domain); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 1000)
	for i := range rows {
		rows[i] = []any{domain, fmt.Sprintf("/c%04d", i)}
	}
	n, err := d.Pool().CopyFrom(ctx, pgx.Identifier{"pages"}, []string{"domain_id", "path"}, pgx.CopyFromRows(rows))
	if err != nil || n != int64(len(rows)) {
		t.Fatalf("CopyFrom through pgbouncer: %d rows, %v", n, err)
	}
	var stored int
	if err := f.direct.QueryRow(ctx, "SELECT count(*) FROM pages WHERE domain_id = $1", domain).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != len(rows) {
		t.Fatalf("%d pages stored, want %d", stored, len(rows))
	}
}
