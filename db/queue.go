package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/blue-banded-bee/taskq/tasks"
)

// Task is a task as the application's worker handles it (its db.Task): what
// GetNextTask returns and UpdateTaskStatus writes. Durations are whole
// milliseconds and Headers, SecondHeaders and CacheCheckAttempts JSON, as
// the application keeps them. WorkerID, Attempt and LeaseExpiresAt identify
// the claim; UpdateTaskStatus writes only while it is still held.
type Task struct {
	ID          string
	JobID       string
	PageID      int
	Path        string
	Status      string
	CreatedAt   time.Time
	StartedAt   time.Time
	CompletedAt time.Time
	RetryCount  int
	Error       string
	SourceType  string
	SourceURL   string

	StatusCode          int
	ResponseTime        int64
	CacheStatus         string
	ContentType         string
	ContentLength       int64
	Headers             []byte
	RedirectURL         string
	DNSLookupTime       int64
	TCPConnectionTime   int64
	TLSHandshakeTime    int64
	TTFB                int64
	ContentTransferTime int64

	SecondResponseTime        int64
	SecondCacheStatus         string
	SecondContentLength       int64
	SecondHeaders             []byte
	SecondDNSLookupTime       int64
	SecondTCPConnectionTime   int64
	SecondTLSHandshakeTime    int64
	SecondTTFB                int64
	SecondContentTransferTime int64
	CacheCheckAttempts        []byte

	PriorityScore float64

	// The claim: who holds the task, which claim of it this is, and until
	// when (UpdateTaskStatus with status "running" extends it).
	WorkerID       string
	Attempt        int32
	LeaseExpiresAt time.Time
}

// Page is a page to enqueue, as the application's EnqueueURLs takes it: ID
// is the application's pages row id, 0 for a page it could not store.
type Page struct {
	ID       int
	Path     string
	Priority float64
}

// Task statuses UpdateTaskStatus writes: the queue's, as the strings
// the application's Task carries.
const (
	TaskStatusPending   = string(tasks.TaskStatusPending)
	TaskStatusRunning   = string(tasks.TaskStatusRunning)
	TaskStatusCompleted = string(tasks.TaskStatusCompleted)
	TaskStatusFailed    = string(tasks.TaskStatusFailed)
	TaskStatusSkipped   = string(tasks.TaskStatusSkipped)
)

// DbQueue is the application's queue (its db.DbQueue) on the task
// queue: the same calls with the same signatures, claiming, finishing and
// enqueueing through the queue's sharded, lease-checked statements. Safe
// for concurrent use.
type DbQueue struct {
	db       *DB
	sql      *sql.DB
	workerID string
	finisher finisher
}

