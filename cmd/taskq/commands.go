package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/crawl"
	"github.com/blue-banded-bee/taskq/internal/db"
	"github.com/blue-banded-bee/taskq/internal/loadtest"
	"github.com/blue-banded-bee/taskq/internal/localpg"
	"github.com/blue-banded-bee/taskq/internal/metrics"
	"github.com/blue-banded-bee/taskq/internal/migrate"
	"github.com/blue-banded-bee/taskq/internal/tasks"
	"github.com/blue-banded-bee/taskq/internal/worker"
)

// maxWorkers bounds --workers: each worker is a goroutine with a pooled
// connection, and PostgreSQL's max_connections is far below this anyway.
const maxWorkers = 10_000

// resolveDatabase returns the URL to use: the given one, or the "taskq"
// database on the local (or throwaway) server, created if missing.
func resolveDatabase(ctx context.Context, given string, stderr io.Writer) (string, error) {
	if given != "" {
		return given, nil
	}
	srv, err := localServer(ctx, stderr)
	if err != nil {
		return "", err
	}
	conn, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", srv.URL, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'taskq')").Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE taskq"); err != nil {
			return "", fmt.Errorf("create database taskq: %w", err)
		}
	}
	u, err := url.Parse(srv.URL)
	if err != nil {
		return "", err
	}
	u.Path = "/taskq"
	return u.String(), nil
}

func localServer(ctx context.Context, stderr io.Writer) (localpg.Server, error) {
	srv, err := localpg.Find(ctx, "")
	if err != nil {
		return srv, err
	}
	if srv.Throwaway {
		fmt.Fprintf(stderr, "taskq: no server on 127.0.0.1:5432; using a throwaway cluster in %s (taskq localpg stop removes it)\n", srv.Dir)
	}
	return srv, nil
}

func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", `
Usage: taskq migrate [flags] [up|down|status]

Applies the migrations embedded in the binary (sql/schema) with dbmate's
library: "up" (the default) applies every pending one, "down" rolls back the
latest, "status" lists them. A session advisory lock makes concurrent runs
take turns, and invalid indexes left by a failed CREATE INDEX CONCURRENTLY
are dropped first so their migration builds them again.`, stderr)
	dbURL := databaseFlag(fs)
	target := fs.String("target", "", "last migration version to apply (default: all)")
	if err := parse(fs, args); err != nil {
		return err
	}
	action := "up"
	if fs.NArg() > 1 {
		return usageError{"migrate takes one action: up, down or status"}
	}
	if fs.NArg() == 1 {
		action = fs.Arg(0)
	}
	switch action {
	case "up", "down", "status":
	default:
		return usageError{fmt.Sprintf("unknown migrate action %q: want up, down or status", action)}
	}
	if _, err := migrate.Files(*target); err != nil {
		return usageError{fmt.Sprintf("--target %s", err)}
	}
	u, err := resolveDatabase(ctx, *dbURL, stderr)
	if err != nil {
		return err
	}
	r := migrate.Runner{URL: u, Target: *target, Log: stdout}
	switch action {
	case "up":
		return r.Up(ctx)
	case "down":
		return r.Down(ctx)
	case "status":
		ms, err := r.Status(ctx)
		if err != nil {
			return err
		}
		pending := 0
		for _, m := range ms {
			mark := "[x]"
			if !m.Applied {
				mark, pending = "[ ]", pending+1
			}
			fmt.Fprintf(stdout, "%s %s\n", mark, m.File)
		}
		fmt.Fprintf(stdout, "\n%d applied, %d pending\n", len(ms)-pending, pending)
	}
	return nil
}

func workCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("work", `
Usage: taskq work [flags]

