package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/loadtest"
	"github.com/blue-banded-bee/taskq/internal/localpg"
	"github.com/blue-banded-bee/taskq/metrics"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// maxWorkers bounds --workers: each worker is a goroutine with a pooled
// connection, and PostgreSQL's max_connections is far below this anyway.
const maxWorkers = 10_000

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
Usage: taskq migrate [up|down|status] [flags]

Applies the migrations embedded in the binary (sql/schema) with dbmate's
library: "up" (the default) applies every pending one, "down" rolls back the
latest, "status" lists them and writes nothing. A session advisory lock
makes concurrent runs take turns, and invalid indexes left by a failed
CREATE INDEX CONCURRENTLY are dropped first so their migration builds them
again. Run it on a direct connection, never through a transaction pooler.

"status" exits with 0 when every migration is applied, 3 when some are
pending (as dbmate's status --exit-code, but telling them from a failure),
and 1 when the database has migrations this binary does not know.`, stderr)
	dbURL := databaseFlag(fs)
	target := fs.String("target", "", "last migration version to apply or list (default: all)")
	jsonOut := fs.Bool("json", false, "status: print the migrations as JSON")
	pos, err := parse(fs, args, stdout, 0, 1)
	if err != nil {
		return err
	}
	action := "up"
	if len(pos) == 1 {
		action = pos[0]
	}
	switch action {
	case "up", "down", "status":
	default:
		return usageError{fmt.Sprintf("unknown migrate action %q: want up, down or status", redact(action))}
	}
	if *jsonOut && action != "status" {
		return usageError{"--json goes with migrate status"}
	}
	if _, err := migrate.Files(*target); err != nil {
		return usageError{fmt.Sprintf("--target %s", err)}
	}
	t, err := resolveTarget(*dbURL)
	if err != nil {
		return err
	}
	u, err := t.url("migrate")
	if err != nil {
		return err
	}
	announce(stderr, t)
	r := migrate.Runner{URL: u, Target: *target, Log: stdout}
	switch action {
	case "up":
		return r.Up(ctx)
	case "down":
		return r.Down(ctx)
	}
	s, err := r.Schema(ctx)
	if err != nil {
		return connectError(t, err, true)
	}
	if *jsonOut {
		if err := writeJSON(stdout, migrateStatusJSON(s)); err != nil {
			return err
		}
	} else {
		for _, m := range s.Migrations {
			mark := "[ ]"
			if m.Applied {
				mark = "[x]"
			}
			fmt.Fprintf(stdout, "%s %s\n", mark, m.File)
		}
		for _, v := range s.Unknown {
			fmt.Fprintf(stdout, "[?] %s (applied; this binary does not know it)\n", v)
		}
		fmt.Fprintf(stdout, "\n%d applied, %d pending\n", s.Applied(), s.Pending())
	}
	if err := schemaError(s); err != nil {
		if len(s.Unknown) == 0 {
			return exitError{exitPending, err}
		}
		return err
	}
	return nil
}

type migrationJSON struct {
	Version string `json:"version"`
	File    string `json:"file"`
	Applied bool   `json:"applied"`
}

func migrateStatusJSON(s migrate.Schema) any {
	ms := make([]migrationJSON, len(s.Migrations))
	for i, m := range s.Migrations {
		ms[i] = migrationJSON(m)
	}
	unknown := s.Unknown
	if unknown == nil {
		unknown = []string{}
	}
	return struct {
		Migrations []migrationJSON `json:"migrations"`
		Applied    int             `json:"applied"`
		Pending    int             `json:"pending"`
		Unknown    []string        `json:"unknown"`
		InPublic   bool            `json:"record_in_public"`
		Current    bool            `json:"current"`
	}{ms, s.Applied(), s.Pending(), unknown, s.InPublic, s.Current()}
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

func workCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("work", `
Usage: taskq work [flags]

Runs a worker pool against the database until SIGINT or SIGTERM, then shuts
down gracefully: no new claims, running tasks get --shutdown-timeout to
finish, the rest go back to the queue. Each task fetches its page over HTTP
(the cache-warming job) unless --simulate is given.

It starts with a line saying how many workers run on which database, shows
its progress (a live line on a terminal, else a line every --progress), and
ends with what it did:
  completed, failed  tasks finished; failed ran out of retries or could not
                     succeed (a 4xx page, say)
  retried            failures put back to run again after a backoff
  handed back        tasks returned to the queue unfinished at shutdown, for
                     another worker to run; none is lost
  tasks/s            tasks finished (completed, failed or retried) per second
  claim p50 / p99    how long claim statements took
  efficiency         the share of the workers' busy time spent running tasks
                     rather than waiting on the queue (claim statements,
                     handing outcomes over): 100% means the queue costs the
                     workers nothing; near 0% with --simulate --delay 0,
                     whose tasks take no time
Politeness is on by default: the queue never starts two tasks of a paced
domain closer than its interval, whichever worker or host claims; a 429 or
503 (with its Retry-After) or a failed connection slows its domain down, and
successes speed it up again (--pace-step, --pace-max, --pace-recover-after);
and the fetcher reads each domain's robots.txt once for its Crawl-delay
(--no-robots: don't). taskq stats lists the paced domains.

It refuses to start on a database that is not migrated to this binary's
schema (exit 1: run taskq migrate up).`, stderr)
	dbURL := databaseFlag(fs)
	workers := fs.Int("workers", 8, "tasks run at once")
	batch := fs.Int("claim-batch", 1, "tasks per claim statement: 1 = each worker claims for itself, more = one fetcher claims for all")
	claimers := fs.Int("claimers", worker.DefaultClaimers, "with --claim-batch 1: how many of the workers' claim statements may be in flight at once")
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
	progress := fs.Duration("progress", progressInterval, "when stderr is not a terminal, print progress this often (0: never)")
	noRobots := fs.Bool("no-robots", false, "do not read robots.txt for a domain's Crawl-delay")
	paceStep := fs.Duration("pace-step", tasks.DefaultPaceStep, "how much a 429/503/connection failure raises its domain's interval, and a run of successes lowers it")
	paceMax := fs.Duration("pace-max", tasks.DefaultPaceMax, "the most a domain's interval is raised to by back-off")
	paceRecover := fs.Int("pace-recover-after", tasks.DefaultPaceRecoverAfter, "successes in a row that lower a domain's interval by one --pace-step")
	if _, err := parse(fs, args, stdout, 0, 0); err != nil {
		return err
	}
	switch {
	case *paceStep <= 0 || *paceMax <= 0 || *paceMax > tasks.MaxPaceInterval || *paceRecover < 1:
		return usageError{fmt.Sprintf("--pace-step and --pace-max must be positive (--pace-max at most %s), --pace-recover-after at least 1", tasks.MaxPaceInterval)}
	case *workers < 1 || *workers > maxWorkers:
		return usageError{fmt.Sprintf("--workers must be 1 to %d", maxWorkers)}
	case *batch < 1 || *batch > tasks.MaxBatch:
		return usageError{fmt.Sprintf("--claim-batch must be 1 to %d", tasks.MaxBatch)}
	case *claimers < 1 || *claimers > maxWorkers:
		return usageError{fmt.Sprintf("--claimers must be 1 to %d", maxWorkers)}
	case *lease < time.Second:
		return usageError{"--lease must be at least 1s"}
	case *poll <= 0 || *shutdown <= 0:
		return usageError{"--poll and --shutdown-timeout must be positive"}
	case *delay < 0:
		return usageError{"--delay must not be negative"}
	case *delay != 0 && !*simulate:
		return usageError{"--delay is the simulated fetch's: give --simulate too"}
	case *progress < 0:
		return usageError{"--progress must not be negative"}
	}
	if *listenURL != "" {
		if _, err := pgconn.ParseConfig(*listenURL); err != nil {
			return usageError{fmt.Sprintf("--listen-url: %s", redact(err.Error()))}
		}
	}
	t, err := resolveTarget(*dbURL)
	if err != nil {
		return err
	}
	d, err := openQueue(ctx, t, db.Options{Pooler: *pooler, MaxConns: int32(*workers + 4), Queue: tasks.Config{
		Lease: *lease, PaceStep: *paceStep, PaceMax: *paceMax, PaceRecoverAfter: *paceRecover,
	}})
	if err != nil {
		return err
	}
	defer d.Close()
	fetcher := &crawl.Fetcher{Domains: crawl.NewDomainCache(d.Queue())}
	if !*noRobots {
		fetcher.Pacer = d.Queue()
	}
	var handler worker.Handler = fetcher
	if *simulate {
		handler = crawl.Simulator{Delay: *delay}
	}
	listen := *listenURL
	if listen == "" && !*pooler {
		listen = t.connString()
	}
	maintain := time.Duration(0)
	if *noMaintain {
		maintain = -1
	}
	p := worker.New(d.Queue(), handler, worker.Config{
		Workers: *workers, ClaimBatch: *batch, Claimers: *claimers, ListenURL: listen, PollInterval: *poll,
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
	fmt.Fprintf(stderr, "taskq: %d workers on %s; %s\n", *workers, t, workDescription(*simulate, *delay, *batch, listen != "", *poll))
	live := startProgress(ctx, stderr, *progress, func() string {
		s := p.Stats()
		return fmt.Sprintf("%s done (%s failed, %s retried), %s tasks/s, claim p50 %s p99 %s",
			count(s.Completed+s.Failed), count(s.Failed), count(s.Retried), rate(s.TasksPerSecond()),
			duration(s.ClaimLatency.P50), duration(s.ClaimLatency.P99))
	})
	err = p.Run(ctx)
	live()
	s := p.Stats()
	fmt.Fprintf(stdout, "ran %s: %s completed, %s failed, %s retried, %s handed back; %s tasks/s; claim p50 %s p99 %s; efficiency %.1f%%\n",
		duration(s.Elapsed), count(s.Completed), count(s.Failed), count(s.Retried), count(s.Released), rate(s.TasksPerSecond()),
		duration(s.ClaimLatency.P50), duration(s.ClaimLatency.P99), 100*s.Efficiency())
	return err
}

// workDescription completes work's start line: what the tasks do and how
// the workers find them.
func workDescription(simulate bool, delay time.Duration, batch int, listen bool, poll time.Duration) string {
	what := "fetching pages over HTTP"
	if simulate {
		what = fmt.Sprintf("simulating fetches of %s", duration(delay))
	}
	claims := "each worker claims for itself"
	if batch > 1 {
		claims = fmt.Sprintf("claims of up to %s tasks", count(batch))
	}
	wake := "polling every " + duration(poll).String()
	if listen {
		wake = "woken by LISTEN, polling every " + duration(poll).String()
	}
	return what + ", " + claims + ", " + wake
}

func loadtestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("loadtest", `
Usage: taskq loadtest [flags]

Reproduces the plan's 2025-10-24 load test on fresh databases, one per mode,
and prints the modes side by side with the ratio of after to before:
  before       the schema as production had it and the old claim as the
               plan describes it (SELECT the next pending task, then UPDATE
               it by id)
  before-app   the same schema and the claim and finish the application
               ran in late October 2025: FOR UPDATE OF t, j SKIP LOCKED (the
               job's row locked too), a running_tasks counter on the job's
               row per claim and per finish, outcomes written in batches
  after        every migration and the worker pool; each worker claims one
               task at a time (a free job shard, with SKIP LOCKED)
  after-batch  the same pool; one fetcher claims --batch tasks at a time
Each runs with every page enqueued up front and, as MODE+discover, as a
crawl that finds its pages as it goes; after and after-batch also as
MODE+analyzed, with statistics gathered between the enqueue and the run.
--modes defaults to all of them but before-app+discover: a before mode
can take up to --max-duration, and that one would add as much again.
The databases are created on the server of DATABASE_URL (which needs
CREATEDB and superuser, for the lock-wait log) or the local one, and dropped
afterwards unless --keep.`, stderr)
	dbURL := fs.String("database-url", "",
		"superuser URL of the server to create the test databases on (default: $DATABASE_URL, else the local server)")
	n := fs.Int("tasks", 41_893, "tasks in all, as in the plan's test")
	jobs := fs.Int("jobs", 6, "jobs the tasks are split over")
	workers := fs.Int("workers", 32, "workers running tasks at once")
	batch := fs.Int("batch", 500, "claim batch of the after-batch mode")
	concurrency := fs.Int("concurrency", 1000, "each job's concurrency limit")
	delay := fs.Duration("delay", 0, "how long each simulated page fetch takes (0: no-op, measures the queue alone)")
	dashboards := fs.Int("dashboard-samples", 40, "dashboard refreshes (as authenticated users, through RLS) timed per mode before the run")
	modes := fs.String("modes", modeList(loadtest.DefaultModes),
		"comma-separated modes to run, in order (+discover: a crawl that finds its pages as it goes;\n"+
			"+analyzed: ANALYZE between the enqueue and the run, which no other mode does)")
	maxDuration := fs.Duration("max-duration", 5*time.Minute, "stop a mode that runs longer and report what it did (the old claim is slow)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file (- for stdout)")
	chartDir := fs.String("chart", "", "also draw the run as PNG charts in this directory (created if missing): tasks completed per second over time, claim latency per mode")
	keep := fs.Bool("keep", false, "keep the test databases")
	verbose := fs.Bool("v", false, "log informational events")
	if _, err := parse(fs, args, stdout, 0, 0); err != nil {
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
	server, source := *dbURL, "--database-url"
	if server == "" {
		server, source = os.Getenv("DATABASE_URL"), "DATABASE_URL"
	}
	if server == "" {
		srv, err := localServer(ctx, stderr)
		if err != nil {
			return err
		}
		server, source = srv.URL, "the local server"
	}
	serverConfig, err := pgconn.ParseConfig(server)
	if err != nil {
		return usageError{fmt.Sprintf("%s: %s", source, redact(err.Error()))}
	}
	fmt.Fprintf(stderr, "taskq: creating the test databases on the server of %s\n", target{conn: server, config: serverConfig, source: source})
	var live func()
	cfg := loadtest.Config{
		ServerURL: server, Modes: ms, Tasks: *n, Jobs: *jobs, Workers: *workers, Batch: *batch,
		Concurrency: *concurrency, Delay: *delay, DashboardSamples: *dashboards, MaxDuration: *maxDuration, Keep: *keep,
		Logger: newLogger(stderr, *verbose),
	}
	var last atomic.Pointer[loadtest.Progress]
	last.Store(&loadtest.Progress{})
	cfg.OnProgress = func(p loadtest.Progress) { last.Store(&p) }
	live = startProgress(ctx, stderr, progressInterval, func() string {
		p := *last.Load()
		if p.Total == 0 {
			return "preparing..."
		}
		perMinute := 0.0
		if p.Elapsed > 0 {
			perMinute = float64(p.Done) / p.Elapsed.Minutes()
		}
		return fmt.Sprintf("%-11s %s %7s/%s tasks  %9s tasks/min  %s", p.Mode, bar(p.Done, p.Total, 24),
			count(p.Done), count(p.Total), rate(perMinute), p.Elapsed.Round(time.Second))
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
the queue depth of unfinished jobs by status; then the paced domains (up to
--paced of them, latest next start first) with their interval, floor, next
allowed start and where the pace came from. --json prints the same as one
JSON object, for scripts.`, stderr)
	dbURL := databaseFlag(fs)
	pooler := poolerFlag(fs)
	window := fs.Duration("window", 15*time.Minute, "throughput window")
	jsonOut := fs.Bool("json", false, "print JSON instead of tables")
	pacedRows := fs.Int("paced", 20, "how many paced domains to list")
	if _, err := parse(fs, args, stdout, 0, 0); err != nil {
		return err
	}
	if *window <= 0 || *window > 30*24*time.Hour {
		return usageError{"--window must be positive and at most 720h"}
	}
	if *pacedRows < 1 || *pacedRows > tasks.MaxBatch {
		return usageError{fmt.Sprintf("--paced must be 1 to %d", tasks.MaxBatch)}
	}
	t, err := resolveTarget(*dbURL)
	if err != nil {
		return err
	}
	announce(stderr, t)
	d, err := openQueue(ctx, t, db.Options{Pooler: *pooler, MaxConns: 2})
	if err != nil {
		return err
	}
	defer d.Close()
	q := d.Queue()
	tp, err := q.Throughput(ctx, *window)
	if err != nil {
		return err
	}
	we, err := q.WaitEvents(ctx)
	if err != nil {
		return err
	}
	lw, err := q.LockWaits(ctx)
	if err != nil {
		return err
	}
	depth, err := q.QueueDepth(ctx)
	if err != nil {
		return err
	}
	paces, paced, err := q.Paces(ctx, *pacedRows)
	if err != nil {
		return err
	}
	if *jsonOut {
		return writeJSON(stdout, statsJSON(*window, tp, we, lw, depth, paces, paced))
	}

	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Tasks finished per minute (last %s)\nminute\ttasks\n", *window)
	for _, r := range tp {
		fmt.Fprintf(tw, "%s\t%s\n", r.Minute.Local().Format("15:04"), count(r.TasksCompleted))
	}
	fmt.Fprintf(tw, "\nSessions waiting, by wait event\ntype\tevent\tsessions\n")
	for _, r := range we {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.WaitEventType, r.WaitEvent, count(r.Sessions))
	}
	fmt.Fprintf(tw, "\nLock waits now\npid\tlock\tmode\trelation\twaited\tblocked by\tquery\n")
	for _, r := range lw {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%v\t%s\n", r.Pid, r.LockType, r.Mode, r.Relation,
			duration(time.Duration(r.WaitedMs*float64(time.Millisecond))), r.BlockedBy, oneLine(r.Query, 60))
	}
	fmt.Fprintf(tw, "\nQueue depth of unfinished jobs\njob\tstatus\ttasks\n")
	for _, r := range depth {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.JobID, r.Status, count(r.Tasks))
	}
	fmt.Fprintf(tw, "\nPaced domains (%s)\ndomain\tinterval\tfloor\tnext allowed\tsource\n", count(int64(paced)))
	for _, p := range paces {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Domain, duration(p.Interval), duration(p.Floor),
			p.NextAllowedAt.Local().Format("15:04:05.000"), p.Source)
	}
	return tw.Flush()
}

