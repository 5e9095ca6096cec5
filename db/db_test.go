package db_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// clock is a settable time source for the queue's statements.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// open opens the API on a fresh migrated database, closed when the test
// ends (before the database is dropped).
func open(t *testing.T, opts db.Options) (*db.DB, string) {
	t.Helper()
	u := pgtest.URL(t, migrate.VersionLatest)
	d, err := db.Open(context.Background(), u, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(d.Close)
	return d, u
}

// ignoreClaimed leaves out what a claim stamps from the database's side.
var ignoreClaimed = cmpopts.IgnoreFields(tasks.Task{}, "ID", "PageID", "CreatedAt")

func TestClaimCompleteFailRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	d, _ := open(t, db.Options{Queue: tasks.Config{Now: clk.Now, Lease: time.Minute, BackoffBase: time.Minute}})

	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.EnqueuePages(ctx, job.ID, []db.Page{{Path: "/", Priority: 1}, {Path: "/about", Priority: 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(db.EnqueueResult{Pending: 2}, res); diff != "" {
		t.Fatalf("enqueue (-want +got):\n%s", diff)
	}

	home, err := d.ClaimNextTask(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	about, err := d.ClaimNextTask(ctx, "w2")
	if err != nil {
		t.Fatal(err)
	}
	wantHome := tasks.Task{
		JobID: job.ID, Path: "/", PriorityScore: 1, Attempt: 1, WorkerID: "w1",
		StartedAt: clk.Now(), LeaseExpiresAt: clk.Now().Add(time.Minute),
	}
	wantAbout := tasks.Task{
		JobID: job.ID, Path: "/about", PriorityScore: 0.5, Attempt: 1, WorkerID: "w2",
		StartedAt: clk.Now(), LeaseExpiresAt: clk.Now().Add(time.Minute),
	}
	if diff := cmp.Diff([]tasks.Task{wantHome, wantAbout}, []tasks.Task{*home, *about}, ignoreClaimed); diff != "" {
		t.Fatalf("claimed (-want +got):\n%s", diff)
	}

	result := db.TaskResult{StatusCode: 200, ResponseTime: 85 * time.Millisecond, CacheStatus: "MISS",
		ContentType: "text/html", ContentLength: 2048}
	if err := d.CompleteTask(ctx, home, result); err != nil {
		t.Fatalf("CompleteTask: %v", err)
	}
	if err := d.FailTask(ctx, about, errors.New("HTTP 503")); err != nil {
		t.Fatalf("FailTask: %v", err)
	}
	got, err := d.GetJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != tasks.JobStatusRunning {
		t.Errorf("job status %s, want running", got.Status)
	}
	if diff := cmp.Diff(db.Progress{Total: 2, Completed: 1, Pending: 1, Percent: 50}, got.Progress); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}

	type stored struct {
		Path          string
		Status        tasks.TaskStatus
		StatusCode    *int32
		ResponseTime  *int32
		CacheStatus   *string
		ContentType   *string
		ContentLength *int64
		Error         *string
		RetryCount    int32
	}
	rows, err := d.Pool().Query(ctx, `
		SELECT path, status, status_code, response_time, cache_status, content_type, content_length, error, retry_count
		FROM tasks ORDER BY path`)
	if err != nil {
		t.Fatal(err)
	}
	tasksStored, err := pgx.CollectRows(rows, pgx.RowToStructByName[stored])
	if err != nil {
		t.Fatal(err)
	}
	ptr32, ptr64, str := func(v int32) *int32 { return &v }, func(v int64) *int64 { return &v }, func(v string) *string { return &v }
	wantStored := []stored{
		{Path: "/", Status: tasks.TaskStatusCompleted, StatusCode: ptr32(200), ResponseTime: ptr32(85), CacheStatus: str("MISS"),
			ContentType: str("text/html"), ContentLength: ptr64(2048)},
		{Path: "/about", Status: tasks.TaskStatusPending, Error: str("HTTP 503"), RetryCount: 1},
	}
	if diff := cmp.Diff(wantStored, tasksStored); diff != "" {
		t.Fatalf("stored tasks (-want +got):\n%s", diff)
	}

	// The failed task waits out its backoff, then runs again.
	if _, err := d.ClaimNextTask(ctx, "w1"); !errors.Is(err, db.ErrNoTasksAvailable) {
		t.Fatalf("claim during backoff: %v, want ErrNoTasksAvailable", err)
	}
	clk.Advance(time.Minute)
	retry, err := d.ClaimNextTask(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if retry.ID != about.ID || retry.Attempt != 2 || retry.RetryCount != 1 {
		t.Fatalf("retried claim %+v, want task %s attempt 2", retry, about.ID)
	}
	before := retry.LeaseExpiresAt
	clk.Advance(30 * time.Second)
	if err := d.ExtendLease(ctx, retry); err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(time.Minute); !retry.LeaseExpiresAt.Equal(want) || retry.LeaseExpiresAt.Equal(before) {
		t.Fatalf("extended lease until %v, want %v", retry.LeaseExpiresAt, want)
	}
	if err := d.FailTaskPermanently(ctx, retry, errors.New("HTTP 410")); err != nil {
		t.Fatal(err)
	}
	got, err = d.GetJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(db.Progress{Total: 2, Completed: 1, Failed: 1, Percent: 100}, got.Progress); diff != "" {
		t.Errorf("progress (-want +got):\n%s", diff)
	}

	// Reports for claims no longer held are refused.
	if err := d.CompleteTask(ctx, home, result); !errors.Is(err, db.ErrLeaseLost) {
		t.Errorf("CompleteTask twice: %v, want ErrLeaseLost", err)
	}
	if err := d.FailTask(ctx, about, errors.New("late")); !errors.Is(err, db.ErrLeaseLost) {
		t.Errorf("FailTask of an earlier attempt: %v, want ErrLeaseLost", err)
	}
	if _, err := d.GetJob(ctx, "no-such-job"); !errors.Is(err, db.ErrJobNotFound) {
		t.Errorf("GetJob of an unknown job: %v, want ErrJobNotFound", err)
	}
}

func TestClaimNextTaskOnEmptyQueue(t *testing.T) {
	t.Parallel()
	d, _ := open(t, db.Options{})
	task, err := d.ClaimNextTask(context.Background(), "w1")
	if !errors.Is(err, db.ErrNoTasksAvailable) || task != nil {
		t.Fatalf("ClaimNextTask = %v, %v; want nil, ErrNoTasksAvailable", task, err)
	}
	if db.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = true", err)
	}
}

func TestNilTaskIsInvalidArgument(t *testing.T) {
	t.Parallel()
	d, _ := open(t, db.Options{})
	tests := []struct {
		name string
		call func(context.Context) error
	}{
		{"CompleteTask", func(ctx context.Context) error { return d.CompleteTask(ctx, nil, db.TaskResult{StatusCode: 200}) }},
		{"FailTask", func(ctx context.Context) error { return d.FailTask(ctx, nil, errors.New("x")) }},
		{"FailTaskPermanently", func(ctx context.Context) error { return d.FailTaskPermanently(ctx, nil, errors.New("x")) }},
		{"ExtendLease", func(ctx context.Context) error { return d.ExtendLease(ctx, nil) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(context.Background())
			var argErr *tasks.ArgumentError
			if !errors.Is(err, db.ErrInvalidArgument) || !errors.As(err, &argErr) || argErr.Arg != "task" {
				t.Fatalf("error = %v, want an ErrInvalidArgument for task", err)
			}
			if db.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = true", err)
			}
		})
	}
}

func TestOpenUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	d, err := db.Open(context.Background(), "postgres://postgres@127.0.0.1:1/x?connect_timeout=2", db.Options{})
	if d != nil {
		d.Close()
		t.Fatal("Open of an unreachable database returned a DB")
	}
	if !errors.Is(err, db.ErrUnavailable) {
		t.Fatalf("Open = %v, want ErrUnavailable", err)
	}
	if !db.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false", err)
	}
}

