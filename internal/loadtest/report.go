package loadtest

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the results side by side, one column per mode, with the
// ratio of each after mode to before where there is a before.
func WriteTable(w io.Writer, results []Result) error {
	var before *Result
	for i := range results {
		if results[i].Mode == ModeBefore {
			before = &results[i]
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{""}
	for _, r := range results {
		header = append(header, string(r.Mode))
	}
	if before != nil {
		for _, r := range results {
			if r.Mode != ModeBefore {
				header = append(header, string(r.Mode)+"/before")
			}
		}
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")

	type row struct {
		name  string
		value func(Result) string
		ratio func(after, before Result) string
	}
	speedup := func(f func(Result) float64) func(a, b Result) string {
		return func(a, b Result) string { return ratio(f(a), f(b)) }
	}
	reduction := func(f func(Result) float64) func(a, b Result) string {
		return func(a, b Result) string { return ratio(f(b), f(a)) + " less" }
	}
	rows := []row{
		{"tasks finished", func(r Result) string { return fmt.Sprintf("%d/%d", r.Completed+r.Failed, r.Tasks) }, nil},
		{"elapsed", func(r Result) string { return r.Elapsed.Round(100 * time.Millisecond).String() }, nil},
		{"tasks/minute", func(r Result) string { return fmt.Sprintf("%.0f", r.TasksPerMinute) },
			speedup(func(r Result) float64 { return r.TasksPerMinute })},
		{"claim latency p50", func(r Result) string { return ms(r.ClaimP50) },
			reduction(func(r Result) float64 { return float64(r.ClaimP50) })},
		{"claim latency p99", func(r Result) string { return ms(r.ClaimP99) },
			reduction(func(r Result) float64 { return float64(r.ClaimP99) })},
		{"lock waits >= 1 ms", func(r Result) string { return fmt.Sprint(r.LockWaits) }, nil},
		{"lock wait p99", func(r Result) string { return ms(r.LockWaitP99) }, nil},
		{"longest lock wait", func(r Result) string { return ms(r.LockWaitLongest) }, nil},
		{"lock waits sampled (10 ms)", func(r Result) string { return fmt.Sprint(r.SampledWaits) }, nil},
		{"longest sampled wait", func(r Result) string { return ms(r.SampledLongest) }, nil},
		{"deadlocks", func(r Result) string { return fmt.Sprint(r.Deadlocks) }, nil},
		{"worker efficiency", func(r Result) string { return fmt.Sprintf("%.1f%%", 100*r.WorkerEfficiency) }, nil},
		{"duplicate runs", func(r Result) string { return fmt.Sprint(r.Duplicates) }, nil},
		{"lost tasks", func(r Result) string { return fmt.Sprint(r.Lost) }, nil},
		{"not reached (time limit)", func(r Result) string { return fmt.Sprint(r.Unfinished) }, nil},
		{"dashboard refresh p50 (RLS)", func(r Result) string { return ms(r.DashboardP50) },
			reduction(func(r Result) float64 { return float64(r.DashboardP50) })},
		{"dashboard refresh p99 (RLS)", func(r Result) string { return ms(r.DashboardP99) },
			reduction(func(r Result) float64 { return float64(r.DashboardP99) })},
	}
	for _, rw := range rows {
		cells := []string{rw.name}
		for _, r := range results {
			v := rw.value(r)
			if r.TimedOut && rw.name == "tasks finished" {
				v += " (time limit)"
			}
			cells = append(cells, v)
		}
		if before != nil {
			for _, r := range results {
				if r.Mode == ModeBefore {
					continue
				}
				if rw.ratio == nil {
					cells = append(cells, "")
				} else {
					cells = append(cells, rw.ratio(r, *before))
				}
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	return tw.Flush()
}

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", a/b)
}
