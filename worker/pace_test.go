package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// paceServer is a site on loopback that records when each page request
// arrives, as the site sees it, and answers with respond (200 by default).
type paceServer struct {
	*httptest.Server
	robots  string
	respond func(n int, w http.ResponseWriter) // n: the page request's number, from 0

	mu       sync.Mutex
	arrivals []time.Time
	codes    []int
	robotsN  int
}

func newPaceServer(t *testing.T, robots string, respond func(int, http.ResponseWriter)) *paceServer {
	s := &paceServer{robots: robots, respond: respond}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		s.mu.Lock()
		if r.URL.Path == "/robots.txt" {
			s.robotsN++
			s.mu.Unlock()
			if s.robots == "" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprint(w, s.robots)
			return
		}
		n := len(s.arrivals)
		s.arrivals = append(s.arrivals, now)
		s.codes = append(s.codes, 0)
		s.mu.Unlock()
		rec := httptest.NewRecorder()
		if s.respond != nil {
			s.respond(n, rec)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		s.mu.Lock()
		s.codes[n] = rec.Code
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *paceServer) domain() string { return strings.TrimPrefix(s.URL, "http://") }

func (s *paceServer) seen() ([]time.Time, []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.arrivals), slices.Clone(s.codes)
}

// pacedJob creates a job of n pages on domain.
func pacedJob(t *testing.T, q *tasks.Queue, domain string, concurrency, n int) string {
	t.Helper()
	ctx := context.Background()
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: domain, Concurrency: concurrency})
	if err != nil {
		t.Fatal(err)
	}
	var pages []tasks.Page
	for i := range n {
		pages = append(pages, tasks.Page{Path: fmt.Sprintf("/p%03d", i), Priority: 1})
	}
	if _, err := q.Enqueue(ctx, job.ID, pages); err != nil {
		t.Fatal(err)
	}
	return job.ID
}

// runPools runs pools until cond holds, then stops them all.
func runPools(t *testing.T, pools []*worker.Pool, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range pools {
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if !cond() {
		t.Fatal("condition not met within 2 minutes")
	}
}

func jobsDone(t *testing.T, q *tasks.Queue, jobs ...string) func() bool {
	return func() bool {
		for _, id := range jobs {
			j, err := q.Job(context.Background(), id)
			if err != nil || j.Progress.Completed+j.Progress.Failed < j.Progress.Total {
				return false
			}
		}
		return true
	}
}

// checkGaps fails when two consecutive times are closer than least.
func checkGaps(t *testing.T, what string, times []time.Time, least time.Duration) {
	t.Helper()
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap < least {
			t.Errorf("%s: %d and %d came %v apart, less than %v", what, i-1, i, gap, least)
		}
	}
}

// dbStarts are the claim times the database recorded for a domain's tasks.
func dbStarts(t *testing.T, q *tasks.Queue, domain string) []time.Time {
	t.Helper()
	rows, err := q.Pool().Query(context.Background(), `
		SELECT t.started_at FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN domains d ON d.id = j.domain_id
		WHERE d.name = $1 AND t.started_at IS NOT NULL ORDER BY t.started_at`, domain)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			t.Fatal(err)
		}
		out = append(out, at)
	}
	return out
}

