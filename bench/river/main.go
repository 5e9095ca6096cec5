// Command river-compare burns down the same number of jobs through River
// (github.com/riverqueue/river, the Go Postgres queue the project measures
// itself against) and through taskq's worker pool, each on a fresh database
// of the same server, in alternating order, and prints the rates side by
// side.
//
// It is a module of its own so that River stays out of taskq's dependencies.
// Each side runs as its authors tune it for throughput: River with the
// settings of its own benchmark (`river bench`: 2,000 workers, a 2 ms fetch
// cooldown, a 20 ms poll interval), taskq with batched claims. There are
// three queues:
//
//   - river: no-op jobs, River's best case;
//   - river-work: what a River user would write for this service, the same
//     work as taskq's: each job's arguments carry a page (job id, page id,
//     path, priority), the worker runs crawl.Simulator's fetch and keeps its
//     result with river.RecordOutput (JSON in the job's metadata);
//   - taskq: the same pages and the same simulated fetch, its result written
//     into the task's row (every column a page fetch records: headers, the
//     timing breakdown, and for cache misses the cache checks and the
//     second request).
//
// All count a job done when its completion is written.
//
// -variant name=SQL adds another side, taskq with SQL run on its database
// after migrating (dropping an index, say), so that what a schema change
// would buy is measured in the same run as the real schema and River.
//
//	cd bench/river && go run . [flags]    (or make bench-river from the root)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/localpg"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

type config struct {
	serverURL    string
	jobs         int
	rounds       int
	riverWorkers int
	workers      int
	batch        int
	timeout      time.Duration
	queues       []string
	jsonPath     string
	// variants maps a name to SQL run on taskq's database after migrating,
	// before enqueueing: a schema change to measure beside the real one.
	variants map[string]string
}

