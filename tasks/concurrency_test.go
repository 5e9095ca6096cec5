package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/tasks"
)

// TestConcurrentClaimersExactlyOnce runs 32 goroutines claiming (singly and
// in batches) from 20,000 tasks in jobs of different concurrency limits. A
// monitor checks, during the run and in one snapshot each time, that no job
// has more tasks running than its limit and that the shards' running counts
// equal the tasks actually running. At the end every task ran exactly once
// and every counter is exact.
func TestConcurrentClaimersExactlyOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("20,000 tasks")
	}
	ctx := context.Background()
	const workers = 32
	f := setupConns(t, tasks.Config{Now: time.Now}, workers+2)
	specs := []struct {
		concurrency, tasks int
	}{{3, 2000}, {8, 4000}, {16, 6000}, {64, 8000}}
	limit := map[string]int{}
	total := 0
	for i, s := range specs {
		job := f.job(t, tasks.JobOptions{Domain: fmt.Sprintf("site%d.example", i), Concurrency: s.concurrency}, s.tasks)
		limit[job.ID] = s.concurrency
		total += s.tasks
	}

	var (
		claims    sync.Map // task id -> *atomic.Int32 times claimed
		held      = map[string]*atomic.Int32{}
		maxHeld   = map[string]*atomic.Int32{}
		finished  atomic.Int64
		firstErr  error
		errOnce   sync.Once
		snapshots atomic.Int64
	)
	for id := range limit {
		held[id], maxHeld[id] = new(atomic.Int32), new(atomic.Int32)
	}
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for runCtx.Err() == nil {
			rows, err := f.pool.Query(runCtx, `
				SELECT j.id, j.concurrency,
				       (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = 'running'),
				       (SELECT coalesce(sum(claims), 0) FROM job_shards s WHERE s.job_id = j.id)
				       - (SELECT coalesce(sum(releases), 0) FROM job_tallies r WHERE r.job_id = j.id)
				FROM jobs j`)
			if err != nil {
				if runCtx.Err() == nil {
					fail(err)
				}
				return
			}
			for rows.Next() {
				var id string
				var concurrency, running, shardRunning int64
				if err := rows.Scan(&id, &concurrency, &running, &shardRunning); err != nil {
					fail(err)
				}
				if running > concurrency {
					fail(fmt.Errorf("job %s had %d tasks running, limit %d", id, running, concurrency))
				}
				if running != shardRunning {
					fail(fmt.Errorf("job %s: %d tasks running but shards count %d", id, running, shardRunning))
				}
			}
			rows.Close()
			snapshots.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := fmt.Sprintf("worker-%02d", w)
			for finished.Load() < int64(total) && runCtx.Err() == nil {
				n := 1
				if w%2 == 1 {
					n = 1 + rand.IntN(10)
				}
				claimed, err := f.queue.Claim(runCtx, worker, n)
				if err != nil {
					fail(err)
					return
				}
				if len(claimed) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				outcomes := make([]tasks.Outcome, len(claimed))
				for i, task := range claimed {
					c, _ := claims.LoadOrStore(task.ID, new(atomic.Int32))
					c.(*atomic.Int32).Add(1)
					now := held[task.JobID].Add(1)
					for {
						m := maxHeld[task.JobID].Load()
						if now <= m || maxHeld[task.JobID].CompareAndSwap(m, now) {
							break
						}
					}
					outcomes[i] = tasks.Outcome{Task: task, Result: okResult()}
				}
				for _, task := range claimed {
					held[task.JobID].Add(-1)
				}
				// Busy outcomes met a claimer's momentary row lock: write
				// them again, as FinishReport says.
				for len(outcomes) > 0 {
					rep, err := f.queue.Finish(runCtx, outcomes)
					if err != nil {
						fail(err)
						return
					}
					if len(rep.Lost) > 0 {
						fail(fmt.Errorf("%s lost %d tasks it had just claimed", worker, len(rep.Lost)))
					}
					finished.Add(int64(rep.Completed))
					outcomes = rep.Busy
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Minute): // a hang guard, not a timing check
		stop()
		<-done
		t.Fatalf("workers finished %d of %d tasks in 10 minutes", finished.Load(), total)
	}
	stop()
	<-monitorDone
	if firstErr != nil && !errors.Is(firstErr, context.Canceled) {
		t.Fatal(firstErr)
	}
	if snapshots.Load() < 10 {
		t.Fatalf("the monitor took only %d snapshots during the run", snapshots.Load())
	}

	distinct, twice := 0, 0
	claims.Range(func(_, v any) bool {
		distinct++
		if v.(*atomic.Int32).Load() != 1 {
			twice++
		}
		return true
	})
	if distinct != total || twice != 0 {
		t.Fatalf("claimed %d distinct tasks of %d, %d of them more than once", distinct, total, twice)
	}
	for id, m := range maxHeld {
		if int(m.Load()) > limit[id] {
			t.Errorf("job %s: workers held %d tasks at once, limit %d", id, m.Load(), limit[id])
		}
	}

	var byStatus map[string]int64
	rows, err := f.pool.Query(ctx, "SELECT status::text, count(*) FROM tasks GROUP BY status")
	if err != nil {
		t.Fatal(err)
	}
	byStatus = map[string]int64{}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		byStatus[s] = n
	}
	if diff := cmp.Diff(map[string]int64{"completed": int64(total)}, byStatus); diff != "" {
		t.Fatalf("tasks by status (-want +got):\n%s", diff)
	}
	var reclaimed int64
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM tasks WHERE attempt <> 1").Scan(&reclaimed); err != nil {
		t.Fatal(err)
	}
	if reclaimed != 0 {
		t.Errorf("%d tasks were claimed more than once in the database", reclaimed)
	}
	for id := range limit {
		job, err := f.queue.Job(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := tasks.Progress{Total: job.Progress.Total, Completed: job.Progress.Total, Percent: 100}
		if diff := cmp.Diff(want, job.Progress); diff != "" {
			t.Errorf("job %s progress (-want +got):\n%s", id, diff)
		}
	}
	t.Logf("%d tasks, %d monitor snapshots", total, snapshots.Load())
}
