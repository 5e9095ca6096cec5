// Package loadtest reproduces the plan's 2025-10-24 load test (41,893 tasks
// across 6 jobs by default) on fresh databases, once per mode, and measures
// each the same way. Each mode runs in two workloads: every page enqueued up
// front, and (+discover) a crawl of synthetic sites (crawl.Site) that knows
// only their sitemaps and adds the 30 links of every page it fetches, as the
// service's crawls do:
//
//   - before: the schema as production had it (no foreign-key indexes, bare
//     auth.uid() policies, the per-task job counter trigger, and the
//     fetch-result columns the base schema lacks) and the old claim as the
//     plan describes it: SELECT the next pending task, then UPDATE it by id;
//   - before-app: the same schema and the claim and finish the application
//     really ran in late October 2025 (public repository
//     Harvey-AU/blue-banded-bee, internal/db/queue.go): SKIP LOCKED, but
//     FOR UPDATE OF t, j locks the job's row too, and a running_tasks
//     counter on that row goes up per claim and down per finish, the
//     outcomes written by a batch manager (see runLegacyApp);
//   - after: every migration and the worker pool, each worker claiming one
//     task at a time (Queue.ClaimOne: a free job shard taken with SKIP
//     LOCKED, its best task locked FOR NO KEY UPDATE), outcomes written in
//     batches;
//   - after-batch: the same pool, one fetcher claiming batches.
//
// In the +discover modes the old code enqueues each page's links as the
// application did (a count of the job's tasks, then one insert per link, the
// counter trigger firing per row); the new one writes them with the
// outcomes, through admission slots.
//
// Every mode's fetch is crawl.Simulator's, whose results fill every column
// the service writes (headers, the timing breakdown, and for cache misses
// the cache checks and the second request), so each mode is measured on the
// row production writes.
//
// Lock waits are measured twice: by sampling pg_locks (waitstart) every
// 10 ms, and from the server's own lock-wait log (log_lock_waits with
// deadlock_timeout = 1 ms), which the worker sessions receive as notices, so
// every wait of 1 ms or more is counted with its exact duration.
//
// The queue's statements come from sql/queries through the packages under
// test. The SQL written here is the harness's own: seeding organisations and
// users, VACUUM ANALYZE, counting rows by status at the end, the dashboard's
// queries sent as the application sends them, and the before schemas.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/gen"
	"github.com/blue-banded-bee/taskq/internal/localpg"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// Mode is one way of running the load.
type Mode string

// The modes, in the order they run. The +discover modes crawl sites whose
// pages are found as the crawl goes (see Config.Tasks); the others enqueue
// every page up front. No mode gathers statistics between the enqueue and
// the run, as no crawl does (its rows are always newer than the
// statistics), but the +analyzed ones, which run VACUUM ANALYZE first: the
// rate with statistics that know every task, to compare with.
const (
	ModeBefore             Mode = "before"
	ModeBeforeApp          Mode = "before-app"
	ModeAfter              Mode = "after"
	ModeAfterBatch         Mode = "after-batch"
	ModeAfterAnalyzed      Mode = "after+analyzed"
	ModeAfterBatchAnalyzed Mode = "after-batch+analyzed"
	ModeBeforeDiscover     Mode = "before+discover"
	ModeBeforeAppDiscover  Mode = "before-app+discover"
	ModeAfterDiscover      Mode = "after+discover"
	ModeAfterBatchDiscover Mode = "after-batch+discover"
)

// AllModes are every mode, each workload's befores first.
var AllModes = []Mode{ModeBefore, ModeBeforeApp, ModeAfter, ModeAfterBatch, ModeAfterAnalyzed, ModeAfterBatchAnalyzed,
	ModeBeforeDiscover, ModeBeforeAppDiscover, ModeAfterDiscover, ModeAfterBatchDiscover}

// DefaultModes are what a run without Config.Modes runs: every mode but
// before-app+discover. A before mode can take the whole MaxDuration (5
// minutes by default), and that one would add as much again; the
// application's claim is measured without it in before-app, and its
// enqueue in before+discover.
var DefaultModes = []Mode{ModeBefore, ModeBeforeApp, ModeAfter, ModeAfterBatch, ModeAfterAnalyzed, ModeAfterBatchAnalyzed,
	ModeBeforeDiscover, ModeAfterDiscover, ModeAfterBatchDiscover}

