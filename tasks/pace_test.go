package tasks_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// claimAll claims with batches of n until a claim returns nothing.
func claimAll(t *testing.T, f fixture, worker string, n int) []tasks.Task {
	t.Helper()
	var out []tasks.Task
	for {
		got, err := f.queue.Claim(context.Background(), worker, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return out
		}
		out = append(out, got...)
	}
}

func countByJob(ts []tasks.Task) map[string]int {
	m := map[string]int{}
	for _, t := range ts {
		m[t.JobID]++
	}
	return m
}

// Two jobs on a paced domain share its pace: between them, one task per
// interval, whichever job it comes from, while a job on another domain is
// claimed as fast as its concurrency allows; pausing one of the two leaves
// the other's pace as it was.
func TestPaceIsSharedByTheDomainsJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	a := f.job(t, tasks.JobOptions{Domain: "paced.example", Concurrency: 50}, 20)
	b := f.job(t, tasks.JobOptions{Domain: "paced.example", Concurrency: 50}, 20)
	free := f.job(t, tasks.JobOptions{Domain: "free.example", Concurrency: 50}, 20)
	if err := f.queue.SetDomainPace(ctx, "paced.example", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	got := countByJob(claimAll(t, f, "w", 100))
	if got[free.ID] != 20 || got[a.ID]+got[b.ID] != 1 {
		t.Fatalf("first round claimed %v: want all 20 of the unpaced job and one task of the paced domain", got)
	}
	for range 5 {
		f.clock.Advance(9 * time.Second)
		if got := claimAll(t, f, "w", 100); len(got) != 0 {
			t.Fatalf("9 s after the last start, claimed %d tasks of the paced domain", len(got))
		}
		f.clock.Advance(time.Second)
		got := claimAll(t, f, "w", 100)
		if len(got) != 1 || !got[0].Paced {
			t.Fatalf("10 s after the last start: claimed %v, want one paced task", got)
		}
	}

	// Paused, job a takes nothing; b keeps the domain's pace, no faster.
	if err := f.queue.PauseJob(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		f.clock.Advance(10 * time.Second)
		got := claimAll(t, f, "w", 100)
		if len(got) != 1 || got[0].JobID != b.ID {
			t.Fatalf("with job a paused: claimed %v, want one task of job b", got)
		}
	}
	pace, err := f.queue.DomainPace(ctx, "paced.example")
	if err != nil {
		t.Fatal(err)
	}
	if pace.Interval != 10*time.Second || pace.Floor != 10*time.Second || pace.Source != tasks.PaceSet {
		t.Errorf("pace %+v, want floor and interval 10s, set", pace)
	}
	if want := f.clock.Now().Add(10 * time.Second); !pace.NextAllowedAt.Equal(want) {
		t.Errorf("next allowed at %v, want %v", pace.NextAllowedAt, want)
	}

	// Cleared, the domain is claimed freely again.
	if had, err := f.queue.ClearDomainPace(ctx, "paced.example"); err != nil || !had {
		t.Fatalf("ClearDomainPace = %v, %v", had, err)
	}
	if got := claimAll(t, f, "w", 100); len(got) < 10 {
		t.Fatalf("after clearing the pace claimed %d tasks, want the rest of job b", len(got))
	}
}