// result is one side's burn-down.
type result struct {
	Queue      string        `json:"queue"`
	Round      int           `json:"round"`
	Jobs       int           `json:"jobs"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	JobsPerSec float64       `json:"jobs_per_second"`
	// CPU time per job of this process (the queue's client) and of the
	// server's backends on the database (0 when the server is not local).
	ClientCPUPerJob time.Duration `json:"client_cpu_per_job_ns"`
	ServerCPUPerJob time.Duration `json:"server_cpu_per_job_ns"`
}

// burn is what one burn-down measured.
type burn struct {
	elapsed, clientCPU, serverCPU time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.serverURL, "database-url", os.Getenv("DATABASE_URL"),
		"superuser URL of the server to create the databases on (env DATABASE_URL); empty: the local server")
	flag.IntVar(&cfg.jobs, "jobs", 200_000, "jobs each queue burns down per round")
	flag.IntVar(&cfg.rounds, "rounds", 2, "rounds; each runs every queue, in reverse order in even rounds")
	flag.IntVar(&cfg.riverWorkers, "river-workers", 2000, "River's MaxWorkers (its own benchmark's setting)")
	flag.IntVar(&cfg.workers, "workers", 500, "taskq worker pool's workers")
	flag.IntVar(&cfg.batch, "batch", 1000, "taskq worker pool's claim batch")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "give up on a burn-down that takes longer")
	flag.StringVar(&cfg.jsonPath, "json", "", "also write the results as JSON to this file")
	queues := flag.String("queues", "river,river-work,taskq", "the queues to run, in the order of odd rounds")
	cfg.variants = map[string]string{}
	var variantOrder []string
	flag.Func("variant", "`name=SQL`: also run taskq with SQL applied to its database after migrating,\n"+
		"as queue taskq+name (e.g. -variant 'nostatus=DROP INDEX idx_tasks_job_id_status'); repeatable",
		func(v string) error {
			name, sql, ok := strings.Cut(v, "=")
			if !ok || name == "" || strings.TrimSpace(sql) == "" {
				return errors.New("want name=SQL")
			}
			if _, dup := cfg.variants[name]; dup {
				return fmt.Errorf("variant %q given twice", name)
			}
			cfg.variants[name] = sql
			variantOrder = append(variantOrder, "taskq+"+name)
			return nil
		})
	flag.Parse()
	cfg.queues = append(strings.Split(*queues, ","), variantOrder...)
	for _, q := range cfg.queues {
		name, isVariant := strings.CutPrefix(q, "taskq+")
		if _, known := cfg.variants[name]; q != "river" && q != "river-work" && q != "taskq" && !(isVariant && known) {
			fmt.Fprintf(os.Stderr, "river-compare: unknown queue %q in -queues (want river, river-work, taskq, or taskq+name of a -variant)\n", q)
			os.Exit(2)
		}
	}
	if cfg.jobs < 1 || cfg.rounds < 1 || cfg.riverWorkers < 1 || cfg.workers < 1 ||
		cfg.batch < 1 || cfg.batch > tasks.MaxBatch || cfg.timeout <= 0 {
		fmt.Fprintln(os.Stderr, "river-compare: -jobs, -rounds, -river-workers, -workers and -timeout must be positive, -batch 1 to", tasks.MaxBatch)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "river-compare:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	server, err := localpg.Find(ctx, cfg.serverURL)
	if err != nil {
		return err
	}
	var version string
	if err := withConn(ctx, server.URL, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SHOW server_version").Scan(&version)
	}); err != nil {
		return err
	}
	fmt.Printf("%d jobs per queue per round, %d rounds; PostgreSQL %s; %s/%s, %d CPUs, %s\n",
		cfg.jobs, cfg.rounds, version, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Printf("river: MaxWorkers %d, FetchCooldown 2ms, FetchPollInterval 20ms, no-op jobs\n", cfg.riverWorkers)
	fmt.Printf("river-work: the same settings, page args, crawl.Simulator's fetch, its result kept with river.RecordOutput\n")
	fmt.Printf("taskq: %d workers, claim batch %d, crawl.Simulator's fetch, its result in the task's row\n", cfg.workers, cfg.batch)
	sides := map[string]func(context.Context, config, string) (burn, error){
		"river": func(ctx context.Context, cfg config, dbURL string) (burn, error) {
			return burnRiver(ctx, cfg, dbURL, false)
		},
		"river-work": func(ctx context.Context, cfg config, dbURL string) (burn, error) {
			return burnRiver(ctx, cfg, dbURL, true)
		},
		"taskq": func(ctx context.Context, cfg config, dbURL string) (burn, error) {
			return burnTaskq(ctx, cfg, dbURL, "")
		},
	}
	for _, queue := range cfg.queues {
		if name, ok := strings.CutPrefix(queue, "taskq+"); ok {
			sql := cfg.variants[name]
			fmt.Printf("%s: taskq after %s\n", queue, sql)
			sides[queue] = func(ctx context.Context, cfg config, dbURL string) (burn, error) {
				return burnTaskq(ctx, cfg, dbURL, sql)
			}
		}
	}
	fmt.Println()
	width := 0
	for _, q := range cfg.queues {
		width = max(width, len(q))
	}
	var results []result
	for round := 1; round <= cfg.rounds; round++ {
		order := slices.Clone(cfg.queues)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, queue := range order {
			name := fmt.Sprintf("bench_%s_%d_%d", strings.ReplaceAll(queue, "+", "_"), round, time.Now().UnixNano())
			dbURL, drop, err := localpg.CreateDatabase(ctx, server.URL, name)
			if err != nil {
				return err
			}
			sctx, cancel := context.WithTimeout(ctx, cfg.timeout)
			b, err := sides[queue](sctx, cfg, dbURL)
			cancel()
			drop()
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", queue, round, err)
			}
			r := result{Queue: queue, Round: round, Jobs: cfg.jobs, Elapsed: b.elapsed,
				JobsPerSec:      float64(cfg.jobs) / b.elapsed.Seconds(),
				ClientCPUPerJob: b.clientCPU / time.Duration(cfg.jobs),
				ServerCPUPerJob: b.serverCPU / time.Duration(cfg.jobs)}
			results = append(results, r)
			fmt.Printf("round %d  %-*s %9.0f jobs/s  (%d in %.2fs)  CPU per job: server %.1f µs, client %.1f µs\n",
				round, width, r.Queue, r.JobsPerSec, r.Jobs, b.elapsed.Seconds(),
				float64(r.ServerCPUPerJob)/1e3, float64(r.ClientCPUPerJob)/1e3)
		}
	}
	fmt.Println()
	mean := map[string]float64{}
	for _, queue := range cfg.queues {
		var sum, best float64
		for _, r := range results {
			if r.Queue == queue {
				sum += r.JobsPerSec
				best = max(best, r.JobsPerSec)
			}
		}
		mean[queue] = sum / float64(cfg.rounds)
		fmt.Printf("%-*s mean %7.0f jobs/s, best %7.0f\n", width, queue, mean[queue], best)
	}
	// Each queue against each River queue run: taskq against River doing
	// the same work and against River's best case, and what the work costs
	// River itself.
	for _, queue := range cfg.queues {
		for _, base := range []string{"river-work", "river"} {
			if queue != base && mean[base] > 0 && (base == "river" || !strings.HasPrefix(queue, "river")) {
				fmt.Printf("%s/%s %.2f (means)\n", queue, base, mean[queue]/mean[base])
			}
		}
	}
	if cfg.jsonPath != "" {
		out, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(cfg.jsonPath, append(out, '\n'), 0o644)
	}
	return nil
}

// burnRiver migrates River's schema, inserts cfg.jobs jobs, and times a
// River client working them until the last completion is reported. The jobs
// are no-ops, or with work the pages taskq's side burns down, fetched by
// pageWorker.
func burnRiver(ctx context.Context, cfg config, dbURL string, work bool) (burn, error) {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return burn{}, err
	}
	defer pool.Close()
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, nil)
	if err != nil {
		return burn{}, err
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return burn{}, fmt.Errorf("migrate: %w", err)
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, river.WorkFunc(func(context.Context, *river.Job[noopArgs]) error { return nil }))
	river.AddWorker(workers, pageWorker{})
	client, err := river.NewClient(driver, &river.Config{
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.riverWorkers}},
		Workers:           workers,
	})
	if err != nil {
		return burn{}, err
	}
	// The application's job the pages belong to; a River user keeps it in a
	// table of their own, as taskq does.
	jobID := uuid.NewString()
	params := make([]river.InsertManyParams, 0, 5000)
	for from := 0; from < cfg.jobs; from += 5000 {
		params = params[:0]
		for i := from; i < min(cfg.jobs, from+5000); i++ {
			var args river.JobArgs = noopArgs{Num: i}
			if work {
				// River's priority is 1 to 4, not a score: the pages go in
				// in falling priority, so River's order (priority,
				// scheduled_at, id) is the pages' order, as taskq's is.
				p := benchPage(i, cfg.jobs)
				args = pageArgs{JobID: jobID, PageID: int32(i + 1), Path: p.Path, Priority: p.Priority}
			}
			params = append(params, river.InsertManyParams{Args: args})
		}
		if _, err := client.InsertManyFast(ctx, params); err != nil {
			return burn{}, fmt.Errorf("insert: %w", err)
		}
	}
	if _, err := pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return burn{}, err
	}
	events, cancel := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: cfg.jobs,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled},
	})
	defer cancel()
	cpu, err := startCPU(ctx, pool)
	if err != nil {
		return burn{}, err
	}
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		return burn{}, err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = client.Stop(stopCtx)
	}()
	for done := 0; done < cfg.jobs; {
		select {
		case <-ctx.Done():
			return burn{}, fmt.Errorf("%d of %d jobs done: %w", done, cfg.jobs, ctx.Err())
		case e := <-events:
			if e == nil {
				return burn{}, errors.New("subscription closed")
			}
			if e.Kind != river.EventKindJobCompleted {
				return burn{}, fmt.Errorf("job %d: %s", e.Job.ID, e.Kind)
			}
			done++
		}
	}
	elapsed := time.Since(start)
	clientCPU, serverCPU, err := cpu.stop(ctx)
	if err == nil && work {
		err = checkRiverOutputs(ctx, pool, cfg.jobs)
	}
	return burn{elapsed, clientCPU, serverCPU}, err
}

// checkRiverOutputs makes sure every job completed with its fetch's result
// recorded, so that the work counted was the work done.
func checkRiverOutputs(ctx context.Context, pool *pgxpool.Pool, jobs int) error {
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM river_job
		WHERE state = 'completed' AND (metadata->'output'->>'status_code')::int > 0`).Scan(&n); err != nil {
		return err
	}
	if n != jobs {
		return fmt.Errorf("%d of %d jobs completed with their output recorded", n, jobs)
	}
	return nil
}