// ParseMode accepts a mode's name.
func ParseMode(s string) (Mode, error) {
	for _, m := range AllModes {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown mode %q: want one of %s", s, strings.Join(ModeNames(AllModes), ", "))
}

// ModeNames are the modes' names, in order.
func ModeNames(modes []Mode) []string {
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = string(m)
	}
	return names
}

// Discovers says the mode's pages are found as the crawl goes.
func (m Mode) Discovers() bool { return strings.HasSuffix(string(m), "+discover") }

// Analyzed says the mode gathers statistics after the enqueue, before the
// run.
func (m Mode) Analyzed() bool { return strings.HasSuffix(string(m), "+analyzed") }

// Claim is the mode's claim, whatever the workload: before, before-app,
// after or after-batch.
func (m Mode) Claim() Mode {
	return Mode(strings.TrimSuffix(strings.TrimSuffix(string(m), "+discover"), "+analyzed"))
}

// Legacy says the mode runs the old code on the base schema: before or
// before-app.
func (m Mode) Legacy() bool { c := m.Claim(); return c == ModeBefore || c == ModeBeforeApp }

// Config describes a load test.
type Config struct {
	// ServerURL connects as a superuser to the server the test databases
	// are created on.
	ServerURL string
	Modes     []Mode // default DefaultModes
	Tasks     int    // default 41,893, as in the plan's test
	Jobs      int    // default 6
	Workers   int    // default 32
	// Concurrency is each job's concurrency limit. Default 1,000: high
	// enough not to be what limits throughput; lower it to watch the limit.
	Concurrency int
	// Batch is the claim batch of after-batch. Default 500.
	Batch int
	// Delay is how long the simulated fetch of each page takes; 0 makes the
	// handler a no-op, so the test measures the queue alone.
	Delay time.Duration
	// DashboardSamples is how many dashboard refreshes (an organisation's
	// task counts by status and its job list, as an authenticated user,
	// through row-level security) are timed per mode on the seeded database
	// before the workers start, so the figure isolates the policies from the
	// load. Default 40.
	DashboardSamples int
	// MaxDuration stops a mode that has not finished (the old claim is
	// slow); its figures are then over the part that ran. Default 5m.
	MaxDuration time.Duration
	// Keep leaves the test databases in place for inspection.
	Keep bool
	// OnProgress, if set, hears about each mode's progress every 500 ms.
	OnProgress func(Progress)
	Logger     *slog.Logger
}

