package loadtest

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the results side by side, a table per workload (pages
// known up front, pages discovered), one column per mode, each followed by
// the ratios of every after mode to every before mode of the workload (the
// plan's before and before-app, the application's claim, where both ran);
// then, for the claims run in both workloads, the discovering crawl's rate
// as a share of the known pages' rate (and counting each one's seeding, the
// enqueue the known pages had before their run), and the rate without statistics of
// the new rows as a share of the rate with them (+analyzed).
func WriteTable(w io.Writer, results []Result) error {
	discover, known := split(results, Mode.Discovers)
	for _, group := range []struct {
		title   string
		results []Result
	}{{"Pages known up front", known}, {"Pages discovered as the crawl goes (+discover)", discover}} {
		if len(group.results) == 0 {
			continue
		}
		if len(known) > 0 && len(discover) > 0 {
			fmt.Fprintf(w, "%s:\n", group.title)
		}
		if err := writeTable(w, group.results); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	rate := map[Mode]float64{}
	byMode := map[Mode]Result{}
	for _, r := range known {
		rate[r.Mode] = r.TasksPerMinute
		byMode[r.Mode] = r
	}
	for _, r := range discover {
		if k, ok := rate[r.Mode.Claim()]; ok && k > 0 {
			fmt.Fprintf(w, "%s: %.0f tasks/minute discovering, %.2fx the %.0f with every page known up front",
				r.Mode.Claim(), r.TasksPerMinute, r.TasksPerMinute/k, k)
			if kr := byMode[r.Mode.Claim()]; kr.Seeded > 0 && r.Elapsed+r.Seeded > 0 {
				fmt.Fprintf(w, " (%.2fx counting the seeding of each, %s up front against %s)",
					(kr.Elapsed+kr.Seeded).Seconds()/(r.Elapsed+r.Seeded).Seconds(),
					kr.Seeded.Round(10*time.Millisecond), r.Seeded.Round(10*time.Millisecond))
			}
			fmt.Fprintln(w)
		}
	}
	for _, r := range known {
		if a, ok := rate[r.Mode+"+analyzed"]; ok && a > 0 {
			fmt.Fprintf(w, "%s: %.0f tasks/minute with no ANALYZE after the enqueue, %.2fx the %.0f with one\n",
				r.Mode, r.TasksPerMinute, r.TasksPerMinute/a, a)
		}
	}
	return nil
}

func writeTable(w io.Writer, results []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{""}
	for _, r := range results {
		header = append(header, string(r.Mode))
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, rw := range reportRows {
		cells := []string{rw.name}
		for _, r := range results {
			v := rw.value(r)
			if r.TimedOut && rw.name == "tasks finished" {
				v += " (time limit)"
			}
			cells = append(cells, v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return writeRatios(w, results)
}

// writeRatios prints a row per pair of an after mode and a before mode of
// results, and a column per measure of reportRows that has a ratio: a table
// of its own, so that two befores do not double the width of the first.
func writeRatios(w io.Writer, results []Result) error {
	befores, afters := split(results, Mode.Legacy)
	if len(befores) == 0 || len(afters) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{"ratio"}
	for _, rw := range reportRows {
		if rw.ratio != nil {
			header = append(header, rw.ratioName)
		}
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, a := range afters {
		for _, b := range befores {
			cells := []string{fmt.Sprintf("%s / %s", a.Mode, b.Mode)}
			for _, rw := range reportRows {
				if rw.ratio != nil {
					cells = append(cells, rw.ratio(a, b))
				}
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
		}
	}
	return tw.Flush()
}

// reportRow is one measure: its value for a mode and, for the measures
// compared, the ratio of an after mode to a before mode, under a shorter
// name in the ratios' table.
type reportRow struct {
	name      string
	value     func(Result) string
	ratioName string
	ratio     func(after, before Result) string
}

// speedup is after's value over before's; reduction, before's over after's.
func speedup(f func(Result) float64) func(a, b Result) string {
	return func(a, b Result) string { return ratio(f(a), f(b)) }
}

func reduction(f func(Result) float64) func(a, b Result) string {
	return func(a, b Result) string { return ratio(f(b), f(a)) + " less" }
}

var reportRows = []reportRow{
	{"tasks finished", func(r Result) string { return fmt.Sprintf("%d/%d", r.Completed+r.Failed, r.Tasks) }, "", nil},
	{"elapsed", func(r Result) string { return r.Elapsed.Round(100 * time.Millisecond).String() }, "", nil},
	{"seeded before the run", func(r Result) string { return r.Seeded.Round(10 * time.Millisecond).String() }, "", nil},
	{"tasks/minute", func(r Result) string { return fmt.Sprintf("%.0f", r.TasksPerMinute) },
		"tasks/minute", speedup(func(r Result) float64 { return r.TasksPerMinute })},
	{"claim latency p50", func(r Result) string { return ms(r.ClaimP50) },
		"claim p50", reduction(func(r Result) float64 { return float64(r.ClaimP50) })},
	{"claim latency p99", func(r Result) string { return ms(r.ClaimP99) },
		"claim p99", reduction(func(r Result) float64 { return float64(r.ClaimP99) })},
	{"lock waits >= 1 ms", func(r Result) string { return fmt.Sprint(r.LockWaits) }, "", nil},
	{"lock wait p99", func(r Result) string { return ms(r.LockWaitP99) }, "", nil},
	{"longest lock wait", func(r Result) string { return ms(r.LockWaitLongest) }, "", nil},
	{"of which on rows", func(r Result) string { return fmt.Sprint(r.RowLockWaits) }, "", nil},
	{"longest on a row", func(r Result) string { return ms(r.RowLockWaitLongest) }, "", nil},
	{"lock waits sampled (10 ms)", func(r Result) string { return fmt.Sprint(r.SampledWaits) }, "", nil},
	{"longest sampled wait", func(r Result) string { return ms(r.SampledLongest) }, "", nil},
	{"deadlocks", func(r Result) string { return fmt.Sprint(r.Deadlocks) }, "", nil},
	{"worker efficiency", func(r Result) string { return fmt.Sprintf("%.1f%%", 100*r.WorkerEfficiency) }, "", nil},
	{"duplicate runs", func(r Result) string { return fmt.Sprint(r.Duplicates) }, "", nil},
	{"lost tasks", func(r Result) string { return fmt.Sprint(r.Lost) }, "", nil},
	{"not reached (time limit)", func(r Result) string { return fmt.Sprint(r.Unfinished) }, "", nil},
	{"pages never discovered", func(r Result) string { return fmt.Sprint(r.Undiscovered) }, "", nil},
	{"dashboard refresh p50 (RLS)", func(r Result) string { return ms(r.DashboardP50) },
		"dashboard p50", reduction(func(r Result) float64 { return float64(r.DashboardP50) })},
	{"dashboard refresh p99 (RLS)", func(r Result) string { return ms(r.DashboardP99) },
		"dashboard p99", reduction(func(r Result) float64 { return float64(r.DashboardP99) })},
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

// split parts results, in order, into those whose mode is, and is not, what
// is asks.
func split(results []Result, is func(Mode) bool) (yes, no []Result) {
	for _, r := range results {
		if is(r.Mode) {
			yes = append(yes, r)
		} else {
			no = append(no, r)
		}
	}
	return yes, no
}