// NewDbQueue returns the application's queue on db. Its claims are leased to
// a worker id naming this process (host, pid and a random suffix), shared by
// every goroutine: each claim's attempt number tells them apart.
func NewDbQueue(db *DB) *DbQueue {
	host, _ := os.Hostname()
	id := fmt.Sprintf("dbqueue-%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	q := &DbQueue{db: db, sql: stdlib.OpenDBFromPool(db.pool), workerID: id}
	q.finisher.q = db.queue
	return q
}

// WorkerID is the id the queue's claims are leased to.
func (q *DbQueue) WorkerID() string { return q.workerID }

// Execute runs fn in a database/sql transaction on the queue's pool
// (pgx's stdlib bridge): committed when fn returns nil, rolled back
// otherwise. Driver errors become the queue's (ErrTimeout, ErrConflict,
// ErrUnavailable, ...); fn's own errors stay in the chain.
func (q *DbQueue) Execute(ctx context.Context, fn func(*sql.Tx) error) error {
	return q.execute(ctx, "", fn)
}

// ExecuteMaintenance is Execute for housekeeping: its statements may run up
// to 60 s (SET LOCAL statement_timeout), as the application's did.
func (q *DbQueue) ExecuteMaintenance(ctx context.Context, fn func(*sql.Tx) error) error {
	return q.execute(ctx, "SET LOCAL statement_timeout = '60s'", fn)
}

func (q *DbQueue) execute(ctx context.Context, setup string, fn func(*sql.Tx) error) (err error) {
	tx, err := q.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", tasks.InterpretError(err))
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if setup != "" {
		if _, err := tx.ExecContext(ctx, setup); err != nil {
			return fmt.Errorf("set up transaction: %w", tasks.InterpretError(err))
		}
	}
	if err := fn(tx); err != nil {
		return tasks.InterpretError(err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit transaction: %w", tasks.InterpretError(err))
	}
	return nil
}

// ExecuteTx is Execute for code written against pgx: fn gets a pgx.Tx on
// the same pool, committed when fn returns nil and rolled back otherwise,
// with the same error translation.
func (q *DbQueue) ExecuteTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := q.db.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", tasks.InterpretError(err))
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }() // a no-op after Commit
	if err := fn(tx); err != nil {
		return tasks.InterpretError(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit transaction: %w", tasks.InterpretError(err))
	}
	return nil
}

// GetNextTask claims the best pending task of job jobID ("" for any job)
// through the queue's claim (tasks.Queue.ClaimJob, Claim), within the
// job's concurrency, and returns nil, nil when there is none.
func (q *DbQueue) GetNextTask(ctx context.Context, jobID string) (*Task, error) {
	var claimed []tasks.Task
	var err error
	if jobID == "" {
		claimed, err = q.db.queue.Claim(ctx, q.workerID, 1)
	} else {
		claimed, err = q.db.queue.ClaimJob(ctx, q.workerID, jobID, 1)
	}
	if err != nil || len(claimed) == 0 {
		return nil, err
	}
	c := claimed[0]
	return &Task{
		ID: c.ID, JobID: c.JobID, PageID: int(c.PageID), Path: c.Path, Status: TaskStatusRunning,
		CreatedAt: c.CreatedAt, StartedAt: c.StartedAt, RetryCount: int(c.RetryCount),
		SourceType: c.Source.Type, SourceURL: c.Source.URL, PriorityScore: c.PriorityScore,
		WorkerID: c.WorkerID, Attempt: c.Attempt, LeaseExpiresAt: c.LeaseExpiresAt,
	}, nil
}

// UpdateTaskStatus writes the status task carries, through the queue's
// lease-checked statements; ErrLeaseLost means the claim was no longer
// held and nothing was written:
//
//   - running: extends the lease (task.LeaseExpiresAt is updated);
//   - completed: records the result fields;
//   - failed: fails the task for good, with task.Error;
//   - pending: a failure to retry, with task.Error: retried after the
//     queue's backoff while the job's max_retries allows, else failed (the
//     queue counts retries; task.RetryCount is not written);
//   - skipped: finishes the task as skipped (not fetched), with task.Error
//     as the reason when set; never retried.
//
// Finishes from concurrent callers are written together, in one statement
// (group commit).
func (q *DbQueue) UpdateTaskStatus(ctx context.Context, task *Task) error {
	if task == nil {
		return &tasks.ArgumentError{Arg: "task", Reason: "nil"}
	}
	held := tasks.Task{ID: task.ID, JobID: task.JobID, WorkerID: task.WorkerID, Attempt: task.Attempt}
	switch task.Status {
	case TaskStatusRunning:
		extended, err := q.db.queue.ExtendLeases(ctx, []tasks.Task{held})
		if err != nil {
			return err
		}
		task.LeaseExpiresAt = extended[0].LeaseExpiresAt
		return nil
	case TaskStatusCompleted:
		r, err := task.result()
		if err != nil {
			return err
		}
		return q.finisher.finish(ctx, tasks.Outcome{Task: held, Result: r})
	case TaskStatusFailed, TaskStatusPending:
		cause := task.Error
		if cause == "" {
			cause = "failed"
		}
		return q.finisher.finish(ctx, tasks.Outcome{Task: held, Result: tasks.TaskResult{
			Err: errors.New(cause), Permanent: task.Status == TaskStatusFailed,
		}})
	case TaskStatusSkipped:
		var reason error
		if task.Error != "" {
			reason = errors.New(task.Error)
		}
		return q.finisher.finish(ctx, tasks.Outcome{Task: held, Result: tasks.TaskResult{Skip: true, Err: reason}})
	}
	return &tasks.ArgumentError{Arg: "task.Status", Reason: fmt.Sprintf("%q is not a task status", task.Status)}
}

// result is the task's result fields as the queue takes them.
func (t *Task) result() (tasks.TaskResult, error) {
	r := tasks.TaskResult{
		StatusCode:    t.StatusCode,
		ResponseTime:  msDuration(t.ResponseTime),
		CacheStatus:   t.CacheStatus,
		ContentType:   t.ContentType,
		ContentLength: t.ContentLength,
		RedirectURL:   t.RedirectURL,
		Timing: tasks.Timing{
			DNSLookup: msDuration(t.DNSLookupTime), TCPConnection: msDuration(t.TCPConnectionTime),
			TLSHandshake: msDuration(t.TLSHandshakeTime), TTFB: msDuration(t.TTFB),
			ContentTransfer: msDuration(t.ContentTransferTime),
		},
	}
	var err error
	if r.Headers, err = headersFromJSON("task.Headers", t.Headers); err != nil {
		return r, err
	}
	// The application records a second request only after a cache miss;
	// any of its fields set means there was one.
	if t.SecondResponseTime != 0 || t.SecondCacheStatus != "" || t.SecondContentLength != 0 || len(t.SecondHeaders) > 0 {
		s := &tasks.SecondRequest{
			ResponseTime:  msDuration(t.SecondResponseTime),
			CacheStatus:   t.SecondCacheStatus,
			ContentLength: t.SecondContentLength,
			Timing: tasks.Timing{
				DNSLookup: msDuration(t.SecondDNSLookupTime), TCPConnection: msDuration(t.SecondTCPConnectionTime),
				TLSHandshake: msDuration(t.SecondTLSHandshakeTime), TTFB: msDuration(t.SecondTTFB),
				ContentTransfer: msDuration(t.SecondContentTransferTime),
			},
		}
		if s.Headers, err = headersFromJSON("task.SecondHeaders", t.SecondHeaders); err != nil {
			return r, err
		}
		r.Second = s
	}
	if len(t.CacheCheckAttempts) > 0 {
		if err := json.Unmarshal(t.CacheCheckAttempts, &r.CacheCheckAttempts); err != nil {
			return r, &tasks.ArgumentError{Arg: "task.CacheCheckAttempts", Reason: err.Error()}
		}
	}
	return r, nil
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// headersFromJSON reads headers stored as JSON: an object whose values are
// a string or a list of strings (http.Header's form). Empty is none.
func headersFromJSON(arg string, b []byte) (http.Header, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, &tasks.ArgumentError{Arg: arg, Reason: err.Error()}
	}
	h := make(http.Header, len(raw))
	for k, v := range raw {
		var list []string
		if err := json.Unmarshal(v, &list); err == nil {
			h[k] = list
			continue
		}
		var one string
		if err := json.Unmarshal(v, &one); err != nil {
			return nil, &tasks.ArgumentError{Arg: arg, Reason: fmt.Sprintf("header %q: not a string or list of strings", k)}
		}
		h[k] = []string{one}
	}
	return h, nil
}

// EnqueueURLs adds pages to job jobID as tasks found by sourceType at
// sourceURL, through the queue's enqueue (deduplicated, max_pages exact
// under concurrent enqueues, no jobs-row lock). As in the application,
// pages with ID 0 are skipped and a page listed twice keeps its highest
// priority. The queue finds a page's row by the job's domain and the path,
// as the application's page upsert made it; the ID is not looked up.
func (q *DbQueue) EnqueueURLs(ctx context.Context, jobID string, pages []Page, sourceType, sourceURL string) error {
	unique := make([]tasks.Page, 0, len(pages))
	seen := make(map[int]int, len(pages))
	for _, p := range pages {
		if p.ID == 0 {
			continue
		}
		if i, ok := seen[p.ID]; ok {
			unique[i].Priority = max(unique[i].Priority, p.Priority)
			continue
		}
		seen[p.ID] = len(unique)
		unique = append(unique, tasks.Page{Path: p.Path, Priority: p.Priority})
	}
	if len(unique) == 0 {
		return nil
	}
	_, err := q.db.queue.EnqueueFrom(ctx, jobID, tasks.Source{Type: sourceType, URL: sourceURL}, unique)
	return err
}

// CleanupStuckJobs completes the jobs that have nothing left to run, and does
// the rest of the queue's periodic work with it (tasks.Queue.Maintain:
// expired leases rescued, counters rolled up).
func (q *DbQueue) CleanupStuckJobs(ctx context.Context) error {
	_, err := q.db.queue.Maintain(ctx)
	return err
}

// finisher writes the finishes of concurrent callers together: a caller
// that finds no write under way writes every finish waiting, in one
// tasks.Queue.Finish, and hands over to a waiting caller when more came in
// meanwhile. Nothing waits for a timer: a lone caller writes at once.
type finisher struct {
	q       *tasks.Queue
	mu      sync.Mutex
	writing bool
	waiting []*finishCall
}

type finishCall struct {
	ctx     context.Context
	outcome tasks.Outcome
	lead    chan struct{} // closed when this call is to write the next batch
	done    chan error    // its result, when another call wrote it
}

func (f *finisher) finish(ctx context.Context, o tasks.Outcome) error {
	c := &finishCall{ctx: ctx, outcome: o, lead: make(chan struct{}), done: make(chan error, 1)}
	f.mu.Lock()
	f.waiting = append(f.waiting, c)
	if !f.writing {
		f.writing = true
		close(c.lead)
	}
	f.mu.Unlock()
	select {
	case err := <-c.done:
		return err
	case <-c.lead:
	}
	// This call writes: take every waiting finish (once per task: a second
	// finish of one task waits for the next batch).
	f.mu.Lock()
	var batch, rest []*finishCall
	ids := map[string]bool{}
	for _, w := range f.waiting {
		if ids[w.outcome.Task.ID] || len(batch) == tasks.MaxBatch {
			rest = append(rest, w)
			continue
		}
		ids[w.outcome.Task.ID] = true
		batch = append(batch, w)
	}
	f.waiting = rest
	f.mu.Unlock()

	wctx, cancel := batchContext(batch)
	f.write(wctx, batch)
	cancel()

	f.mu.Lock()
	if len(f.waiting) > 0 {
		close(f.waiting[0].lead)
	} else {
		f.writing = false
	}
	f.mu.Unlock()
	return <-c.done
}

// batchContext is the context a batch is written under: it ends when every
// call in the batch has ended, so that one caller giving up does not fail
// the outcomes of the others it happened to write for.
func batchContext(batch []*finishCall) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	go func() {
		for _, c := range batch {
			select {
			case <-c.ctx.Done():
			case <-ctx.Done():
				return
			}
		}
		cancel()
	}()
	return ctx, cancel
}

