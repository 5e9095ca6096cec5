// Package crawl holds the task handlers: Fetcher fetches a task's page over
// HTTP as the cache-warming service does, and Simulator stands in for it in
// load tests, producing the same result columns without a network.
package crawl

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"hash/fnv"
	"io"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/blue-banded-bee/taskq/tasks"
)

// Fetcher fetches https://<job's domain><task path> and records what the
// cache-warming service records: the status, timing (with its breakdown from
// net/http/httptrace), cache status, headers and where the page redirects.
// When the CDN did not have the page (a MISS or EXPIRED cache status), the
// fetch has just warmed it: Fetcher checks the cache status again (HEAD
// requests, CacheChecks at most, until it no longer reports a miss) and then
// requests the page a second time, recording that request in TaskResult.Second,
// as the application does. For a job that follows links (find_links), it
// also returns the page's links to the same domain with the result (see
// Links). It implements worker.Handler.
type Fetcher struct {
	// Client does the requests; its Timeout bounds each request. Default: a
	// client with a 30s timeout that does not follow redirects.
	Client *http.Client
	// Scheme is "https" (default) or "http".
	Scheme string
	// Domains maps a job id to its domain and whether it follows links.
	Domains *DomainCache
	// CacheChecks is the most cache-status checks made after a miss before
	// the second request. Default 3, the application's; negative: none.
	CacheChecks int
	// CacheCheckDelay is the wait before each check (and before the second
	// request when no check is made), for the CDN to store the page.
	// Default 700ms, the application's.
	CacheCheckDelay time.Duration
	// Pacer, when set, hears each domain's robots.txt Crawl-delay: the
	// fetcher reads robots.txt the first time it meets a domain and paces
	// the domain by it unless it has a pace already (taskq work sets the
	// queue here). Nil: robots.txt is not read.
	Pacer Pacer

	robots robotsCache
}

// DomainCache looks up and remembers each job's domain name and whether the
// job follows links (tasks.Queue.JobSite).
type DomainCache struct {
	queue *tasks.Queue
	mu    sync.Mutex
	jobs  map[string]tasks.JobSite
}

// NewDomainCache returns a cache reading through q.
func NewDomainCache(q *tasks.Queue) *DomainCache {
	return &DomainCache{queue: q, jobs: map[string]tasks.JobSite{}}
}

// Job returns the domain of a job and whether it follows links.
func (c *DomainCache) Job(ctx context.Context, jobID string) (tasks.JobSite, error) {
	c.mu.Lock()
	site, ok := c.jobs[jobID]
	c.mu.Unlock()
	if ok {
		return site, nil
	}
	site, err := c.queue.JobSite(ctx, jobID)
	if err != nil {
		return tasks.JobSite{}, err
	}
	c.mu.Lock()
	c.jobs[jobID] = site
	c.mu.Unlock()
	return site, nil
}

// Domain returns the domain name of a job.
func (c *DomainCache) Domain(ctx context.Context, jobID string) (string, error) {
	site, err := c.Job(ctx, jobID)
	return site.Domain, err
}

// UserAgent is what the fetcher and Sitemap send.
const UserAgent = "taskq-cache-warmer/1.0"

// MaxLinkBody bounds how much of a page the fetcher parses for links; the
// rest is read and discarded.
const MaxLinkBody = 5 << 20

