package loadtest

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The files WriteCharts writes, named to sit in a docs folder as they are.
const (
	ThroughputChartFile   = "loadtest-throughput.png"
	ClaimLatencyChartFile = "loadtest-claim-latency.png"
)

// Chart is a picture WriteCharts wrote.
type Chart struct {
	Path  string
	Title string
	// Modes are the modes drawn, in legend order: a line each in the
	// throughput chart, a group of bars each in the latency chart.
	Modes []Mode
}

const (
	chartWidth, chartHeight = 8 * vg.Inch, 4.5 * vg.Inch
	chartDPI                = 150 // 1200 x 675 pixels: sharp in a README
	// A mode's rate is averaged over intervals of at least minRateWindow,
	// a maxRatePoints'th of its run, and the time it takes to write
	// writesPerWindow of its typical outcome writes: the pool writes outcomes
	// up to a thousand at a time, which finer intervals show as noise.
	maxRatePoints   = 60
	minRateWindow   = 500 * time.Millisecond
	writesPerWindow = 6
)

// WriteCharts draws results into dir, which it creates if missing: tasks
// completed per second over time, a line per mode (ThroughputChartFile),
// and each mode's claim latency p50, p90 and p99 as grouped bars
// (ClaimLatencyChartFile). Both axes of the first and the latency axis of
// the second are logarithmic: the modes differ a thousandfold in rate and a
// hundredfold in run time and latency.
func WriteCharts(dir string, results []Result) ([]Chart, error) {
	if len(results) == 0 {
		return nil, errors.New("no results to chart")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var charts []Chart
	for _, c := range []struct {
		file string
		draw func([]Result) (*plot.Plot, []Mode, error)
	}{{ThroughputChartFile, throughputPlot}, {ClaimLatencyChartFile, claimLatencyPlot}} {
		p, modes, err := c.draw(results)
		if err != nil {
			return charts, fmt.Errorf("chart %s: %w", c.file, err)
		}
		path := filepath.Join(dir, c.file)
		if err := savePNG(p, path); err != nil {
			return charts, fmt.Errorf("chart %s: %w", c.file, err)
		}
		charts = append(charts, Chart{Path: path, Title: p.Title.Text, Modes: modes})
	}
	return charts, nil
}

func savePNG(p *plot.Plot, path string) error {
	c := vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(chartDPI))
	p.Draw(draw.New(c))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// throughputPlot draws each mode's rate of finished tasks against the time
// since the mode started; a +discover mode is dashed in its claim's colour.
func throughputPlot(results []Result) (*plot.Plot, []Mode, error) {
	p, _ := newPlot("Tasks completed per second, by mode", results)
	p.X.Label.Text = "time since the mode started (s, log scale)"
	p.Y.Label.Text = "tasks completed per second (log scale)"
	series := make([]plotter.XYs, len(results))
	var xs, ys []float64
	for i, r := range results {
		series[i] = completionRates(r.Completions, r.Elapsed)
		for _, pt := range series[i] {
			xs, ys = append(xs, pt.X), append(ys, pt.Y)
		}
	}
	x, y := newLogAxis(xs), newLogAxis(ys)
	var modes []Mode
	for i, r := range results {
		if len(series[i]) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(series[i]))
		for j, pt := range series[i] {
			pts[j] = plotter.XY{X: x.at(pt.X), Y: y.at(pt.Y)}
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, nil, err
		}
		line.Color = modeColor(r.Mode)
		line.Width = vg.Points(1.5)
		switch {
		case r.Mode.Discovers():
			line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
		case r.Mode.Analyzed():
			line.Dashes = []vg.Length{vg.Points(1.5), vg.Points(2)}
		}
		p.Add(line)
		if len(pts) < 3 {
			// Too short a run for a line to show: mark its points.
			dots, err := plotter.NewScatter(pts)
			if err != nil {
				return nil, nil, err
			}
			dots.Color = line.Color
			p.Add(dots)
		}
		label := fmt.Sprintf("%s (%s)", r.Mode, roundDuration(r.Elapsed))
		if r.TimedOut {
			label = fmt.Sprintf("%s (stopped at %s)", r.Mode, roundDuration(r.Elapsed))
		}
		p.Legend.Add(label, line)
		modes = append(modes, r.Mode)
	}
	if len(modes) == 0 {
		return nil, nil, errors.New("no mode recorded completions")
	}
	// To the end of the longest run: a line ends at its last interval's middle.
	var longest time.Duration
	for _, r := range results {
		longest = max(longest, r.Elapsed)
	}
	x.apply(&p.X, max(longest.Seconds(), slices.Max(xs)))
	// Headroom for the legend above the fastest mode.
	y.apply(&p.Y, 8*slices.Max(ys))
	return p, modes, nil
}

