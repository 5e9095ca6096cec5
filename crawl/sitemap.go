package crawl

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Limits on what Sitemap reads, from the sitemap protocol (sitemaps.org):
// a sitemap file holds at most 50,000 URLs in at most 50 MB uncompressed,
// and an index at most 50,000 sitemaps. Sitemap reads at most
// MaxSitemapFiles files in all and stops at MaxSitemapURLs pages.
const (
	MaxSitemapBytes = 50 << 20
	MaxSitemapFiles = 1000
	MaxSitemapURLs  = 1_000_000
	// maxSitemapDepth allows an index of indexes, which the protocol does
	// not, but which sites serve.
	maxSitemapDepth = 3
)

// SitemapPage is a page a sitemap lists.
type SitemapPage struct {
	// URL is the page's <loc>, as the sitemap has it.
	URL string
	// Priority is its <priority>, 0 to 1; when it gives none, the
	// protocol's default, 0.5, and HasPriority is false.
	Priority    float64
	HasPriority bool
}

// Sitemap fetches the XML sitemap at sitemapURL and returns the pages it
// lists, in order, following a sitemap index to the sitemaps it lists.
// Files may be gzip-compressed. client nil means a client with a 30 s
// timeout. A file that cannot be fetched or parsed fails the whole call:
// half a sitemap would look like a complete one.
func Sitemap(ctx context.Context, client *http.Client, sitemapURL string) ([]SitemapPage, error) {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	r := sitemapReader{ctx: ctx, client: client}
	if err := r.read(sitemapURL, 0); err != nil {
		return nil, err
	}
	return r.pages, nil
}

type sitemapReader struct {
	ctx    context.Context
	client *http.Client
	files  int
	pages  []SitemapPage
}

// sitemapFile is a <urlset> (pages) or a <sitemapindex> (more sitemaps).
type sitemapFile struct {
	XMLName  xml.Name
	URLs     []sitemapLoc `xml:"url"`
	Sitemaps []sitemapLoc `xml:"sitemap"`
}

type sitemapLoc struct {
	Loc      string `xml:"loc"`
	Priority string `xml:"priority"`
}

func (r *sitemapReader) read(rawURL string, depth int) error {
	r.files++
	if r.files > MaxSitemapFiles {
		return fmt.Errorf("sitemap: more than %d files", MaxSitemapFiles)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Not echoed: an unparseable URL may hold a password.
		return fmt.Errorf("sitemap: not an http or https URL")
	}
	doc, err := r.fetch(u)
	if err != nil {
		return fmt.Errorf("sitemap %s: %w", u.Redacted(), err)
	}
	switch doc.XMLName.Local {
	case "urlset":
		for _, l := range doc.URLs {
			loc := strings.TrimSpace(l.Loc)
			if loc == "" {
				continue
			}
			if len(r.pages) == MaxSitemapURLs {
				return fmt.Errorf("sitemap: more than %d pages", MaxSitemapURLs)
			}
			page := SitemapPage{URL: loc, Priority: 0.5}
			// A priority outside 0-1 or no number at all is the sitemap's
			// mistake, not a reason to refuse its pages.
			if p, err := strconv.ParseFloat(strings.TrimSpace(l.Priority), 64); err == nil && p >= 0 && p <= 1 {
				page.Priority, page.HasPriority = p, true
			}
			r.pages = append(r.pages, page)
		}
	case "sitemapindex":
		if depth+1 >= maxSitemapDepth {
			return fmt.Errorf("sitemap %s: indexes nested more than %d deep", u.Redacted(), maxSitemapDepth)
		}
		for _, s := range doc.Sitemaps {
			loc := strings.TrimSpace(s.Loc)
			if loc == "" {
				continue
			}
			next, err := u.Parse(loc)
			if err != nil {
				return fmt.Errorf("sitemap %s: a <loc> that is no URL", u.Redacted())
			}
			if err := r.read(next.String(), depth+1); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("sitemap %s: root element <%s>, want <urlset> or <sitemapindex>", u.Redacted(), doc.XMLName.Local)
	}
	return nil
}

func (r *sitemapReader) fetch(u *url.URL) (sitemapFile, error) {
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return sitemapFile{}, err
	}
	req.Header.Set("User-Agent", UserAgent)
	resp, err := r.client.Do(req)
	if err != nil {
		return sitemapFile{}, err // net/http leaves the password out of its errors
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sitemapFile{}, fmt.Errorf("HTTP status %s", resp.Status)
	}
	body := bufio.NewReader(io.LimitReader(resp.Body, MaxSitemapBytes))
	var in io.Reader = body
	// sitemap.xml.gz is served as application/gzip (or x-gzip), without a
	// Content-Encoding that the client would undo: look at the bytes.
	if magic, _ := body.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(body)
		if err != nil {
			return sitemapFile{}, err
		}
		defer gz.Close()
		in = io.LimitReader(gz, MaxSitemapBytes)
	}
	var doc sitemapFile
	if err := xml.NewDecoder(in).Decode(&doc); err != nil {
		return sitemapFile{}, fmt.Errorf("parse: %w", err)
	}
	return doc, nil
}
