package faults_test

import (
	"context"
	"fmt"
	"testing"
)

// TestGracefulStopLeavesNothingRunning stops busy "taskq work" processes
// with SIGTERM, four times over, alternating the two ways of claiming: the
// pool's graceful shutdown promises that nothing is left running, so after
// each exit no task may be running and the shard counters must balance. A
// task left running would wait out its one-minute lease and lose one of its
// retries to the rescue. (A claim in flight at SIGTERM is where that used to
// happen: cut off by the cancelled context while the server committed it.)
func TestGracefulStopLeavesNothingRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("four worker processes, one after another")
	}
	t.Parallel()
	bin := build(t).taskq
	f := setup(t)
	ctx := context.Background()
	_, total := createJobs(t, f.queue, []jobSpec{{concurrency: 64, tasks: 5000}})
	for i := range 4 {
		from, err := completed(ctx, f.pool)
		if err != nil {
			t.Fatal(err)
		}
		p := startProc(t, fmt.Sprintf("taskq-%d", i), f.url, bin, "work", "--simulate", "--delay", "1ms",
			"--workers", "8", "--claim-batch", fmt.Sprint([]int{1, 8}[i%2]), "--poll", "50ms")
		waitCompleted(t, f.pool, min(total, from+150), func() []*proc { return []*proc{p} })
		p.stop(t)
		var running, counted int
		err = f.pool.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM tasks WHERE status = 'running'),
			       (SELECT sum(claims) FROM job_shards) - (SELECT sum(releases) FROM job_tallies)`).Scan(&running, &counted)
		if err != nil {
			t.Fatal(err)
		}
		s := p.stats(t)
		t.Logf("%s: %+v", p.name, s)
		if running != 0 || counted != 0 {
			t.Fatalf("after %s stopped gracefully: %d tasks running, %d per the shard counters; want none", p.name, running, counted)
		}
	}
}
