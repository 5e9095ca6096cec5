package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/gen"
	"github.com/blue-banded-bee/taskq/internal/worker"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// sampler polls the plan's lock-wait measurement (pg_locks with waitstart)
// every 10 ms and remembers each distinct wait and the longest seen.
type sampler struct {
	mu      sync.Mutex
	seen    map[string]bool
	longest time.Duration
	done    chan struct{}
}

func startSampler(ctx context.Context, dbURL string) *sampler {
	s := &sampler{seen: map[string]bool{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return
		}
		defer conn.Close(context.Background())
		q := gen.New()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			waits, err := q.LockWaitsCurrent(ctx, conn)
			if err != nil {
				continue
			}
			s.mu.Lock()
			for _, w := range waits {
				s.seen[fmt.Sprintf("%d/%d", w.Pid, w.WaitStarted.UnixNano())] = true
				s.longest = max(s.longest, time.Duration(w.WaitedMs*float64(time.Millisecond)))
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *sampler) result() (int, time.Duration) {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen), s.longest
}

// dashboardQueries are one dashboard refresh of an organisation's user: its
// tasks counted by status, and its jobs with their counters. Both go through
// the row-level-security policies of every table they read; the task count
// reads every task of the organisation, which is where per-row evaluation of
// auth.uid() cost the most.
var dashboardQueries = []string{
	"SELECT status, count(*) FROM tasks GROUP BY status",
	"SELECT id, status, total_tasks, completed_tasks, failed_tasks FROM jobs ORDER BY created_at",
}

// measureDashboard times samples dashboard refreshes, alternating between
// the organisations' users, each in a transaction as "authenticated".
func measureDashboard(ctx context.Context, pool *pgxpool.Pool, orgs []org, samples int) (*worker.Histogram, error) {
	h := &worker.Histogram{}
	for i := range samples {
		o := orgs[i%len(orgs)]
		claims := fmt.Sprintf(`{"sub":"%s","role":"authenticated"}`, o.user)
		start := time.Now()
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL ROLE authenticated"); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT set_config('request.jwt.claims', $1, true)", claims); err != nil {
				return err
			}
			for _, q := range dashboardQueries {
				rows, err := tx.Query(ctx, q)
				if err != nil {
					return err
				}
				rows.Close()
				if err := rows.Err(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		h.Record(time.Since(start))
	}
	return h, nil
}

// startProgress reports the number of finished tasks every 500 ms.
func startProgress(ctx context.Context, cfg Config, mode Mode, pool *pgxpool.Pool) *sync.WaitGroup {
	var wg sync.WaitGroup
	if cfg.OnProgress == nil {
		return &wg
	}
	start := time.Now()
	wg.Go(func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var done int
			err := pool.QueryRow(ctx,
				"SELECT count(*) FROM tasks WHERE status IN ('completed', 'failed', 'skipped')").Scan(&done)
			if err == nil {
				cfg.OnProgress(Progress{Mode: mode, Done: done, Total: cfg.Tasks, Elapsed: time.Since(start)})
			}
		}
	})
	return &wg
}
