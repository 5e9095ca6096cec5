// Package tasks is the task queue: claiming, finishing, leases and rescue,
// enqueueing and job progress, on top of the sqlc-generated queries in gen.
//
// Claiming, finishing, extending, handing back and rescuing tasks are each
// one SQL statement (sql/queries/tasks.sql), atomic without a client-side
// transaction, and each keeps the per-job concurrency limit and progress
// counters exact (job_shards and job_tallies in sql/schema); enqueueing and
// cancelling take one short transaction. Claims lock a job shard and its
// tasks with FOR NO KEY UPDATE SKIP LOCKED and never lock a job's row, so
// workers do not queue behind each other.
package tasks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/gen"
)

// Limits on arguments.
const (
	// MaxBatch is the most tasks one Claim or Finish call handles.
	MaxBatch = 10_000
	// MaxIDLength bounds worker, job and task ids.
	MaxIDLength = 200
	// MaxPathLength bounds a page path; longer ones would not fit the
	// pages (domain_id, path) index entry.
	MaxPathLength = 2048
	// NotifyChannel is where enqueueing announces new pending tasks.
	NotifyChannel = "taskq_tasks"
)

// Config tunes a Queue. The zero value is usable: every field has a default.
type Config struct {
	// Lease is how long a claimed task stays with its worker before the
	// rescuer may take it back, unless the worker extends it. Default 1m.
	Lease time.Duration
	// BackoffBase and BackoffMax shape the delay before a failed task is
	// retried: BackoffBase * 2^retries, at most BackoffMax. Defaults 1s, 5m.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// AcquireTimeout is how long a call waits for a free pooled connection
	// before it fails with ErrUnavailable. Default 10s.
	AcquireTimeout time.Duration
	// ClaimRetries is how many times a claim that found nothing retries when
	// work exists but every free shard was locked by other claimers at that
	// instant. Default 4.
	ClaimRetries int
	// Now, when set, is the clock the queue's statements use instead of the
	// database's now(); tests move it to expire leases without sleeping.
	Now func() time.Time
	// PaceStep is how much a back-off (TaskResult.BackOff: 429, 503, no
	// connection) raises its domain's interval between task starts, and
	// how much a run of PaceRecoverAfter successes lowers it again, never
	// below the domain's floor. Default 500ms (DefaultPaceStep).
	PaceStep time.Duration
	// PaceMax caps a learned interval (a floor set higher stays).
	// Default 1m (DefaultPaceMax); at most MaxPaceInterval.
	PaceMax time.Duration
	// PaceRecoverAfter is how many successes in a row lower a domain's
	// interval by one PaceStep. Default 5 (DefaultPaceRecoverAfter).
	PaceRecoverAfter int
	// PaceStartBudget is how long after its claim statement was sent a
	// paced task's request may still start (Task.StartBy): the gap a site
	// sees between two requests is never shorter than the interval minus
	// this. Default 10ms (DefaultPaceStartBudget).
	PaceStartBudget time.Duration
}

func (c Config) withDefaults() Config {
	if c.Lease <= 0 {
		c.Lease = time.Minute
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 5 * time.Minute
	}
	if c.AcquireTimeout <= 0 {
		c.AcquireTimeout = 10 * time.Second
	}
	if c.ClaimRetries <= 0 {
		c.ClaimRetries = 4
	}
	if c.PaceStep <= 0 {
		c.PaceStep = DefaultPaceStep
	}
	if c.PaceMax <= 0 {
		c.PaceMax = DefaultPaceMax
	}
	c.PaceMax = min(c.PaceMax, MaxPaceInterval)
	if c.PaceRecoverAfter <= 0 {
		c.PaceRecoverAfter = DefaultPaceRecoverAfter
	}
	if c.PaceStartBudget <= 0 {
		c.PaceStartBudget = DefaultPaceStartBudget
	}
	return c
}

