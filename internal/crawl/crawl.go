// Package crawl holds the task handlers: Fetcher fetches a task's page over
// HTTP as the cache-warming service does, and Simulator stands in for it in
// load tests, producing the same result columns without a network.
package crawl

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/net/html"

	"github.com/blue-banded-bee/taskq/internal/tasks"
)

// Fetcher fetches https://<job's domain><task path> and records the status,
// timing, cache status and headers. For a job that follows links
// (find_links), it also returns the page's links to the same domain with the
// result (see Links). It implements worker.Handler.
type Fetcher struct {
	// Client does the requests; its Timeout bounds each fetch. Default: a
	// client with a 30s timeout that does not follow redirects.
	Client *http.Client
	// Scheme is "https" (default) or "http".
	Scheme string
	// Domains maps a job id to its domain and whether it follows links.
	Domains *DomainCache
}

// DomainCache looks up and remembers each job's domain name and whether the
// job follows links.
type DomainCache struct {
	pool *pgxpool.Pool
	mu   sync.Mutex
	jobs map[string]JobSite
}

// JobSite is what the fetcher needs to know of a task's job.
type JobSite struct {
	Domain    string
	FindLinks bool
}

// NewDomainCache returns a cache reading from pool.
func NewDomainCache(pool *pgxpool.Pool) *DomainCache {
	return &DomainCache{pool: pool, jobs: map[string]JobSite{}}
}

// Job returns the domain of a job and whether it follows links.
func (c *DomainCache) Job(ctx context.Context, jobID string) (JobSite, error) {
	c.mu.Lock()
	site, ok := c.jobs[jobID]
	c.mu.Unlock()
	if ok {
		return site, nil
	}
	err := c.pool.QueryRow(ctx,
		"SELECT d.name, j.find_links FROM jobs j JOIN domains d ON d.id = j.domain_id WHERE j.id = $1",
		jobID).Scan(&site.Domain, &site.FindLinks)
	if err != nil {
		return JobSite{}, fmt.Errorf("domain of job %s: %w", jobID, err)
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
func (f *Fetcher) Handle(ctx context.Context, t tasks.Task) tasks.Result {
	site, err := f.Domains.Job(ctx, t.JobID)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+site.Domain+t.Path, nil)
	if err != nil {
		return tasks.Result{Err: err, Permanent: true}
	}
	req.Header.Set("User-Agent", UserAgent)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return tasks.Result{Err: err}
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	var n int64
	parse := site.FindLinks && resp.StatusCode < 300 && isHTML(resp.Header.Get("Content-Type"))
	if parse {
		n, err = io.Copy(&body, io.LimitReader(resp.Body, MaxLinkBody))
		if err == nil {
			var rest int64
			rest, err = io.Copy(io.Discard, resp.Body)
			n += rest
		}
	} else {
		n, err = io.Copy(io.Discard, resp.Body)
	}
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
	if parse && res.Err == nil {
		for _, p := range Links(req.URL, &body) {
			// A page's links rank below it, so a crawl goes breadth first.
			res.Links = append(res.Links, tasks.Page{Path: p, Priority: t.PriorityScore * 0.9})
		}
	}
	return res
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
	// Site, when set, is the site being crawled: a fetched page's result
	// carries its links, as Fetcher's does for a job that follows links.
	Site *Site
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
	var links []tasks.Page
	if s.Site != nil {
		// Every page of the site exists, so the crawl can reach them all.
		status = 200

		for _, p := range s.Site.Links(t.Path) {
			links = append(links, tasks.Page{Path: p, Priority: t.PriorityScore * 0.9})
		}
	}
	return tasks.Result{
		Links:         links,
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
