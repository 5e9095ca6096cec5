package crawl

import (
	"fmt"
	"hash/fnv"
	"html"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Site is a synthetic website that a crawl discovers as it goes: a homepage,
// the same navigation on every page, and content links, the shape of the
// sites the service warms. It serves its pages over HTTP (tests point a real
// Fetcher at it) and tells their links directly (the load test's simulated
// fetch). Every page is reachable from the homepage.
type Site struct {
	// Pages is how many pages the site has, the homepage included.
	Pages int
	// Nav is how many pages the navigation on every page links to. Default 20.
	Nav int
	// Content is how many content links each page has. Default 10.
	Content int
	// SitemapEvery puts every n-th page in the sitemap. Default 5.
	SitemapEvery int

	mu       sync.Mutex
	requests map[string]int
}

func (s *Site) nav() int {
	if s.Nav <= 0 {
		return 20
	}
	return s.Nav
}

func (s *Site) content() int {
	if s.Content <= 0 {
		return 10
	}
	return s.Content
}

// Path is the path of page i: "/" for the homepage.
func (s *Site) Path(i int) string {
	if i == 0 {
		return "/"
	}
	return fmt.Sprintf("/page/%d", i)
}

// index is the page number of a path, or -1 for a path not on the site.
func (s *Site) index(path string) int {
	if path == "/" {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimPrefix(path, "/page/"))
	if err != nil || !strings.HasPrefix(path, "/page/") || n < 1 || n >= s.Pages || s.Path(n) != path {
		return -1
	}
	return n
}

// Sitemap lists the homepage and every SitemapEvery-th page: the part of a
// site a crawl knows before it starts.
func (s *Site) Sitemap() []string {
	every := s.SitemapEvery
	if every <= 0 {
		every = 5
	}
	out := []string{"/"}
	for i := every; i < s.Pages; i += every {
		out = append(out, s.Path(i))
	}
	return out
}

// Links are the paths page path links to, navigation first, with repeats
// across pages (as on a real site) but not within one; nil for a path not
// on the site. Page i's content links start with page i+1, so that every
// page is reachable.
func (s *Site) Links(path string) []string {
	i := s.index(path)
	if i < 0 {
		return nil
	}
	seen := map[int]bool{}
	var out []string
	add := func(j int) {
		if j > 0 && j < s.Pages && j != i && !seen[j] {
			seen[j] = true
			out = append(out, s.Path(j))
		}
	}
	for j := 1; j <= s.nav(); j++ {
		add(j)
	}
	add(i + 1)
	h := fnv.New64a()
	fmt.Fprint(h, i)
	x := h.Sum64()
	for k := 0; len(out) < s.nav()+s.content() && k < 4*s.content(); k++ {
		x = x*6364136223846793005 + 1442695040888963407
		add(int(x>>33) % s.Pages)
	}
	return out
}

// ServeHTTP serves the site's pages as HTML, with the links of Links plus
// what real pages also carry and a crawler must not follow: a link to
// another host, a mailto: link, a fragment of the page itself, and a
// nofollow link. It counts the requests for each path (Requests).
func (s *Site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		path += "?" + r.URL.RawQuery
	}
	s.mu.Lock()
	if s.requests == nil {
		s.requests = map[string]int{}
	}
	s.requests[path]++
	s.mu.Unlock()
	if s.index(path) < 0 {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=60")
	var b strings.Builder
	fmt.Fprintf(&b, "<!doctype html><html><head><title>%s</title></head><body><nav>", html.EscapeString(path))
	for k, l := range s.Links(path) {
		if k == s.nav() {
			b.WriteString("</nav><main>")
		}
		fmt.Fprintf(&b, `<a href="%s">link</a> `, html.EscapeString(l))
	}
	b.WriteString(`<a href="https://elsewhere.example/">out</a> <a href="mailto:hi@example.com">mail</a> ` +
		`<a href="#top">top</a> <a rel="nofollow" href="/private">private</a></main></body></html>`)
	_, _ = w.Write([]byte(b.String()))
}

// Requests returns how many requests the server got for each path.
func (s *Site) Requests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}
