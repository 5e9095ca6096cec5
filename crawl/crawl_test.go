package crawl_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/tasks"
)

func TestLinks(t *testing.T) {
	t.Parallel()
	page, _ := url.Parse("https://example.com/blog/post?x=1")
	body := `<html><head><link rel="alternate" href="/fr/blog/post"><link rel="stylesheet" href="/style.css"></head>
	<body>
	<a href="/about">About</a> <a href="/about">About again</a>
	<a href="contact#form">relative, with a fragment</a>
	<a href="https://EXAMPLE.com/caps?q=2">same host in capitals</a>
	<a href="https://other.example/">another host</a>
	<a href="//example.com/protocol-relative">protocol-relative</a>
	<a href="mailto:a@example.com">mail</a> <a href="javascript:void(0)">js</a>
	<a href="#top">this page</a> <a href="">empty</a>
	<a rel="nofollow" href="/login">nofollow</a>
	<area href="/map-area">
	<a href="/` + strings.Repeat("x", tasks.MaxPathLength) + `">too long</a>
	<a href="/caf%C3%A9">escaped unicode</a>
	</body></html>`
	got := crawl.Links(page, strings.NewReader(body))
	want := []string{"/fr/blog/post", "/about", "/blog/contact", "/caps?q=2", "/protocol-relative",
		"/blog/post?x=1", "/map-area", "/caf%C3%A9"}
	// "#top" resolves to the page itself, which is a link like any other.
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("links (-want +got):\n%s", diff)
	}

	withBase := crawl.Links(page, strings.NewReader(`<base href="https://example.com/docs/"><a href="intro">x</a>`))
	if diff := cmp.Diff([]string{"/docs/intro"}, withBase); diff != "" {
		t.Errorf("links under <base> (-want +got):\n%s", diff)
	}
}

// TestFetcherFindsLinks fetches pages of a real local HTTP server for a job
// that follows links and for one that does not.
func TestFetcherFindsLinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	site := &crawl.Site{Pages: 50}
	srv := httptest.NewServer(site)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	pool := pgtest.New(t)
	q := tasks.New(pool, tasks.Config{})
	follow, err := q.CreateJob(ctx, tasks.JobOptions{Domain: host, FindLinks: true})
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := q.CreateJob(ctx, tasks.JobOptions{Domain: host})
	if err != nil {
		t.Fatal(err)
	}
	f := &crawl.Fetcher{Scheme: "http", Domains: crawl.NewDomainCache(q)}

	res := f.Handle(ctx, tasks.Task{JobID: follow.ID, Path: "/page/7", PriorityScore: 1})
	if res.Err != nil || res.StatusCode != 200 {
		t.Fatalf("fetch = %d, %v", res.StatusCode, res.Err)
	}
	var got []string
	for _, l := range res.Links {
		got = append(got, l.Path)
		if l.Priority != 0.9 {
			t.Errorf("link %s has priority %v, want 0.9 (below its page)", l.Path, l.Priority)
		}
	}
	// The site's links, without the other host, mailto:, nofollow; the
	// fragment link is the page itself.
	want := append(site.Links("/page/7"), "/page/7")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("links of a job that follows links (-want +got):\n%s", diff)
	}

	if res := f.Handle(ctx, tasks.Task{JobID: fixed.ID, Path: "/page/7"}); res.Err != nil || len(res.Links) != 0 {
		t.Errorf("job that does not follow links: %d links, err %v; want none", len(res.Links), res.Err)
	}
	if res := f.Handle(ctx, tasks.Task{JobID: follow.ID, Path: "/missing"}); res.StatusCode != 404 || len(res.Links) != 0 {
		t.Errorf("a 404 page: status %d, %d links; want 404 and none", res.StatusCode, len(res.Links))
	}
}

// cdn is a local HTTP server that answers like a CDN in front of a site: a
// page is a MISS for its first misses requests (GET or HEAD), a HIT after;
// /cached is always a HIT, /listed says so in a list ("MISS, MISS"), as a
// CDN with a shield does; /moved redirects to /elsewhere. It counts requests
// by method and path.
type cdn struct {
	misses int
	mu     sync.Mutex
	seen   map[string]int
}