func (c Config) withDefaults() Config {
	if len(c.Modes) == 0 {
		c.Modes = DefaultModes
	}
	if c.Tasks <= 0 {
		c.Tasks = 41_893
	}
	if c.Jobs <= 0 {
		c.Jobs = 6
	}
	c.Jobs = min(c.Jobs, c.Tasks)
	if c.Workers <= 0 {
		c.Workers = 32
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1000
	}
	if c.Batch <= 0 {
		c.Batch = 500
	}
	if c.DashboardSamples <= 0 {
		c.DashboardSamples = 40
	}
	if c.MaxDuration <= 0 {
		c.MaxDuration = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Progress is a live view of one mode.
type Progress struct {
	Mode    Mode
	Done    int
	Total   int
	Elapsed time.Duration
}

// Result is one mode's measurements.
type Result struct {
	Mode     Mode   `json:"mode"`
	Database string `json:"database"`
	Tasks    int    `json:"tasks"`
	Jobs     int    `json:"jobs"`
	Workers  int    `json:"workers"`
	Batch    int    `json:"claim_batch"`
	// Elapsed is from the first claim to the last outcome written.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Seeded is how long seeding took before the run: the organisations,
	// the jobs, and every page (known up front) or each sitemap (+discover).
	Seeded         time.Duration `json:"seeded_ns"`
	Completed      int           `json:"completed"`
	Failed         int           `json:"failed"`
	TasksPerMinute float64       `json:"tasks_per_minute"`
	// ClaimP50, ClaimP90 and ClaimP99 are the latency of one claim call (a
	// batch's, in after-batch).
	ClaimP50 time.Duration `json:"claim_p50_ns"`
	ClaimP90 time.Duration `json:"claim_p90_ns"`
	ClaimP99 time.Duration `json:"claim_p99_ns"`
	// Completions is how many tasks had finished as the run went, by the
	// workers' own count (distinct tasks, in before; outcomes written by
	// the batch writer, in before-app), every 100 ms (or a multiple, in long
	// runs) from the start and once at the end.
	Completions []Sample `json:"completions"`
	// Lock waits of 1 ms or more, from the server's lock-wait log.
	LockWaits       int           `json:"lock_waits"`
	LockWaitP99     time.Duration `json:"lock_wait_p99_ns"`
	LockWaitLongest time.Duration `json:"lock_wait_longest_ns"`
	LockWaitTotal   time.Duration `json:"lock_wait_total_ns"`
	// Of those, waits on rows (another transaction's row or insert), not to
	// extend a table's file.
	RowLockWaits       int           `json:"row_lock_waits"`
	RowLockWaitLongest time.Duration `json:"row_lock_wait_longest_ns"`
	// Lock waits seen by sampling pg_locks every 10 ms (the plan's query).
	SampledWaits   int           `json:"sampled_lock_waits"`
	SampledLongest time.Duration `json:"sampled_lock_wait_longest_ns"`
	Deadlocks      int           `json:"deadlocks"`
	// WorkerEfficiency is the share of worker time not spent waiting on
	// database locks: the plan's measure (~70% before, target 95%).
	WorkerEfficiency float64 `json:"worker_efficiency"`
	// Duplicates counts extra runs of tasks that had already been claimed
	// (two workers running one task). Lost counts tasks claimed and never
	// finished; Unfinished, tasks a time-limited run did not reach.
	Duplicates int `json:"duplicates"`
	Lost       int `json:"lost"`
	Unfinished int `json:"unfinished"`
	// A dashboard refresh by an authenticated user, through row-level
	// security, on the seeded database before the workers start.
	DashboardP50 time.Duration `json:"dashboard_p50_ns"`
	DashboardP99 time.Duration `json:"dashboard_p99_ns"`
	// TimedOut is true when MaxDuration ended the mode early.
	TimedOut bool `json:"timed_out"`
	// Undiscovered counts pages of a +discover mode's sites that no task
	// was made for (every page is reachable, so it should be 0 unless
	// TimedOut).
	Undiscovered int `json:"undiscovered"`
}

// Run runs each mode in turn and returns their results.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	cfg = cfg.withDefaults()
	var results []Result
	for _, mode := range cfg.Modes {
		r, err := runMode(ctx, cfg, mode)
		if err != nil {
			return results, fmt.Errorf("%s: %w", mode, err)
		}
		results = append(results, r)
	}
	return results, nil
}

func runMode(ctx context.Context, cfg Config, mode Mode) (Result, error) {
	// The time says when it ran (--keep); the random suffix keeps two runs
	// of one mode in the same second (parallel tests) apart.
	name := fmt.Sprintf("taskq_loadtest_%s_%s_%06x", strings.ReplaceAll(string(mode), "-", "_"),
		time.Now().UTC().Format("20060102150405"), rand.Uint32()&0xffffff)
	dbURL, drop, err := createDatabase(ctx, cfg.ServerURL, name)
	if err != nil {
		return Result{}, err
	}
	if !cfg.Keep {
		defer drop()
	}
	target := migrate.VersionLatest
	if mode.Legacy() {
		target = migrate.VersionBaseSchema
	}
	if err := (migrate.Runner{URL: dbURL, Target: target}).Up(ctx); err != nil {
		return Result{}, fmt.Errorf("migrate: %w", err)
	}
	if mode.Legacy() {
		// Production's tasks had the fetch-result columns the base schema
		// lacks: the old code writes the same row as the new.
		if err := addFetchColumns(ctx, dbURL); err != nil {
			return Result{}, err
		}
	}
	if mode.Claim() == ModeBeforeApp {
		if err := addBeforeAppSchema(ctx, dbURL); err != nil {
			return Result{}, fmt.Errorf("before-app schema: %w", err)
		}
	}
	cfg.Logger.Info("seeding", "mode", mode, "database", name, "tasks", cfg.Tasks, "jobs", cfg.Jobs)

	waits := &lockWaitLog{}
	poolCfg, err := db.PoolConfig(dbURL, db.Options{MaxConns: int32(cfg.Workers + 8)})
	if err != nil {
		return Result{}, err
	}
	// The server reports every lock wait over 1 ms to the waiting session.
	for k, v := range map[string]string{"log_lock_waits": "on", "deadlock_timeout": "1", "client_min_messages": "log"} {
		poolCfg.ConnConfig.RuntimeParams[k] = v
	}
	poolCfg.ConnConfig.OnNotice = waits.onNotice
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()

	seedStart := time.Now()
	orgs, sites, err := seed(ctx, pool, cfg, mode)
	if err != nil {
		return Result{}, fmt.Errorf("seed: %w", err)
	}
	seeded := time.Since(seedStart)
	if mode.Analyzed() {
		if _, err := pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
			return Result{}, err
		}
	}

	dashboard, err := measureDashboard(ctx, pool, orgs, cfg.DashboardSamples)
	if err != nil {
		return Result{}, fmt.Errorf("dashboard queries: %w", err)
	}

	runCtx, stop := context.WithTimeout(ctx, cfg.MaxDuration)
	defer stop()
	sampler := startSampler(runCtx, dbURL)
	runs := &runCounter{}
	handler := worker.HandlerFunc(func(ctx context.Context, t tasks.Task) tasks.TaskResult {
		runs.ran(t.ID)
		return crawl.Simulator{Delay: cfg.Delay, Site: sites[t.JobID]}.Handle(ctx, t)
	})

	res := Result{Mode: mode, Database: name, Tasks: cfg.Tasks, Jobs: cfg.Jobs, Workers: cfg.Workers, Batch: 1, Seeded: seeded}
	progress := startProgress(runCtx, cfg, mode, pool)
	start := time.Now()
	var claims *worker.Histogram
	switch mode.Claim() {
	case ModeBefore:
		claims, res.Completions, err = runLegacy(runCtx, pool, cfg.Workers, handler)
	case ModeBeforeApp:
		claims, res.Completions, err = runLegacyApp(runCtx, pool, cfg.Workers, handler)
	default:
		batch := 1
		if mode.Claim() == ModeAfterBatch {
			batch = cfg.Batch
			res.Batch = batch
		}
		claims, res.Completions, err = runPool(runCtx, pool, dbURL, cfg, batch, handler)
	}
	res.Elapsed = time.Since(start)
	res.TimedOut = runCtx.Err() != nil && ctx.Err() == nil
	stop()
	progress.Wait()
	if err != nil && !res.TimedOut {
		return Result{}, err
	}

	res.SampledWaits, res.SampledLongest = sampler.result()
	ds := dashboard.Summary()
	res.DashboardP50, res.DashboardP99 = ds.P50, ds.P99
	cs := claims.Summary()
	res.ClaimP50, res.ClaimP90, res.ClaimP99 = cs.P50, claims.Quantile(0.90), cs.P99
	rs := waits.rowSummary()
	res.RowLockWaits, res.RowLockWaitLongest = int(rs.Count), rs.Max
	ws := waits.summary()
	res.LockWaits, res.LockWaitP99, res.LockWaitLongest, res.LockWaitTotal, res.Deadlocks =
		int(ws.Count), ws.P99, ws.Max, waits.total(), waits.deadlocks()
	workerTime := time.Duration(cfg.Workers) * res.Elapsed
	res.WorkerEfficiency = 1 - float64(res.LockWaitTotal)/float64(workerTime)
	res.Duplicates = runs.duplicates()

	counts, err := statusCounts(ctx, pool)
	if err != nil {
		return Result{}, err
	}
	res.Completed, res.Failed = counts["completed"], counts["failed"]
	if mode.Discovers() {
		res.Undiscovered = cfg.Tasks
		for _, n := range counts {
			res.Undiscovered -= n
		}
	}
	res.Lost = counts["running"]
	res.Unfinished = counts["pending"]
	if !res.TimedOut {
		// Everything should have run: a pending task left behind is lost.
		res.Lost += res.Unfinished
		res.Unfinished = 0
	}
	res.TasksPerMinute = float64(res.Completed+res.Failed) / res.Elapsed.Minutes()
	return res, nil
}

