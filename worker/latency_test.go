package worker

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Quantiles of 1..1000 ms come out within the histogram's 2% buckets, and
// agree with Summary's.
func TestHistogramQuantile(t *testing.T) {
	t.Parallel()
	var h Histogram
	if got := h.Quantile(0.5); got != 0 {
		t.Fatalf("empty histogram: p50 %s, want 0", got)
	}
	for ms := 1000; ms >= 1; ms-- {
		h.Record(time.Duration(ms) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := h.Quantile(c.q)
		if got < c.want || float64(got) > 1.02*float64(c.want) {
			t.Errorf("q%.2f = %s, want %s to 2%% above", c.q, got, c.want)
		}
	}
	s := h.Summary()
	if s.P50 != h.Quantile(0.5) || s.P99 != h.Quantile(0.99) {
		t.Errorf("Summary p50 %s p99 %s, Quantile %s %s", s.P50, s.P99, h.Quantile(0.5), h.Quantile(0.99))
	}
}

// TestHistogramCumulative: the cumulative counts under each bound, the
// count and the sum, as a Prometheus histogram wants them; a sample past
// every bound is in the count only.
func TestHistogramCumulative(t *testing.T) {
	t.Parallel()
	var h Histogram
	for _, d := range []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, time.Second, 10 * time.Hour} {
		h.Record(d)
	}
	bounds := []time.Duration{500 * time.Microsecond, 2 * time.Millisecond, 20 * time.Millisecond, 2 * time.Second, time.Minute}
	cum, count, sum := h.Cumulative(bounds)
	if diff := cmp.Diff([]uint64{0, 3, 5, 6, 6}, cum); diff != "" {
		t.Errorf("cumulative counts (-want +got):\n%s", diff)
	}
	if want := 10*time.Hour + time.Second + 23*time.Millisecond; count != 7 || sum != want {
		t.Errorf("count %d, sum %v; want 7, %v", count, sum, want)
	}
	if cum, count, sum := new(Histogram).Cumulative(bounds); !cmp.Equal(cum, make([]uint64, len(bounds))) || count != 0 || sum != 0 {
		t.Errorf("empty histogram: %v, %d, %v", cum, count, sum)
	}
}
