package loadtest

import (
	"context"
	_ "embed"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/gen"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// beforeAppSchema is what before-app adds to the base schema: the
// application's running_tasks column and its claim index.
//
//go:embed before_app.sql
var beforeAppSchema string

func addBeforeAppSchema(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, beforeAppSchema)
	return err
}

// The application's batch manager (internal/db/batch.go): outcomes are
// written when 100 are waiting or every 5 seconds, from a buffer of 500.
const (
	appBatchSize     = 100
	appBatchInterval = 5 * time.Second
	appBatchBuffer   = 500
)

// runLegacyApp is the application's worker as it ran from 2025-10-26 to
// 2025-10-28 (blue-banded-bee at 21003fb: internal/jobs/worker.go,
// internal/db/queue.go and batch.go), on the base schema with
// before_app.sql. Each worker tries the running jobs in turn, each with a
// GetNextTask transaction (LegacyAppTaskClaim), until one gives it a task;
// runs it, enqueuing the links it found (the application did that inside
// the fetch, before the finish) as before+discover does; then decrements
// the job's running_tasks at once and hands the outcome to one batch writer.
//
// Not reproduced: the application's back-off when no job gave a task
// (exponential, plus 0-2 s of jitter) and its connection-pool guards, which
// pace the application rather than the database; a worker here waits 5 ms,
// as before's does. A worker stops when no task is pending and no other
// worker is claiming or running one. It returns the claims' latencies (a
// claim is the whole round of jobs) and the series of tasks whose outcome
// was written.
func runLegacyApp(ctx context.Context, pool *pgxpool.Pool, workers int, h worker.Handler) (*worker.Histogram, []Sample, error) {
	q := gen.New()
	jobs, err := q.LegacyJobIDsRunning(ctx, pool)
	if err != nil {
		return nil, nil, err
	}
	claims := &worker.Histogram{}
	writer := startAppBatchWriter(pool)
	completions := recordCompletions(ctx, writer.written.distinct)
	var wg sync.WaitGroup
	var errs firstError
	var running atomic.Int64
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 28))
			order := append([]string(nil), jobs...)
			for ctx.Err() == nil {
				start := time.Now()
				running.Add(1)
				// The application ranged over a map of its jobs: a new
				// order each round.
				rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
				task, found, err := claimAppTask(ctx, q, pool, order)
				if err != nil {
					running.Add(-1)
					errs.set(ctx, err)
					return
				}
				if !found {
					if running.Add(-1) == 0 {
						// Nothing claimed may still mean a job's row was
						// held: stop only when nothing is pending.
						pending, err := q.LegacyTaskAnyPending(ctx, pool)
						if err != nil {
							errs.set(ctx, err)
							return
						}
						if !pending {
							return
						}
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				claims.Record(time.Since(start))
				res := h.Handle(ctx, tasks.Task{ID: task.ID, JobID: task.JobID, Path: task.Path, PriorityScore: task.PriorityScore})
				if res.Err == nil && len(res.Links) > 0 {
					err = legacyEnqueue(ctx, q, pool, task.JobID, res.Links)
				}
				// The application logged a failed decrement and queued the
				// outcome whatever it did.
				if derr := q.LegacyAppJobRunningTasksDecrement(ctx, pool, task.JobID); err == nil {
					err = derr
				}
				writer.add(appOutcome{id: task.ID, at: time.Now(), res: res})
				running.Add(-1)
				if err != nil {
					errs.set(ctx, err)
					return
				}
			}
		})
	}
	wg.Wait()
	errs.keep(writer.stop())
	return claims, completions(), errs.err
}

// claimAppTask is the application's claimPendingTask: GetNextTask for each
// job in turn, each in its own transaction, until one returns a task.
func claimAppTask(ctx context.Context, q *gen.Queries, pool *pgxpool.Pool, jobs []string) (gen.LegacyAppTaskClaimRow, bool, error) {
	for _, job := range jobs {
		var task gen.LegacyAppTaskClaimRow
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			task, err = q.LegacyAppTaskClaim(ctx, tx, job)
			return err
		})
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue
		case err != nil:
			return task, false, err
		}
		return task, true, nil
	}
	return gen.LegacyAppTaskClaimRow{}, false, nil
}

// appOutcome is a task's result waiting for the batch writer.
type appOutcome struct {
	id  string
	at  time.Time
	res tasks.TaskResult
}

// appBatchWriter is the application's BatchManager: one goroutine writes
// the outcomes it is handed, completed and failed ones each with one
// statement, in one transaction per batch. It writes with a context of its
// own, as the application did, so that outcomes handed over before a time
// limit are written still.
type appBatchWriter struct {
	pool    *pgxpool.Pool
	in      chan appOutcome
	done    chan struct{}
	written runCounter
	err     error
}

func startAppBatchWriter(pool *pgxpool.Pool) *appBatchWriter {
	w := &appBatchWriter{pool: pool, in: make(chan appOutcome, appBatchBuffer), done: make(chan struct{})}
	go w.run()
	return w
}

// add hands an outcome over, waiting while the buffer is full.
func (w *appBatchWriter) add(o appOutcome) { w.in <- o }

