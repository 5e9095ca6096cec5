package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/internal/gensql"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// realistic makes the results the benchmarks write: every column a page
// fetch fills, so that the figures are measured on the row the service
// writes.
var realistic = crawl.Simulator{}

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
					outcomes[i] = tasks.Outcome{Task: t, Result: realistic.Result(t)}
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
// flushBatch: single-task claiming as the worker pool does it. At most
// claimers claim statements are in flight at once, as worker.Config.Claimers
// bounds them in the pool; 0 leaves them unbounded.
func drainSingleClaims(tb testing.TB, f fixture, workers, claimers, flushBatch, total int) time.Duration {
	tb.Helper()
	ctx := context.Background()
	if claimers <= 0 {
		claimers = workers
	}
	slots := make(chan struct{}, claimers)
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
				slots <- struct{}{}
				task, err := f.queue.ClaimOne(ctx, worker)
				<-slots
				if errors.Is(err, tasks.ErrNoTasksAvailable) {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				outcomes <- tasks.Outcome{Task: *task, Result: realistic.Result(*task)}
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
			total := max(b.N, 20_000)
			f := setupConns(b, tasks.Config{Now: time.Now}, int32(c.workers+2))
			per := total / c.jobs
			for j := range c.jobs {
				f.job(b, tasks.JobOptions{Domain: fmt.Sprintf("s%d.example", j), Concurrency: 100_000}, per)
			}
			if _, err := f.pool.Exec(context.Background(), "VACUUM ANALYZE"); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			elapsed := drainSingleClaims(b, f, c.workers, 0, 500, per*c.jobs)
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
		{1, 1, 1}, {8, 1, 1}, {16, 1, 1}, {16, 1, 6}, {4, 100, 1}, {4, 100, 6}, {8, 100, 1}, {8, 500, 1}, {8, 500, 6},
	} {
		b.Run(fmt.Sprintf("workers=%d/batch=%d/jobs=%d", c.workers, c.batch, c.jobs), func(b *testing.B) {
			total := max(b.N, 2000)
			if c.batch > 1 {
				total = max(b.N, 100_000)
			}
			f := setupConns(b, tasks.Config{Now: time.Now}, int32(c.workers+2))
			per := total / c.jobs
			for j := range c.jobs {
				f.job(b, tasks.JobOptions{Domain: fmt.Sprintf("s%d.example", j), Concurrency: 100_000}, per)
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

// rawQueue runs the queue's claim and finish SQL (the generated statements'
// own text, from gensql) through pgx directly, with hand-written scanning:
// the baseline the generated path is compared with.
type rawQueue struct {
	pool         *pgxpool.Pool
	claim, finis string
}

func newRawQueue(pool *pgxpool.Pool) rawQueue {
	return rawQueue{pool: pool, claim: gensql.MustQuery("TaskClaim"), finis: gensql.MustQuery("TaskFinishMany")}
}

type rawTask struct {
	id, jobID, path         string
	pageID                  int32
	priority                float64
	retries, attempt        int32
	created, started, lease time.Time
}

func (r rawQueue) claimTasks(ctx context.Context, worker string, n int) ([]rawTask, error) {
	rows, err := r.pool.Query(ctx, r.claim, nil, nil, int32(n), worker, int64(60000), int64(0)) // any job, the server's clock, no pace slack
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []rawTask
	for rows.Next() {
		var t rawTask
		if err := rows.Scan(&t.id, &t.jobID, &t.pageID, &t.path, &t.priority, &t.retries, &t.attempt,
			&t.created, &t.started, &t.lease); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// finish writes the outcomes, again for tasks a claimer had locked for an
// instant ("busy"), as Queue.Finish does.
func (r rawQueue) finish(ctx context.Context, worker string, ts []rawTask) (int, error) {
	done := 0
	for attempt := 1; len(ts) > 0; attempt++ {
		n, busy, err := r.finishOnce(ctx, worker, ts)
		if err != nil {
			return done, err
		}
		done += n
		if len(busy) == 0 {
			break
		}
		var again []rawTask
		for _, t := range ts {
			if busy[t.id] {
				again = append(again, t)
			}
		}
		ts = again
		time.Sleep(time.Duration(attempt) * time.Millisecond)
	}
	return done, nil
}

func (r rawQueue) finishOnce(ctx context.Context, worker string, ts []rawTask) (int, map[string]bool, error) {
	n := len(ts)
	ids, workers, errs, caches, types, redirects, caches2 := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	attempts, codes, times := make([]int32, n), make([]int32, n), make([]int32, n)
	var timing, timing2 [5][]int32
	for k := range timing {
		timing[k], timing2[k] = make([]int32, n), make([]int32, n)
	}
	failed, retryable := make([]bool, n), make([]bool, n)
	lengths, times2, lengths2 := make([]int64, n), make([]int64, n), make([]int64, n)
	headers, headers2, checks := make([][]byte, n), make([][]byte, n), make([][]byte, n)
	ms := func(d time.Duration) int32 { return int32(d.Milliseconds()) }
	split := func(parts [5][]int32, i int, t tasks.Timing) {
		parts[0][i], parts[1][i], parts[2][i], parts[3][i], parts[4][i] =
			ms(t.DNSLookup), ms(t.TCPConnection), ms(t.TLSHandshake), ms(t.TTFB), ms(t.ContentTransfer)
	}
	for i, t := range ts {
		res := realistic.Result(tasks.Task{ID: t.id, JobID: t.jobID, Path: t.path})
		ids[i], workers[i], attempts[i] = t.id, worker, t.attempt
		codes[i], times[i], caches[i], types[i], lengths[i], redirects[i] =
			int32(res.StatusCode), ms(res.ResponseTime), res.CacheStatus, res.ContentType, res.ContentLength, res.RedirectURL
		headers[i], _ = json.Marshal(res.Headers)
		split(timing, i, res.Timing)
		times2[i], lengths2[i] = -1, -1
		for k := range timing2 {
			timing2[k][i] = -1
		}
		if s := res.Second; s != nil {
			times2[i], caches2[i], lengths2[i] = s.ResponseTime.Milliseconds(), s.CacheStatus, s.ContentLength
			headers2[i], _ = json.Marshal(s.Headers)
			split(timing2, i, s.Timing)
		}
		if res.CacheCheckAttempts != nil {
			checks[i], _ = json.Marshal(res.CacheCheckAttempts)
		}
	}
	rows, err := r.pool.Query(ctx, r.finis, ids, workers, attempts, failed, retryable, failed /* none skipped */, codes, times, caches, types,
		lengths, headers, errs, redirects, timing[0], timing[1], timing[2], timing[3], timing[4],
		times2, caches2, lengths2, headers2, timing2[0], timing2[1], timing2[2], timing2[3], timing2[4], checks,
		nil, int64(300000), int64(1000))
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	done, busy := 0, map[string]bool{}
	for rows.Next() {
		var id, job, outcome string
		if err := rows.Scan(&id, &job, &outcome); err != nil {
			return 0, nil, err
		}
		switch outcome {
		case "completed":
			done++
		case "busy":
			busy[id] = true
		}
	}
	return done, busy, rows.Err()
}

// drainRaw is drain on the raw baseline.
func drainRaw(tb testing.TB, r rawQueue, workers, batch, total int) time.Duration {
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
			worker := fmt.Sprintf("raw-%d", w)
			for done.Load() < int64(total) {
				claimed, err := r.claimTasks(ctx, worker, batch)
				if err != nil {
					errs <- err
					return
				}
				if len(claimed) == 0 {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				n, err := r.finish(ctx, worker, claimed)
				if err != nil {
					errs <- err
					return
				}
				done.Add(int64(n))
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

// BenchmarkGeneratedVsRaw runs the same claim-and-finish load through the
// generated accessors (via the queue, as the application uses it) and, in
// the same run, as the same SQL sent raw through pgx, on fresh databases of
// the same size, and reports both rates and their ratio (generated/raw).
func BenchmarkGeneratedVsRaw(b *testing.B) {
	for _, c := range []struct{ workers, batch int }{{8, 1}, {8, 100}} {
		b.Run(fmt.Sprintf("workers=%d/batch=%d", c.workers, c.batch), func(b *testing.B) {
			total := max(b.N, 3000)
			if c.batch > 1 {
				total = max(b.N, 60_000)
			}
			prepare := func() fixture {
				f := setupConns(b, tasks.Config{Now: time.Now}, int32(c.workers+2))
				f.job(b, tasks.JobOptions{Concurrency: 100_000}, total)
				if _, err := f.pool.Exec(context.Background(), "VACUUM ANALYZE"); err != nil {
					b.Fatal(err)
				}
				return f
			}
			gen, raw := prepare(), prepare()
			b.ResetTimer()
			genElapsed := drain(b, gen, c.workers, c.batch, total)
			rawElapsed := drainRaw(b, newRawQueue(raw.pool), c.workers, c.batch, total)
			b.StopTimer()
			genRate := float64(total) / genElapsed.Seconds()
			rawRate := float64(total) / rawElapsed.Seconds()
			b.ReportMetric(genRate, "generated_tasks/s")
			b.ReportMetric(rawRate, "raw_tasks/s")
			b.ReportMetric(genRate/rawRate, "generated/raw")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkClaimLatencyByQueueSize measures single-task claim latency with
// 10,000, 100,000 and 1,000,000 pending tasks (one job of 32 shards, with
// statistics), 8 workers claiming one task at a time and one completer
// writing outcomes in batches, as the worker pool runs: the claim reads a
// shard's first index entries, so its latency should not grow with the
// queue.
func BenchmarkClaimLatencyByQueueSize(b *testing.B) {
	for _, pending := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			f := setupConns(b, tasks.Config{Now: time.Now}, 10)
			ctx := context.Background()
			if _, err := f.pool.Exec(ctx, fmt.Sprintf(`
				INSERT INTO domains (name) VALUES ('big.example');
				INSERT INTO jobs (id, domain_id, concurrency, status) VALUES ('big', 1, 100000, 'running');
				INSERT INTO pages (domain_id, path) SELECT 1, '/p' || g FROM generate_series(1, %[1]d) g;
				INSERT INTO tasks (job_id, page_id, path, priority_score, shard)
				SELECT 'big', id, path, random(), id %% 32 FROM pages;
				UPDATE jobs SET total_tasks = %[1]d WHERE id = 'big';`, pending)); err != nil {
				b.Fatal(err)
			}
			// Apart: a multi-statement string runs as one transaction.
			if _, err := f.pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
				b.Fatal(err)
			}
			// Seeding wrote up to a gigabyte of WAL; a checkpoint it set off
			// would otherwise run during the measurement.
			if _, err := f.pool.Exec(ctx, "CHECKPOINT"); err != nil {
				b.Fatal(err)
			}
			claims := max(b.N, 3000)
			latency := &worker.Histogram{}
			outcomes := make(chan tasks.Outcome, 1000)
			var wg sync.WaitGroup
			var left atomic.Int64
			left.Store(int64(claims))
			b.ResetTimer()
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						start := time.Now()
						task, err := f.queue.ClaimOne(ctx, fmt.Sprintf("w%d", w))
						latency.Record(time.Since(start))
						if err != nil {
							b.Error(err)
							return
						}
						outcomes <- tasks.Outcome{Task: *task, Result: realistic.Result(*task)}
					}
				}()
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				var batch []tasks.Outcome
				for o := range outcomes {
					batch = append(batch, o)
					if len(batch) == 200 {
						if _, err := f.queue.Finish(ctx, batch); err != nil {
							b.Error(err)
						}
						batch = batch[:0]
					}
				}
				if len(batch) > 0 {
					if _, err := f.queue.Finish(ctx, batch); err != nil {
						b.Error(err)
					}
				}
			}()
			wg.Wait()
			close(outcomes)
			<-done
			b.StopTimer()
			s := latency.Summary()
			b.ReportMetric(float64(s.P50.Microseconds())/1000, "p50_ms")
			b.ReportMetric(float64(s.P99.Microseconds())/1000, "p99_ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
