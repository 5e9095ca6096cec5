package pooler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// TestPacingThroughPooler: two poll-only worker pools, every statement
// through PgBouncer in transaction mode, fetch a paced domain's pages from a
// real server on loopback. The site never sees two requests closer than the
// interval (less 10 ms of loopback jitter), the claim times the database
// records are never closer than the interval, and setting the pace through
// the pooler (a transaction) and its typed errors work as on a direct
// connection.
func TestPacingThroughPooler(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const interval = 100 * time.Millisecond
	var mu sync.Mutex
	var arrivals []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/robots.txt" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	domain := strings.TrimPrefix(srv.URL, "http://")

	f := setup(t, pgbouncertest.Options{PoolSize: 4})
	d := f.open(t, db.Options{Pooler: true, MaxConns: 12})
	if err := d.SetDomainPace(ctx, domain, -1); !errors.Is(err, db.ErrInvalidArgument) {
		t.Fatalf("SetDomainPace(-1) through the pooler = %v, want ErrInvalidArgument", err)
	}
	if err := d.SetDomainPace(ctx, domain, interval.Seconds()); err != nil {
		t.Fatalf("SetDomainPace through the pooler: %v", err)
	}
	id := job(t, d, tasks.JobOptions{Domain: domain, Concurrency: 16}, 15)

	var logs sharedtest.Buffer
	var pools []*worker.Pool
	for i := range 2 {
		pd := f.open(t, db.Options{Pooler: true, MaxConns: 12})
		fetcher := &crawl.Fetcher{Scheme: "http", Domains: crawl.NewDomainCache(pd.Queue()), Pacer: pd.Queue()}
		pools = append(pools, worker.New(pd.Queue(), fetcher, worker.Config{
			ID: fmt.Sprintf("bounced%d", i), Workers: 8, ClaimBatch: 1 + i*4, PollInterval: 20 * time.Millisecond,
			MaintainInterval: 50 * time.Millisecond,
			Logger:           slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		}))
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, p := range pools {
		wg.Go(func() {
			if err := p.Run(runCtx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	waitFor(t, func() bool {
		j, err := d.GetJob(ctx, id)
		return err == nil && j.Progress.Completed == 15
	})
	stop()
	wg.Wait()
	for i, p := range pools {
		s := p.Stats()
		t.Logf("pool %d: %d claim statements, %d tasks, %d paced tasks handed back unstarted", i, s.ClaimCalls, s.Claimed, s.PaceMissed)
	}
	if logs.String() != "" {
		t.Errorf("the pools logged warnings through pgbouncer:\n%s", logs.String())
	}

	mu.Lock()
	got := slices.Clone(arrivals)
	mu.Unlock()
	if len(got) != 15 {
		t.Errorf("the site saw %d requests, want 15", len(got))
	}
	for i := 1; i < len(got); i++ {
		if gap := got[i].Sub(got[i-1]); gap < interval-10*time.Millisecond {
			t.Errorf("requests %d and %d came %v apart, less than %v", i-1, i, gap, interval-10*time.Millisecond)
		}
	}
	rows, err := f.direct.Query(ctx, "SELECT started_at FROM tasks WHERE job_id = $1 ORDER BY started_at", id)
	if err != nil {
		t.Fatal(err)
	}
	var starts []time.Time
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			t.Fatal(err)
		}
		starts = append(starts, at)
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < interval {
			t.Errorf("claims %d and %d recorded %v apart, less than %v", i-1, i, gap, interval)
		}
	}
	if had, err := d.ClearDomainPace(ctx, domain); err != nil || !had {
		t.Errorf("ClearDomainPace through the pooler = %v, %v", had, err)
	}
}