// Handle fetches the task's page.
func (f *Fetcher) Handle(ctx context.Context, t tasks.Task) tasks.TaskResult {
	site, err := f.Domains.Job(ctx, t.JobID)
	if err != nil {
		return tasks.TaskResult{Err: err}
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
	f.readRobots(ctx, client, scheme, site.Domain)
	target := scheme + "://" + site.Domain + t.Path
	req, err := newRequest(ctx, http.MethodGet, target)
	if err != nil {
		return tasks.TaskResult{Err: err, Permanent: true}
	}
	if t.Late(time.Now()) {
		// Going out now could undercut the domain's interval at the site.
		return tasks.TaskResult{Err: tasks.ErrPaceMissed}
	}
	first, err := fetch(client, req, func(resp *http.Response) bool {
		return site.FindLinks && resp.StatusCode < 300 && isHTML(resp.Header.Get("Content-Type"))
	})
	if err != nil {
		// No connection: the domain's pace backs off (tasks.TaskResult.BackOff).
		return tasks.TaskResult{Err: err, ConnectionFailed: connectionFailed(ctx, err)}
	}
	res := tasks.TaskResult{
		StatusCode:    first.status,
		ResponseTime:  first.total,
		CacheStatus:   cacheStatus(first.header),
		ContentType:   first.header.Get("Content-Type"),
		ContentLength: first.length,
		Headers:       first.header,
		RedirectURL:   first.redirect,
		Timing:        first.timing,
	}
	if first.readErr != nil {
		res.Err = fmt.Errorf("read body: %w", first.readErr)
	}
	if first.status >= 500 {
		res.Err = fmt.Errorf("server error: %s", first.statusText)
	}
	if first.status == http.StatusTooManyRequests || first.status == http.StatusServiceUnavailable {
		// The site asks to slow down: the task is retried, and its domain's
		// pace backs off, for at least Retry-After.
		res.Err = fmt.Errorf("rate limited: %s", first.statusText)
		res.RetryAfter, _ = RetryAfter(first.header, time.Now())
	}
	if first.body != nil && res.Err == nil {
		for _, p := range Links(first.url, first.body) {
			// A page's links rank below it, so a crawl goes breadth first.
			res.Links = append(res.Links, tasks.Page{Path: p, Priority: t.PriorityScore * 0.9})
		}
	}
	if res.Err == nil && Missed(res.CacheStatus) {
		f.confirmWarmed(ctx, client, target, &res)
	}
	return res
}

// Missed says a cache status means the CDN did not have the page: the
// request that saw it warmed the cache, and a second request can confirm it.
// Statuses meaning the page is not cacheable (BYPASS, DYNAMIC) are no miss.
func Missed(cacheStatus string) bool {
	return cacheStatus == "MISS" || cacheStatus == "EXPIRED"
}

// confirmWarmed checks the page's cache status until it no longer reports a
// miss, then requests the page again, recording both in res. A second
// request that fails, or a ctx that ends, leaves the first request's result
// as it is: the page was fetched, which is what the task is for.
func (f *Fetcher) confirmWarmed(ctx context.Context, client *http.Client, target string, res *tasks.TaskResult) {
	checks, delay := f.CacheChecks, f.CacheCheckDelay
	if checks == 0 {
		checks = 3
	}
	if delay <= 0 {
		delay = 700 * time.Millisecond
	}
	wait := func() bool {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	}
	if checks < 0 && !wait() {
		return
	}
	for i := range max(checks, 0) {
		if !wait() {
			return
		}
		status, err := checkCacheStatus(ctx, client, target)
		res.CacheCheckAttempts = append(res.CacheCheckAttempts,
			tasks.CacheCheckAttempt{Attempt: i + 1, CacheStatus: status, Delay: delay})
		if err == nil && !Missed(status) {
			break
		}
	}
	req, err := newRequest(ctx, http.MethodGet, target)
	if err != nil {
		return
	}
	second, err := fetch(client, req, nil)
	if err != nil || second.readErr != nil {
		return
	}
	res.Second = &tasks.SecondRequest{
		ResponseTime:  second.total,
		CacheStatus:   cacheStatus(second.header),
		ContentLength: second.length,
		Headers:       second.header,
		Timing:        second.timing,
	}
}

// checkCacheStatus asks for the page's headers only (HEAD) and returns its
// cache status.
func checkCacheStatus(ctx context.Context, client *http.Client, target string) (string, error) {
	req, err := newRequest(ctx, http.MethodHead, target)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return cacheStatus(resp.Header), nil
}

func newRequest(ctx context.Context, method, target string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", UserAgent)
	return req, nil
}

// fetched is one request's response, its body read.
type fetched struct {
	url        *url.URL // the request's, after any redirects the client followed
	status     int
	statusText string // "503 Service Unavailable"
	header     http.Header
	body       *bytes.Buffer // the first MaxLinkBody bytes, when kept
	length     int64         // bytes of body read
	readErr    error
	redirect   string
	total      time.Duration
	timing     tasks.Timing
}

// fetch sends req and reads the whole body, keeping its start when keep says
// so, and times the request with httptrace.
func fetch(client *http.Client, req *http.Request, keep func(*http.Response) bool) (fetched, error) {
	tr := &tracer{}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), tr.trace()))
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return fetched{}, err
	}
	defer resp.Body.Close()
	out := fetched{url: resp.Request.URL, status: resp.StatusCode, statusText: resp.Status, header: resp.Header,
		redirect: redirectURL(req, resp)}
	if keep != nil && keep(resp) {
		out.body = &bytes.Buffer{}
		out.length, out.readErr = io.Copy(out.body, io.LimitReader(resp.Body, MaxLinkBody))
	}
	if out.readErr == nil {
		var rest int64
		rest, out.readErr = io.Copy(io.Discard, resp.Body)
		out.length += rest
	}
	end := time.Now()
	out.total = end.Sub(start)
	out.timing = tr.timing(start, end)
	return out, nil
}

