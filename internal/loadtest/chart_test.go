package loadtest

import (
	"context"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
)

// A tiny run of the default modes on real databases records a completion series
// and claim percentiles per mode, and WriteCharts draws them as PNG files
// with a line (and a group of bars) per mode.
func TestChartsOfATinyRun(t *testing.T) {
	t.Parallel()
	results, err := Run(context.Background(), Config{
		ServerURL: pgtest.Server(t).URL, Tasks: 60, Jobs: 2, Workers: 4, Batch: 10,
		DashboardSamples: 2, MaxDuration: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	var modes []Mode
	for _, r := range results {
		modes = append(modes, r.Mode)
		if r.TimedOut {
			t.Fatalf("%s: stopped at the time limit", r.Mode)
		}
		checkCompletions(t, r)
		if !(0 < r.ClaimP50 && r.ClaimP50 <= r.ClaimP90 && r.ClaimP90 <= r.ClaimP99) {
			t.Errorf("%s: claim p50 %s, p90 %s, p99 %s: want 0 < p50 <= p90 <= p99", r.Mode, r.ClaimP50, r.ClaimP90, r.ClaimP99)
		}
	}
	if diff := cmp.Diff(DefaultModes, modes); diff != "" {
		t.Fatalf("modes run (-want +got):\n%s", diff)
	}

	dir := filepath.Join(t.TempDir(), "charts")
	charts, err := WriteCharts(dir, results)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, c := range charts {
		files = append(files, filepath.Base(c.Path))
		if diff := cmp.Diff(DefaultModes, c.Modes); diff != "" {
			t.Errorf("%s: modes drawn (-want +got):\n%s", c.Path, diff)
		}
		checkPNG(t, c.Path)
	}
	if diff := cmp.Diff([]string{ThroughputChartFile, ClaimLatencyChartFile}, files); diff != "" {
		t.Fatalf("charts written (-want +got):\n%s", diff)
	}
}

// checkCompletions checks r's series runs from the start to the mode's
// finished tasks, never going back.
func checkCompletions(t *testing.T, r Result) {
	t.Helper()
	s := r.Completions
	if len(s) < 2 || s[0] != (Sample{}) {
		t.Fatalf("%s: completions %+v: want the start and at least the end", r.Mode, s)
	}
	for i := 1; i < len(s); i++ {
		if s[i].At < s[i-1].At || s[i].Done < s[i-1].Done {
			t.Fatalf("%s: completions go back at %d: %+v", r.Mode, i, s)
		}
	}
	last, finished := s[len(s)-1].Done, r.Completed+r.Failed
	// The old claim can finish a task, then run it again: its count is of
	// distinct tasks finished, at least those the database ends with.
	if last != finished && !(r.Mode.Claim() == ModeBefore && last > finished) {
		t.Errorf("%s: completions end at %d, the database has %d finished", r.Mode, last, finished)
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() <= 0 || b.Dy() <= 0 {
		t.Fatalf("%s: %dx%d pixels", path, b.Dx(), b.Dy())
	}
}

// Results with nothing to show on a log axis (no claims, an instant run in
// which nothing finished) still chart: zeros sit on the axis.
func TestChartsOfEmptyResults(t *testing.T) {
	t.Parallel()
	results := []Result{
		{Mode: ModeAfter, Tasks: 1, Jobs: 1, Workers: 1, Completions: []Sample{{}, {At: time.Millisecond}}},
		{Mode: ModeAfterBatch, Tasks: 1, Jobs: 1, Workers: 1, Batch: 500, Completions: []Sample{{}, {At: time.Millisecond, Done: 1}}},
	}
	charts, err := WriteCharts(t.TempDir(), results)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range charts {
		if diff := cmp.Diff([]Mode{ModeAfter, ModeAfterBatch}, c.Modes); diff != "" {
			t.Errorf("%s: modes drawn (-want +got):\n%s", c.Path, diff)
		}
		checkPNG(t, c.Path)
	}
	if _, err := WriteCharts(t.TempDir(), nil); err == nil {
		t.Error("WriteCharts of no results: no error")
	}
}