Runs a worker pool against the database until SIGINT or SIGTERM, then shuts
down gracefully: no new claims, running tasks get --shutdown-timeout to
finish, the rest go back to the queue. Each task fetches its page over HTTP
(the cache-warming job) unless --simulate is given.`, stderr)
	dbURL := databaseFlag(fs)
	workers := fs.Int("workers", 8, "tasks run at once")
	batch := fs.Int("claim-batch", 1, "tasks per claim statement: 1 = each worker claims for itself, more = one fetcher claims for all")
	pooler := fs.Bool("pooler", false, "the URL is a transaction pooler (Supavisor :6543, PgBouncer): no prepared statements, no LISTEN, poll only")
	listenURL := fs.String("listen-url", "", "direct (not pooled) URL to LISTEN on for new tasks; default: the database URL unless --pooler")
	poll := fs.Duration("poll", time.Second, "how often idle workers look for tasks without a notification")
	simulate := fs.Bool("simulate", false, "simulate page fetches instead of fetching over HTTP")
	delay := fs.Duration("delay", 0, "with --simulate: how long each simulated fetch takes")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long running tasks may finish after a stop signal")
	lease := fs.Duration("lease", time.Minute, "how long a claimed task stays with this worker without an extension; a dead worker's tasks return to the queue after it")
	noMaintain := fs.Bool("no-maintain", false, "do not run maintenance (lease rescue, progress roll-up) in this process")
	verbose := fs.Bool("v", false, "log informational events")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. :9090 (docs/operations/METRICS.md)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *workers < 1 || *workers > maxWorkers:
		return usageError{fmt.Sprintf("--workers must be 1 to %d", maxWorkers)}
	case *batch < 1 || *batch > tasks.MaxBatch:
		return usageError{fmt.Sprintf("--claim-batch must be 1 to %d", tasks.MaxBatch)}
	case *lease < time.Second:
		return usageError{"--lease must be at least 1s"}
	case *poll <= 0 || *shutdown <= 0:
		return usageError{"--poll and --shutdown-timeout must be positive"}
	case *delay < 0:
		return usageError{"--delay must not be negative"}
	case *delay != 0 && !*simulate:
		return usageError{"--delay is the simulated fetch's: give --simulate too"}
	}
	u, err := resolveDatabase(ctx, *dbURL, stderr)
	if err != nil {
		return err
	}
	d, err := db.Open(ctx, u, db.Options{Pooler: *pooler, MaxConns: int32(*workers + 4), Queue: tasks.Config{Lease: *lease}})
	if err != nil {
		return err
	}
	defer d.Close()
	var handler worker.Handler = &crawl.Fetcher{Domains: crawl.NewDomainCache(d.Pool())}
	if *simulate {
		handler = crawl.Simulator{Delay: *delay}
	}
	listen := *listenURL
	if listen == "" && !*pooler {
		listen = u
	}
	maintain := time.Duration(0)
	if *noMaintain {
		maintain = -1
	}
	p := worker.New(d.Queue(), handler, worker.Config{
		Workers: *workers, ClaimBatch: *batch, ListenURL: listen, PollInterval: *poll,
		ShutdownTimeout: *shutdown, MaintainInterval: maintain, Logger: newLogger(stderr, *verbose),
	})
	if *metricsAddr != "" {
		srv, err := metrics.Listen(*metricsAddr, metrics.NewRegistry(p, d.Queue(), metrics.QueueOptions{Logger: newLogger(stderr, *verbose)}))
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer srv.Close()
		fmt.Fprintf(stderr, "taskq: metrics at http://%s/metrics\n", srv.Addr())
	}
	live := startLiveLine(ctx, stderr, func() string {
		s := p.Stats()
		return fmt.Sprintf("%d done (%d failed, %d retried)  %.0f tasks/s  claim p50 %s p99 %s",
			s.Completed+s.Failed, s.Failed, s.Retried, s.TasksPerSecond(), s.ClaimLatency.P50.Round(time.Microsecond),
			s.ClaimLatency.P99.Round(time.Microsecond))
	})
	err = p.Run(ctx)
	live()
	s := p.Stats()
	fmt.Fprintf(stdout, "ran %s: %d completed, %d failed, %d retried, %d handed back; %.0f tasks/s; claim p50 %s p99 %s; efficiency %.1f%%\n",
		s.Elapsed.Round(time.Millisecond), s.Completed, s.Failed, s.Retried, s.Released, s.TasksPerSecond(),
		s.ClaimLatency.P50, s.ClaimLatency.P99, 100*s.Efficiency())
	return err
}

func loadtestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("loadtest", `
Usage: taskq loadtest [flags]

