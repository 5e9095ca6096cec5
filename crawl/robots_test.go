package crawl_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/crawl"
)

func TestCrawlDelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, robots string
		want         float64
		ok           bool
	}{
		{"star group", "User-agent: *\nDisallow: /x\nCrawl-delay: 2\n", 2, true},
		{"our group wins over star", "User-agent: *\nCrawl-delay: 5\n\nUser-agent: taskq-cache-warmer\nCrawl-delay: 0.5\n", 0.5, true},
		{"shared group", "User-agent: googlebot\nUser-agent: Taskq-Cache-Warmer\nCrawl-delay: 3 # slow\n", 3, true},
		{"another bot's only", "User-agent: googlebot\nCrawl-delay: 10\n", 0, false},
		{"none", "User-agent: *\nDisallow: /\n", 0, false},
		{"unreadable value", "User-agent: *\nCrawl-delay: soon\n", 0, false},
		{"new group after rules", "User-agent: taskq-cache-warmer\nDisallow: /a\nUser-agent: other\nCrawl-delay: 9\n", 0, false},
	} {
		got, ok := crawl.CrawlDelay(strings.NewReader(tc.robots), crawl.UserAgent)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: CrawlDelay = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"2", 2 * time.Second, true},
		{" 120 ", 2 * time.Minute, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"999999999", 24 * time.Hour, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		h := http.Header{}
		if tc.value != "" {
			h.Set("Retry-After", tc.value)
		}
		got, ok := crawl.RetryAfter(h, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %v, %v; want %v, %v", tc.value, got, ok, tc.want, tc.ok)
		}
	}
}
