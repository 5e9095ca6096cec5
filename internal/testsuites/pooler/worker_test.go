package pooler_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// TestWorkerPoolPollsThroughPooler runs the worker pool as `taskq work
// --pooler` does: every statement through PgBouncer, no LISTEN, idle
// workers polling. The pool starts on an empty queue and goes idle; the job
// enqueued afterwards is found by polling alone and drained exactly once,
// with no claim, completion or maintenance error logged.
func TestWorkerPoolPollsThroughPooler(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 25} {
		t.Run(fmt.Sprintf("claim batch %d", batch), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			const workers, n = 8, 300
			f := setup(t, pgbouncertest.Options{PoolSize: 2})
			d := f.open(t, db.Options{Pooler: true, MaxConns: workers + 4})
			var logs sharedtest.Buffer
			h := &recorder{}
			p := worker.New(d.Queue(), h, worker.Config{
				Workers: workers, ClaimBatch: batch, PollInterval: 20 * time.Millisecond,
				MaintainInterval: 50 * time.Millisecond,
				Logger:           slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
			})
			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			done := make(chan error, 1)
			go func() { done <- p.Run(runCtx) }()
			waitFor(t, func() bool { return p.Stats().ClaimCalls >= 1 })

			id := job(t, d, tasks.JobOptions{Domain: "example.com", Concurrency: 20}, n)
			waitFor(t, func() bool { return p.Stats().Completed == n })
			stop()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}

			if twice := h.ranTwice(); twice != 0 {
				t.Errorf("%d tasks ran more than once", twice)
			}
			if s := p.Stats(); s.Completed != n || s.Lost != 0 || s.Unrecorded != 0 || s.Failed != 0 {
				t.Errorf("pool stats %+v", s)
			}
			if logs.String() != "" {
				t.Errorf("the pool logged warnings through pgbouncer:\n%s", logs.String())
			}
			if _, err := d.Queue().Maintain(ctx); err != nil {
				t.Fatalf("Maintain after the pool stopped: %v\npgbouncer log:\n%s", err, f.bouncer.Log())
			}
			j, err := d.GetJob(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			want := tasks.Progress{Total: n, Completed: n, Percent: 100}
			if diff := cmp.Diff(want, j.Progress); diff != "" || j.Status != tasks.JobStatusCompleted {
				t.Errorf("job %s, progress (-want +got):\n%s", j.Status, diff)
			}
			for path, r := range f.taskRows(t, id) {
				if r != (taskRow{Status: "completed", Attempt: 1}) {
					t.Errorf("task %s: %+v", path, r)
				}
			}
		})
	}
}

// TestListenThroughPoolerIsDeaf shows why workers behind a transaction
// pooler must poll. LISTEN through PgBouncer succeeds: it runs in one
// transaction on whichever server connection PgBouncer picks, and the
// server session keeps listening after PgBouncer has unlinked it from the
// client. A notification then reaches that server session while it sits
// idle in the pool, and PgBouncer drops it ("got packet 'A' from server when
// not linked"); the listening client never hears of it, and nothing reports
// an error. A listener on a direct connection hears the same notification.
func TestListenThroughPoolerIsDeaf(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := setup(t, pgbouncertest.Options{PoolSize: 2})

	var listenErrs sharedtest.Buffer
	listen := func(url string) *tasks.Waker {
		w := tasks.NewWaker()
		connected := w.Wait() // closed by the wake-up after LISTEN succeeds
		go func() {
			_ = tasks.Listen(ctx, url, w, func(err error) { fmt.Fprintln(&listenErrs, err) })
		}()
		select {
		case <-connected:
		case <-time.After(time.Minute):
			t.Fatalf("LISTEN on %s did not complete within a minute: %s", url, listenErrs.String())
		}
		return w
	}
	direct, pooled := listen(f.directURL), listen(f.bouncer.URL)
	directWoken, pooledWoken := direct.Wait(), pooled.Wait()

	// Notify as enqueueing does, from outside the pooler, so that no
	// client of PgBouncer is linked to a server connection meanwhile.
	notifier := connect(t, f.directURL, pgx.QueryExecModeCacheStatement)
	if _, err := notifier.Exec(ctx, "SELECT pg_notify($1, 'new tasks')", tasks.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	select {
	case <-directWoken:
	case <-time.After(time.Minute):
		t.Fatal("the listener on a direct connection was not woken within a minute")
	}
	const dropped = "got packet 'A' from server when not linked"
	waitFor(t, func() bool { return strings.Contains(f.bouncer.Log(), dropped) })
	// PgBouncer has discarded the notification: it cannot arrive later.
	select {
	case <-pooledWoken:
		t.Fatal("the listener through pgbouncer was woken by the notification")
	default:
	}
	t.Logf("PgBouncer's log: %s", lastLine(f.bouncer.Log(), dropped))
	// Nor did the listener see any error: the failure is silent.
	if s := listenErrs.String(); s != "" {
		t.Errorf("listener errors: %s", s)
	}
}

// TestListenThroughPoolerLeaksToOtherClients: with one server connection,
// a LISTEN made through PgBouncer stays on the server session, and the
// next client to run a transaction there receives the notifications: here
// a client that never listened gets one it sent for the listener, while
// the listener gets nothing. Delivery follows whichever client PgBouncer
// has linked to that server at the moment, not who listened.
func TestListenThroughPoolerLeaksToOtherClients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, pgbouncertest.Options{PoolSize: 1})

	listener := connect(t, f.bouncer.URL, pgx.QueryExecModeSimpleProtocol)
	if _, err := listener.Exec(ctx, "LISTEN "+tasks.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(f.bouncer.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	var mu sync.Mutex
	var strayed []string
	cfg.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
		mu.Lock()
		strayed = append(strayed, n.Channel+": "+n.Payload)
		mu.Unlock()
	}
	other, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if _, err := other.Exec(ctx, "SELECT pg_notify('"+tasks.NotifyChannel+"', 'for the listener')"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := strayed
	mu.Unlock()
	if diff := cmp.Diff([]string{tasks.NotifyChannel + ": for the listener"}, got); diff != "" {
		t.Fatalf("notifications received by a client that never listened (-want +got):\n%s", diff)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err == nil {
		t.Fatalf("the listener received %+v", n)
	}
}

// recorder is a handler that counts runs per task.
type recorder struct {
	mu   sync.Mutex
	runs map[string]int
}

func (r *recorder) Handle(_ context.Context, t tasks.Task) tasks.TaskResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	r.runs[t.ID]++
	return tasks.TaskResult{StatusCode: 200}
}

func (r *recorder) ranTwice() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.runs {
		if c > 1 {
			n++
		}
	}
	return n
}

// waitFor waits up to a minute for cond, checked every 5ms.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lastLine(log, containing string) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], containing) {
			return lines[i]
		}
	}
	return ""
}