// redirectURL is where the page redirected: the URL the client ended at if
// it followed redirects, else the Location of a redirect response.
func redirectURL(req *http.Request, resp *http.Response) string {
	if resp.Request.URL.String() != req.URL.String() {
		return resp.Request.URL.String()
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if loc, err := resp.Location(); err == nil {
			return loc.String()
		}
	}
	return ""
}

// tracer collects one request's httptrace events. Its callbacks may run on
// the transport's goroutines (a dial races its addresses), hence the lock.
type tracer struct {
	mu                          sync.Mutex
	dnsStart, tlsStart, gotByte time.Time
	connStart                   map[string]time.Time
	t                           tasks.Timing
}

func (tr *tracer) trace() *httptrace.ClientTrace {
	at := func(f func(now time.Time)) {
		now := time.Now()
		tr.mu.Lock()
		defer tr.mu.Unlock()
		f(now)
	}
	return &httptrace.ClientTrace{
		DNSStart: func(httptrace.DNSStartInfo) { at(func(now time.Time) { tr.dnsStart = now }) },
		DNSDone: func(httptrace.DNSDoneInfo) {
			at(func(now time.Time) { tr.t.DNSLookup = now.Sub(tr.dnsStart) })
		},
		ConnectStart: func(network, addr string) {
			at(func(now time.Time) {
				if tr.connStart == nil {
					tr.connStart = map[string]time.Time{}
				}
				tr.connStart[network+" "+addr] = now
			})
		},
		ConnectDone: func(network, addr string, err error) {
			at(func(now time.Time) {
				if begun, ok := tr.connStart[network+" "+addr]; ok && err == nil {
					tr.t.TCPConnection = now.Sub(begun)
				}
			})
		},
		TLSHandshakeStart: func() { at(func(now time.Time) { tr.tlsStart = now }) },
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			at(func(now time.Time) {
				if err == nil {
					tr.t.TLSHandshake = now.Sub(tr.tlsStart)
				}
			})
		},
		GotFirstResponseByte: func() { at(func(now time.Time) { tr.gotByte = now }) },
	}
}

// timing is the breakdown of a request sent at start whose body was read by
// end. With redirects followed, the parts are the last request's.
func (tr *tracer) timing(start, end time.Time) tasks.Timing {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t := tr.t
	if !tr.gotByte.IsZero() {
		t.TTFB = tr.gotByte.Sub(start)
		t.ContentTransfer = end.Sub(tr.gotByte)
	}
	return t
}

func isHTML(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "text/html" || mt == "application/xhtml+xml")
}

// MaxLinks bounds how many links Links returns for one page.
const MaxLinks = 1000