// Three worker pools of 16 workers each, on connection pools of their own
// (one claiming one at a time with LISTEN, one in batches, one poll-only),
// crawl two jobs of one paced domain. The claim times the database records
// are never closer than the interval. At the site, no request arrives
// sooner than the interval less PaceStartBudget after the one before left
// its fetcher (what the queue guarantees, less 1 ms for the fetcher's own
// way from its last check to the transport): the site's gap between
// arrivals also carries the earlier request's way to the server's clock,
// which under make test's load took more than the 10 ms the issue allows
// for loopback jitter (two arrivals 80 ms apart at an interval of 100).
func TestPoolsKeepADomainsPace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const interval = 100 * time.Millisecond
	srv := newPaceServer(t, "", nil)
	f := setup(t, tasks.Config{})
	jobs := []string{pacedJob(t, f.queue, srv.domain(), 32, 12), pacedJob(t, f.queue, srv.domain(), 32, 12)}
	if err := f.queue.SetDomainPace(ctx, srv.domain(), interval); err != nil {
		t.Fatal(err)
	}
	sends := &sendTimes{}
	client := &http.Client{Transport: sends, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var pools []*worker.Pool
	for i, cfg := range []worker.Config{
		{Workers: 16, ListenURL: f.url},
		{Workers: 16, ClaimBatch: 10, ListenURL: f.url},
		{Workers: 16, PollInterval: 50 * time.Millisecond},
	} {
		q := tasks.New(pgtest.Pool(t, f.url, 20), tasks.Config{})
		cfg.ID = fmt.Sprintf("pool%d", i)
		cfg.MaintainInterval = 100 * time.Millisecond
		pools = append(pools, worker.New(q, &crawl.Fetcher{Scheme: "http", Client: client, Domains: crawl.NewDomainCache(q)}, cfg))
	}
	runPools(t, pools, jobsDone(t, f.queue, jobs...))
	for i, p := range pools {
		t.Logf("pool %d: %d paced tasks handed back for missing their start", i, p.Stats().PaceMissed)
	}
	arrivals, _ := srv.seen()
	left := sends.times()
	if len(arrivals) != 24 || len(left) != 24 {
		t.Fatalf("the site saw %d requests and the fetchers sent %d, want 24", len(arrivals), len(left))
	}
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	var longest, closest time.Duration = 0, time.Hour
	for i := range arrivals {
		// One request at a time, each well before the next: the i-th to
		// leave is the i-th to arrive.
		way := arrivals[i].Sub(left[i])
		if way < 0 {
			t.Fatalf("request %d arrived %v before it left: sends and arrivals do not pair up", i, -way)
		}
		longest = max(longest, way)
		if i == 0 {
			continue
		}
		closest = min(closest, arrivals[i].Sub(arrivals[i-1]))
		if least := interval - tasks.DefaultPaceStartBudget - time.Millisecond; arrivals[i].Sub(left[i-1]) < least {
			t.Errorf("request %d reached the site %v after request %d left, less than %v",
				i, arrivals[i].Sub(left[i-1]), i-1, least)
		}
	}
	t.Logf("closest arrivals %v apart; longest way to the site %v", closest, longest)
	checkGaps(t, "claims in the database", dbStarts(t, f.queue, srv.domain()), interval)
}

// sendTimes is an http.RoundTripper that records when each page request
// (not robots.txt) leaves for the site.
type sendTimes struct {
	mu sync.Mutex
	at []time.Time
}

func (s *sendTimes) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path != "/robots.txt" {
		s.mu.Lock()
		s.at = append(s.at, time.Now())
		s.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (s *sendTimes) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.at)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// A site answering 429 with Retry-After: 2 sees no request for 2 s after
// each; the domain's interval rises with each 429 and falls back to its
// floor once the site answers again.
func TestPoolBacksOffOn429(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Long enough that the 429's outcome is surely written before the
	// next claim: a back-off can only slow the claims after it.
	const floor = 600 * time.Millisecond
	srv := newPaceServer(t, "", func(n int, w http.ResponseWriter) {
		if n < 2 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	f := setup(t, tasks.Config{PaceStep: 200 * time.Millisecond, PaceRecoverAfter: 2, BackoffBase: 10 * time.Millisecond})
	job := pacedJob(t, f.queue, srv.domain(), 8, 10)
	if err := f.queue.SetDomainPace(ctx, srv.domain(), floor); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var intervals []time.Duration
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if p, err := f.queue.DomainPace(ctx, srv.domain()); err == nil {
				mu.Lock()
				if len(intervals) == 0 || intervals[len(intervals)-1] != p.Interval {
					intervals = append(intervals, p.Interval)
				}
				mu.Unlock()
			}
		}
	})
	p := worker.New(f.queue, &crawl.Fetcher{Scheme: "http", Domains: crawl.NewDomainCache(f.queue)},
		worker.Config{Workers: 8, ListenURL: f.url, MaintainInterval: 100 * time.Millisecond})
	runPools(t, []*worker.Pool{p}, jobsDone(t, f.queue, job))
	close(stop)
	watch.Wait()

	arrivals, codes := srv.seen()
	for i := 1; i < len(arrivals); i++ {
		if codes[i-1] == http.StatusTooManyRequests {
			if gap := arrivals[i].Sub(arrivals[i-1]); gap < 2*time.Second-10*time.Millisecond {
				t.Errorf("request %d came %v after a 429 with Retry-After: 2", i, gap)
			}
		}
	}
	if got := slices.Max(intervals); got != floor+2*200*time.Millisecond {
		t.Errorf("the interval rose to %v (intervals seen %v), want %v after two 429s", got, intervals, floor+400*time.Millisecond)
	}
	final, err := f.queue.DomainPace(ctx, srv.domain())
	if err != nil {
		t.Fatal(err)
	}
	if final.Interval != floor {
		t.Errorf("after the site recovered the interval is %v (seen %v), want the floor %v", final.Interval, intervals, floor)
	}
	j, err := f.queue.Job(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if j.Progress.Completed != 10 {
		t.Errorf("progress %+v, want all 10 completed (the 429s retried)", j.Progress)
	}
}

