package worker

import (
	"testing"
	"time"
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