// createDatabase creates a database next to the one serverURL names and
// returns its URL and a function that drops it.
func createDatabase(ctx context.Context, serverURL, name string) (string, func(), error) {
	u, drop, err := localpg.CreateDatabase(ctx, serverURL, name)
	if errors.Is(err, localpg.ErrUnreachable) {
		err = fmt.Errorf("%w: %w", db.ErrUnavailable, err)
	}
	return u, drop, err
}

// org is a seeded organisation with the user the dashboard readers act as.
type org struct {
	id, user uuid.UUID
}

// seed creates two organisations with a user each and the jobs with their
// tasks, the jobs alternating between the organisations. The after modes
// enqueue through the queue; the before modes insert as the old code did,
// with the counter trigger firing per row. A +discover mode's job is a site of its
// share of the tasks, of which only the sitemap is enqueued; the sites are
// returned by job id.
func seed(ctx context.Context, pool *pgxpool.Pool, cfg Config, mode Mode) ([]org, map[string]*crawl.Site, error) {
	orgs := []org{{uuid.New(), uuid.New()}, {uuid.New(), uuid.New()}}
	for i, o := range orgs {
		if _, err := pool.Exec(ctx, "INSERT INTO organisations (id, name) VALUES ($1, $2)", o.id, fmt.Sprintf("Org %d", i+1)); err != nil {
			return nil, nil, err
		}
		if _, err := pool.Exec(ctx, "INSERT INTO users (id, email, organisation_id) VALUES ($1, $2, $3)",
			o.user, fmt.Sprintf("user%d@example.com", i+1), o.id); err != nil {
			return nil, nil, err
		}
	}
	sites := map[string]*crawl.Site{}
	q := gen.New()
	queue := tasks.New(pool, tasks.Config{})
	rng := rand.New(rand.NewPCG(24, 10))
	for j := range cfg.Jobs {
		n := cfg.Tasks / cfg.Jobs
		if j < cfg.Tasks%cfg.Jobs {
			n++
		}
		domain := fmt.Sprintf("site%d.example.com", j+1)
		o := orgs[j%len(orgs)]
		var jobID string
		if mode.Legacy() {
			domainID, err := q.DomainUpsert(ctx, pool, domain)
			if err != nil {
				return nil, nil, err
			}
			jobID, err = q.LegacyJobCreate(ctx, pool, gen.LegacyJobCreateParams{
				DomainID: domainID, OrganisationID: &o.id, UserID: &o.user, Concurrency: int32(cfg.Concurrency),
			})
			if err != nil {
				return nil, nil, err
			}
		} else {
			job, err := queue.CreateJob(ctx, tasks.JobOptions{
				Domain: domain, OrganisationID: &o.id, UserID: &o.user, Concurrency: cfg.Concurrency,
				FindLinks: mode.Discovers(),
			})
			if err != nil {
				return nil, nil, err
			}
			jobID = job.ID
		}
		var known []string
		if mode.Discovers() {
			site := &crawl.Site{Pages: n}
			sites[jobID] = site
			known = site.Sitemap()
		} else {
			for i := range n {
				known = append(known, fmt.Sprintf("/section-%d/page-%d", i%50, i))
			}
		}
		for from := 0; from < len(known); from += 5000 {
			paths := known[from:min(len(known), from+5000)]
			priorities := make([]float64, 0, len(paths))
			for i := range paths {
				p := 1.0
				if from+i > 0 {
					p = rng.Float64()
				}
				priorities = append(priorities, p)
			}
			if mode.Legacy() {
				if _, err := q.PageUpsertMany(ctx, pool, gen.PageUpsertManyParams{JobID: jobID, Paths: paths}); err != nil {
					return nil, nil, err
				}
				if _, err := q.LegacyTaskInsertMany(ctx, pool, gen.LegacyTaskInsertManyParams{
					JobID: jobID, Paths: paths, Priorities: priorities,
				}); err != nil {
					return nil, nil, err
				}
				continue
			}
			pages := make([]tasks.Page, len(paths))
			for i := range paths {
				pages[i] = tasks.Page{Path: paths[i], Priority: priorities[i]}
			}
			if _, err := queue.Enqueue(ctx, jobID, pages); err != nil {
				return nil, nil, err
			}
		}
		if mode.Legacy() {
			if err := q.LegacyJobStart(ctx, pool, jobID); err != nil {
				return nil, nil, err
			}
		}
	}
	return orgs, sites, nil
}