func TestOpenMalformedURLIsInvalidArgument(t *testing.T) {
	t.Parallel()
	d, err := db.Open(context.Background(), "postgres://[::1", db.Options{})
	if d != nil {
		d.Close()
		t.Fatal("Open of a malformed URL returned a DB")
	}
	if !errors.Is(err, db.ErrInvalidArgument) || db.IsRetryable(err) {
		t.Fatalf("Open = %v, want a non-retryable ErrInvalidArgument", err)
	}
}

func TestExhaustedPoolIsUnavailable(t *testing.T) {
	t.Parallel()
	d, _ := open(t, db.Options{MaxConns: 1, Queue: tasks.Config{AcquireTimeout: 200 * time.Millisecond}})
	conn, err := d.Pool().Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The guard only keeps a hang from stalling the suite; the call must
	// end on its own, long before.
	guard, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	task, err := d.ClaimNextTask(guard, "w1")
	if guard.Err() != nil {
		t.Fatalf("ClaimNextTask waited until the test's guard ended: %v", err)
	}
	if !errors.Is(err, db.ErrUnavailable) || task != nil {
		t.Fatalf("ClaimNextTask on an exhausted pool = %v, %v; want ErrUnavailable", task, err)
	}
	if !db.IsRetryable(err) {
		t.Errorf("IsRetryable(%v) = false", err)
	}
	// Once the connection is back, the pool serves again.
	conn.Release()
	if _, err := d.ClaimNextTask(guard, "w1"); !errors.Is(err, db.ErrNoTasksAvailable) {
		t.Fatalf("ClaimNextTask after release = %v, want ErrNoTasksAvailable", err)
	}
}

// sessionSettings are what Options set on each pooled session.
type sessionSettings struct {
	StatementTimeout         string
	LockTimeout              string
	IdleInTransactionTimeout string
	PlanCacheMode            string
	JIT                      string
	ApplicationName          string
}

