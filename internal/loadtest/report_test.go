package loadtest

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Each after mode of a workload gets a row of ratios against each before
// mode of the same workload that ran, in the ratios' table under the
// values' table.
func TestReportRatiosAgainstEveryBefore(t *testing.T) {
	t.Parallel()
	result := func(m Mode, perMinute float64, claimP50 time.Duration) Result {
		return Result{Mode: m, Tasks: 10, TasksPerMinute: perMinute, ClaimP50: claimP50, ClaimP99: claimP50,
			DashboardP50: time.Millisecond, DashboardP99: time.Millisecond}
	}
	results := []Result{
		result(ModeBefore, 100, 20*time.Millisecond),
		result(ModeBeforeApp, 400, 40*time.Millisecond),
		result(ModeAfter, 2000, 2*time.Millisecond),
		result(ModeBeforeDiscover, 50, 10*time.Millisecond),
		result(ModeAfterDiscover, 1000, time.Millisecond),
	}
	var out strings.Builder
	if err := WriteTable(&out, results); err != nil {
		t.Fatal(err)
	}
	var ratios [][]string
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == "/" {
			ratios = append(ratios, f)
		}
	}
	want := [][]string{
		{"after", "/", "before", "20.0x", "10.0x", "less", "10.0x", "less", "1.0x", "less", "1.0x", "less"},
		{"after", "/", "before-app", "5.0x", "20.0x", "less", "20.0x", "less", "1.0x", "less", "1.0x", "less"},
		{"after+discover", "/", "before+discover", "20.0x", "10.0x", "less", "10.0x", "less", "1.0x", "less", "1.0x", "less"},
	}
	if diff := cmp.Diff(want, ratios); diff != "" {
		t.Fatalf("ratio rows (-want +got):\n%s\nreport:\n%s", diff, out.String())
	}
}
