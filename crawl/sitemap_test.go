package crawl_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/crawl"
)

// TestSitemap reads a sitemap index whose sitemaps are one plain and one
// gzip-compressed, as sites serve them, keeping <priority> where a page
// gives a valid one.
func TestSitemap(t *testing.T) {
	t.Parallel()
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/sitemap_index.xml", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sitemap><loc>` + srv.URL + `/pages.xml</loc></sitemap>
  <sitemap><loc>/posts.xml.gz</loc></sitemap>
</sitemapindex>`))
	})
	mux.HandleFunc("/pages.xml", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>https://example.com/</loc><priority>1.0</priority></url>
  <url><loc> https://example.com/about </loc></url>
  <url><loc>https://example.com/odd</loc><priority>7</priority></url>
</urlset>`))
	})
	mux.HandleFunc("/posts.xml.gz", func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		gz := gzip.NewWriter(&b)
		gz.Write([]byte(`<urlset><url><loc>https://example.com/posts/1?lang=en</loc><priority>0.3</priority></url></urlset>`))
		gz.Close()
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(b.Bytes())
	})
	mux.HandleFunc("/broken.xml", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`<urlset><url><loc>https://example.com/`))
	})
	mux.HandleFunc("/feed.xml", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`<rss><channel/></rss>`))
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ctx := context.Background()

	got, err := crawl.Sitemap(ctx, srv.Client(), srv.URL+"/sitemap_index.xml")
	if err != nil {
		t.Fatal(err)
	}
	want := []crawl.SitemapPage{
		{URL: "https://example.com/", Priority: 1, HasPriority: true},
		{URL: "https://example.com/about", Priority: 0.5},
		{URL: "https://example.com/odd", Priority: 0.5},
		{URL: "https://example.com/posts/1?lang=en", Priority: 0.3, HasPriority: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sitemap (-want +got):\n%s", diff)
	}

	for path, why := range map[string]string{
		"/missing.xml": "404", "/broken.xml": "parse", "/feed.xml": "<rss>",
	} {
		_, err := crawl.Sitemap(ctx, srv.Client(), srv.URL+path)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("Sitemap(%s) = %v, want an error saying %q", path, err, why)
		}
	}
	_, err = crawl.Sitemap(ctx, srv.Client(), "postgres://app:S3cret@db/x")
	if err == nil || strings.Contains(err.Error(), "S3cret") {
		t.Errorf("Sitemap of a non-HTTP URL = %v, want an error without the password", err)
	}
}

// TestPagePath: the path a job knows a page by, as Links finds it.
func TestPagePath(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"https://example.com":                              "/",
		"https://EXAMPLE.com/a b?x=1#f":                    "/a%20b?x=1",
		"http://example.com/a":                             "/a",
		"https://other.com/a":                              "",
		"ftp://example.com/a":                              "",
		"https://example.com:8443/a":                       "",
		"https://example.com/" + strings.Repeat("x", 3000): "",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := crawl.PagePath(u, "example.com")
		if got != want || ok != (want != "") {
			t.Errorf("PagePath(%q) = %q, %v; want %q", raw, got, ok, want)
		}
	}
}