Reproduces the plan's 2025-10-24 load test on fresh databases, one per mode,
and prints the modes side by side with the ratio of after to before:
  before       the schema as production had it and the old claim
               (SELECT the next pending task, then UPDATE it by id)
  after        every migration; each worker claims with ClaimNextTask
  after-batch  every migration; one fetcher claims --batch tasks at a time
The databases are created on the server of DATABASE_URL (which needs
CREATEDB and superuser, for the lock-wait log) or the local one, and dropped
afterwards unless --keep.`, stderr)
	dbURL := fs.String("database-url", os.Getenv("DATABASE_URL"),
		"superuser URL of the server to create the test databases on (env DATABASE_URL); empty: the local server")
	n := fs.Int("tasks", 41_893, "tasks in all, as in the plan's test")
	jobs := fs.Int("jobs", 6, "jobs the tasks are split over")
	workers := fs.Int("workers", 32, "workers running tasks at once")
	batch := fs.Int("batch", 500, "claim batch of the after-batch mode")
	concurrency := fs.Int("concurrency", 1000, "each job's concurrency limit")
	delay := fs.Duration("delay", 0, "how long each simulated page fetch takes (0: no-op, measures the queue alone)")
	dashboards := fs.Int("dashboard-samples", 40, "dashboard refreshes (as authenticated users, through RLS) timed per mode before the run")
	modes := fs.String("modes", modeList(loadtest.AllModes),
		"comma-separated modes to run, in order (+discover: a crawl that finds its pages as it goes;\n"+
			"+analyzed: ANALYZE between the enqueue and the run, which no other mode does)")
	maxDuration := fs.Duration("max-duration", 5*time.Minute, "stop a mode that runs longer and report what it did (the old claim is slow)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file (- for stdout)")
	chartDir := fs.String("chart", "", "also draw the run as PNG charts in this directory (created if missing): tasks completed per second over time, claim latency per mode")
	keep := fs.Bool("keep", false, "keep the test databases")
	verbose := fs.Bool("v", false, "log informational events")
	if err := parse(fs, args); err != nil {
		return err
	}
	var ms []loadtest.Mode
	for _, s := range strings.Split(*modes, ",") {
		m, err := loadtest.ParseMode(strings.TrimSpace(s))
		if err != nil {
			return usageError{err.Error()}
		}
		ms = append(ms, m)
	}
	switch {
	case *n < 1 || *jobs < 1 || *workers < 1 || *batch < 1 || *concurrency < 1:
		return usageError{"--tasks, --jobs, --workers, --batch and --concurrency must be at least 1"}
	case *workers > maxWorkers:
		return usageError{fmt.Sprintf("--workers must be at most %d", maxWorkers)}
	case *batch > tasks.MaxBatch:
		return usageError{fmt.Sprintf("--batch must be at most %d", tasks.MaxBatch)}
	case *delay < 0 || *dashboards < 0:
		return usageError{"--delay and --dashboard-samples must not be negative"}
	case *maxDuration <= 0:
		return usageError{"--max-duration must be positive"}
	}
	server := *dbURL
	if server == "" {
		srv, err := localServer(ctx, stderr)
		if err != nil {
			return err
		}
		server = srv.URL
	}
	var live func()
	cfg := loadtest.Config{
		ServerURL: server, Modes: ms, Tasks: *n, Jobs: *jobs, Workers: *workers, Batch: *batch,
		Concurrency: *concurrency, Delay: *delay, DashboardSamples: *dashboards, MaxDuration: *maxDuration, Keep: *keep,
		Logger: newLogger(stderr, *verbose),
	}
	var last atomic.Pointer[loadtest.Progress]
	last.Store(&loadtest.Progress{})
	cfg.OnProgress = func(p loadtest.Progress) { last.Store(&p) }
	live = startLiveLine(ctx, stderr, func() string {
		p := *last.Load()
		if p.Total == 0 {
			return "preparing..."
		}
		rate := 0.0
		if p.Elapsed > 0 {
			rate = float64(p.Done) / p.Elapsed.Minutes()
		}
		return fmt.Sprintf("%-11s %s %6d/%d tasks  %8.0f tasks/min  %s", p.Mode, bar(p.Done, p.Total, 24),
			p.Done, p.Total, rate, p.Elapsed.Round(time.Second))
	})
	results, err := loadtest.Run(ctx, cfg)
	live()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Load test: %d tasks across %d jobs, %d workers, simulated fetch %s; %s, GOMAXPROCS %d\n\n",
		*n, *jobs, *workers, *delay, runtime.GOOS+"/"+runtime.GOARCH, runtime.GOMAXPROCS(0))
	if err := loadtest.WriteTable(stdout, results); err != nil {
		return err
	}
	if *chartDir != "" {
		charts, err := loadtest.WriteCharts(*chartDir, results)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		for _, c := range charts {
			fmt.Fprintf(stdout, "chart: %s\n", c.Path)
		}
	}
	if *jsonOut != "" {
		out := struct {
			Date    time.Time         `json:"date"`
			Tasks   int               `json:"tasks"`
			Jobs    int               `json:"jobs"`
			Workers int               `json:"workers"`
			CPUs    int               `json:"cpus"`
			Results []loadtest.Result `json:"results"`
		}{time.Now().UTC(), *n, *jobs, *workers, runtime.NumCPU(), results}
		data, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		if *jsonOut == "-" {
			_, err = stdout.Write(append(data, '\n'))
			return err
		}
		return os.WriteFile(*jsonOut, append(data, '\n'), 0o644)
	}
	return nil
}

func statsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("stats", `
Usage: taskq stats [flags]

