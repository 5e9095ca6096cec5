package tasks_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// seedPacedDomains creates n paced domains in one statement each step
// (pacedDomains is one job at a time, too slow for 10,000): each with a
// running job of one shard and perJob pending tasks, paced at interval_ms,
// its next start after. The job_shards_pace trigger flags the shards, as
// for a job created through the queue.
func seedPacedDomains(tb testing.TB, f fixture, n, perJob int, interval, after time.Duration) {
	tb.Helper()
	ctx := context.Background()
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO domains (name) SELECT format('scale%%s.example', g) FROM generate_series(1, %d) g`, n),
		fmt.Sprintf(`INSERT INTO domain_paces (domain_id, floor_ms, interval_ms, next_allowed_at, source)
			SELECT id, %[1]d, %[1]d, now() + %[2]d * interval '1 millisecond', 'set' FROM domains WHERE name LIKE 'scale%%'`,
			interval.Milliseconds(), after.Milliseconds()),
		`INSERT INTO jobs (id, domain_id, concurrency, status)
			SELECT 'scale-' || id, id, 2, 'running' FROM domains WHERE name LIKE 'scale%'`,
		fmt.Sprintf(`INSERT INTO pages (domain_id, path)
			SELECT d.id, '/p' || g FROM domains d, generate_series(1, %d) g WHERE d.name LIKE 'scale%%'`, perJob),
		`INSERT INTO tasks (job_id, page_id, path, priority_score, shard)
			SELECT 'scale-' || p.domain_id, p.id, p.path, random(), 0
			FROM pages p JOIN domains d ON d.id = p.domain_id WHERE d.name LIKE 'scale%'`,
		// As a claim of the domain leaves them.
		`UPDATE job_shards s SET paced_until = p.next_allowed_at FROM domain_paces p WHERE p.domain_id = s.paced_domain_id`,
		"VACUUM ANALYZE",
	} {
		if _, err := f.pool.Exec(ctx, sql); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkPacedClaimScale: 100, 1,000 and 10,000 domains paced at 1
// request/s, 20 tasks apiece, drained by a worker pool of 64 workers
// (claiming one at a time, a simulated fetch that takes no time) for 10 s
// after a 3 s warm-up: the claim latency (p50, p99, over the run) and the tasks/s kept
// against the min(n, what the machine does) the paces allow.
func BenchmarkPacedClaimScale(b *testing.B) {
	for _, n := range []int{100, 1000, 10_000} {
		b.Run(fmt.Sprintf("%d paced domains", n), func(b *testing.B) {
			f := setupConns(b, tasks.Config{Now: time.Now}, 70)
			seedPacedDomains(b, f, n, 20, time.Second, 0)
			p := worker.New(f.queue, realistic, worker.Config{Workers: 64, MaintainInterval: time.Second})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			time.Sleep(3 * time.Second)
			before := p.Stats()
			const window = 10 * time.Second
			time.Sleep(window)
			after := p.Stats()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			rate := float64(after.Completed-before.Completed) / window.Seconds()
			b.Logf("%d paced domains: %.0f tasks/s of the %d/s allowed; claim p50 %v p99 %v over the run; %d claim statements",
				n, rate, n, after.ClaimLatency.P50, after.ClaimLatency.P99, after.ClaimCalls-before.ClaimCalls)
			b.ReportMetric(rate, "tasks/s")
			b.ReportMetric(float64(after.ClaimLatency.P50.Microseconds()), "claim-p50-µs")
			b.ReportMetric(float64(after.ClaimLatency.P99.Microseconds()), "claim-p99-µs")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// statementCounter counts the statements a pool's connections send.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// BenchmarkPacedIdle: 1,000 paced domains whose next start is 10 s away,
// and a worker pool of 64 workers listening for notifications, as taskq
// work runs it (maintenance off): the statements the pool sends per second
// while it waits, all of them (counted on its connections) and the claims.
func BenchmarkPacedIdle(b *testing.B) {
	ctx := context.Background()
	url := pgtest.URL(b, migrate.VersionLatest)
	cfg, err := db.PoolConfig(url, db.Options{MaxConns: 70})
	if err != nil {
		b.Fatal(err)
	}
	counter := &statementCounter{}
	cfg.ConnConfig.Tracer = counter
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	f := fixture{pool: pool, queue: tasks.New(pool, tasks.Config{Now: time.Now})}
	seedPacedDomains(b, f, 1000, 5, time.Second, 12*time.Second)
	p := worker.New(f.queue, realistic, worker.Config{Workers: 64, ListenURL: url, MaintainInterval: -1})
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	time.Sleep(time.Second)
	before, s0 := p.Stats(), counter.n.Load()
	const window = 8 * time.Second
	time.Sleep(window)
	after, s1 := p.Stats(), counter.n.Load()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	claims := float64(after.ClaimCalls-before.ClaimCalls) / window.Seconds()
	statements := float64(s1-s0) / window.Seconds()
	b.Logf("every job paced 10 s out: %.1f claim statements/s, %.1f statements/s in all; %d tasks started",
		claims, statements, after.Completed-before.Completed)
	b.ReportMetric(claims, "claims/s")
	b.ReportMetric(statements, "statements/s")
	b.ReportMetric(0, "ns/op")
}
