package faults_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// TestPostgresRestartUnderRunningWorkers restarts PostgreSQL ("pg_ctl
// restart -m fast", which disconnects every session and rolls back every
// open transaction) twice in the middle of a run, under two "taskq work"
// processes and an in-process worker.Pool. The cluster is a private one:
// the shared server is never restarted. The workers reconnect and finish.
//
// No completion is lost: every task ends completed. None is applied twice:
// a Finish whose reply the restart swallowed and that is retried only
// lands while the same claim holds the task, so the retry finds it gone;
// the shard counters balance and job progress is exact, which a double
// count would break. A claim whose reply was lost leaves its task running
// with nobody working on it, until its lease expires and a rescue returns
// it with retry_count + 1: so every task's attempts are 1 + its retries.
func TestPostgresRestartUnderRunningWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private PostgreSQL cluster")
	}
	t.Parallel()
	bin := build(t).taskq
	f, cluster := setupPrivate(t)
	ctx := context.Background()
	url, pool, q := f.url, f.pool, f.queue
	jobs, total := createJobs(t, q, []jobSpec{
		{concurrency: 3, tasks: 1000}, {concurrency: 5, tasks: 1500},
		{concurrency: 8, tasks: 2500}, {concurrency: 12, tasks: 3000},
	})
	mon := startMonitor(t, pool, true)

	procs := []*proc{
		startProc(t, "taskq-0", url, bin, "work", "--simulate", "--delay", "2ms", "--workers", "6", "--claim-batch", "1", "--poll", "100ms"),
		startProc(t, "taskq-1", url, bin, "work", "--simulate", "--delay", "2ms", "--workers", "6", "--claim-batch", "10", "--poll", "100ms"),
	}
	// The in-process pool has a short lease, so that its rescuer soon returns
	// tasks whose claim reply was lost in a restart (the taskq command's lease
	// is a minute and cannot be changed).
	d, err := db.Open(ctx, url, db.Options{MaxConns: 8, Queue: tasks.Config{Lease: 3 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	inproc := worker.New(d.Queue(), crawl.Simulator{Delay: 2 * time.Millisecond}, worker.Config{
		Workers: 4, ClaimBatch: 5, ID: "inproc", ListenURL: url, PollInterval: 100 * time.Millisecond,
		MaintainInterval: 500 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	runCtx, stopPool := context.WithCancel(ctx)
	defer stopPool()
	poolDone := make(chan error, 1)
	go func() { poolDone <- inproc.Run(runCtx) }()

	startTime := func() time.Time {
		var at time.Time
		if err := pool.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	before := startTime()
	for _, share := range []float64{0.25, 0.6} {
		waitCompleted(t, pool, int(share*float64(total)), func() []*proc { return procs })
		if err := cluster.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		n, _ := completed(ctx, pool)
		t.Logf("restarted PostgreSQL at %.0f%% of the tasks; %d completed after the restart", 100*share, n)
	}
	if after := startTime(); !after.After(before) {
		t.Fatalf("the server was not restarted: started at %s, and at %s before", after, before)
	}
	waitCompleted(t, pool, total, func() []*proc { return procs })

	sum := procStats{}
	for _, p := range procs {
		p.stop(t)
		s := p.stats(t)
		sum.Completed += s.Completed
		sum.Failed += s.Failed
		sum.HandedBack += s.HandedBack
		t.Logf("%s: %+v; %d warnings logged", p.name, s, strings.Count(p.stderr.String(), "level=WARN"))
	}
	stopPool()
	if err := <-poolDone; err != nil {
		t.Fatal(err)
	}
	s := inproc.Stats()
	t.Logf("in-process pool: %d completed, %d lost, %d unrecorded", s.Completed, s.Lost, s.Unrecorded)
	sum.Completed += int(s.Completed)
	sum.Failed += int(s.Failed)
	mon.finish(t)

	// Each completion a worker saw acknowledged landed once; an
	// acknowledgement lost in a restart makes the sum smaller, never larger.
	if sum.Completed > total || sum.Failed != 0 || sum.HandedBack != 0 {
		t.Errorf("the workers counted %d completions, %d failures and %d hand-backs of %d tasks",
			sum.Completed, sum.Failed, sum.HandedBack, total)
	}
	checkFinal(t, pool, q, jobs, total, 0, false)
}