// Links returns the paths (with their query, without the fragment) of the
// distinct links in an HTML page that point at the page's own host: <a>,
// <area> and <link rel=alternate> hrefs, resolved against the page's URL or
// its <base href>, in the order they appear, at most MaxLinks. Links to
// other hosts or schemes (mailto:, javascript:), links marked rel=nofollow,
// and paths the queue could not store are dropped.
func Links(page *url.URL, body io.Reader) []string {
	base := page
	seen := map[string]bool{}
	var out []string
	z := html.NewTokenizer(body)
	for len(out) < MaxLinks {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		name, hasAttr := z.TagName()
		if !hasAttr {
			continue
		}
		tag := string(name)
		if tag != "a" && tag != "area" && tag != "link" && tag != "base" {
			continue
		}
		var href, rel string
		for {
			k, v, more := z.TagAttr()
			switch string(k) {
			case "href":
				href = strings.TrimSpace(string(v))
			case "rel":
				rel = strings.ToLower(string(v))
			}
			if !more {
				break
			}
		}
		if href == "" {
			continue
		}
		if tag == "base" {
			if u, err := page.Parse(href); err == nil {
				base = u
			}
			continue
		}
		if slices.Contains(strings.Fields(rel), "nofollow") ||
			(tag == "link" && !slices.Contains(strings.Fields(rel), "alternate")) {
			continue
		}
		u, err := base.Parse(href)
		if err != nil {
			continue
		}
		p, ok := PagePath(u, page.Host)
		if !ok || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// PagePath is the path, with its query and without its fragment, by which
// a job on host knows the page at u. ok is false for a URL on another host
// or of another scheme than http and https, and for a path the queue could
// not store.
func PagePath(u *url.URL, host string) (path string, ok bool) {
	if (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Host, host) {
		return "", false
	}
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	if u.RawQuery != "" {
		p += "?" + u.RawQuery
	}
	if len(p) > tasks.MaxPathLength || !utf8.ValidString(p) || strings.ContainsRune(p, 0) {
		return "", false
	}
	return p, true
}

// cacheStatus reads the CDN cache verdict from the headers CDNs use: the
// first word, so "Miss from cloudfront" and "MISS, MISS" are MISS.
func cacheStatus(h http.Header) string {
	for _, k := range []string{"Cf-Cache-Status", "X-Cache", "X-Vercel-Cache", "X-Cache-Status", "Age"} {
		if v := h.Get(k); v != "" {
			if k == "Age" {
				return "HIT"
			}
			words := strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
			if len(words) == 0 {
				return ""
			}
			return strings.ToUpper(words[0])
		}
	}
	return ""
}

// Simulator stands in for Fetcher in load tests and benchmarks: it waits
// Delay (0 for a no-op) and returns a realistic result, the same for the
// same task every time, filling every column Fetcher fills: mostly 200s
// with a few redirects and 404s, a CDN cache status, a content length, a
// dozen response headers, the timing breakdown, and for a third of the
// pages (the cache misses) the cache checks and the second request.
type Simulator struct {
	Delay time.Duration
	// FailEvery, when positive, fails one task in FailEvery (by task id), as
	// a timed-out fetch would.
	FailEvery int
	// Site, when set, is the site being crawled: a fetched page's result
	// carries its links, as Fetcher's does for a job that follows links.
	Site *Site
}

// Handle simulates fetching the task's page.
func (s Simulator) Handle(ctx context.Context, t tasks.Task) tasks.TaskResult {
	if s.Delay > 0 {
		timer := time.NewTimer(s.Delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return tasks.TaskResult{Err: ctx.Err()}
		case <-timer.C:
		}
	}
	return s.Result(t)
}

// Result is the result Handle returns for t, at once: what the queue's
// benchmarks write, so that they measure the row the service writes.
func (s Simulator) Result(t tasks.Task) tasks.TaskResult {
	h := fnv.New64a()
	h.Write([]byte(t.ID))
	x := h.Sum64()
	if s.FailEvery > 0 && x%uint64(s.FailEvery) == 0 {
		return tasks.TaskResult{Err: fmt.Errorf("simulated fetch of %s: timeout awaiting response headers", t.Path)}
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
	var links []tasks.Page
	if s.Site != nil {
		// Every page of the site exists, so the crawl can reach them all.
		status = 200

		for _, p := range s.Site.Links(t.Path) {
			links = append(links, tasks.Page{Path: p, Priority: t.PriorityScore * 0.9})
		}
	}
	total := s.Delay + time.Duration(x%40)*time.Millisecond
	res := tasks.TaskResult{
		Links:         links,
		StatusCode:    status,
		ResponseTime:  total,
		CacheStatus:   cache,
		ContentType:   "text/html; charset=utf-8",
		ContentLength: length,
		Headers:       simulatedHeaders(x, cache, length),
		// One connection in four is new: DNS, connect and TLS, each a
		// share of the time to first byte.
		Timing: simulatedTiming(total, x>>8%4 == 0),
	}
	if status == 301 {
		res.RedirectURL = "https://www.example.com" + t.Path + "/"
		res.Headers.Set("Location", res.RedirectURL)
	}
	if Missed(cache) {
		// One check or two, then a second request: a hit in a third of the
		// time, on the connection the first request opened.
		checks := 1 + int(x>>12%2)
		for i := range checks {
			seen := "HIT"
			if i < checks-1 {
				seen = cache
			}
			res.CacheCheckAttempts = append(res.CacheCheckAttempts,
				tasks.CacheCheckAttempt{Attempt: i + 1, CacheStatus: seen, Delay: 700 * time.Millisecond})
		}
		second := total / 3
		res.Second = &tasks.SecondRequest{
			ResponseTime:  second,
			CacheStatus:   "HIT",
			ContentLength: length,
			Headers:       simulatedHeaders(x, "HIT", length),
			Timing:        simulatedTiming(second, false),
		}
		res.Second.Headers.Set("Age", "1")
	}
	return res
}

// simulatedTiming splits a response time of whole milliseconds: three
// quarters to the first byte (of which, on a new connection, a tenth each
// to DNS and connect and a fifth to TLS), the rest to the content.
func simulatedTiming(total time.Duration, newConn bool) tasks.Timing {
	ms := total.Milliseconds()
	t := tasks.Timing{
		TTFB:            time.Duration(ms*3/4) * time.Millisecond,
		ContentTransfer: time.Duration(ms-ms*3/4) * time.Millisecond,
	}
	if newConn {
		t.DNSLookup = time.Duration(ms/10) * time.Millisecond
		t.TCPConnection = time.Duration(ms/10) * time.Millisecond
		t.TLSHandshake = time.Duration(ms/5) * time.Millisecond
	}
	return t
}

// simulatedHeaders are the response headers of a page behind Cloudflare.
func simulatedHeaders(x uint64, cache string, length int64) http.Header {
	return http.Header{
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
	}
}
