package metrics_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/metrics"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

type fixture struct {
	url   string
	queue *tasks.Queue
}

func setup(t *testing.T) fixture {
	t.Helper()
	url := pgtest.URL(t, migrate.VersionLatest)
	// Retries come back at once, so the run does not wait out backoffs.
	return fixture{url: url, queue: tasks.New(pgtest.Pool(t, url, 16), tasks.Config{BackoffBase: time.Millisecond})}
}

func (f fixture) job(t *testing.T, spec tasks.JobOptions, paths ...string) string {
	t.Helper()
	ctx := context.Background()
	spec.Domain = "example.com"
	job, err := f.queue.CreateJob(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	pages := make([]tasks.Page, len(paths))
	for i, p := range paths {
		pages[i] = tasks.Page{Path: p, Priority: 1}
	}
	if _, err := f.queue.Enqueue(ctx, job.ID, pages); err != nil {
		t.Fatal(err)
	}
	return job.ID
}

func (f fixture) statusCounts(t *testing.T) map[string]int {
	t.Helper()
	rows, err := f.queue.Pool().Query(context.Background(), "SELECT status::text, count(*) FROM tasks GROUP BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func pages(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/p%04d", i)
	}
	return out
}

// failing fails every tenth page, every time it runs.
func failing(_ context.Context, t tasks.Task) tasks.TaskResult {
	if strings.HasSuffix(t.Path, "0") {
		return tasks.TaskResult{StatusCode: 500, Err: fmt.Errorf("server error")}
	}
	return tasks.TaskResult{StatusCode: 200, ContentType: "text/html"}
}

func listen(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	srv, err := metrics.Listen("127.0.0.1:0", g)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	})
	return "http://" + srv.Addr() + "/metrics"
}