func (c *cdn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	n := c.seen[r.URL.Path]
	c.seen[r.URL.Path]++
	c.seen[r.Method+" "+r.URL.Path]++
	c.mu.Unlock()
	if r.URL.Path == "/moved" {
		http.Redirect(w, r, "/elsewhere", http.StatusMovedPermanently)
		return
	}
	status := "HIT"
	if n < c.misses && r.URL.Path != "/cached" {
		status = "MISS"
	}
	if r.URL.Path == "/listed" {
		w.Header().Set("X-Cache", status+", "+status)
	} else {
		w.Header().Set("Cf-Cache-Status", status)
	}
	w.Header().Set("X-Served-By", "cache-syd")
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("the page " + r.URL.Path))
}

func (c *cdn) requests(method, path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[method+" "+path]
}

// TestFetcherConfirmsTheCacheWarmed fetches pages of a real local server:
// a page that was not cached is checked and requested a second time, with
// both requests' timing recorded; a cached page is requested once; a
// redirect records where it leads.
func TestFetcherConfirmsTheCacheWarmed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server := &cdn{misses: 2, seen: map[string]int{}}
	srv := httptest.NewServer(server)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	pool := pgtest.New(t)
	q := tasks.New(pool, tasks.Config{})
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: host})
	if err != nil {
		t.Fatal(err)
	}
	f := &crawl.Fetcher{Scheme: "http", Domains: crawl.NewDomainCache(q), CacheCheckDelay: time.Millisecond}

	nonNegative := func(what string, tm tasks.Timing) {
		t.Helper()
		for name, d := range map[string]time.Duration{"DNS lookup": tm.DNSLookup, "TCP connection": tm.TCPConnection,
			"TLS handshake": tm.TLSHandshake, "TTFB": tm.TTFB, "content transfer": tm.ContentTransfer} {
			if d < 0 {
				t.Errorf("%s: %s is %s", what, name, d)
			}
		}
	}

	// The first GET and the first check see a MISS, the second check a HIT:
	// the checks stop there and the second request follows.
	warm := f.Handle(ctx, tasks.Task{JobID: job.ID, Path: "/warm"})
	if warm.Err != nil || warm.StatusCode != 200 || warm.CacheStatus != "MISS" {
		t.Fatalf("first request: %d %s, %v; want 200 MISS", warm.StatusCode, warm.CacheStatus, warm.Err)
	}
	wantChecks := []tasks.CacheCheckAttempt{
		{Attempt: 1, CacheStatus: "MISS", Delay: time.Millisecond},
		{Attempt: 2, CacheStatus: "HIT", Delay: time.Millisecond},
	}
	if diff := cmp.Diff(wantChecks, warm.CacheCheckAttempts); diff != "" {
		t.Errorf("cache checks (-want +got):\n%s", diff)
	}
	if warm.Second == nil {
		t.Fatal("no second request after a MISS")
	}
	body := int64(len("the page /warm"))
	if s := warm.Second; s.CacheStatus != "HIT" || s.ContentLength != body ||
		s.Headers.Get("Cf-Cache-Status") != "HIT" || s.Headers.Get("X-Served-By") != "cache-syd" || s.ResponseTime < 0 {
		t.Errorf("second request %+v; want a HIT of %d bytes with its headers", *s, body)
	}
	if warm.ContentLength != body || warm.Headers.Get("X-Served-By") != "cache-syd" || warm.RedirectURL != "" ||
		warm.ResponseTime < 0 {
		t.Errorf("first request: %d bytes, headers %v, redirect %q", warm.ContentLength, warm.Headers, warm.RedirectURL)
	}
	nonNegative("first request", warm.Timing)
	nonNegative("second request", warm.Second.Timing)
	if get, head := server.requests("GET", "/warm"), server.requests("HEAD", "/warm"); get != 2 || head != 2 {
		t.Errorf("server saw %d GETs and %d HEADs of /warm, want 2 and 2", get, head)
	}

	// A page the CDN had: one request, nothing else.
	cached := f.Handle(ctx, tasks.Task{JobID: job.ID, Path: "/cached"})
	if cached.Err != nil || cached.CacheStatus != "HIT" || cached.Second != nil || cached.CacheCheckAttempts != nil {
		t.Errorf("cached page: %s, second %+v, checks %v, %v; want a HIT alone",
			cached.CacheStatus, cached.Second, cached.CacheCheckAttempts, cached.Err)
	}
	nonNegative("cached page", cached.Timing)
	if n := server.requests("GET", "/cached") + server.requests("HEAD", "/cached"); n != 1 {
		t.Errorf("server saw %d requests of /cached, want 1", n)
	}

	listed := f.Handle(ctx, tasks.Task{JobID: job.ID, Path: "/listed"})
	if listed.CacheStatus != "MISS" || listed.Second == nil || listed.Second.CacheStatus != "HIT" {
		t.Errorf("X-Cache: MISS, MISS read as %q, second request %+v; want MISS, then a HIT", listed.CacheStatus, listed.Second)
	}

	moved := f.Handle(ctx, tasks.Task{JobID: job.ID, Path: "/moved"})
	if moved.StatusCode != 301 || moved.RedirectURL != srv.URL+"/elsewhere" || moved.Second != nil {
		t.Errorf("redirect: %d to %q, second %+v; want 301 to %s/elsewhere, no second request",
			moved.StatusCode, moved.RedirectURL, moved.Second, srv.URL)
	}

	// What the fetch recorded is what the task's row holds.
	if _, err := q.Enqueue(ctx, job.ID, []tasks.Page{{Path: "/warm"}}); err != nil {
		t.Fatal(err)
	}
	claimed, err := q.ClaimOne(ctx, "w1")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Complete(ctx, *claimed, warm); err != nil {
		t.Fatal(err)
	}
	var second, served string
	var checks int
	if err := pool.QueryRow(ctx, `SELECT second_cache_status, second_headers->'X-Served-By'->>0,
		jsonb_array_length(cache_check_attempts) FROM tasks WHERE id = $1`, claimed.ID).Scan(&second, &served, &checks); err != nil {
		t.Fatal(err)
	}
	if second != "HIT" || served != "cache-syd" || checks != 2 {
		t.Errorf("stored second request %s served by %s, %d checks; want HIT, cache-syd, 2", second, served, checks)
	}
}