// ConfigurePool applies what the queue's statements are written for:
//
//   - plan_cache_mode=force_generic_plan: every queue statement reaches its
//     rows through a fixed index path (correlated probes, one primary-key
//     probe per input row), so the generic plan is the right one, and
//     without this setting PostgreSQL re-plans the larger statements on
//     every call (1-3 ms each on this project's 2-core machine), because
//     their generic cost estimate looks worse than the custom one. Only
//     prepared statements are affected; not for transaction poolers, which
//     refuse it as a startup parameter (see CancelOnContextEnd alone).
//   - jit=off: a claim's cost estimate grows with the live job shards it
//     might pass over, though it stops at the first free one. Past
//     jit_above_cost (about 4,000 shards at the default 100,000) every claim
//     was compiled first: 51 ms a claim instead of 1.6 ms
//     (BenchmarkClaimPassingPacedDomains). No queue statement runs long
//     enough to gain from compiling it.
//   - CancelOnContextEnd.
func ConfigurePool(cfg *pgxpool.Config) {
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	for name, value := range map[string]string{"plan_cache_mode": "force_generic_plan", "jit": "off"} {
		if _, set := cfg.ConnConfig.RuntimeParams[name]; !set {
			cfg.ConnConfig.RuntimeParams[name] = value
		}
	}
	CancelOnContextEnd(cfg)
}

// CancelOnContextEnd makes a context that ends during a statement cancel the
// statement on the server. pgx's default only closes the socket, and a
// statement waiting for a lock then runs on and commits when the lock frees:
// a claim whose caller gave up would leave its tasks running until their
// lease expired, and a finish would land after all. The connection is still
// closed if the server does not answer within 5 s.
func CancelOnContextEnd(cfg *pgxpool.Config) {
	cfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &cancelHandler{conn: c, deadlineDelay: 5 * time.Second}
	}
}

// cancelHandler is pgconn.CancelRequestContextWatcherHandler except that a
// cancel request, once begun, runs to its end: until the server closes the
// cancel socket or the connection's deadline passes. pgx's handler hangs up
// the cancel socket as soon as the statement returns, which PgBouncer 1.18
// (Debian 12's) does not survive: it exits with "disconnect_client(): bad
// client state: 0" (pgbouncer/pgbouncer#801, fixed by #846), taking every
// client with it. Waiting also keeps a late cancel off the connection's next
// statement.
type cancelHandler struct {
	conn          *pgconn.PgConn
	deadlineDelay time.Duration

	unwatched chan struct{} // closed by HandleUnwatchAfterCancel
	finished  chan struct{} // closed when the cancel request is over
}