// scrape GETs url and parses the exposition, by metric name.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// values flattens the counters and gauges among fams whose names start
// with prefix into "name{label=value,...}" -> value.
func values(fams map[string]*dto.MetricFamily, prefix string) map[string]float64 {
	out := map[string]float64{}
	for name, f := range fams {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

// TestScrapeMatchesPoolStats runs a pool on real tasks (some failing, some
// retried, one rescued from a dead worker), scrapes /metrics and finds the
// pool's Stats there, figure for figure; the database gauges are those of
// the first scrape, as the cache interval has not passed.
func TestScrapeMatchesPoolStats(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 25} {
		t.Run(fmt.Sprintf("claim batch %d", batch), func(t *testing.T) {
			t.Parallel()
			f := setup(t)
			ctx := context.Background()
			// A worker that claimed a task and died: its lease (1ms) is over
			// before the pool starts, so the pool's maintenance rescues it.
			f.job(t, tasks.JobOptions{}, "/rescued")
			dead := tasks.New(f.queue.Pool(), tasks.Config{Lease: time.Millisecond})
			if _, err := dead.ClaimOne(ctx, "dead-worker"); err != nil {
				t.Fatal(err)
			}
			f.job(t, tasks.JobOptions{Concurrency: 20, MaxRetries: 1}, pages(300)...)

			p := worker.New(f.queue, worker.HandlerFunc(failing), worker.Config{
				Workers: 6, ClaimBatch: batch, PollInterval: 10 * time.Millisecond, MaintainInterval: 20 * time.Millisecond,
			})
			url := listen(t, metrics.NewRegistry(p, f.queue, metrics.QueueOptions{MinInterval: time.Hour}))

			// Scrapers arriving at once before the run: one database read.
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					resp, err := http.Get(url)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				})
			}
			wg.Wait()
			before := values(scrape(t, url), "taskq_")
			wantDB := map[string]float64{
				"taskq_queue_tasks{status=pending}":   300,
				"taskq_queue_tasks{status=running}":   1,
				"taskq_queue_tasks{status=completed}": 0,
				"taskq_queue_tasks{status=failed}":    0,
				"taskq_queue_tasks{status=skipped}":   0,
				"taskq_lock_waits":                    0,
				"taskq_lock_wait_max_seconds":         0,
				"taskq_queue_reads_total":             1,
				"taskq_queue_read_errors_total":       0,
			}
			if diff := cmp.Diff(wantDB, pick(before, wantDB)); diff != "" {
				t.Fatalf("database gauges before the run (-want +got):\n%s", diff)
			}

			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- p.Run(runCtx) }()
			want := map[string]int{"completed": 271, "failed": 30}
			deadline := time.After(2 * time.Minute)
			for !cmp.Equal(want, f.statusCounts(t)) {
				select {
				case <-deadline:
					stop()
					<-done
					t.Fatalf("not done within 2 minutes: tasks %v, stats %+v", f.statusCounts(t), p.Stats())
				case <-time.After(20 * time.Millisecond):
				}
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			s := p.Stats()
			// What the run did, from the pool's own account: every tenth page
			// failed, was retried once, and failed for good.
			if s.Completed != 271 || s.Failed != 30 || s.Retried != 30 || s.RescuedRetried != 1 || s.Claimed != 331 {
				t.Fatalf("stats %+v: want 271 completed, 30 failed, 30 retried, 1 rescued, 331 claimed", s)
			}

			fams := scrape(t, url)
			got := values(fams, "taskq_")
			wantPool := map[string]float64{
				"taskq_tasks_claimed_total":                     float64(s.Claimed),
				"taskq_tasks_finished_total{outcome=completed}": float64(s.Completed),
				"taskq_tasks_finished_total{outcome=failed}":    float64(s.Failed),
				"taskq_tasks_finished_total{outcome=retried}":   float64(s.Retried),
				"taskq_tasks_finished_total{outcome=skipped}":   float64(s.Skipped),
				"taskq_tasks_released_total":                    float64(s.Released),
				"taskq_tasks_lost_total":                        float64(s.Lost),
				"taskq_tasks_rescued_total{outcome=retried}":    float64(s.RescuedRetried),
				"taskq_tasks_rescued_total{outcome=failed}":     float64(s.RescuedFailed),
				"taskq_outcome_batches_unrecorded_total":        float64(s.Unrecorded),
				"taskq_tasks_in_flight":                         0,
				"taskq_workers":                                 6,
				"taskq_workers_idle":                            6,
				"taskq_worker_seconds_total{state=working}":     s.Working.Seconds(),
				"taskq_worker_seconds_total{state=claiming}":    s.Claiming.Seconds(),
				"taskq_worker_seconds_total{state=handoff}":     s.Handoff.Seconds(),
				"taskq_worker_seconds_total{state=idle}":        s.Idle.Seconds(),
			}
			if diff := cmp.Diff(wantPool, pick(got, wantPool)); diff != "" {
				t.Errorf("pool metrics against Stats (-want +got):\n%s", diff)
			}
			// Not read again within the interval: the figures of before the
			// run, though the database now holds no pending task.
			if diff := cmp.Diff(pick(before, wantDB), pick(got, wantDB)); diff != "" {
				t.Errorf("database gauges were read again within the interval (-first scrape +last):\n%s", diff)
			}
			if a, b := before["taskq_queue_last_read_timestamp_seconds"], got["taskq_queue_last_read_timestamp_seconds"]; a == 0 || a != b {
				t.Errorf("last read timestamps %v then %v, want one non-zero time", a, b)
			}

			checkHistogram(t, fams["taskq_claim_duration_seconds"], s.ClaimLatency.Count)
			checkHistogram(t, fams["taskq_finish_duration_seconds"], s.FinishLatency.Count)
			if s.ClaimLatency.Count != uint64(s.ClaimCalls) || s.FinishLatency.Count == 0 {
				t.Errorf("%d claim calls, %d claim latencies, %d finish latencies", s.ClaimCalls, s.ClaimLatency.Count, s.FinishLatency.Count)
			}
		})
	}
}

// pick returns the entries of got named in want (missing ones as -1, so a
// metric absent from the scrape shows in the diff).
func pick(got, want map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(want))
	for k := range want {
		v, ok := got[k]
		if !ok {
			v = -1
		}
		out[k] = v
	}
	return out
}

