// Command faultworker is the worker binary of the fault tests: "taskq work
// --simulate" with what those tests need and the taskq command does not
// offer, namely a configurable lease (--lease), a record of every handler
// run in the table fault_runs, which the test creates:
//
//	fault_runs (id bigserial, task_id text, attempt integer, process text,
//	            worker_id text, started_at timestamptz, claimed_at timestamptz,
//	            ended_at timestamptz, held_at timestamptz)
//
// and a crawl that discovers its pages as it goes (--site-pages): each
// simulated fetch yields the links of its page on a crawl.Site, which the
// pool writes with the task's outcome, or which the handler enqueues itself
// (--enqueue-links), as the application's worker does.
//
// A run is recorded before the simulated fetch starts (started_at) and
// marked after it ends (ended_at), both with the server's clock_timestamp(),
// so [started_at, ended_at] contains the run; claimed_at is the claim's time
// as the database recorded it (tasks.started_at of that attempt). A run of a process killed
// mid-fetch is never marked ended.
//
// --hold is the fault tests' hook to kill a process at a known point: a run
// whose task path matches the pattern (path.Match), once it has its result
// (links included, and enqueued with --enqueue-links), marks its record
// held (held_at) and then waits until the process is stopped, never handing
// its result to the pool. A test that sees held_at set knows the run's
// outcome is not written and will not be.
//
// The process runs until SIGINT or SIGTERM, then shuts down gracefully and
// prints the pool's counts in the taskq command's format.
//
// It is built by the tests of package faults; it is not a tool.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "faultworker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	workers := flag.Int("workers", 8, "tasks run at once")
	batch := flag.Int("claim-batch", 1, "tasks per claim statement")
	lease := flag.Duration("lease", time.Minute, "lease of a claimed task (tasks.Config.Lease)")
	delay := flag.Duration("delay", 0, "each simulated fetch takes a random time up to this")
	id := flag.String("id", "", "process name: prefix of its worker ids, and fault_runs.process")
	poll := flag.Duration("poll", time.Second, "poll interval of idle workers")
	maintain := flag.Duration("maintain", time.Second, "maintenance interval; negative: none in this process")
	record := flag.Bool("record", true, "record every run in fault_runs")
	sitePages := flag.Int("site-pages", 0, "fetches are of a crawl.Site of this many pages and yield its links; 0: no links")
	enqueueLinks := flag.Bool("enqueue-links", false, "the handler enqueues its links itself rather than returning them")
	hold := flag.String("hold", "", "runs of task paths matching this pattern (path.Match) hold their result until the process stops")
	flag.Parse()
	url := os.Getenv("DATABASE_URL")
	if url == "" || *id == "" {
		return errors.New("DATABASE_URL and --id are required")
	}
	if *hold != "" {
		if _, err := path.Match(*hold, "/"); err != nil {
			return fmt.Errorf("--hold: %w", err)
		}
		if !*record {
			return errors.New("--hold marks fault_runs: it needs --record")
		}
	}
	d, err := db.Open(ctx, url, db.Options{
		MaxConns:        int32(*workers + 4),
		ApplicationName: "faultworker " + *id,
		Queue:           tasks.Config{Lease: *lease},
	})
	if err != nil {
		return err
	}
	defer d.Close()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := &handler{
		pool: d.Pool(), queue: d.Queue(), logger: logger, process: *id, delay: *delay, record: *record,
		enqueueLinks: *enqueueLinks, hold: *hold,
	}
	if *sitePages > 0 {
		h.site = &crawl.Site{Pages: *sitePages}
	}
	p := worker.New(d.Queue(), h, worker.Config{
		Workers: *workers, ClaimBatch: *batch, ID: *id, ListenURL: url, PollInterval: *poll,
		MaintainInterval: *maintain, ShutdownTimeout: 10 * time.Second, Logger: logger,
	})
	err = p.Run(ctx)
	s := p.Stats()
	fmt.Printf("ran %s: %d completed, %d failed, %d retried, %d handed back; %d lost, %d unrecorded\n",
		s.Elapsed.Round(time.Millisecond), s.Completed, s.Failed, s.Retried, s.Released, s.Lost, s.Unrecorded)
	return err
}

// handler simulates a fetch between two records of the run.
type handler struct {
	pool         *pgxpool.Pool
	queue        *tasks.Queue
	logger       *slog.Logger
	process      string
	delay        time.Duration
	record       bool
	site         *crawl.Site
	enqueueLinks bool
	hold         string
}

func (h *handler) Handle(ctx context.Context, t tasks.Task) tasks.TaskResult {
	var runID int64
	if h.record {
		err := h.pool.QueryRow(ctx, `
			INSERT INTO fault_runs (task_id, attempt, process, worker_id, started_at, claimed_at)
			VALUES ($1, $2, $3, $4, clock_timestamp(), $5)
			RETURNING id`, t.ID, t.Attempt, h.process, t.WorkerID, t.StartedAt).Scan(&runID)
		if err != nil {
			return tasks.TaskResult{Err: fmt.Errorf("record start of run: %w", err)}
		}
	}
	if h.delay > 0 {
		timer := time.NewTimer(rand.N(h.delay + 1))
		select {
		case <-ctx.Done():
			timer.Stop()
		case <-timer.C:
		}
	}
	res := crawl.Simulator{Site: h.site}.Handle(ctx, t)
	if ctx.Err() != nil {
		res = tasks.TaskResult{Err: ctx.Err()}
	}
	if h.enqueueLinks && res.Err == nil && len(res.Links) > 0 {
		if _, err := h.queue.Enqueue(ctx, t.JobID, res.Links); err != nil {
			h.logger.Warn("enqueue the links found", "task", t.ID, "err", err)
			res = tasks.TaskResult{Err: fmt.Errorf("enqueue the links found: %w", err)}
		}
		res.Links = nil
	}
	if h.hold != "" {
		if held, _ := path.Match(h.hold, t.Path); held {
			if _, err := h.pool.Exec(ctx, "UPDATE fault_runs SET held_at = clock_timestamp() WHERE id = $1", runID); err != nil {
				return tasks.TaskResult{Err: fmt.Errorf("record hold of run: %w", err)}
			}
			<-ctx.Done()
			res = tasks.TaskResult{Err: ctx.Err()}
		}
	}
	if h.record {
		// Marked even when the handler's context has ended: the run is
		// over either way, and an unmarked run means a killed process.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := h.pool.Exec(mctx, "UPDATE fault_runs SET ended_at = clock_timestamp() WHERE id = $1", runID); err != nil {
			return tasks.TaskResult{Err: fmt.Errorf("record end of run: %w", err)}
		}
	}
	return res
}