func show(t *testing.T, ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) sessionSettings {
	t.Helper()
	var s sessionSettings
	for _, setting := range []struct {
		name string
		dst  *string
	}{
		{"statement_timeout", &s.StatementTimeout},
		{"lock_timeout", &s.LockTimeout},
		{"idle_in_transaction_session_timeout", &s.IdleInTransactionTimeout},
		{"plan_cache_mode", &s.PlanCacheMode},
		{"jit", &s.JIT},
		{"application_name", &s.ApplicationName},
	} {
		if err := q.QueryRow(ctx, "SHOW "+setting.name).Scan(setting.dst); err != nil {
			t.Fatalf("SHOW %s: %v", setting.name, err)
		}
	}
	return s
}

func TestSessionSettingsReachTheServer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts db.Options
		// query is added to the database URL.
		query url.Values
		// want gets the server's own values (a session opened with no
		// settings) and returns what the pool's sessions must show.
		want func(server sessionSettings) sessionSettings
	}{
		{
			name: "defaults",
			want: func(sessionSettings) sessionSettings {
				return sessionSettings{"30s", "5s", "1min", "force_generic_plan", "off", "taskq"}
			},
		},
		{
			name: "options",
			opts: db.Options{StatementTimeout: 7 * time.Second, LockTimeout: 1500 * time.Millisecond,
				IdleInTransactionTimeout: 2 * time.Minute, ApplicationName: "crawler"},
			want: func(sessionSettings) sessionSettings {
				return sessionSettings{"7s", "1500ms", "2min", "force_generic_plan", "off", "crawler"}
			},
		},
		{
			name: "negative disables",
			opts: db.Options{StatementTimeout: -1, LockTimeout: -1, IdleInTransactionTimeout: -1},
			want: func(server sessionSettings) sessionSettings {
				server.PlanCacheMode, server.JIT, server.ApplicationName = "force_generic_plan", "off", "taskq"
				return server
			},
		},
		{
			name:  "the URL's own settings win",
			opts:  db.Options{StatementTimeout: 7 * time.Second, ApplicationName: "crawler"},
			query: url.Values{"statement_timeout": {"1234"}, "application_name": {"from-url"}, "plan_cache_mode": {"auto"}, "jit": {"on"}},
			want: func(sessionSettings) sessionSettings {
				return sessionSettings{"1234ms", "5s", "1min", "auto", "on", "from-url"}
			},
		},
		{
			// A transaction pooler refuses startup parameters other than
			// the application name; nothing else is sent.
			name: "pooler",
			opts: db.Options{Pooler: true, StatementTimeout: 7 * time.Second},
			want: func(server sessionSettings) sessionSettings {
				server.ApplicationName = "taskq"
				return server
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			base := pgtest.URL(t, migrate.VersionLatest)
			plain, err := pgx.Connect(ctx, base)
			if err != nil {
				t.Fatal(err)
			}
			server := show(t, ctx, plain)
			if err := plain.Close(ctx); err != nil {
				t.Fatal(err)
			}

			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			for k, v := range tc.query {
				q[k] = v
			}
			u.RawQuery = q.Encode()
			d, err := db.Open(ctx, u.String(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if diff := cmp.Diff(tc.want(server), show(t, ctx, d.Pool())); diff != "" {
				t.Fatalf("session settings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPoolerModeSendsUnpreparedStatements(t *testing.T) {
	t.Parallel()
	cfg, err := db.PoolConfig("postgres://u@127.0.0.1:6543/postgres", db.Options{Pooler: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ConnConfig.DefaultQueryExecMode; got != pgx.QueryExecModeCacheDescribe {
		t.Fatalf("query exec mode %v, want QueryExecModeCacheDescribe", got)
	}
}

func TestLockTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := open(t, db.Options{LockTimeout: 100 * time.Millisecond})
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.EnqueuePages(ctx, job.ID, []db.Page{{Path: "/"}}); err != nil {
		t.Fatal(err)
	}
	// Another transaction holds the job row until the pause gives up.
	tx, err := d.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job.ID); err != nil {
		t.Fatal(err)
	}
	err = d.PauseJob(ctx, job.ID)
	if !errors.Is(err, db.ErrTimeout) || !db.IsRetryable(err) {
		t.Fatalf("PauseJob while the job row is locked = %v, want a retryable ErrTimeout", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.PauseJob(ctx, job.ID); err != nil {
		t.Fatalf("PauseJob once the lock is gone: %v", err)
	}
}

func TestIsRetryable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{db.ErrUnavailable, true},
		{db.ErrTimeout, true},
		{db.ErrConflict, true},
		{fmt.Errorf("claim 1 tasks for w1: %w", db.ErrUnavailable), true},
		{fmt.Errorf("finish 3 tasks: %w: %w", db.ErrConflict, errors.New("deadlock detected")), true},
		{db.ErrNoTasksAvailable, false},
		{db.ErrNotFound, false},
		{db.ErrJobNotFound, false},
		{db.ErrInvalidTransition, false},
		{db.ErrLeaseLost, false},
		{db.ErrInvalidArgument, false},
		{&tasks.ArgumentError{Arg: "task", Reason: "nil"}, false},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{errors.New("something else"), false},
	}
	for _, tc := range tests {
		if got := db.IsRetryable(tc.err); got != tc.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