// checkHistogram checks a scraped histogram holds count samples, in the
// documented buckets, cumulative counts never decreasing.
func checkHistogram(t *testing.T, f *dto.MetricFamily, count uint64) {
	t.Helper()
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.Metric) != 1 {
		t.Fatalf("histogram: %v", f)
	}
	h := f.Metric[0].Histogram
	if h.GetSampleCount() != count || h.GetSampleSum() <= 0 {
		t.Errorf("%s: %d samples summing to %v s, want %d samples", f.GetName(), h.GetSampleCount(), h.GetSampleSum(), count)
	}
	var bounds []float64
	var prev uint64
	for _, b := range h.Bucket {
		bounds = append(bounds, b.GetUpperBound())
		if b.GetCumulativeCount() < prev || b.GetCumulativeCount() > count {
			t.Errorf("%s: bucket le=%v holds %d after %d, of %d", f.GetName(), b.GetUpperBound(), b.GetCumulativeCount(), prev, count)
		}
		prev = b.GetCumulativeCount()
	}
	wantBounds := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, math.Inf(1)}
	if diff := cmp.Diff(wantBounds, bounds); diff != "" {
		t.Errorf("%s: bucket bounds (-want +got):\n%s", f.GetName(), diff)
	}
}

// TestScrapeGaugesWhileRunning: with every worker held in its handler, the
// gauges say so.
func TestScrapeGaugesWhileRunning(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.job(t, tasks.JobOptions{Concurrency: 10}, pages(10)...)
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	h := worker.HandlerFunc(func(ctx context.Context, _ tasks.Task) tasks.TaskResult {
		started <- struct{}{}
		<-release
		return tasks.TaskResult{StatusCode: 200}
	})
	p := worker.New(f.queue, h, worker.Config{Workers: 3, MaintainInterval: -1})
	url := listen(t, metrics.NewRegistry(p, f.queue, metrics.QueueOptions{}))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for range 3 {
		<-started
	}
	got := values(scrape(t, url), "taskq_")
	want := map[string]float64{"taskq_workers": 3, "taskq_workers_idle": 0, "taskq_tasks_in_flight": 3, "taskq_queue_tasks{status=running}": 3}
	if diff := cmp.Diff(want, pick(got, want)); diff != "" {
		t.Errorf("gauges with three handlers running (-want +got):\n%s", diff)
	}
	close(release)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestQueueCollectorReadsAgainAfterInterval: past MinInterval a scrape reads
// the database again and shows what changed.
func TestQueueCollectorReadsAgainAfterInterval(t *testing.T) {
	t.Parallel()
	f := setup(t)
	jobID := f.job(t, tasks.JobOptions{}, pages(5)...)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewQueueCollector(f.queue, metrics.QueueOptions{MinInterval: time.Nanosecond}))
	url := listen(t, reg)
	if got := values(scrape(t, url), "taskq_queue_tasks"); got["taskq_queue_tasks{status=pending}"] != 5 {
		t.Fatalf("first read: %v", got)
	}
	if _, err := f.queue.Enqueue(context.Background(), jobID, []tasks.Page{{Path: "/more", Priority: 1}}); err != nil {
		t.Fatal(err)
	}
	got := values(scrape(t, url), "taskq_queue_")
	want := map[string]float64{"taskq_queue_tasks{status=pending}": 6, "taskq_queue_reads_total": 2}
	if diff := cmp.Diff(want, pick(got, want)); diff != "" {
		t.Errorf("second read (-want +got):\n%s", diff)
	}
}

// TestQueueCollectorReadError: when the database cannot be read the gauges
// are left out (no stale figures), the error is counted, the rest of the
// scrape is served, and the database is not asked again within MinInterval.
func TestQueueCollectorReadError(t *testing.T) {
	t.Parallel()
	f := setup(t)
	closed := pgtest.Pool(t, f.url, 1)
	closed.Close()
	p := worker.New(f.queue, worker.HandlerFunc(failing), worker.Config{Workers: 2})
	url := listen(t, metrics.NewRegistry(p, tasks.New(closed, tasks.Config{}), metrics.QueueOptions{MinInterval: time.Hour}))
	for range 2 {
		got := values(scrape(t, url), "taskq_")
		want := map[string]float64{
			"taskq_queue_reads_total":           1,
			"taskq_queue_read_errors_total":     1,
			"taskq_queue_tasks{status=pending}": -1,
			"taskq_lock_waits":                  -1,
			"taskq_workers":                     2,
		}
		if diff := cmp.Diff(want, pick(got, want)); diff != "" {
			t.Errorf("scrape with the database unreadable (-want +got):\n%s", diff)
		}
	}
}
