package faults_test

import (
	"fmt"
	"testing"
)

// TestWorkerProcessesShareOneQueue runs four "taskq work --simulate"
// processes of eight workers each, as four hosts would, over 20,000 tasks in
// jobs whose concurrency limits (2 to 10) are well below the 32 workers, two
// processes claiming a task per worker and two in batches. A monitor checks
// during the run that no job exceeds its limit and that the shard counters
// match the tasks running. At the end every task was claimed exactly once
// (attempt 1) and completed, the processes' own counts add up to the total,
// and each job's progress is exact.
func TestWorkerProcessesShareOneQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 tasks over four processes")
	}
	t.Parallel()
	bin := build(t).taskq
	f, _ := setupPrivate(t)
	jobs, total := createJobs(t, f.queue, []jobSpec{
		{concurrency: 2, tasks: 1250}, {concurrency: 3, tasks: 1875}, {concurrency: 4, tasks: 2500},
		{concurrency: 5, tasks: 3125}, {concurrency: 8, tasks: 5000}, {concurrency: 10, tasks: 6250},
	})
	mon := startMonitor(t, f.pool, false)

	var procs []*proc
	for i, batch := range []int{1, 16, 1, 16} {
		procs = append(procs, startProc(t, fmt.Sprintf("taskq-%d", i), f.url, bin, "work",
			"--simulate", "--delay", "2ms", "--workers", "8", "--claim-batch", fmt.Sprint(batch), "--poll", "50ms"))
	}
	waitCompleted(t, f.pool, total, func() []*proc { return procs })
	sum := procStats{}
	for _, p := range procs {
		p.stop(t)
		s := p.stats(t)
		sum.Completed += s.Completed
		sum.Failed += s.Failed
		sum.Retried += s.Retried
		sum.HandedBack += s.HandedBack
		t.Logf("%s: %+v", p.name, s)
	}
	mon.finish(t)
	if want := (procStats{Completed: total}); sum != want {
		t.Errorf("the processes recorded %+v in all, want %+v", sum, want)
	}
	checkFinal(t, f.pool, f.queue, jobs, total, 0, true)
}
