package worker_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/tasks"
	"github.com/blue-banded-bee/taskq/worker"
)

// TestPoolCrawlsDiscoveredPagesOnce crawls a real local HTTP site that the
// job knows only by its sitemap: the pool writes the links each page yields
// with its outcome, and every page of the site (within max_pages) is fetched
// exactly once, with the job's progress exact at the end.
func TestPoolCrawlsDiscoveredPagesOnce(t *testing.T) {
	t.Parallel()
	const pages = 400
	for _, tc := range []struct {
		batch, maxPages int
	}{{1, 0}, {25, 0}, {1, 150}, {25, 150}} {
		t.Run(fmt.Sprintf("claim batch %d, max_pages %d", tc.batch, tc.maxPages), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			site := &crawl.Site{Pages: pages}
			srv := httptest.NewServer(site)
			t.Cleanup(srv.Close)
			f := setup(t, tasks.Config{})
			job, err := f.queue.CreateJob(ctx, tasks.JobOptions{
				Domain: strings.TrimPrefix(srv.URL, "http://"), Concurrency: 16, MaxPages: tc.maxPages, FindLinks: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			var start []tasks.Page
			for _, p := range site.Sitemap() {
				start = append(start, tasks.Page{Path: p, Priority: 1})
			}
			if _, err := f.queue.Enqueue(ctx, job.ID, start); err != nil {
				t.Fatal(err)
			}
			fetcher := &crawl.Fetcher{Scheme: "http", Domains: crawl.NewDomainCache(f.queue)}
			p := worker.New(f.queue, fetcher, worker.Config{
				Workers: 8, ClaimBatch: tc.batch, ListenURL: f.url, MaintainInterval: 20 * time.Millisecond,
			})
			done := func() bool {
				j, err := f.queue.Job(ctx, job.ID)
				return err == nil && j.Status == tasks.JobStatusCompleted
			}
			stats := runUntil(t, p, done)

			admitted := pages
			if tc.maxPages > 0 {
				admitted = tc.maxPages
			}
			requests := site.Requests()
			if len(requests) != admitted {
				t.Errorf("the server was asked for %d distinct paths, want %d", len(requests), admitted)
			}
			for path, n := range requests {
				if n != 1 {
					t.Errorf("%s fetched %d times", path, n)
				}
			}
			if tc.maxPages == 0 {
				for i := range pages {
					if requests[site.Path(i)] != 1 {
						t.Errorf("%s never fetched", site.Path(i))
					}
				}
			}
			got, err := f.queue.Job(ctx, job.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := tasks.Progress{Total: admitted, Completed: admitted, Percent: 100}
			if tc.maxPages > 0 {
				// Pages found past max_pages are recorded as skipped.
				want.Skipped = got.Progress.Total - admitted
				want.Total = got.Progress.Total
				if want.Skipped == 0 {
					t.Error("no page was skipped past max_pages")
				}
			}
			if diff := cmp.Diff(want, got.Progress); diff != "" {
				t.Errorf("progress (-want +got):\n%s", diff)
			}
			if stats.LinksFound == 0 || stats.LinksSeen == 0 || stats.LinksAdded != int64(admitted-len(start)) {
				t.Errorf("link stats: found %d, dropped as seen %d, added %d (want %d)",
					stats.LinksFound, stats.LinksSeen, stats.LinksAdded, admitted-len(start))
			}
			if stats.LinksDropped != 0 {
				t.Errorf("%d links dropped", stats.LinksDropped)
			}
		})
	}
}