type noopArgs struct {
	Num int `json:"num"`
}

func (noopArgs) Kind() string { return "noop" }

// pageArgs is a page to fetch, as a River user of this service would
// enqueue it: the application's job, the page and its priority.
type pageArgs struct {
	JobID    string  `json:"job_id"`
	PageID   int32   `json:"page_id"`
	Path     string  `json:"path"`
	Priority float64 `json:"priority"`
}

func (pageArgs) Kind() string { return "page" }

// pageWorker fetches a page as taskq's side does (crawl.Simulator) and
// keeps the result with river.RecordOutput, which River writes into the
// job's metadata when it records the completion.
type pageWorker struct {
	river.WorkerDefaults[pageArgs]
}

func (pageWorker) Work(ctx context.Context, job *river.Job[pageArgs]) error {
	res := crawl.Simulator{}.Result(tasks.Task{
		ID: strconv.FormatInt(job.ID, 10), JobID: job.Args.JobID, PageID: job.Args.PageID,
		Path: job.Args.Path, PriorityScore: job.Args.Priority, Attempt: int32(job.Attempt),
	})
	if res.Err != nil {
		return res.Err
	}
	return river.RecordOutput(ctx, newFetchOutput(res))
}

// fetchOutput is a fetch's result as River's job keeps it: the columns
// taskq writes into the task's row, under the same names and in the same
// units (milliseconds); the second request's only after a cache miss.
type fetchOutput struct {
	StatusCode          int         `json:"status_code"`
	ResponseTime        int64       `json:"response_time"`
	CacheStatus         string      `json:"cache_status,omitempty"`
	ContentType         string      `json:"content_type,omitempty"`
	ContentLength       int64       `json:"content_length"`
	Headers             http.Header `json:"headers,omitempty"`
	RedirectURL         string      `json:"redirect_url,omitempty"`
	DNSLookupTime       int64       `json:"dns_lookup_time"`
	TCPConnectionTime   int64       `json:"tcp_connection_time"`
	TLSHandshakeTime    int64       `json:"tls_handshake_time"`
	TTFB                int64       `json:"ttfb"`
	ContentTransferTime int64       `json:"content_transfer_time"`
	*secondOutput
	// The application's own JSON of the checks (tasks.CacheCheckAttempt's).
	CacheCheckAttempts []tasks.CacheCheckAttempt `json:"cache_check_attempts,omitempty"`
}

