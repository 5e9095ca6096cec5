// Package db is the application's data access for jobs and tasks: the
// drop-in replacement for the hand-written queries in the application's
// db, with the same entry points (ClaimNextTask and friends), typed
// errors, and the queue of tasks underneath.
//
// Open configures the connection pool for the queue: session timeouts so one
// stuck statement cannot hold the pool, generic plans for the queue's
// prepared statements, and a pooler mode for Supabase's transaction pooler
// (Supavisor, port 6543) or PgBouncer in transaction mode, which cannot keep
// prepared statements or LISTEN between transactions.
package db

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/tasks"
)

// The queue's types and errors, under the names the application uses. Task
// and Page are the application's own shapes (queue.go); the plan's calls
// below take the queue's claim, tasks.Task, under its own name.
type (
	TaskResult        = tasks.TaskResult
	Timing            = tasks.Timing
	SecondRequest     = tasks.SecondRequest
	CacheCheckAttempt = tasks.CacheCheckAttempt
	Job               = tasks.Job
	JobOptions        = tasks.JobOptions
	EnqueueResult     = tasks.EnqueueResult
	Progress          = tasks.Progress
	JobFilter         = tasks.JobFilter
	Pace              = tasks.Pace
	ArgumentError     = tasks.ArgumentError
)

// Errors; compare with errors.Is.
var (
	ErrNoTasksAvailable  = tasks.ErrNoTasksAvailable
	ErrNotFound          = tasks.ErrNotFound
	ErrJobNotFound       = tasks.ErrJobNotFound
	ErrJobExists         = tasks.ErrJobExists
	ErrInvalidTransition = tasks.ErrInvalidTransition
	ErrLeaseLost         = tasks.ErrLeaseLost
	ErrInvalidArgument   = tasks.ErrInvalidArgument
	ErrUnavailable       = tasks.ErrUnavailable
	ErrTimeout           = tasks.ErrTimeout
	ErrConflict          = tasks.ErrConflict
	ErrStartupRefused    = tasks.ErrStartupRefused
)

// Options tune Open. The zero value suits a direct connection.
type Options struct {
	// MaxConns bounds the pool. Default: pgxpool's (4 per CPU, at least 4).
	MaxConns int32
	// Pooler says the URL points at a transaction pooler (Supavisor's port
	// 6543, PgBouncer with pool_mode=transaction). Statements then go out
	// without named prepared statements (pgx QueryExecModeCacheDescribe),
	// and session settings are not sent
	// as startup parameters, which poolers refuse: set them on the role
	// instead (ALTER ROLE ... SET statement_timeout = ...). LISTEN/NOTIFY does
	// not work through such a pooler; workers poll.
	Pooler bool
	// StatementTimeout ends a statement running longer (default 30s);
	// LockTimeout ends one waiting longer for a lock (default 5s);
	// IdleInTransactionTimeout ends a session left idle inside a
	// transaction (default 60s). Negative disables.
	StatementTimeout         time.Duration
	LockTimeout              time.Duration
	IdleInTransactionTimeout time.Duration
	// ApplicationName shows in pg_stat_activity. Default "taskq".
	ApplicationName string
	// Queue tunes leases, backoff and the clock.
	Queue tasks.Config
}

// DB is a connection pool with the queue on it. Safe for concurrent use.
type DB struct {
	pool  *pgxpool.Pool
	queue *tasks.Queue
	url   string
	opts  Options
}

// Open connects to url and checks the connection. The error wraps
// ErrUnavailable when the database cannot be reached, ErrStartupRefused
// when a transaction pooler refused the session settings (open it with
// Options.Pooler).
func Open(ctx context.Context, url string, opts Options) (*DB, error) {
	cfg, err := PoolConfig(url, opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	db := &DB{pool: pool, queue: tasks.New(pool, opts.Queue), url: url, opts: opts}
	if err := db.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// PoolConfig is the pool configuration Open uses, for callers that build
// their own pool.
func PoolConfig(url string, opts Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: database url: %w", ErrInvalidArgument, err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if opts.ApplicationName == "" {
		opts.ApplicationName = "taskq"
	}
	params := cfg.ConnConfig.RuntimeParams
	if _, set := params["application_name"]; !set {
		params["application_name"] = opts.ApplicationName
	}
	if opts.Pooler {
		// Unprepared statements, with parameter types described once per
		// connection and cached: no named prepared statement outlives the
		// transaction that a pooler may hand to another client.
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
		tasks.CancelOnContextEnd(cfg)
		return cfg, nil
	}
	for name, d := range map[string]struct{ value, fallback time.Duration }{
		"statement_timeout":                   {opts.StatementTimeout, 30 * time.Second},
		"lock_timeout":                        {opts.LockTimeout, 5 * time.Second},
		"idle_in_transaction_session_timeout": {opts.IdleInTransactionTimeout, time.Minute},
	} {
		if _, set := params[name]; set {
			continue
		}
		switch v := d.value; {
		case v == 0:
			params[name] = fmt.Sprint(d.fallback.Milliseconds())
		case v > 0:
			params[name] = fmt.Sprint(v.Milliseconds())
		}
	}
	tasks.ConfigurePool(cfg)
	return cfg, nil
}

// Close closes the pool.
func (db *DB) Close() { db.pool.Close() }

// Pool is the connection pool.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Queue is the task queue on the pool.
func (db *DB) Queue() *tasks.Queue { return db.queue }

// URL is the database URL the pool connects to.
func (db *DB) URL() string { return db.url }

// Pooler reports whether the pool goes through a transaction pooler.
func (db *DB) Pooler() bool { return db.opts.Pooler }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return tasks.ConnectError(err)
	}
	return nil
}

