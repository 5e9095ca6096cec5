package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// TestWorkServesMetrics: `taskq work --metrics-addr` serves /metrics while
// it runs, and the counters there follow the tasks it finishes.
func TestWorkServesMetrics(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t, migrate.VersionLatest)
	q := tasks.New(pgtest.Pool(t, url, 2), tasks.Config{})
	ctx := context.Background()
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	pages := make([]tasks.Page, 20)
	for i := range pages {
		pages[i] = tasks.Page{Path: fmt.Sprintf("/p%d", i), Priority: 1}
	}
	if _, err := q.Enqueue(ctx, job.ID, pages); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var stdout, stderr sharedtest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"work", "--database-url", url, "--simulate", "--workers", "2",
			"--metrics-addr", "127.0.0.1:0"}, strings.NewReader(""), &stdout, &stderr)
	}()
	addr := regexp.MustCompile(`metrics at (http://\S+/metrics)`)
	want := `taskq_tasks_finished_total{outcome="completed"} 20`
	deadline := time.Now().Add(time.Minute)
	var body string
	for !strings.Contains(body, want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within a minute; stderr:\n%s\nlast scrape:\n%s", want, stderr.String(), body)
		}
		select {
		case err := <-done:
			t.Fatalf("work returned early: %v; stderr:\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		m := addr.FindStringSubmatch(stderr.String())
		if m == nil {
			continue
		}
		resp, err := http.Get(m[1])
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s, %v", m[1], resp.Status, err)
		}
		body = string(b)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("work: %v; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "20 completed") {
		t.Errorf("summary: %s", stdout.String())
	}
}
