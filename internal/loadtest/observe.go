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
	"github.com/blue-banded-bee/taskq/worker"
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
		everyTick(ctx, 10*time.Millisecond, func() {
			waits, err := q.LockWaitsCurrent(ctx, conn)
			if err != nil {
				return
			}
			s.mu.Lock()
			for _, w := range waits {
				s.seen[fmt.Sprintf("%d/%d", w.Pid, w.WaitStarted.UnixNano())] = true
				s.longest = max(s.longest, time.Duration(w.WaitedMs*float64(time.Millisecond)))
			}
			s.mu.Unlock()
		})
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
		everyTick(ctx, 500*time.Millisecond, func() {
			var done int
			err := pool.QueryRow(ctx,
				"SELECT count(*) FROM tasks WHERE status IN ('completed', 'failed', 'skipped')").Scan(&done)
			if err == nil {
				cfg.OnProgress(Progress{Mode: mode, Done: done, Total: cfg.Tasks, Elapsed: time.Since(start)})
			}
		})
	})
	return &wg
}

// everyTick calls fn every interval (the first time one interval from now)
// until ctx ends.
func everyTick(ctx context.Context, interval time.Duration, fn func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fn()
		}
	}
}

// Sample is one point of a mode's completion series: Done tasks had
// finished (completed or failed) At this long after the mode's start.
type Sample struct {
	At   time.Duration `json:"at_ns"`
	Done int           `json:"done"`
}

const (
	completionTick = 100 * time.Millisecond
	// maxCompletionSamples bounds a series: at twice this many points every
	// other one is dropped and the interval doubles, so a long run (the
	// before modes' 5 minutes) keeps 150-300 evenly spaced points.
	maxCompletionSamples = 150
)

// recordCompletions samples count (the workers' own count of finished
// tasks: reading it costs the server nothing, unlike startProgress's query)
// every 100 ms from now until ctx ends or stop is called. stop takes a last
// sample and returns the series, which starts at {0, 0}.
func recordCompletions(ctx context.Context, count func() int) (stop func() []Sample) {
	start := time.Now()
	series := newCompletionSeries()
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(completionTick)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-quit:
				return
			case <-tick.C:
			}
			series.tick(n, func() Sample { return Sample{At: time.Since(start), Done: count()} })
		}
	})
	return func() []Sample {
		close(quit)
		wg.Wait()
		return append(series.samples, Sample{At: time.Since(start), Done: count()})
	}
}

// completionSeries keeps every every'th tick's sample, from tick 0 on.
type completionSeries struct {
	samples []Sample
	every   int
}

func newCompletionSeries() *completionSeries {
	return &completionSeries{samples: []Sample{{}}, every: 1}
}

// tick records tick n's sample if it is one to keep; at twice
// maxCompletionSamples it drops every other sample and keeps half as many
// from then on, so the samples stay evenly spaced.
func (s *completionSeries) tick(n int, sample func() Sample) {
	if n%s.every != 0 {
		return
	}
	s.samples = append(s.samples, sample())
	if len(s.samples) == 2*maxCompletionSamples {
		for i := range maxCompletionSamples {
			s.samples[i] = s.samples[2*i]
		}
		s.samples = s.samples[:maxCompletionSamples]
		s.every *= 2
	}
}