// runLegacy is the application's old worker loop: find the best pending
// task without a lock, mark it running by id, run it, record the result,
// and enqueue the links it found as the application did: a count of the
// job's tasks, then one insert per link. A worker stops when nothing is
// pending and no handler is running (one may still find links). It returns
// the claims' latencies and the series of distinct tasks finished: the old
// claim runs some tasks several times.
func runLegacy(ctx context.Context, pool *pgxpool.Pool, workers int, h worker.Handler) (*worker.Histogram, []Sample, error) {
	q := gen.New()
	claims := &worker.Histogram{}
	finished := &runCounter{}
	completions := recordCompletions(ctx, finished.distinct)
	var wg sync.WaitGroup
	var errs firstError
	var running atomic.Int64
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				running.Add(1)
				next, err := q.LegacyTaskNextPending(ctx, pool)
				if errors.Is(err, pgx.ErrNoRows) {
					if running.Add(-1) == 0 {
						return
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if err == nil {
					_, err = q.LegacyTaskStart(ctx, pool, next.ID)
				}
				if err != nil {
					running.Add(-1)
					errs.set(ctx, err)
					return
				}
				claims.Record(time.Since(start))
				res := h.Handle(ctx, tasks.Task{ID: next.ID, JobID: next.JobID, Path: next.Path})
				if res.Err != nil {
					_, err = q.LegacyTaskFail(ctx, pool, gen.LegacyTaskFailParams{ID: next.ID, Error: res.Err.Error()})
				} else {
					_, err = q.LegacyTaskComplete(ctx, pool, legacyResult(next.ID, res))
				}
				if err == nil {
					finished.ran(next.ID)
				}
				if err == nil && len(res.Links) > 0 {
					err = legacyEnqueue(ctx, q, pool, next.JobID, res.Links)
				}
				running.Add(-1)
				if err != nil {
					errs.set(ctx, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return claims, completions(), errs.err
}

// firstError keeps the first error of a mode's workers. Those reported
// after ctx ended are left out: they are the cancellation's, not the run's.
type firstError struct {
	once sync.Once
	err  error
}

func (f *firstError) set(ctx context.Context, err error) {
	if ctx.Err() == nil {
		f.keep(err)
	}
}

// keep keeps err, whenever it comes, if no error came before.
func (f *firstError) keep(err error) {
	if err != nil {
		f.once.Do(func() { f.err = err })
	}
}

// legacyEnqueue is the application's old EnqueueURLs: the job's task count
// (for max_pages), then each link's page and task inserted on its own, the
// counter trigger updating the job's row for every task.
func legacyEnqueue(ctx context.Context, q *gen.Queries, pool *pgxpool.Pool, jobID string, links []tasks.Page) error {
	if _, err := q.LegacyTaskCountByJob(ctx, pool, jobID); err != nil {
		return err
	}
	for _, l := range links {
		paths := []string{l.Path}
		if _, err := q.PageUpsertMany(ctx, pool, gen.PageUpsertManyParams{JobID: jobID, Paths: paths}); err != nil {
			return err
		}
		if _, err := q.LegacyTaskInsertMany(ctx, pool, gen.LegacyTaskInsertManyParams{
			JobID: jobID, Paths: paths, Priorities: []float64{l.Priority},
		}); err != nil {
			return err
		}
	}
	return nil
}

// legacyResult is the old completion's row: every column the application
// wrote, the second request's only when one was made.
func legacyResult(id string, r tasks.TaskResult) gen.LegacyTaskCompleteParams {
	code, length := int32(r.StatusCode), r.ContentLength
	p := gen.LegacyTaskCompleteParams{
		ID: id, StatusCode: &code, ResponseTime: msPtr(r.ResponseTime), ContentLength: &length,
		CacheStatus: &r.CacheStatus, ContentType: &r.ContentType, RedirectUrl: &r.RedirectURL,
		DnsLookupTime: msPtr(r.Timing.DNSLookup), TcpConnectionTime: msPtr(r.Timing.TCPConnection),
		TlsHandshakeTime: msPtr(r.Timing.TLSHandshake), Ttfb: msPtr(r.Timing.TTFB),
		ContentTransferTime: msPtr(r.Timing.ContentTransfer),
	}
	if r.Headers != nil {
		p.Headers, _ = jsonMarshal(r.Headers)
	}
	if s := r.Second; s != nil {
		total := s.ResponseTime.Milliseconds()
		p.SecondResponseTime, p.SecondCacheStatus, p.SecondContentLength = &total, &s.CacheStatus, &s.ContentLength
		p.SecondDnsLookupTime, p.SecondTcpConnectionTime, p.SecondTlsHandshakeTime = msPtr(s.Timing.DNSLookup),
			msPtr(s.Timing.TCPConnection), msPtr(s.Timing.TLSHandshake)
		p.SecondTtfb, p.SecondContentTransferTime = msPtr(s.Timing.TTFB), msPtr(s.Timing.ContentTransfer)
		if s.Headers != nil {
			p.SecondHeaders, _ = jsonMarshal(s.Headers)
		}
	}
	if r.CacheCheckAttempts != nil {
		p.CacheCheckAttempts, _ = jsonMarshal(r.CacheCheckAttempts)
	}
	return p
}

// msPtr is d in the whole milliseconds the old code stored.
func msPtr(d time.Duration) *int32 {
	v := int32(min(d.Milliseconds(), 1<<31-1))
	return &v
}

// addFetchColumns runs the fetch-result columns' migration on a database
// migrated to the base schema.
func addFetchColumns(ctx context.Context, dbURL string) error {
	sql, err := migrate.UpSQL(migrate.VersionTaskFetchResults)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("add the fetch-result columns: %w", err)
	}
	return nil
}

// runPool runs the worker pool until no task is pending or running, and
// returns its claims' latencies and the series of tasks finished.
func runPool(ctx context.Context, pool *pgxpool.Pool, dbURL string, cfg Config, batch int, h worker.Handler) (*worker.Histogram, []Sample, error) {
	q := tasks.New(pool, tasks.Config{})
	p := worker.New(q, h, worker.Config{
		Workers: cfg.Workers, ClaimBatch: batch, ListenURL: dbURL, Logger: cfg.Logger,
	})
	completions := recordCompletions(ctx, func() int {
		s := p.Stats()
		return int(s.Completed + s.Failed)
	})
	poolCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(poolCtx) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		<-tick.C
		s := p.Stats()
		if int(s.Completed+s.Failed) >= cfg.Tasks {
			break
		}
	}
	stop()
	err := <-done
	claims := p.ClaimLatency()
	return claims, completions(), err
}

func statusCounts(ctx context.Context, pool *pgxpool.Pool) (map[string]int, error) {
	rows, err := pool.Query(ctx, "SELECT status::text, count(*) FROM tasks GROUP BY 1")
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// runCounter counts handler runs per task.
type runCounter struct {
	mu   sync.Mutex
	runs map[string]int
}

func (r *runCounter) ran(id string) {
	r.mu.Lock()
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	r.runs[id]++
	r.mu.Unlock()
}

// distinct is how many tasks ran, each counted once.
func (r *runCounter) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}

func (r *runCounter) duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.runs {
		n += c - 1
	}
	return n
}

// lockWaitLog collects the server's lock-wait messages from notices:
// "process N acquired ShareLock on transaction M after 12.345 ms". Waits to
// extend a table's file are told apart from waits on rows (a transaction or
// a tuple), which are what a hot row causes.
type lockWaitLog struct {
	waits       worker.Histogram
	rowWaits    worker.Histogram
	totalNs     atomic.Int64
	deadlockCnt atomic.Int64
}

var acquiredAfter = regexp.MustCompile(`acquired \w+ on (.*) after ([0-9.]+) ms`)

func (l *lockWaitLog) onNotice(_ *pgconn.PgConn, n *pgconn.Notice) {
	if m := acquiredAfter.FindStringSubmatch(n.Message); m != nil {
		ms, err := strconv.ParseFloat(m[2], 64)
		if err == nil {
			d := time.Duration(ms * float64(time.Millisecond))
			l.waits.Record(d)
			l.totalNs.Add(int64(d))
			if !strings.HasPrefix(m[1], "extension of relation") {
				l.rowWaits.Record(d)
			}
		}
		return
	}
	if strings.Contains(n.Message, "deadlock") {
		l.deadlockCnt.Add(1)
	}
}

func (l *lockWaitLog) summary() worker.Summary    { return l.waits.Summary() }
func (l *lockWaitLog) rowSummary() worker.Summary { return l.rowWaits.Summary() }
func (l *lockWaitLog) total() time.Duration       { return time.Duration(l.totalNs.Load()) }
func (l *lockWaitLog) deadlocks() int             { return int(l.deadlockCnt.Load()) }