func (h *cancelHandler) HandleCancel(context.Context) {
	h.unwatched, h.finished = make(chan struct{}), make(chan struct{})
	deadline := time.Now().Add(h.deadlineDelay)
	_ = h.conn.Conn().SetDeadline(deadline)
	go func() {
		defer close(h.finished)
		select {
		case <-h.unwatched: // the statement ended first: nothing to cancel
			return
		default:
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		_ = h.conn.CancelRequest(ctx)
		// The server has the request, but the backend may not have acted on
		// it yet; as pgx does, give it a moment before the connection is
		// used again, so that the cancel cannot hit the next statement.
		time.Sleep(100 * time.Millisecond)
	}()
}

func (h *cancelHandler) HandleUnwatchAfterCancel() {
	close(h.unwatched)
	<-h.finished
	_ = h.conn.Conn().SetDeadline(time.Time{})
}

// Queue is the task queue on one database. It is safe for concurrent use.
type Queue struct {
	pool *pgxpool.Pool
	q    *gen.Queries
	cfg  Config
	// claimTrip: a moving average of how long a claim statement takes, from
	// sending to its rows (nanoseconds); the pace slack a paced claim asks for.
	claimTrip atomic.Int64
	// prepares: the pool's statements are prepared and their plans kept
	// (pgx's default mode); see replanning.
	prepares bool
}

// New returns a queue using pool.
func New(pool *pgxpool.Pool, cfg Config) *Queue {
	prepares := pool.Config().ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement
	return &Queue{pool: pool, q: gen.New(), cfg: cfg.withDefaults(), prepares: prepares}
}

// Config is the queue's configuration, defaults filled in.
func (q *Queue) Config() Config { return q.cfg }

// Pool is the connection pool the queue uses.
func (q *Queue) Pool() *pgxpool.Pool { return q.pool }

// now is the clock argument for queries: nil means the database's now().
func (q *Queue) now() *time.Time {
	if q.cfg.Now == nil {
		return nil
	}
	t := q.cfg.Now()
	return &t
}

// conn acquires a pooled connection, failing with ErrUnavailable when none
// frees up within AcquireTimeout or the database cannot be reached.
func (q *Queue) conn(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, q.cfg.AcquireTimeout)
	defer cancel()
	c, err := q.pool.Acquire(actx)
	if err == nil {
		return c, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if actx.Err() != nil {
		return nil, fmt.Errorf("%w: no pooled connection free within %s (%d in use of %d)",
			ErrUnavailable, q.cfg.AcquireTimeout, q.pool.Stat().AcquiredConns(), q.pool.Stat().MaxConns())
	}
	return nil, interpretError(err)
}

// run runs fn on a pooled connection and interprets its error.
func (q *Queue) run(ctx context.Context, fn func(gen.DBTX) error) error {
	c, err := q.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return interpretErrorIn(ctx, fn(c))
}

// interpretErrorIn is interpretError, except that a statement cut short
// because ctx ended reports ctx's error (Canceled or DeadlineExceeded), not
// the server's "canceling statement" (which would read as ErrTimeout).
func interpretErrorIn(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (statement cancelled: %v)", ctx.Err(), err)
	}
	return interpretError(err)
}

// pause waits before a claim's or an enqueue's next attempt after it lost a
// race (0.25 ms doubling with the attempt, up to 64 ms, with jitter), so
// that losers do not spin on the database.
func pause(ctx context.Context, attempt int) error {
	d := time.Duration(250<<min(attempt, 8)) * time.Microsecond
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d/2 + rand.N(d)):
		return nil
	}
}

// replanning returns db set to have the server plan each execution for the
// tables as they are then, not as they were when the session first ran the
// statement: a session that began a crawl planned TaskEnqueue for a nearly
// empty tasks table, which a crawl multiplies within seconds, long before
// autovacuum's ANALYZE replaces a prepared plan (TestEnqueuePlansForTheTableItMeets).
// Planning costs about 0.5 ms a call. Only prepared statements keep plans:
// in pgx's other modes (a transaction pooler's, db.Options.Pooler) every
// statement is planned anew already, and db is returned as it is.
func (q *Queue) replanning(db gen.DBTX) gen.DBTX {
	if !q.prepares {
		return db
	}
	return replanned{db}
}

// replanned sends QueryRow's statements unprepared, their parameter types
// described once and cached (pgx QueryExecModeCacheDescribe).
type replanned struct{ gen.DBTX }

func (r replanned) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return r.DBTX.QueryRow(ctx, sql, append([]any{pgx.QueryExecModeCacheDescribe}, args...)...)
}

// tx runs fn in a transaction on a pooled connection: committed if fn
// returns nil, rolled back otherwise.
func (q *Queue) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	c, err := q.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return interpretErrorIn(ctx, pgx.BeginFunc(ctx, c, fn))
}

func checkID(arg, id string) error {
	switch {
	case id == "":
		return invalid(arg, "empty")
	case len(id) > MaxIDLength:
		return invalid(arg, "%d bytes, more than %d", len(id), MaxIDLength)
	}
	return checkText(arg, id)
}

// checkText refuses what PostgreSQL text cannot hold, before it is sent.
func checkText(arg, s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return invalid(arg, "contains a NUL byte at offset %d", i)
		}
	}
	if !utf8.ValidString(s) {
		return invalid(arg, "not valid UTF-8")
	}
	return nil
}

func checkBatch(arg string, n int) error {
	if n < 1 || n > MaxBatch {
		return invalid(arg, "%d, want 1 to %d", n, MaxBatch)
	}
	return nil
}
