package worker

import (
	"math"
	"sync"
	"time"
)

// Histogram records durations in logarithmic buckets (about 2% wide, from
// 1µs to ~2 hours), so percentiles stay accurate to 2% in bounded memory
// however many samples it takes. Safe for concurrent use.
type Histogram struct {
	mu     sync.Mutex
	counts [histBuckets]uint64
	n      uint64
	sum    time.Duration
	max    time.Duration
}

const (
	histGrowth  = 1.02
	histBuckets = 1200
)

var logGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(math.Log(us)/logGrowth)+1, histBuckets-1)
}

// upperBound is the largest duration bucket i holds.
func upperBound(i int) time.Duration {
	return time.Duration(math.Pow(histGrowth, float64(i)) * float64(time.Microsecond))
}

// Record adds one sample.
func (h *Histogram) Record(d time.Duration) {
	b := bucketOf(d)
	h.mu.Lock()
	h.counts[b]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// Summary is a histogram's count and percentiles.
type Summary struct {
	Count uint64
	P50   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// Summary returns the count, median, 99th percentile and maximum.
func (h *Histogram) Summary() Summary {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Summary{Count: h.n, P50: h.quantile(0.50), P99: h.quantile(0.99), Max: h.max}
}

// Quantile returns the q-quantile (0 < q <= 1) of the samples, accurate to
// the 2% of a bucket; 0 when there are none.
func (h *Histogram) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.quantile(q)
}

func (h *Histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(upperBound(i), h.max)
		}
	}
	return h.max
}

// Cumulative returns, for each of bounds (ascending), how many samples lie
// in the buckets wholly at or below it, with the count and sum of all
// samples: the shape of a Prometheus histogram. The bucket a bound falls in
// is counted under the next bound up, so each count is exact for a bound
// at most 2% lower than the one given.
func (h *Histogram) Cumulative(bounds []time.Duration) (cum []uint64, count uint64, sum time.Duration) {
	cum = make([]uint64, len(bounds))
	h.mu.Lock()
	defer h.mu.Unlock()
	var below uint64
	j := 0
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		// The last bucket also holds everything longer than its bound.
		top := time.Duration(math.MaxInt64)
		if i < histBuckets-1 {
			top = upperBound(i)
		}
		for ; j < len(bounds) && bounds[j] < top; j++ {
			cum[j] = below
		}
		below += c
	}
	for ; j < len(bounds); j++ {
		cum[j] = below
	}
	return cum, h.n, h.sum
}