// stop writes what is left and returns the first error a batch met.
func (w *appBatchWriter) stop() error {
	close(w.in)
	<-w.done
	return w.err
}

func (w *appBatchWriter) run() {
	defer close(w.done)
	tick := time.NewTicker(appBatchInterval)
	defer tick.Stop()
	var batch []appOutcome
	flush := func() {
		if len(batch) == 0 {
			return
		}
		// A batch that fails is kept and tried again, as the
		// application's was; the run reports the error.
		if err := w.write(batch); err != nil {
			if w.err == nil {
				w.err = err
			}
			return
		}
		for _, o := range batch {
			w.written.ran(o.id)
		}
		batch = batch[:0]
	}
	for {
		select {
		case o, ok := <-w.in:
			if !ok {
				flush()
				return
			}
			batch = append(batch, o)
			if len(batch) >= appBatchSize {
				flush()
				tick.Reset(appBatchInterval)
			}
		case <-tick.C:
			flush()
		}
	}
}

func (w *appBatchWriter) write(batch []appOutcome) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var done gen.LegacyAppTaskCompleteManyParams
	var failed gen.LegacyAppTaskFailManyParams
	for _, o := range batch {
		if o.res.Err != nil {
			failed.Ids = append(failed.Ids, o.id)
			failed.CompletedAt = append(failed.CompletedAt, o.at)
			failed.Errors = append(failed.Errors, o.res.Err.Error())
			continue
		}
		if err := appendCompleted(&done, o); err != nil {
			return err
		}
	}
	q := gen.New()
	return pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		if len(done.Ids) > 0 {
			if _, err := q.LegacyAppTaskCompleteMany(ctx, tx, done); err != nil {
				return err
			}
		}
		if len(failed.Ids) > 0 {
			if _, err := q.LegacyAppTaskFailMany(ctx, tx, failed); err != nil {
				return err
			}
		}
		return nil
	})
}

// appendCompleted adds o to the batch's columns as the application's batch
// manager did: every column a value, 0 or "" where the fetch recorded none,
// "{}" for missing headers and "[]" for no cache checks.
func appendCompleted(p *gen.LegacyAppTaskCompleteManyParams, o appOutcome) error {
	r := o.res
	jsonOr := func(v any, none string, empty bool) (string, error) {
		if empty {
			return none, nil
		}
		b, err := jsonMarshal(v)
		return string(b), err
	}
	headers, err := jsonOr(r.Headers, "{}", r.Headers == nil)
	if err != nil {
		return err
	}
	checks, err := jsonOr(r.CacheCheckAttempts, "[]", r.CacheCheckAttempts == nil)
	if err != nil {
		return err
	}
	second := r.Second
	if second == nil {
		second = &tasks.SecondRequest{}
	}
	secondHeaders, err := jsonOr(second.Headers, "{}", second.Headers == nil)
	if err != nil {
		return err
	}
	ms := func(d time.Duration) int32 { return *msPtr(d) }
	p.Ids = append(p.Ids, o.id)
	p.CompletedAt = append(p.CompletedAt, o.at)
	p.StatusCodes = append(p.StatusCodes, int32(r.StatusCode))
	p.ResponseTimes = append(p.ResponseTimes, ms(r.ResponseTime))
	p.CacheStatuses = append(p.CacheStatuses, r.CacheStatus)
	p.ContentTypes = append(p.ContentTypes, r.ContentType)
	p.ContentLengths = append(p.ContentLengths, r.ContentLength)
	p.Headers = append(p.Headers, headers)
	p.RedirectUrls = append(p.RedirectUrls, r.RedirectURL)
	p.DnsLookupTimes = append(p.DnsLookupTimes, ms(r.Timing.DNSLookup))
	p.TcpConnectionTimes = append(p.TcpConnectionTimes, ms(r.Timing.TCPConnection))
	p.TlsHandshakeTimes = append(p.TlsHandshakeTimes, ms(r.Timing.TLSHandshake))
	p.Ttfbs = append(p.Ttfbs, ms(r.Timing.TTFB))
	p.ContentTransferTimes = append(p.ContentTransferTimes, ms(r.Timing.ContentTransfer))
	p.SecondResponseTimes = append(p.SecondResponseTimes, second.ResponseTime.Milliseconds())
	p.SecondCacheStatuses = append(p.SecondCacheStatuses, second.CacheStatus)
	p.SecondContentLengths = append(p.SecondContentLengths, second.ContentLength)
	p.SecondHeaders = append(p.SecondHeaders, secondHeaders)
	p.SecondDnsLookupTimes = append(p.SecondDnsLookupTimes, ms(second.Timing.DNSLookup))
	p.SecondTcpConnectionTimes = append(p.SecondTcpConnectionTimes, ms(second.Timing.TCPConnection))
	p.SecondTlsHandshakeTimes = append(p.SecondTlsHandshakeTimes, ms(second.Timing.TLSHandshake))
	p.SecondTtfbs = append(p.SecondTtfbs, ms(second.Timing.TTFB))
	p.SecondContentTransferTimes = append(p.SecondContentTransferTimes, ms(second.Timing.ContentTransfer))
	p.CacheCheckAttempts = append(p.CacheCheckAttempts, checks)
	return nil
}