// secondOutput is the second request's columns, embedded in fetchOutput
// so that they sit beside the first's, as in the row, and are left out
// when there was no second request (the row's are NULL).
type secondOutput struct {
	SecondResponseTime        int64       `json:"second_response_time"`
	SecondCacheStatus         string      `json:"second_cache_status,omitempty"`
	SecondContentLength       int64       `json:"second_content_length"`
	SecondHeaders             http.Header `json:"second_headers,omitempty"`
	SecondDNSLookupTime       int64       `json:"second_dns_lookup_time"`
	SecondTCPConnectionTime   int64       `json:"second_tcp_connection_time"`
	SecondTLSHandshakeTime    int64       `json:"second_tls_handshake_time"`
	SecondTTFB                int64       `json:"second_ttfb"`
	SecondContentTransferTime int64       `json:"second_content_transfer_time"`
}

func newFetchOutput(r tasks.TaskResult) fetchOutput {
	ms := time.Duration.Milliseconds
	out := fetchOutput{
		StatusCode: r.StatusCode, ResponseTime: ms(r.ResponseTime),
		CacheStatus: r.CacheStatus, ContentType: r.ContentType,
		ContentLength: r.ContentLength, Headers: r.Headers, RedirectURL: r.RedirectURL,
		DNSLookupTime: ms(r.Timing.DNSLookup), TCPConnectionTime: ms(r.Timing.TCPConnection),
		TLSHandshakeTime: ms(r.Timing.TLSHandshake), TTFB: ms(r.Timing.TTFB),
		ContentTransferTime: ms(r.Timing.ContentTransfer),
		CacheCheckAttempts:  r.CacheCheckAttempts,
	}
	if s := r.Second; s != nil {
		out.secondOutput = &secondOutput{
			SecondResponseTime: ms(s.ResponseTime), SecondCacheStatus: s.CacheStatus,
			SecondContentLength: s.ContentLength, SecondHeaders: s.Headers,
			SecondDNSLookupTime: ms(s.Timing.DNSLookup), SecondTCPConnectionTime: ms(s.Timing.TCPConnection),
			SecondTLSHandshakeTime: ms(s.Timing.TLSHandshake), SecondTTFB: ms(s.Timing.TTFB),
			SecondContentTransferTime: ms(s.Timing.ContentTransfer),
		}
	}
	return out
}