// write records the batch's outcomes and tells each call its result. ctx
// bounds the statement; a refused outcome (bad input) refuses
// the whole statement, so then each is written alone, to refuse only it.
func (f *finisher) write(ctx context.Context, batch []*finishCall) {
	outcomes := make([]tasks.Outcome, len(batch))
	for i, c := range batch {
		outcomes[i] = c.outcome
	}
	rep, err := f.q.Finish(ctx, outcomes)
	if errors.Is(err, ErrInvalidArgument) && len(batch) > 1 {
		for _, c := range batch {
			f.write(c.ctx, []*finishCall{c})
		}
		return
	}
	lost := map[string]bool{}
	for _, id := range rep.Lost {
		lost[id] = true
	}
	busy := map[string]bool{}
	for _, o := range rep.Busy {
		busy[o.Task.ID] = true
	}
	for _, c := range batch {
		t := c.outcome.Task
		switch {
		case busy[t.ID] && err != nil:
			c.done <- fmt.Errorf("finish task %s: %w", t.ID, err)
		case busy[t.ID]:
			c.done <- fmt.Errorf("finish task %s: still locked by another transaction: %w", t.ID, context.Cause(ctx))
		case err != nil && len(rep.Busy) == 0 && rep.Completed+rep.Retried+rep.Failed == 0:
			c.done <- err
		case lost[t.ID]:
			c.done <- fmt.Errorf("finish task %s (attempt %d) for %s: %w", t.ID, t.Attempt, t.WorkerID, ErrLeaseLost)
		default:
			c.done <- nil
		}
	}
}
