package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/internal/tasks"
)

// drain runs workers goroutines that claim batch tasks at a time and finish
// them, until total tasks are done; it returns the elapsed time.
func drain(tb testing.TB, f fixture, workers, batch, total int) time.Duration {
	tb.Helper()
	ctx := context.Background()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := fmt.Sprintf("bench-%d", w)
			for done.Load() < int64(total) {
				claimed, err := f.queue.Claim(ctx, worker, batch)
				if err != nil {
					errs <- err
					return
				}
				if len(claimed) == 0 {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				outcomes := make([]tasks.Outcome, len(claimed))
				for i, t := range claimed {
					outcomes[i] = tasks.Outcome{Task: t, Result: okResult()}
				}
				rep, err := f.queue.Finish(ctx, outcomes)
				if err != nil {
					errs <- err
					return
				}
				done.Add(int64(rep.Completed))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return elapsed
}

// drainSingleClaims runs workers that each claim one task at a time and hand
// the outcome to one completer, which finishes them in batches of up to
// flushBatch: single-task claiming as the worker pool does it.
func drainSingleClaims(tb testing.TB, f fixture, workers, flushBatch, total int) time.Duration {
	tb.Helper()
	ctx := context.Background()
	outcomes := make(chan tasks.Outcome, workers*2)
	var done atomic.Int64
	errs := make(chan error, workers+1)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := fmt.Sprintf("bench-%d", w)
			for done.Load() < int64(total) {
				task, err := f.queue.ClaimOne(ctx, worker)
				if errors.Is(err, tasks.ErrNoTasksAvailable) {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				outcomes <- tasks.Outcome{Task: *task, Result: okResult()}
			}
		}()
	}
	completer := make(chan struct{})
	go func() {
		defer close(completer)
		batch := make([]tasks.Outcome, 0, flushBatch)
		for done.Load() < int64(total) {
			batch = batch[:0]
			batch = append(batch, <-outcomes)
		fill:
			for len(batch) < flushBatch {
				select {
				case o := <-outcomes:
					batch = append(batch, o)
				default:
					break fill
				}
			}
			rep, err := f.queue.Finish(ctx, batch)
			if err != nil {
				errs <- err
				return
			}
			done.Add(int64(rep.Completed))
		}
	}()
	<-completer
	elapsed := time.Since(start)
	// Workers may be blocked handing over an outcome nobody will take.
	go func() {
		for range outcomes {
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return elapsed
}

func BenchmarkClaimOneFinishBatched(b *testing.B) {
	for _, c := range []struct{ workers, jobs int }{{8, 1}, {16, 1}, {32, 1}, {16, 6}} {
		b.Run(fmt.Sprintf("workers=%d/jobs=%d", c.workers, c.jobs), func(b *testing.B) {
			total := max(b.N, 5000)
			f := setupConns(b, tasks.Config{Now: time.Now}, int32(c.workers+2))
			per := total / c.jobs
			for j := range c.jobs {
				f.job(b, tasks.JobSpec{Domain: fmt.Sprintf("s%d.example", j), Concurrency: 100_000}, per)
			}
			if _, err := f.pool.Exec(context.Background(), "VACUUM ANALYZE"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			elapsed := drainSingleClaims(b, f, c.workers, 500, per*c.jobs)
			b.StopTimer()
			b.ReportMetric(float64(per*c.jobs)/elapsed.Seconds(), "tasks/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func BenchmarkClaimFinish(b *testing.B) {
	for _, c := range []struct {
		workers, batch, jobs int
	}{
		{1, 1, 1}, {8, 1, 1}, {16, 1, 1}, {16, 1, 6}, {8, 100, 1}, {8, 500, 1}, {8, 500, 6},
	} {
		b.Run(fmt.Sprintf("workers=%d/batch=%d/jobs=%d", c.workers, c.batch, c.jobs), func(b *testing.B) {
			total := max(b.N, 2000)
			if c.batch > 1 {
				total = max(b.N, 100_000)
			}
			f := setupConns(b, tasks.Config{Now: time.Now}, int32(c.workers+2))
			per := total / c.jobs
			for j := range c.jobs {
				f.job(b, tasks.JobSpec{Domain: fmt.Sprintf("s%d.example", j), Concurrency: 100_000}, per)
			}
			if _, err := f.pool.Exec(context.Background(), "VACUUM ANALYZE"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			elapsed := drain(b, f, c.workers, c.batch, per*c.jobs)
			b.StopTimer()
			b.ReportMetric(float64(per*c.jobs)/elapsed.Seconds(), "tasks/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
