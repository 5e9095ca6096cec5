// Package faults holds the queue's process-level fault tests: several worker
// processes on one queue, as on separate hosts, running known pages or
// crawling sites whose pages they discover as they go; workers killed with
// SIGKILL at random moments and replaced, and at chosen points of writing a
// task's outcome with the links it found; PostgreSQL restarted under running
// workers; contexts cancelled in the middle of a claim or a finish; and
// statement and lock timeouts.
//
// Every test asserts invariants, never timings: no job ever runs more tasks
// than its concurrency (checked by a monitor during the run, in one snapshot
// each time, with the shard counters against the tasks actually running),
// no task runs twice at the same time, every task ends completed with its
// attempts accounted for, and job progress is exact.
//
// The worker binaries are built once per test run: cmd/taskq ("taskq work
// --simulate"), and faultworker, a test-only worker that also records each
// handler run, with its start and end, in the test's database, can crawl a
// synthetic site, and can hold a run's result for a test to kill it there.
//
// The multi-process tests each run on a private PostgreSQL cluster (package
// pgclustertest): the restart test because the shared server must never be
// restarted, the others because their worker processes hold some fifty
// connections each, half of the shared server's max_connections, which the
// other test packages running at the same time need too. The tests of
// cancellation and timeouts, and those killing one small worker process at
// a chosen point, use the shared server.
//
// The package has no non-test code; this file documents it.
package faults