// poolerFlag declares --pooler, as work has it.
func poolerFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("pooler", false, "the URL is a transaction pooler (Supavisor :6543, PgBouncer): send no session settings, prepare no statements")
}

// statsJSON is stats' output for scripts: the queries' rows, with
// snake_case keys and durations in milliseconds.
func statsJSON(window time.Duration, tp []tasks.ThroughputMinute, we []tasks.WaitEventCount,
	lw []tasks.LockWait, depth []tasks.QueueDepthRow, paces []tasks.Pace, paced int) any {
	type pace struct {
		Domain        string    `json:"domain"`
		IntervalMs    int64     `json:"interval_ms"`
		FloorMs       int64     `json:"floor_ms"`
		NextAllowedAt time.Time `json:"next_allowed_at"`
		Source        string    `json:"source"`
	}
	type minute struct {
		Minute time.Time `json:"minute"`
		Tasks  int64     `json:"tasks"`
	}
	type waitEvent struct {
		Type     string `json:"type"`
		Event    string `json:"event"`
		Sessions int64  `json:"sessions"`
	}
	type lockWait struct {
		Pid       int32     `json:"pid"`
		LockType  string    `json:"lock_type"`
		Mode      string    `json:"mode"`
		Relation  string    `json:"relation"`
		Started   time.Time `json:"wait_started"`
		WaitedMs  float64   `json:"waited_ms"`
		BlockedBy []int32   `json:"blocked_by"`
		Query     string    `json:"query"`
	}
	type depthRow struct {
		Job    string `json:"job"`
		Status string `json:"status"`
		Tasks  int64  `json:"tasks"`
	}
	out := struct {
		WindowSeconds float64     `json:"window_seconds"`
		Throughput    []minute    `json:"tasks_per_minute"`
		WaitEvents    []waitEvent `json:"wait_events"`
		LockWaits     []lockWait  `json:"lock_waits"`
		QueueDepth    []depthRow  `json:"queue_depth"`
		PacedTotal    int         `json:"paced_domains_total"`
		Paced         []pace      `json:"paced_domains"`
	}{WindowSeconds: window.Seconds(), Throughput: []minute{}, WaitEvents: []waitEvent{}, LockWaits: []lockWait{}, QueueDepth: []depthRow{},
		PacedTotal: paced, Paced: []pace{}}
	for _, p := range paces {
		out.Paced = append(out.Paced, pace{p.Domain, p.Interval.Milliseconds(), p.Floor.Milliseconds(), p.NextAllowedAt, p.Source})
	}
	for _, r := range tp {
		out.Throughput = append(out.Throughput, minute{r.Minute, r.TasksCompleted})
	}
	for _, r := range we {
		out.WaitEvents = append(out.WaitEvents, waitEvent{r.WaitEventType, r.WaitEvent, r.Sessions})
	}
	for _, r := range lw {
		blockedBy := r.BlockedBy
		if blockedBy == nil {
			blockedBy = []int32{}
		}
		out.LockWaits = append(out.LockWaits, lockWait{r.Pid, r.LockType, r.Mode, r.Relation, r.WaitStarted, r.WaitedMs, blockedBy, r.Query})
	}
	for _, r := range depth {
		out.QueueDepth = append(out.QueueDepth, depthRow{r.JobID, string(r.Status), r.Tasks})
	}
	return out
}

func localpgCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("localpg", `
Usage: taskq localpg stop

Stops the throwaway PostgreSQL cluster that the tests and taskq loadtest
start when nothing listens on 127.0.0.1:5432, and deletes its directory.`, stderr)
	pos, err := parse(fs, args, stdout, 1, 1)
	if err != nil {
		return err
	}
	if pos[0] != "stop" {
		return usageError{"usage: taskq localpg stop"}
	}
	if err := localpg.StopThrowaway(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stopped and removed %s\n", localpg.Dir())
	return nil
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
	return strings.Join(loadtest.ModeNames(modes), ",")
}
