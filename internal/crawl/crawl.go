// Package crawl holds the task handlers: Fetcher fetches a task's page over
// HTTP as the cache-warming service does, and Simulator stands in for it in
// load tests, producing the same result columns without a network.
package crawl

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/tasks"
)

// Fetcher fetches https://<job's domain><task path> and records the status,
// timing, cache status and headers. It implements worker.Handler.
type Fetcher struct {
	// Client does the requests; its Timeout bounds each fetch. Default: a
	// client with a 30s timeout that does not follow redirects.
	Client *http.Client
	// Scheme is "https" (default) or "http".
	Scheme string
	// Domains maps a job id to its domain.
	Domains *DomainCache
}

// DomainCache looks up and remembers each job's domain name.
type DomainCache struct {
	pool  *pgxpool.Pool
	mu    sync.Mutex
	names map[string]string
}

// NewDomainCache returns a cache reading from pool.
func NewDomainCache(pool *pgxpool.Pool) *DomainCache {
	return &DomainCache{pool: pool, names: map[string]string{}}
}

// Domain returns the domain name of a job.
func (c *DomainCache) Domain(ctx context.Context, jobID string) (string, error) {
	c.mu.Lock()
	name, ok := c.names[jobID]
	c.mu.Unlock()
	if ok {
		return name, nil
	}
	err := c.pool.QueryRow(ctx,
		"SELECT d.name FROM jobs j JOIN domains d ON d.id = j.domain_id WHERE j.id = $1", jobID).Scan(&name)
	if err != nil {
		return "", fmt.Errorf("domain of job %s: %w", jobID, err)
	}
	c.mu.Lock()
	c.names[jobID] = name
	c.mu.Unlock()
	return name, nil
}

// Handle fetches the task's page.
func (f *Fetcher) Handle(ctx context.Context, t tasks.Task) tasks.Result {
	domain, err := f.Domains.Domain(ctx, t.JobID)
	if err != nil {
		return tasks.Result{Err: err}
	}
	scheme := f.Scheme
	if scheme == "" {
		scheme = "https"
	}
	client := f.Client
	if client == nil {
		client = &http.Client{
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+domain+t.Path, nil)
	if err != nil {
		return tasks.Result{Err: err, Permanent: true}
	}
	req.Header.Set("User-Agent", "taskq-cache-warmer/1.0")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return tasks.Result{Err: err}
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	res := tasks.Result{
		StatusCode:    resp.StatusCode,
		ResponseTime:  time.Since(start),
		CacheStatus:   cacheStatus(resp.Header),
		ContentType:   resp.Header.Get("Content-Type"),
		ContentLength: n,
		Headers:       resp.Header,
	}
	if err != nil {
		res.Err = fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode >= 500 {
		res.Err = fmt.Errorf("server error: %s", resp.Status)
	}
	return res
}

// cacheStatus reads the CDN cache verdict from the headers CDNs use.
func cacheStatus(h http.Header) string {
	for _, k := range []string{"Cf-Cache-Status", "X-Cache", "X-Vercel-Cache", "X-Cache-Status", "Age"} {
		if v := h.Get(k); v != "" {
			if k == "Age" {
				return "HIT"
			}
			return strings.ToUpper(strings.Fields(v + " ")[0])
		}
	}
	return ""
}

// Simulator stands in for Fetcher in load tests: it waits Delay (0 for a
// no-op) and returns a realistic result, the same for the same task every
// time: mostly 200s with a few redirects and 404s, a CDN cache status, a
// content length and a dozen response headers.
type Simulator struct {
	Delay time.Duration
	// FailEvery, when positive, fails one task in FailEvery (by task id), as
	// a timed-out fetch would.
	FailEvery int
}

// Handle simulates fetching the task's page.
func (s Simulator) Handle(ctx context.Context, t tasks.Task) tasks.Result {
	if s.Delay > 0 {
		timer := time.NewTimer(s.Delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return tasks.Result{Err: ctx.Err()}
		case <-timer.C:
		}
	}
	h := fnv.New64a()
	h.Write([]byte(t.ID))
	x := h.Sum64()
	if s.FailEvery > 0 && x%uint64(s.FailEvery) == 0 {
		return tasks.Result{Err: fmt.Errorf("simulated fetch of %s: timeout awaiting response headers", t.Path)}
	}
	status := 200
	switch x % 100 {
	case 0, 1:
		status = 404
	case 2, 3, 4:
		status = 301
	}
	cache := [...]string{"HIT", "HIT", "HIT", "MISS", "EXPIRED", "DYNAMIC"}[x%6]
	length := int64(8_000 + x%180_000)
	return tasks.Result{
		StatusCode:    status,
		ResponseTime:  s.Delay + time.Duration(x%40)*time.Millisecond,
		CacheStatus:   cache,
		ContentType:   "text/html; charset=utf-8",
		ContentLength: length,
		Headers: http.Header{
			"Cache-Control":             {"public, max-age=0, s-maxage=86400"},
			"Cf-Cache-Status":           {cache},
			"Cf-Ray":                    {fmt.Sprintf("%016x-SYD", x)},
			"Content-Encoding":          {"br"},
			"Content-Length":            {fmt.Sprint(length)},
			"Content-Type":              {"text/html; charset=utf-8"},
			"Date":                      {"Fri, 24 Oct 2025 03:12:44 GMT"},
			"Etag":                      {fmt.Sprintf(`W/"%x"`, x>>16)},
			"Server":                    {"cloudflare"},
			"Strict-Transport-Security": {"max-age=31536000; includeSubDomains"},
			"Vary":                      {"Accept-Encoding"},
			"X-Content-Type-Options":    {"nosniff"},
		},
	}
}