// TestSimulatorFillsTheRow: the simulated results the load test and the
// benchmarks write are accepted, and fill the columns a real fetch fills,
// the second request's for the cache misses only.
func TestSimulatorFillsTheRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.New(t)
	q := tasks.New(pool, tasks.Config{})
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: "sim.example", Concurrency: 200})
	if err != nil {
		t.Fatal(err)
	}
	pages := make([]tasks.Page, 120)
	for i := range pages {
		pages[i] = tasks.Page{Path: fmt.Sprintf("/p%d", i)}
	}
	if _, err := q.Enqueue(ctx, job.ID, pages); err != nil {
		t.Fatal(err)
	}
	var claimed []tasks.Task
	for len(claimed) < len(pages) {
		// A claim takes one shard's tasks at most.
		more, err := q.Claim(ctx, "w1", len(pages))
		if err != nil || len(more) == 0 {
			t.Fatalf("claimed %d of %d, then %v", len(claimed), len(pages), err)
		}
		claimed = append(claimed, more...)
	}
	outcomes := make([]tasks.Outcome, len(claimed))
	misses := 0
	for i, task := range claimed {
		outcomes[i] = tasks.Outcome{Task: task, Result: crawl.Simulator{}.Result(task)}
		if crawl.Missed(outcomes[i].Result.CacheStatus) {
			misses++
		}
	}
	if rep, err := q.Finish(ctx, outcomes); err != nil || rep.Completed != len(pages) {
		t.Fatalf("Finish = %+v, %v; want %d completed", rep, err, len(pages))
	}
	var timed, seconds, checked, secondMisses int
	if err := pool.QueryRow(ctx, `
		SELECT count(ttfb) FILTER (WHERE dns_lookup_time IS NOT NULL AND content_transfer_time IS NOT NULL),
		       count(second_response_time) FILTER (WHERE second_headers IS NOT NULL AND second_ttfb IS NOT NULL),
		       count(cache_check_attempts),
		       count(*) FILTER (WHERE (second_response_time IS NOT NULL) <> (cache_status IN ('MISS', 'EXPIRED')))
		FROM tasks WHERE job_id = $1`, job.ID).Scan(&timed, &seconds, &checked, &secondMisses); err != nil {
		t.Fatal(err)
	}
	if misses == 0 || timed != len(pages) || seconds != misses || checked != misses || secondMisses != 0 {
		t.Errorf("%d timed, %d second requests, %d with checks, %d second requests not after a miss; want %d, %d, %d, 0",
			timed, seconds, checked, secondMisses, len(pages), misses, misses)
	}
}