// The fetcher reads a domain's robots.txt once and paces the domain by its
// Crawl-delay: the requests after those already under way when it was read
// are spaced by it.
func TestFetcherPacesByCrawlDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newPaceServer(t, "User-agent: other\nCrawl-delay: 30\n\nUser-agent: *\nDisallow: /private\nCrawl-delay: 0.2\n", nil)
	f := setup(t, tasks.Config{})
	const concurrency = 4
	job := pacedJob(t, f.queue, srv.domain(), concurrency, 10)
	fetcher := &crawl.Fetcher{Scheme: "http", Domains: crawl.NewDomainCache(f.queue), Pacer: f.queue}
	p := worker.New(f.queue, fetcher, worker.Config{Workers: 8, ListenURL: f.url})
	runPools(t, []*worker.Pool{p}, jobsDone(t, f.queue, job))
	pace, err := f.queue.DomainPace(ctx, srv.domain())
	if err != nil {
		t.Fatal(err)
	}
	if pace.Floor != 200*time.Millisecond || pace.Source != tasks.PaceRobots {
		t.Errorf("pace %+v, want a 200ms floor from robots", pace)
	}
	srv.mu.Lock()
	robots := srv.robotsN
	srv.mu.Unlock()
	if robots != 1 {
		t.Errorf("robots.txt read %d times, want once", robots)
	}
	arrivals, _ := srv.seen()
	slices.SortFunc(arrivals, func(a, b time.Time) int { return a.Compare(b) })
	// Tasks claimed before the pace existed may come together.
	checkGaps(t, "requests after the pace was set", arrivals[concurrency:], 190*time.Millisecond)
}

// While every job is paced for seconds, idle workers do not poll: they
// sleep until the next start (the pace timer wakes one) or a notification.
func TestIdlePoolWaitsForThePace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const interval = 3 * time.Second
	f := setup(t, tasks.Config{})
	job := pacedJob(t, f.queue, "slow.example", 16, 3)
	if err := f.queue.SetDomainPace(ctx, "slow.example", interval); err != nil {
		t.Fatal(err)
	}
	h := &recorder{}
	p := worker.New(f.queue, h, worker.Config{Workers: 16, ListenURL: f.url, PollInterval: 200 * time.Millisecond, MaintainInterval: -1})
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	started := func() int { return len(dbStarts(t, f.queue, "slow.example")) }
	deadline := time.Now().Add(time.Minute)
	for started() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the start's own claims and turns
	first := p.Stats().ClaimCalls
	time.Sleep(2 * time.Second)
	idle := p.Stats().ClaimCalls - first
	for started() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Polling every 200 ms, 16 idle workers would claim some 160 times in
	// 2 s; waiting for the pace, a few (the pool's finish gives one turn).
	if idle > 8 {
		t.Errorf("%d claim statements in 2 s while the only job waited for its pace", idle)
	}
	starts := dbStarts(t, f.queue, "slow.example")
	if len(starts) < 2 {
		t.Fatalf("%d tasks started", len(starts))
	}
	if gap := starts[1].Sub(starts[0]); gap < interval {
		t.Errorf("second task started %v after the first, before the interval %v", gap, interval)
	}
	_ = job
}

// slowReturns delays every statement's result by delay, as a distant
// database (or a loaded machine) does.
type slowReturns struct{ delay time.Duration }

func (s slowReturns) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (s slowReturns) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {
	time.Sleep(s.delay)
}

// A claim whose rows take longer to come back than PaceStartBudget still
// runs its paced task: the claim holds the domain's next start back by its
// round trip, instead of handing every paced task back for starting late
// (which it did, for ever, with the database 30 ms away). The site's gaps
// and the database's hold as with a near database.
func TestPoolKeepsThePaceWithADistantDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const interval = 100 * time.Millisecond
	srv := newPaceServer(t, "", nil)
	f := setup(t, tasks.Config{})
	job := pacedJob(t, f.queue, srv.domain(), 8, 8)
	if err := f.queue.SetDomainPace(ctx, srv.domain(), interval); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(f.url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = slowReturns{3 * tasks.DefaultPaceStartBudget}
	far, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(far.Close)
	q := tasks.New(far, tasks.Config{})
	pool := worker.New(q, &crawl.Fetcher{Scheme: "http", Domains: crawl.NewDomainCache(q)},
		worker.Config{ID: "far", Workers: 4, PollInterval: 20 * time.Millisecond, MaintainInterval: 100 * time.Millisecond})
	runPools(t, []*worker.Pool{pool}, jobsDone(t, f.queue, job))
	t.Logf("%d paced tasks handed back for missing their start", pool.Stats().PaceMissed)
	arrivals, _ := srv.seen()
	if len(arrivals) != 8 {
		t.Errorf("the site saw %d requests, want 8", len(arrivals))
	}
	checkGaps(t, "requests at the site", arrivals, interval-10*time.Millisecond)
	checkGaps(t, "claims in the database", dbStarts(t, f.queue, srv.domain()), interval)
}