// ClaimNextTask claims a pending task for workerID (see tasks.Queue.Claim
// for which), or returns ErrNoTasksAvailable. If ctx ends while the
// statement runs, the claim may still have committed without the caller
// learning of it; the task then returns to the queue when its lease expires. The task is leased to workerID; report its outcome
// with CompleteTask or FailTask.
func (db *DB) ClaimNextTask(ctx context.Context, workerID string) (*tasks.Task, error) {
	return db.queue.ClaimOne(ctx, workerID)
}

// ClaimTasks claims up to n tasks for workerID in one statement. It returns
// an empty slice when nothing is claimable.
func (db *DB) ClaimTasks(ctx context.Context, workerID string, n int) ([]tasks.Task, error) {
	return db.queue.Claim(ctx, workerID, n)
}

// CompleteTask records a task's result. ErrLeaseLost means the worker no
// longer held the task (its lease expired and another worker may run it).
func (db *DB) CompleteTask(ctx context.Context, task *tasks.Task, result TaskResult) error {
	if task == nil {
		return &tasks.ArgumentError{Arg: "task", Reason: "nil"}
	}
	return db.queue.Complete(ctx, *task, result)
}

// FailTask records a failure: the task is retried after a backoff until the
// job's max_retries, then it is failed.
func (db *DB) FailTask(ctx context.Context, task *tasks.Task, cause error) error {
	if task == nil {
		return &tasks.ArgumentError{Arg: "task", Reason: "nil"}
	}
	return db.queue.Fail(ctx, *task, cause, false)
}

// FailTaskPermanently records a failure that no retry would fix.
func (db *DB) FailTaskPermanently(ctx context.Context, task *tasks.Task, cause error) error {
	if task == nil {
		return &tasks.ArgumentError{Arg: "task", Reason: "nil"}
	}
	return db.queue.Fail(ctx, *task, cause, true)
}

// ExtendLease keeps a long-running task leased to its worker.
func (db *DB) ExtendLease(ctx context.Context, task *tasks.Task) error {
	if task == nil {
		return &tasks.ArgumentError{Arg: "task", Reason: "nil"}
	}
	extended, err := db.queue.ExtendLeases(ctx, []tasks.Task{*task})
	if err != nil {
		return err
	}
	task.LeaseExpiresAt = extended[0].LeaseExpiresAt
	return nil
}

// CreateJob creates a job; add its pages with EnqueuePages. A taken
// JobOptions.ID fails with ErrJobExists, an unknown user or organisation
// with ErrInvalidArgument; nothing is written then.
func (db *DB) CreateJob(ctx context.Context, opts JobOptions) (*Job, error) {
	job, err := db.queue.CreateJob(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// EnqueuePages adds pages to a job as tasks (deduplicated, capped at the
// job's max_pages) and starts a pending job. The pages' IDs are not used:
// the queue finds or creates each page by the job's domain and its path.
func (db *DB) EnqueuePages(ctx context.Context, jobID string, pages []Page) (EnqueueResult, error) {
	in := make([]tasks.Page, len(pages))
	for i, p := range pages {
		in[i] = tasks.Page{Path: p.Path, Priority: p.Priority}
	}
	return db.queue.Enqueue(ctx, jobID, in)
}

// GetJob returns a job with its exact progress.
func (db *DB) GetJob(ctx context.Context, id string) (*Job, error) {
	job, err := db.queue.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	return &job, nil
}

// ListJobs lists jobs, newest first, with their exact progress.
func (db *DB) ListJobs(ctx context.Context, filter JobFilter) ([]Job, error) {
	return db.queue.Jobs(ctx, filter)
}

// PauseJob, ResumeJob and CancelJob change a job's status; an invalid change
// fails with ErrInvalidTransition, an unknown job with ErrJobNotFound.
func (db *DB) PauseJob(ctx context.Context, id string) error  { return db.queue.PauseJob(ctx, id) }
func (db *DB) ResumeJob(ctx context.Context, id string) error { return db.queue.ResumeJob(ctx, id) }
func (db *DB) CancelJob(ctx context.Context, id string) error { return db.queue.CancelJob(ctx, id) }

// SetDomainPace paces a domain: no two tasks of its jobs start less than
// delaySeconds apart, whichever worker or host claims them (the queue's
// claim enforces it). Fractions are kept to the millisecond. NaN, an
// infinity, a negative delay or one over tasks.MaxPaceInterval fails with an
// *ArgumentError (ErrInvalidArgument) and nothing is written. The delay
// becomes the domain's floor: back-off learned from 429/503 responses rises
// above it and comes back down to it. The domain is created if new.
func (db *DB) SetDomainPace(ctx context.Context, domain string, delaySeconds float64) error {
	d, err := tasks.CheckPaceSeconds("delaySeconds", delaySeconds)
	if err != nil {
		return err
	}
	return db.queue.SetDomainPace(ctx, domain, d)
}

// ClearDomainPace removes a domain's pace, set or learned; it reports
// whether there was one.
func (db *DB) ClearDomainPace(ctx context.Context, domain string) (bool, error) {
	return db.queue.ClearDomainPace(ctx, domain)
}

// DomainPace returns a domain's pace, or ErrNotFound when it has none.
func (db *DB) DomainPace(ctx context.Context, domain string) (*Pace, error) {
	p, err := db.queue.DomainPace(ctx, domain)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// IsRetryable tells whether err is worth retrying later as it is: the
// database was unavailable, timed out, or aborted a transaction to resolve a
// conflict.
func IsRetryable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrConflict)
}