Prints the plan's "How to measure" as tables: tasks finished per minute,
sessions waiting by wait event, current lock waits with their blockers, and
the queue depth of unfinished jobs by status.`, stderr)
	dbURL := databaseFlag(fs)
	window := fs.Duration("window", 15*time.Minute, "throughput window")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *window <= 0 || *window > 30*24*time.Hour {
		return usageError{"--window must be positive and at most 720h"}
	}
	u, err := resolveDatabase(ctx, *dbURL, stderr)
	if err != nil {
		return err
	}
	d, err := db.Open(ctx, u, db.Options{MaxConns: 2})
	if err != nil {
		return err
	}
	defer d.Close()
	q := d.Queue()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	defer tw.Flush()

	tp, err := q.Throughput(ctx, *window)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "Tasks finished per minute (last %s)\nminute\ttasks\n", *window)
	for _, r := range tp {
		fmt.Fprintf(tw, "%s\t%d\n", r.Minute.Local().Format("15:04"), r.TasksCompleted)
	}
	we, err := q.WaitEvents(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "\nSessions waiting, by wait event\ntype\tevent\tsessions\n")
	for _, r := range we {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", r.WaitEventType, r.WaitEvent, r.Sessions)
	}
	lw, err := q.LockWaits(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "\nLock waits now\npid\tlock\tmode\trelation\twaited\tblocked by\tquery\n")
	for _, r := range lw {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%.1f ms\t%v\t%s\n", r.Pid, r.LockType, r.Mode, r.Relation, r.WaitedMs,
			r.BlockedBy, oneLine(r.Query, 60))
	}
	depth, err := q.QueueDepth(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "\nQueue depth of unfinished jobs\njob\tstatus\ttasks\n")
	for _, r := range depth {
		fmt.Fprintf(tw, "%s\t%s\t%d\n", r.JobID, r.Status, r.Tasks)
	}
	return nil
}

func localpgCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("localpg", `
Usage: taskq localpg stop

Stops the throwaway PostgreSQL cluster that taskq (and the tests) start when
nothing listens on 127.0.0.1:5432, and deletes its directory.`, stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "stop" {
		return usageError{"usage: taskq localpg stop"}
	}
	if err := localpg.StopThrowaway(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stopped and removed %s\n", localpg.Dir())
	return nil
}

// startLiveLine redraws a status line on stderr every 500 ms when it is a
// terminal; the returned function stops it and ends the line.
func startLiveLine(ctx context.Context, stderr io.Writer, line func() string) (stop func()) {
	if !isTerminal(stderr) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(stderr, "\r\033[K%s", line())
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		fmt.Fprint(stderr, "\r\033[K")
	}
}

func bar(done, total, width int) string {
	filled := 0
	if total > 0 {
		filled = min(width, done*width/total)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

func modeList(modes []loadtest.Mode) string {
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = string(m)
	}
	return strings.Join(names, ",")
}
