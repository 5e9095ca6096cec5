package loadtest

import (
	"testing"
	"time"
)

// A long run's series stays bounded and evenly spaced: the before modes run
// for 5 minutes, 3,000 ticks.
func TestCompletionSeriesThinsEvenly(t *testing.T) {
	t.Parallel()
	s := newCompletionSeries()
	for n := 1; n <= 3000; n++ {
		s.tick(n, func() Sample { return Sample{At: time.Duration(n) * completionTick, Done: 7 * n} })
	}
	if len(s.samples) < maxCompletionSamples || len(s.samples) >= 2*maxCompletionSamples {
		t.Fatalf("%d samples, want %d to %d", len(s.samples), maxCompletionSamples, 2*maxCompletionSamples-1)
	}
	if s.samples[0] != (Sample{}) {
		t.Fatalf("first sample %+v, want the start", s.samples[0])
	}
	step := s.samples[1].At
	for i := 1; i < len(s.samples); i++ {
		a, b := s.samples[i-1], s.samples[i]
		if b.At-a.At != step || b.Done-a.Done != 7*int(step/completionTick) {
			t.Fatalf("samples %d and %d: %+v, %+v; want %s apart", i-1, i, a, b, step)
		}
	}
	if last := s.samples[len(s.samples)-1]; 3000*completionTick-last.At >= step {
		t.Fatalf("last sample at %s, want within %s of the end", last.At, step)
	}
}
