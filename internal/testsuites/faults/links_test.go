package faults_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/tasks"
)

// crawlJob creates a job that follows links on domain and enqueues its
// homepage, the one page it knows.
func crawlJob(t *testing.T, q *tasks.Queue, domain string, concurrency, maxPages int) string {
	t.Helper()
	ctx := context.Background()
	job, err := q.CreateJob(ctx, tasks.JobOptions{
		Domain: domain, Concurrency: concurrency, MaxPages: maxPages, FindLinks: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, job.ID, []tasks.Page{{Path: "/", Priority: 1}}); err != nil {
		t.Fatal(err)
	}
	return job.ID
}

// jobTask is what the crawl tests read of a task.
type jobTask struct {
	Path       string
	Status     string
	Attempt    int32
	RetryCount int32
}

func jobTasks(t *testing.T, pool *pgxpool.Pool, jobID string) []jobTask {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT path, status::text, attempt, retry_count FROM tasks WHERE job_id = $1 ORDER BY path`, jobID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[jobTask])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkDiscovered checks what a crawl of site from its homepage left in the
// database, once every worker has stopped: the job's tasks are exactly the
// homepage and the links of its completed pages, each once (nothing found
// was lost, nothing is there twice), and so are the pages of its domain;
// admitted of them completed, the rest skipped past max_pages. It returns
// how many were skipped.
func checkDiscovered(t *testing.T, pool *pgxpool.Pool, jobID string, site *crawl.Site, admitted int) (skipped int) {
	t.Helper()
	found := map[string]bool{"/": true}
	var paths []string
	completed := 0
	for _, task := range jobTasks(t, pool, jobID) {
		paths = append(paths, task.Path)
		switch task.Status {
		case "completed":
			completed++
			for _, l := range site.Links(task.Path) {
				found[l] = true
			}
		case "skipped":
			skipped++
		}
	}
	want := slices.Sorted(maps.Keys(found))
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("job %s: tasks against the pages its completed tasks found (-want +got):\n%s", jobID, diff)
	}
	if diff := cmp.Diff(want, pagesOf(t, pool, jobID)); diff != "" {
		t.Errorf("job %s: pages of its domain (-want +got):\n%s", jobID, diff)
	}
	if completed != admitted {
		t.Errorf("job %s: %d tasks completed, want %d admitted", jobID, completed, admitted)
	}
	return skipped
}

// checkQuietLogs fails t for every warning or error a process logged: a
// deadlock, a failed enqueue or a retried finish would each have logged one.
func checkQuietLogs(t *testing.T, procs []*proc) {
	t.Helper()
	for _, p := range procs {
		for line := range strings.Lines(p.stderr.String()) {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				t.Errorf("%s logged: %s", p.name, strings.TrimSpace(line))
			}
		}
	}
}

// TestWorkerProcessesAddOverlappingLinks crawls two sites of 600 pages
// from their homepages alone with three faultworker processes of 11 workers
// each, as three hosts would: every fetched page yields its 30 links (20
// navigation links, the same on every page, and 10 content links), so the
// workers keep adding overlapping link sets to the jobs they run. Two
// processes enqueue a page's links from the handler (Queue.Enqueue, as the
// application's worker does: 22 enqueuers at once), the third returns them
// with the result for the pool to write with the outcome. One job has
// max_pages 400, the other none.
//
// Checked in the database afterwards: exactly max_pages tasks admitted in
// the capped job and every page in the other; every page found (the
// homepage and the links of every completed page) is one task of its job,
// the admitted all completed and the rest skipped, and one page of its
// domain; every admitted task ran once (fault_runs) and completed at its
// first attempt; job progress exact. No process logged a warning: no
// enqueue or finish failed, so none met a deadlock. A monitor checks the
// concurrency limits throughout.
func TestWorkerProcessesAddOverlappingLinks(t *testing.T) {
	if testing.Short() {
		t.Skip("three worker processes crawling 1,000 pages")
	}
	t.Parallel()
	bin := build(t).faultworker
	f, _ := setupPrivate(t)
	if _, err := f.pool.Exec(context.Background(), runsSchema); err != nil {
		t.Fatal(err)
	}
	const sitePages, maxPages = 600, 400
	site := &crawl.Site{Pages: sitePages}
	capped := crawlJob(t, f.queue, "capped.example", 32, maxPages)
	uncapped := crawlJob(t, f.queue, "uncapped.example", 32, 0)
	mon := startMonitor(t, f.pool, false)

	var procs []*proc
	for i, mode := range []struct {
		batch   int
		enqueue bool
	}{{1, true}, {8, true}, {8, false}} {
		name := fmt.Sprintf("fw%d", i)
		args := []string{"--id", name, "--workers", "11", "--claim-batch", fmt.Sprint(mode.batch),
			"--site-pages", fmt.Sprint(sitePages), "--poll", "50ms", "--maintain", "200ms"}
		if mode.enqueue {
			args = append(args, "--enqueue-links")
		}
		procs = append(procs, startProc(t, name, f.url, bin, args...))
	}
	waitCompleted(t, f.pool, maxPages+sitePages, func() []*proc { return procs })
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
	checkQuietLogs(t, procs)
	if want := (procStats{Completed: maxPages + sitePages}); sum != want {
		t.Errorf("the processes recorded %+v in all, want %+v", sum, want)
	}

	skipped := checkDiscovered(t, f.pool, capped, site, maxPages)
	if skipped == 0 {
		t.Errorf("no page of the capped job was skipped past max_pages")
	}
	if n := checkDiscovered(t, f.pool, uncapped, site, sitePages); n != 0 {
		t.Errorf("%d pages of the job without max_pages were skipped", n)
	}
	checkFinal(t, f.pool, f.queue, []string{capped, uncapped}, maxPages+sitePages, skipped, true)
	checkRuns(t, f)
	var runs int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM fault_runs").Scan(&runs); err != nil {
		t.Fatal(err)
	}
	if runs != maxPages+sitePages {
		t.Errorf("%d handler runs, want one per admitted page (%d)", runs, maxPages+sitePages)
	}
}

// TestSIGKILLedWorkerLinksLandOnce kills a faultworker process with SIGKILL
// at three points of its crawl's first task, the homepage, whose links are
// the only way to the rest of the site, and then lets a second process
// finish the crawl (a 2s lease, so that its rescuer soon takes back what the
// victim held). The points are reached through hooks, never timings:
//
//   - holding its result: the handler has the homepage's links and holds
//     them (faultworker --hold, seen in fault_runs.held_at); nothing of the
//     outcome is written;
//   - inside its outcome's transaction: the pool is writing the outcome and
//     the links' tasks in one transaction, which waits on a task row of one
//     of the links the test is inserting in a transaction of its own (seen
//     in pg_blocking_pids); killed there, then the test's insert rolled
//     back, the transaction never commits;
//   - after its outcome is written: the homepage is completed, and the
//     victim's next runs hold (--hold '/page/*'), so nothing else happened.
//
// In the first two the database shows the homepage still running, attempt
// 1, and no other task: the links died with the outcome. (In the second
// their pages are there: the pool creates them ahead of the outcome's
// transaction, and a page without a task is harmless.) Once the
// lease expired and the homepage ran again (attempt 2) its links are there.
// In the third, in the first snapshot where the homepage is completed its
// links are all tasks already, and it never runs again. In all three at the
// end: every page of the site is one task and one page row, completed; the
// homepage completed once, its runs those the point implies; job progress
// exact; no run of a task overlapped another; the second process logged no
// warning.
func TestSIGKILLedWorkerLinksLandOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("worker processes killed and replaced")
	}
	t.Parallel()
	const sitePages = 40
	site := &crawl.Site{Pages: sitePages}
	homeLinks := site.Links("/")

	tests := []struct {
		name string
		// killAt starts the victim (start) and returns once it is at the
		// point to kill it, with what to undo once it is dead.
		killAt func(t *testing.T, f fixture, jobID string, start func(hold string) *proc) (victim *proc, afterKill func())
		// rerun: the homepage's outcome was lost and it runs again.
		rerun bool
		// pagesAhead: the links' pages were created before the kill.
		pagesAhead bool
		// finishedRuns of the homepage: its runs that ended, the victim's
		// included if its handler had returned.
		finishedRuns int
	}{
		{
			name:  "holding its result",
			rerun: true, finishedRuns: 1,
			killAt: func(t *testing.T, f fixture, jobID string, start func(string) *proc) (*proc, func()) {
				victim := start("/")
				waitFor(t, f.pool, victim, "the homepage's run to hold its result", `
					SELECT EXISTS (SELECT 1 FROM fault_runs r JOIN tasks t ON t.id = r.task_id
					               WHERE t.job_id = $1 AND t.path = '/' AND r.held_at IS NOT NULL)`, jobID)
				return victim, func() {}
			},
		},
		{
			name:  "inside its outcome's transaction",
			rerun: true, pagesAhead: true, finishedRuns: 2,
			killAt: func(t *testing.T, f fixture, jobID string, start func(string) *proc) (*proc, func()) {
				// Before the victim starts: its write of the homepage's
				// links' tasks must find this insert of one of them under
				// way.
				if _, err := f.pool.Exec(context.Background(), `
					INSERT INTO pages (domain_id, path) SELECT domain_id, $2 FROM jobs WHERE id = $1`,
					jobID, homeLinks[0]); err != nil {
					t.Fatal(err)
				}
				b := block(t, f.url, `
					INSERT INTO tasks (job_id, page_id, path)
					SELECT j.id, p.id, p.path FROM jobs j JOIN pages p ON p.domain_id = j.domain_id
					WHERE j.id = $1 AND p.path = $2`,
					jobID, homeLinks[0])
				victim := start("")
				pid := b.waitBlocked(t, f.pool)
				var app string
				if err := f.pool.QueryRow(context.Background(),
					"SELECT application_name FROM pg_stat_activity WHERE pid = $1", pid).Scan(&app); err != nil {
					t.Fatal(err)
				}
				if app != "faultworker "+victim.name {
					t.Fatalf("session %d (%q) waits on the test's page insert, want the victim's", pid, app)
				}
				return victim, func() {
					// The victim's statement goes on, to find its client
					// gone: its transaction rolls back, never committed.
					b.release(t)
					waitStatementOver(t, f.pool, pid)
				}
			},
		},
		{
			name:         "after its outcome is written",
			finishedRuns: 1,
			killAt: func(t *testing.T, f fixture, jobID string, start func(string) *proc) (*proc, func()) {
				victim := start("/page/*")
				// One snapshot: the outcome and the links commit together.
				var tasksThen int
				waitUntil(t, victim, "the homepage completed", func() bool {
					var completed bool
					err := f.pool.QueryRow(context.Background(), `
						SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = $1 AND path = '/' AND status = 'completed'),
						       (SELECT count(*) FROM tasks WHERE job_id = $1)`, jobID).Scan(&completed, &tasksThen)
					if err != nil {
						t.Fatal(err)
					}
					return completed
				})
				if tasksThen != 1+len(homeLinks) {
					t.Errorf("the homepage was completed with %d tasks in the job, want it and its %d links",
						tasksThen, len(homeLinks))
				}
				return victim, func() {}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bin := build(t).faultworker
			f := setup(t)
			ctx := context.Background()
			if _, err := f.pool.Exec(ctx, runsSchema); err != nil {
				t.Fatal(err)
			}
			jobID := crawlJob(t, f.queue, "site.example", 4, 0)
			common := []string{"--lease", "2s", "--poll", "50ms", "--site-pages", fmt.Sprint(sitePages)}
			start := func(hold string) *proc {
				args := append([]string{"--id", "victim", "--workers", "2", "--maintain", "-1s"}, common...)
				if hold != "" {
					args = append(args, "--hold", hold)
				}
				return startProc(t, "victim", f.url, bin, args...)
			}
			victim, afterKill := tc.killAt(t, f, jobID, start)
			killRecorded(t, f, victim)
			afterKill()
			// A statement the victim sent just before it died still runs
			// (a claim may commit); the state is settled once its sessions
			// are gone.
			waitFor(t, f.pool, nil, "the victim's sessions to end", `
				SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1)`, "faultworker "+victim.name)

			got := jobTasks(t, f.pool, jobID)
			if tc.rerun {
				// Fatal: without the homepage's rerun the crawl cannot end.
				want := []jobTask{{Path: "/", Status: "running", Attempt: 1}}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("the job's tasks after the kill (-want +got):\n%s", diff)
				}
				wantPages := []string{"/"}
				if tc.pagesAhead {
					wantPages = append(wantPages, homeLinks...)
					slices.Sort(wantPages)
				}
				if diff := cmp.Diff(wantPages, pagesOf(t, f.pool, jobID)); diff != "" {
					t.Errorf("pages of the domain after the kill (-want +got):\n%s", diff)
				}
			} else {
				var paths []string
				for _, task := range got {
					paths = append(paths, task.Path)
				}
				want := append([]string{"/"}, homeLinks...)
				slices.Sort(want)
				if diff := cmp.Diff(want, paths); diff != "" {
					t.Errorf("the job's tasks after the kill: the homepage and its links (-want +got):\n%s", diff)
				}
			}
			job, err := f.queue.Job(ctx, jobID)
			if err != nil {
				t.Fatal(err)
			}
			// Percent is job_percent_done's real.
			if diff := cmp.Diff(rowCounts(got), job.Progress, cmpopts.EquateApprox(1e-6, 0)); diff != "" {
				t.Errorf("progress after the kill, against the task rows (-want +got):\n%s", diff)
			}

			rescuer := startProc(t, "rescuer", f.url, bin,
				append([]string{"--id", "rescuer", "--workers", "4", "--maintain", "100ms"}, common...)...)
			waitCompleted(t, f.pool, sitePages, func() []*proc { return []*proc{rescuer} })
			rescuer.stop(t)
			checkQuietLogs(t, []*proc{rescuer})

			checkDiscovered(t, f.pool, jobID, site, sitePages)
			checkFinal(t, f.pool, f.queue, []string{jobID}, sitePages, 0, false)
			checkRuns(t, f)
			var home jobTask
			var runs, finished int
			err = f.pool.QueryRow(ctx, `
				SELECT t.path, t.status::text, t.attempt, t.retry_count,
				       (SELECT count(*) FROM fault_runs r WHERE r.task_id = t.id),
				       (SELECT count(*) FROM fault_runs r WHERE r.task_id = t.id AND r.ended_at IS NOT NULL)
				FROM tasks t WHERE t.job_id = $1 AND t.path = '/'`, jobID).
				Scan(&home.Path, &home.Status, &home.Attempt, &home.RetryCount, &runs, &finished)
			if err != nil {
				t.Fatal(err)
			}
			wantHome, wantRuns := jobTask{Path: "/", Status: "completed", Attempt: 1}, 1
			if tc.rerun {
				wantHome.Attempt, wantHome.RetryCount, wantRuns = 2, 1, 2
			}
			if diff := cmp.Diff(wantHome, home); diff != "" {
				t.Errorf("the homepage's task (-want +got):\n%s", diff)
			}
			if runs != wantRuns || finished != tc.finishedRuns {
				t.Errorf("the homepage ran %d times, %d of them to the end; want %d, %d", runs, finished, wantRuns, tc.finishedRuns)
			}
		})
	}
}

// pagesOf lists the paths of the pages of a job's domain.
func pagesOf(t *testing.T, pool *pgxpool.Pool, jobID string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT p.path FROM pages p JOIN jobs j ON j.domain_id = p.domain_id WHERE j.id = $1 ORDER BY p.path`, jobID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rowCounts is the progress a job's task rows make.
func rowCounts(ts []jobTask) tasks.Progress {
	var p tasks.Progress
	for _, task := range ts {
		p.Total++
		switch task.Status {
		case "completed":
			p.Completed++
		case "failed":
			p.Failed++
		case "skipped":
			p.Skipped++
		case "running":
			p.Running++
		default:
			p.Pending++
		}
	}
	if p.Total > 0 {
		p.Percent = 100 * float64(p.Completed+p.Failed+p.Skipped) / float64(p.Total)
	}
	return p
}

// waitFor polls query (a boolean, with args) until it holds; see waitUntil.
func waitFor(t *testing.T, pool *pgxpool.Pool, p *proc, what, query string, args ...any) {
	t.Helper()
	waitUntil(t, p, what, func() bool {
		var ok bool
		if err := pool.QueryRow(context.Background(), query, args...).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	})
}

// waitUntil calls done until it returns true. It fails t if p (unless nil)
// exits first, or if done is not true within stallLimit: a bound for a
// stuck run, not a timing the test depends on.
func waitUntil(t *testing.T, p *proc, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(stallLimit)
	for !done() {
		if p != nil && p.exited() {
			t.Fatalf("%s exited waiting for %s: %v; stderr:\n%s", p.name, what, p.err, tail(p.stderr.String(), 3000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s", what, stallLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