// completionRates turns a completion series into tasks per second (Y)
// against seconds since the start (X), each point at the middle of the
// interval it averages over (see maxRatePoints).
func completionRates(samples []Sample, elapsed time.Duration) plotter.XYs {
	if len(samples) < 2 {
		return nil
	}
	window := max(minRateWindow, elapsed/maxRatePoints)
	// The typical write: the median rise between samples, the last one
	// (a run's end, a partial write) aside.
	var steps []int
	for i := 1; i < len(samples)-1; i++ {
		if d := samples[i].Done - samples[i-1].Done; d > 0 {
			steps = append(steps, d)
		}
	}
	last := samples[len(samples)-1]
	if len(steps) > 0 && last.Done > 0 && last.At > 0 {
		slices.Sort(steps)
		perWrite := time.Duration(float64(last.At) * float64(steps[len(steps)/2]) / float64(last.Done))
		window = max(window, writesPerWindow*perWrite)
	}
	picks := []int{0}
	for i := 1; i < len(samples); i++ {
		if samples[i].At-samples[picks[len(picks)-1]].At >= window {
			picks = append(picks, i)
		}
	}
	end, lastIdx := picks[len(picks)-1], len(samples)-1
	switch {
	case end == lastIdx:
	case len(picks) > 1 && last.At-samples[end].At < window/2:
		// Fold a short tail into the interval before it.
		picks[len(picks)-1] = lastIdx
	default:
		picks = append(picks, lastIdx)
	}
	var pts plotter.XYs
	for i := 1; i < len(picks); i++ {
		a, b := samples[picks[i-1]], samples[picks[i]]
		dt := (b.At - a.At).Seconds()
		if dt <= 0 {
			continue
		}
		mid := (a.At + b.At).Seconds() / 2
		pts = append(pts, plotter.XY{X: mid, Y: float64(b.Done-a.Done) / dt})
	}
	return pts
}

// claimLatencyPlot draws each mode's claim latency p50, p90 and p99 as a
// group of three bars, their values in ms above them.
func claimLatencyPlot(results []Result) (*plot.Plot, []Mode, error) {
	p, grid := newPlot("Claim latency by mode: p50, p90, p99", results)
	p.Y.Label.Text = "latency of one claim call (ms, log scale)"
	p.X.Label.Text = "mode"
	for _, r := range results {
		if r.Batch > 1 {
			p.X.Label.Text = fmt.Sprintf("mode (%s: one call claims up to %d tasks)", r.Mode.Claim(), r.Batch)
			break
		}
	}
	percentiles := []struct {
		name  string
		value func(Result) time.Duration
		color color.Color
	}{
		{"p50", func(r Result) time.Duration { return r.ClaimP50 }, color.RGBA{0x9e, 0xca, 0xe1, 0xff}},
		{"p90", func(r Result) time.Duration { return r.ClaimP90 }, color.RGBA{0x42, 0x92, 0xc6, 0xff}},
		{"p99", func(r Result) time.Duration { return r.ClaimP99 }, color.RGBA{0x08, 0x45, 0x94, 0xff}},
	}
	var all []float64
	for _, r := range results {
		for _, pc := range percentiles {
			all = append(all, msOf(pc.value(r)))
		}
	}
	y := newLogAxis(all)
	width := vg.Points(18)
	for j, pc := range percentiles {
		heights := make(plotter.Values, len(results))
		labels := plotter.XYLabels{XYs: make(plotter.XYs, len(results)), Labels: make([]string, len(results))}
		for i, r := range results {
			heights[i] = y.at(msOf(pc.value(r)))
			labels.XYs[i] = plotter.XY{X: float64(i), Y: heights[i]}
			labels.Labels[i] = shortMs(pc.value(r))
		}
		bars, err := plotter.NewBarChart(heights, width)
		if err != nil {
			return nil, nil, err
		}
		offset := width * vg.Length(j-1)
		bars.Offset = offset
		bars.Color = pc.color
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(pc.name, bars)
		text, err := plotter.NewLabels(labels)
		if err != nil {
			return nil, nil, err
		}
		for k := range text.TextStyle {
			text.TextStyle[k].Font.Size = vg.Points(7)
			text.TextStyle[k].XAlign = draw.XCenter
			text.TextStyle[k].YAlign = draw.YBottom
		}
		text.Offset = vg.Point{X: offset, Y: vg.Points(2)}
		p.Add(text)
	}
	names := make([]string, len(results))
	modes := make([]Mode, len(results))
	for i, r := range results {
		// Two lines, so every mode's name fits side by side.
		names[i] = strings.Replace(string(r.Mode), "+", "\n+", 1)
		modes[i] = r.Mode
	}
	p.NominalX(names...)
	// Half a category of margin each side, so the grid spans every group.
	p.X.Min, p.X.Max = -0.5, float64(len(results))-0.5
	grid.Vertical.Color = nil // the modes are categories: no lines between them
	// Headroom above the tallest bar for its label and the legend.
	y.apply(&p.Y, 8*slices.Max(all))
	return p, modes, nil
}