// benchPage is page i of the n each side burns down, in falling priority.
func benchPage(i, n int) tasks.Page {
	return tasks.Page{Path: fmt.Sprintf("/section-%d/page-%d", i%50, i), Priority: 1 - float64(i)/float64(n)}
}

// burnTaskq migrates taskq's schema, runs variantSQL (if any), enqueues
// cfg.jobs pages in one job, and times a worker pool fetching them with
// crawl.Simulator until every task is completed.
func burnTaskq(ctx context.Context, cfg config, dbURL, variantSQL string) (burn, error) {
	if err := (migrate.Runner{URL: dbURL}).Up(ctx); err != nil {
		return burn{}, fmt.Errorf("migrate: %w", err)
	}
	if variantSQL != "" {
		if err := withConn(ctx, dbURL, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, variantSQL)
			return err
		}); err != nil {
			return burn{}, fmt.Errorf("variant: %w", err)
		}
	}
	d, err := db.Open(ctx, dbURL, db.Options{MaxConns: 8})
	if err != nil {
		return burn{}, err
	}
	defer d.Close()
	q := d.Queue()
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: "bench.example.com", Concurrency: cfg.jobs})
	if err != nil {
		return burn{}, err
	}
	pages := make([]tasks.Page, 0, 5000)
	for from := 0; from < cfg.jobs; from += 5000 {
		pages = pages[:0]
		for i := from; i < min(cfg.jobs, from+5000); i++ {
			pages = append(pages, benchPage(i, cfg.jobs))
		}
		if _, err := q.Enqueue(ctx, job.ID, pages); err != nil {
			return burn{}, fmt.Errorf("enqueue: %w", err)
		}
	}
	if _, err := d.Pool().Exec(ctx, "VACUUM ANALYZE"); err != nil {
		return burn{}, err
	}
	p := worker.New(q, worker.HandlerFunc(func(_ context.Context, t tasks.Task) tasks.TaskResult {
		return crawl.Simulator{}.Result(t)
	}), worker.Config{Workers: cfg.workers, ClaimBatch: cfg.batch, ListenURL: dbURL})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	cpu, err := startCPU(ctx, d.Pool())
	if err != nil {
		return burn{}, err
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(runCtx) }()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		s := p.Stats()
		if n := s.Completed + s.Failed; n >= int64(cfg.jobs) {
			if s.Failed > 0 {
				return burn{}, fmt.Errorf("%d tasks failed", s.Failed)
			}
			break
		}
		select {
		case <-ctx.Done():
			return burn{}, fmt.Errorf("%d of %d tasks done: %w", s.Completed, cfg.jobs, ctx.Err())
		case err := <-errc:
			return burn{}, fmt.Errorf("pool stopped early: %v", err)
		case <-tick.C:
		}
	}
	elapsed := time.Since(start)
	clientCPU, serverCPU, err := cpu.stop(ctx)
	stop()
	if runErr := <-errc; err == nil {
		err = runErr
	}
	return burn{elapsed, clientCPU, serverCPU}, err
}

func withConn(ctx context.Context, u string, fn func(*pgx.Conn) error) error {
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return fn(c)
}
