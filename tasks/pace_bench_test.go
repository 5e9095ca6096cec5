package tasks_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// pacedDomains creates n domains, each with a running job of perJob pending
// tasks, paced at interval; with notDue their next start is an hour away
// (on their shards too, as a back-off leaves them), so every claim
// meets them and must pass them over. Created first, so their shards lead
// job_shards: the worst place for an unpaced claim.
func pacedDomains(tb testing.TB, f fixture, n, perJob int, interval time.Duration, notDue bool) {
	tb.Helper()
	ctx := context.Background()
	for i := range n {
		domain := fmt.Sprintf("paced%04d.example", i)
		f.job(tb, tasks.JobOptions{Domain: domain, Concurrency: 2}, perJob)
		if err := f.queue.SetDomainPace(ctx, domain, interval); err != nil {
			tb.Fatal(err)
		}
	}
	if notDue {
		_, err := f.pool.Exec(ctx, `
			UPDATE domain_paces SET next_allowed_at = now() + interval '1 hour';
			UPDATE job_shards s SET paced_until = p.next_allowed_at
			FROM domain_paces p WHERE p.domain_id = s.paced_domain_id`)
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// waitingJobs is pacedDomains without the paces: n unpaced jobs whose
// tasks all wait for a retry an hour away, what today's claim passes over
// when other jobs have nothing claimable.
func waitingJobs(tb testing.TB, f fixture, n, perJob int) {
	tb.Helper()
	for i := range n {
		f.job(tb, tasks.JobOptions{Domain: fmt.Sprintf("waiting%04d.example", i), Concurrency: 2}, perJob)
	}
	if _, err := f.pool.Exec(context.Background(), "UPDATE tasks SET run_after = now() + interval '1 hour'"); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkUnpacedAmongPacedDomains: an unpaced job's claim-and-finish rate
// alone, next to 1,000 unpaced jobs with nothing claimable (what the claim
// passes over without pacing), and next to 1,000 paced domains whose jobs
// all wait for their next start, in alternating rounds of one run. Claiming
// one task at a time (16 workers, at most worker.DefaultClaimers claims in
// flight, outcomes batched: the worker pool's way)
// and in batches of 100 (4 workers). Reports each variant's mean rate, and
// the ratios as the median over rounds of each round's own ratio: on this
// 2-core VM one round's rates moved by a fifth against the next (a paced
// round at 1.01x of its alone round, the next at 0.76x), and a round's
// variants run minutes apart, not hours.
func BenchmarkUnpacedAmongPacedDomains(b *testing.B) {
	for _, mode := range []struct {
		name           string
		workers, batch int
		total          int
	}{{"claim one", 16, 1, 20_000}, {"batches of 100", 4, 100, 50_000}} {
		b.Run(mode.name, func(b *testing.B) {
			variants := []string{"alone", "1000 waiting jobs", "1000 paced domains"}
			rates := map[string][]float64{}
			const rounds = 4
			for round := range rounds {
				for _, v := range variants {
					f := setupConns(b, tasks.Config{Now: time.Now}, int32(mode.workers+2))
					switch v {
					case "1000 waiting jobs":
						waitingJobs(b, f, 1000, 5)
					case "1000 paced domains":
						pacedDomains(b, f, 1000, 5, time.Second, true)
					}
					f.job(b, tasks.JobOptions{Domain: "free.example", Concurrency: 100_000}, mode.total)
					if _, err := f.pool.Exec(context.Background(), "VACUUM ANALYZE"); err != nil {
						b.Fatal(err)
					}
					// No autovacuum: a variant's drain leaves it work that
					// would run during the next variant's. (Measured, the
					// ratios did not move with it: 0.89x with, 0.86x without,
					// claims unbounded.)
					noAutovacuum(b, f.pool)
					var elapsed time.Duration
					if mode.batch == 1 {
						elapsed = drainSingleClaims(b, f, mode.workers, worker.DefaultClaimers, 500, mode.total)
					} else {
						elapsed = drain(b, f, mode.workers, mode.batch, mode.total)
					}
					// Its connections go now, not when the benchmark ends:
					// six variants' pools would take every connection the
					// server allows.
					f.pool.Close()
					rate := float64(mode.total) / elapsed.Seconds()
					rates[v] = append(rates[v], rate)
					b.Logf("round %d, %s: %.0f tasks/s", round+1, v, rate)
				}
			}
			mean := func(xs []float64) float64 {
				s := 0.0
				for _, x := range xs {
					s += x
				}
				return s / float64(len(xs))
			}
			// medianRatio is the median over rounds of num's rate over den's.
			medianRatio := func(num, den string) float64 {
				r := make([]float64, rounds)
				for i := range r {
					r[i] = rates[num][i] / rates[den][i]
				}
				slices.Sort(r)
				b.Logf("%s / %s by round, sorted: %.3f", num, den, r)
				return (r[(rounds-1)/2] + r[rounds/2]) / 2
			}
			b.ReportMetric(mean(rates[variants[0]]), "alone-tasks/s")
			b.ReportMetric(mean(rates[variants[1]]), "waiting-jobs-tasks/s")
			b.ReportMetric(mean(rates[variants[2]]), "paced-domains-tasks/s")
			b.ReportMetric(medianRatio(variants[2], variants[0]), "paced/alone")
			b.ReportMetric(medianRatio(variants[2], variants[1]), "paced/waiting")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkPacedDomainsAtTheirRate: 1,000 domains paced at 1 request/s
// each, 30 tasks apiece, drained by a worker pool of 64 workers (claiming
// one at a time, a simulated fetch that takes no time) for 20 s after a 5 s
// warm-up: the tasks/s it keeps against the 1,000/s the paces allow, and the
// claim latency. Paced tasks the pool handed back for missing their start
// budget are counted, and how much later than the interval a domain's
// starts came (where the shortfall goes).
func BenchmarkPacedDomainsAtTheirRate(b *testing.B) {
	f := setupConns(b, tasks.Config{Now: time.Now}, 70)
	pacedDomains(b, f, 1000, 30, time.Second, false)
	if _, err := f.pool.Exec(context.Background(), "VACUUM ANALYZE"); err != nil {
		b.Fatal(err)
	}
	// The pool's queue as production's: the server's clock, and the pace
	// slack for the claims' round trip, which a queue with Config.Now (a
	// clock of its own, as f.queue has) goes without.
	q := tasks.New(f.pool, tasks.Config{})
	p := worker.New(q, realistic, worker.Config{Workers: 64, MaintainInterval: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	time.Sleep(5 * time.Second)
	before := p.Stats()
	const window = 20 * time.Second
	time.Sleep(window)
	after := p.Stats()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	rate := float64(after.Completed-before.Completed) / window.Seconds()
	// What each domain lost to its claims: how much longer than the interval
	// the gaps between its task starts were (the claims' times).
	var lateP50, lateP99 float64
	err := f.pool.QueryRow(context.Background(), `
		WITH g AS (
		    SELECT extract(epoch FROM started_at - lag(started_at) OVER (PARTITION BY job_id ORDER BY started_at)) * 1000 - 1000 AS late_ms
		    FROM tasks WHERE started_at IS NOT NULL
		)
		SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY late_ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY late_ms)
		FROM g WHERE late_ms IS NOT NULL`).Scan(&lateP50, &lateP99)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("a domain's starts came p50 %.0f ms, p99 %.0f ms later than its interval", lateP50, lateP99)
	b.Logf("%.0f tasks/s of the 1,000/s allowed; claim p50 %v p99 %v over the run; %d paced tasks handed back unstarted; %d claim statements in the window",
		rate, after.ClaimLatency.P50, after.ClaimLatency.P99, after.PaceMissed-before.PaceMissed, after.ClaimCalls-before.ClaimCalls)
	b.ReportMetric(rate, "tasks/s")
	b.ReportMetric(rate/1000, "of-allowed")
	b.ReportMetric(float64(after.ClaimLatency.P99.Microseconds()), "claim-p99-µs")
	b.ReportMetric(lateP50, "gap-late-p50-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkClaimPassingPacedDomains: one session's claims of an unpaced
// job created after 0 (the baseline), 100, 1,000 and 10,000 paced domains whose next start
// is an hour away, so that each claim passes every paced shard: mean and
// p99 per claim, with the queue's session settings and with JIT compilation
// as the server has it by default, in alternating rounds on the same
// database, each commit without waiting for the WAL flush.
// Past jit_above_cost the server compiles each claim before running it.
func BenchmarkClaimPassingPacedDomains(b *testing.B) {
	ctx := context.Background()
	const claims = 200
	for _, n := range []int{0, 100, 1000, 10_000} {
		b.Run(fmt.Sprintf("%d paced domains", n), func(b *testing.B) {
			url := pgtest.URL(b, migrate.VersionLatest)
			pool := pgtest.Pool(b, url, 2)
			f := fixture{pool: pool, queue: tasks.New(pool, tasks.Config{Now: time.Now})}
			pacedDomains(b, f, n, 5, time.Second, true)
			f.job(b, tasks.JobOptions{Domain: "free.example", Concurrency: 100_000}, 8*claims)
			if _, err := f.pool.Exec(ctx, "VACUUM ANALYZE"); err != nil {
				b.Fatal(err)
			}
			settings := []string{"queue's settings", "server's jit"}
			queues := map[string]*tasks.Queue{}
			took := map[string]*worker.Histogram{}
			for _, s := range settings {
				cfg, err := db.PoolConfig(url, db.Options{MaxConns: 1})
				if err != nil {
					b.Fatal(err)
				}
				if s == "server's jit" {
					delete(cfg.ConnConfig.RuntimeParams, "jit")
				}
				// What is measured is the statement: this VM's WAL flush
				// varied several times over between runs and swamped it.
				cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
				session, err := pgxpool.NewWithConfig(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(session.Close)
				queues[s] = tasks.New(session, tasks.Config{Now: time.Now})
				took[s] = &worker.Histogram{}
			}
			for round := range 4 {
				for _, s := range settings {
					for range claims {
						start := time.Now()
						if _, err := queues[s].ClaimOne(ctx, "w"); err != nil {
							b.Fatal(err)
						}
						took[s].Record(time.Since(start))
					}
					b.Logf("round %d, %s: done", round+1, s)
				}
			}
			for i, s := range settings {
				_, count, sum := took[s].Cumulative(nil)
				mean, p99 := sum/time.Duration(count), took[s].Summary().P99
				b.Logf("%s: claim mean %v, p99 %v", s, mean, p99)
				unit := []string{"queue", "server-jit"}[i]
				b.ReportMetric(float64(mean.Microseconds()), unit+"-mean-µs")
				b.ReportMetric(float64(p99.Microseconds()), unit+"-p99-µs")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}