// A back-off's next start reaches every shard of the domain, of all its
// jobs, as their bound (job_shards.paced_until), so that claims pass them
// over for a column test while it lasts; a claim sets its own shard's; a
// shard whose pace is cleared drops its bound.
func TestPacedShardsShareTheirDomainsNextStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	f.job(t, tasks.JobOptions{Domain: "paced.example", Concurrency: 64}, 40) // 16 shards
	f.job(t, tasks.JobOptions{Domain: "paced.example", Concurrency: 8}, 40)  // 2 shards
	f.job(t, tasks.JobOptions{Domain: "free.example", Concurrency: 8}, 4)
	if err := f.queue.SetDomainPace(ctx, "paced.example", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// bounds: how many of the paced domain's shards carry its next start,
	// of how many, and whether an unpaced shard has a bound.
	bounds := func() (current, shards int, unpaced bool) {
		t.Helper()
		err := f.pool.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE s.paced_until = p.next_allowed_at),
			       count(*) FILTER (WHERE p.domain_id IS NOT NULL),
			       bool_or(s.paced_domain_id IS NULL AND s.paced_until <> 'epoch')
			FROM job_shards s LEFT JOIN domain_paces p ON p.domain_id = s.paced_domain_id`).Scan(&current, &shards, &unpaced)
		if err != nil {
			t.Fatal(err)
		}
		return current, shards, unpaced
	}
	claimed := claimAll(t, f, "w", 100)
	if got := countByJob(claimed); len(claimed) != 5 {
		t.Fatalf("claimed %v: want the unpaced job's 4 tasks and one paced", got)
	}
	if current, shards, unpaced := bounds(); current != 1 || shards != 18 || unpaced {
		t.Errorf("after a paced claim: %d of %d paced shards carry the next start (want its own); an unpaced shard has a bound: %v",
			current, shards, unpaced)
	}
	var paced tasks.Task
	for _, c := range claimed {
		if c.Paced {
			paced = c
		}
	}
	f.clock.Advance(time.Second)
	throttled := tasks.TaskResult{StatusCode: 429, RetryAfter: time.Minute, Err: errors.New("429")}
	if rep, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: paced, Result: throttled}}); err != nil || rep.PaceErr != nil {
		t.Fatalf("Finish: %v, %v", err, rep.PaceErr)
	}
	p, err := f.queue.DomainPace(ctx, "paced.example")
	if err != nil {
		t.Fatal(err)
	}
	if want := f.clock.Now().Add(time.Minute); !p.NextAllowedAt.Equal(want) {
		t.Fatalf("after a 429 with Retry-After 60: next start %v, want %v", p.NextAllowedAt, want)
	}
	if current, shards, _ := bounds(); current != 18 || shards != 18 {
		t.Errorf("after a back-off: %d of %d paced shards carry the next start, want all 18", current, shards)
	}
	f.clock.Advance(59 * time.Second)
	if got := claimAll(t, f, "w", 100); len(got) != 0 {
		t.Fatalf("claimed %d tasks before Retry-After had passed", len(got))
	}
	f.clock.Advance(time.Second)
	if got := claimAll(t, f, "w", 100); len(got) != 1 || !got[0].Paced {
		t.Fatalf("once Retry-After had passed: claimed %d tasks, want one paced", len(got))
	}
	// Cleared, the pace's bounds go with it, and every shard is claimable
	// at once (the claim reads unpaced shards only up to now).
	if had, err := f.queue.ClearDomainPace(ctx, "paced.example"); err != nil || !had {
		t.Fatalf("ClearDomainPace = %v, %v", had, err)
	}
	var bounded int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM job_shards WHERE paced_until <> 'epoch'").Scan(&bounded); err != nil {
		t.Fatal(err)
	}
	if bounded != 0 {
		t.Errorf("after clearing the pace %d shards keep a bound", bounded)
	}
	claimAll(t, f, "w", 100)
	rows, err := f.pool.Query(ctx, `
		SELECT j.id, j.concurrency, count(*) FILTER (WHERE t.status = 'running'), count(*) FILTER (WHERE t.status = 'pending')
		FROM jobs j JOIN domains d ON d.id = j.domain_id JOIN tasks t ON t.job_id = j.id
		WHERE d.name = 'paced.example' GROUP BY j.id, j.concurrency`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var job string
		var concurrency, running, pending int
		if err := rows.Scan(&job, &concurrency, &running, &pending); err != nil {
			t.Fatal(err)
		}
		if pending > 0 && running < concurrency {
			t.Errorf("after clearing the pace, job %s: %d running of %d allowed, %d pending left unclaimed", job, running, concurrency, pending)
		}
	}
}

// A job created, or a job's shards added, after the pace was set is paced
// too (the job_shards_pace trigger).
func TestPaceCoversJobsCreatedLater(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	if err := f.queue.SetDomainPace(ctx, "later.example", time.Minute); err != nil {
		t.Fatal(err)
	}
	job := f.job(t, tasks.JobOptions{Domain: "later.example", Concurrency: 40}, 30)
	if got := claimAll(t, f, "w", 100); len(got) != 1 {
		t.Fatalf("claimed %d tasks of a job created on a paced domain, want 1", len(got))
	}
	// More concurrency: new shards, paced as well.
	if _, err := f.pool.Exec(ctx, "UPDATE jobs SET concurrency = 128 WHERE id = $1", job.ID); err != nil {
		t.Fatal(err)
	}
	var unpaced int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM job_shards WHERE job_id = $1 AND paced_domain_id IS NULL", job.ID).Scan(&unpaced); err != nil {
		t.Fatal(err)
	}
	if unpaced != 0 {
		t.Errorf("%d shards of a paced job are not marked paced", unpaced)
	}
	if got := claimAll(t, f, "w", 100); len(got) != 0 {
		t.Fatalf("claimed %d tasks before the interval passed", len(got))
	}
}

// 429 with Retry-After: the domain gets a learned pace, nothing starts
// before Retry-After, the interval rises with each back-off (to PaceMax)
// and falls back by a step every PaceRecoverAfter successes, to the floor.
func TestBackOffIsLearnedAndUnlearned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{PaceStep: time.Second, PaceMax: 3 * time.Second, PaceRecoverAfter: 2})
	f.job(t, tasks.JobOptions{Domain: "busy.example", Concurrency: 10}, 40)
	claimed := claimAll(t, f, "w", 100)
	if len(claimed) != 10 {
		t.Fatalf("claimed %d, want 10", len(claimed))
	}
	throttled := tasks.TaskResult{StatusCode: 429, RetryAfter: 5 * time.Second, Err: errors.New("429")}
	if rep, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: claimed[0], Result: throttled}}); err != nil || rep.PaceErr != nil {
		t.Fatalf("Finish: %v, %v", err, rep.PaceErr)
	}
	checkPace := func(interval time.Duration, next time.Time) {
		t.Helper()
		p, err := f.queue.DomainPace(ctx, "busy.example")
		if err != nil {
			t.Fatal(err)
		}
		if p.Interval != interval || !p.NextAllowedAt.Equal(next) {
			t.Errorf("pace: interval %v, next %v; want %v, %v", p.Interval, p.NextAllowedAt, interval, next)
		}
	}
	start := f.clock.Now()
	checkPace(time.Second, start.Add(5*time.Second))
	// The other nine finish fine: the running ones were claimed unpaced.
	var rest []tasks.Outcome
	for _, c := range claimed[1:] {
		rest = append(rest, tasks.Outcome{Task: c, Result: okResult()})
	}
	if _, err := f.queue.Finish(ctx, rest); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(4 * time.Second)
	if got := claimAll(t, f, "w", 100); len(got) != 0 {
		t.Fatalf("claimed %d tasks before Retry-After had passed", len(got))
	}
	f.clock.Advance(time.Second)
	one := claimAll(t, f, "w", 100)
	if len(one) != 1 || !one[0].Paced {
		t.Fatalf("after Retry-After: claimed %v, want one paced task", one)
	}
	// Two more back-offs: 2 s, then 3 s (the cap), not 4.
	for i, want := range []time.Duration{2 * time.Second, 3 * time.Second, 3 * time.Second} {
		if _, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: one[0], Result: tasks.TaskResult{StatusCode: 503, Err: errors.New("503")}}}); err != nil {
			t.Fatal(err)
		}
		checkPace(want, f.clock.Now().Add(want))
		f.clock.Advance(want)
		if one = claimAll(t, f, "w", 100); len(one) != 1 {
			t.Fatalf("round %d: claimed %d tasks, want 1", i, len(one))
		}
	}
	// Successes: every second one lowers the interval by a step, down to 0
	// (the floor), where the domain's claims are no longer spaced.
	for i, want := range []time.Duration{3, 2, 2, 1, 1, 0, 0} {
		if _, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: one[0], Result: okResult()}}); err != nil {
			t.Fatal(err)
		}
		p, err := f.queue.DomainPace(ctx, "busy.example")
		if err != nil {
			t.Fatal(err)
		}
		if p.Interval != want*time.Second {
			t.Errorf("after %d successes: interval %v, want %v", i+1, p.Interval, want*time.Second)
		}
		// The claim before set the next start with the interval of its time.
		f.clock.Advance(3 * time.Second)
		var err2 error
		if one, err2 = f.queue.Claim(ctx, "w", 1); err2 != nil || len(one) != 1 {
			t.Fatalf("after %d successes: claimed %d tasks (%v), want 1", i+1, len(one), err2)
		}
	}
}

// A floor set by the application is never undercut by recovery.
func TestRecoveryStopsAtTheFloor(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{PaceRecoverAfter: 1})
	f.job(t, tasks.JobOptions{Domain: "floor.example", Concurrency: 10}, 20)
	if err := f.queue.SetDomainPace(ctx, "floor.example", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	results := []tasks.TaskResult{{ConnectionFailed: true, Err: errors.New("refused")}, okResult(), okResult(), okResult()}
	wants := []time.Duration{2500 * time.Millisecond, 2 * time.Second, 2 * time.Second, 2 * time.Second}
	for i, r := range results {
		f.clock.Advance(time.Minute)
		got := claimAll(t, f, "w", 10)
		if len(got) != 1 {
			t.Fatalf("claimed %d, want 1", len(got))
		}
		if _, err := f.queue.Finish(ctx, []tasks.Outcome{{Task: got[0], Result: r}}); err != nil {
			t.Fatal(err)
		}
		p, err := f.queue.DomainPace(ctx, "floor.example")
		if err != nil {
			t.Fatal(err)
		}
		if p.Interval != wants[i] || p.Floor != 2*time.Second {
			t.Errorf("step %d: interval %v floor %v, want %v and 2s", i, p.Interval, p.Floor, wants[i])
		}
	}
}

func TestPaceArgumentsAreChecked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setup(t, tasks.Config{})
	for _, d := range []time.Duration{-time.Millisecond, tasks.MaxPaceInterval + time.Second} {
		err := f.queue.SetDomainPace(ctx, "x.example", d)
		var argErr *tasks.ArgumentError
		if !errors.As(err, &argErr) || argErr.Arg != "interval" {
			t.Errorf("SetDomainPace(%v) = %v, want an *ArgumentError for interval", d, err)
		}
	}
	if err := f.queue.SetDomainPace(ctx, "", time.Second); !errors.Is(err, tasks.ErrInvalidArgument) {
		t.Errorf("SetDomainPace with no domain = %v", err)
	}
	for _, s := range []float64{math.NaN(), math.Inf(1), -1, 1e9} {
		if _, err := tasks.CheckPaceSeconds("delay", s); !errors.Is(err, tasks.ErrInvalidArgument) {
			t.Errorf("CheckPaceSeconds(%v) = %v, want ErrInvalidArgument", s, err)
		}
	}
	if d, err := tasks.CheckPaceSeconds("delay", 1.5); err != nil || d != 1500*time.Millisecond {
		t.Errorf("CheckPaceSeconds(1.5) = %v, %v", d, err)
	}
	if _, err := f.queue.DomainPace(ctx, "x.example"); !errors.Is(err, tasks.ErrNotFound) {
		t.Errorf("DomainPace of an unpaced domain = %v, want ErrNotFound", err)
	}
	// robots.txt does not override a pace the application set.
	if err := f.queue.SetDomainPace(ctx, "x.example", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if set, err := f.queue.SetDomainPaceIfAbsent(ctx, "x.example", time.Second, tasks.PaceRobots); err != nil || set {
		t.Errorf("SetDomainPaceIfAbsent over a set pace = %v, %v; want false", set, err)
	}
}

// Exactness on the database's own clock: claimers on connections of their
// own race for the tasks of paced domains, and the claim times the database
// records for each domain are never closer than its interval.
func TestConcurrentClaimersKeepThePace(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs for 2 s")
	}
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.URL(t, migrate.VersionLatest), 16)
	q := tasks.New(pool, tasks.Config{})
	const interval = 100 * time.Millisecond
	for d := range 3 {
		domain := fmt.Sprintf("site%d.example", d)
		for range 2 { // two jobs per domain share its pace
			job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: domain, Concurrency: 64})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := q.Enqueue(ctx, job.ID, pages(200)); err != nil {
				t.Fatal(err)
			}
		}
		if err := q.SetDomainPace(ctx, domain, interval); err != nil {
			t.Fatal(err)
		}
	}
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var claimed []tasks.Task
	for w := range 12 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				got, err := q.Claim(ctx, fmt.Sprintf("w%d", w), 1+w%3*10)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				claimed = append(claimed, got...)
				mu.Unlock()
				var done []tasks.Outcome
				for _, c := range got {
					done = append(done, tasks.Outcome{Task: c, Result: okResult()})
				}
				if len(done) > 0 {
					if _, err := q.Finish(ctx, done); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	rows, err := pool.Query(ctx, `
		SELECT d.name, t.started_at FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN domains d ON d.id = j.domain_id
		WHERE t.started_at IS NOT NULL ORDER BY d.name, t.started_at`)
	if err != nil {
		t.Fatal(err)
	}
	starts := map[string][]time.Time{}
	for rows.Next() {
		var name string
		var at time.Time
		if err := rows.Scan(&name, &at); err != nil {
			t.Fatal(err)
		}
		starts[name] = append(starts[name], at)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for name, ts := range starts {
		if len(ts) < 5 {
			t.Errorf("%s: only %d tasks started in 2 s at one per %v", name, len(ts), interval)
		}
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap < interval {
				t.Errorf("%s: tasks started %v apart (%v, %v), less than the interval %v", name, gap, ts[i-1], ts[i], interval)
			}
		}
	}
	if len(starts) != 3 {
		t.Errorf("tasks started on %d domains, want 3", len(starts))
	}
	for _, c := range claimed {
		if !c.Paced {
			t.Errorf("task %s of a paced domain claimed unpaced", c.ID)
			break
		}
	}
}