// newPlot starts a chart titled with what it shows and the run's size.
func newPlot(title string, results []Result) (*plot.Plot, *plotter.Grid) {
	p := plot.New()
	r := results[0]
	p.Title.Text = fmt.Sprintf("%s (%d tasks, %d jobs, %d workers)", title, r.Tasks, r.Jobs, r.Workers)
	p.Title.TextStyle.Font.Size = vg.Points(14)
	p.Title.Padding = vg.Points(8)
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	grid := plotter.NewGrid()
	p.Add(grid)
	return p, grid
}

// logAxis draws values on a linear axis as their decades above floor,
// with ticks labelled in the values. gonum/plot's LogScale is not used: it
// places an axis's label by the arithmetic middle of the range, which on a
// range of several decades squashes the data to a corner, and it panics on
// zero.
type logAxis struct{ floor float64 }

// newLogAxis has its floor at the decade at or below the smallest positive
// value.
func newLogAxis(values []float64) logAxis {
	lo := math.Inf(1)
	for _, v := range values {
		if v > 0 {
			lo = min(lo, v)
		}
	}
	if math.IsInf(lo, 1) {
		lo = 1
	}
	return logAxis{floor: math.Pow10(int(math.Floor(math.Log10(lo))))}
}

// at is where v goes: values at or below the floor, zero included (an
// interval in which nothing finished, a mode without claims), sit on it.
func (l logAxis) at(v float64) float64 {
	if v <= l.floor {
		return 0
	}
	return math.Log10(v / l.floor)
}

// apply sets a's range from the floor to hi, with a labelled tick at every
// decade and unlabelled ones between.
func (l logAxis) apply(a *plot.Axis, hi float64) {
	a.Min, a.Max = 0, max(l.at(hi), 1)
	var ticks plot.ConstantTicks
	exp := int(math.Round(math.Log10(l.floor)))
	for d := 0; float64(d) <= a.Max; d++ {
		ticks = append(ticks, plot.Tick{Value: float64(d), Label: strconv.FormatFloat(math.Pow10(exp+d), 'f', -1, 64)})
		for k := 2; k < 10; k++ {
			if v := float64(d) + math.Log10(float64(k)); v <= a.Max {
				ticks = append(ticks, plot.Tick{Value: v})
			}
		}
	}
	a.Tick.Marker = ticks
}

// modeColor gives each claim one colour, shared by its +discover mode: the
// old claims warm, the new ones cool.
func modeColor(m Mode) color.Color {
	switch m.Claim() {
	case ModeBefore:
		return color.RGBA{0xd6, 0x27, 0x28, 0xff}
	case ModeBeforeApp:
		return color.RGBA{0xff, 0x7f, 0x0e, 0xff}
	case ModeAfter:
		return color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	default:
		return color.RGBA{0x2c, 0xa0, 0x2c, 0xff}
	}
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// shortMs is a bar's label: two significant figures, as the table's ms.
func shortMs(d time.Duration) string {
	v := msOf(d)
	switch {
	case v == 0:
		return "0"
	case v < 9.95:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
