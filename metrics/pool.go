// Package metrics exposes a worker pool's counters and the queue's state to
// Prometheus, at /metrics, through the Prometheus Go client.
//
// Nothing here counts anything: PoolCollector reads the pool's own Stats and
// latency histograms when scraped, so the pool's hot path pays nothing for
// being watched, and the figures a scrape shows are the ones Pool.Stats
// reports. QueueCollector reads queue depth and lock waits from the
// database, at most once per MinInterval however many scrapers ask.
//
// An application that embeds a worker.Pool registers the collectors on its
// own registry, or serves NewRegistry's:
//
//	reg := metrics.NewRegistry(pool, queue, metrics.QueueOptions{})
//	srv, err := metrics.Listen(":9090", reg)
//	defer srv.Close()
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blue-banded-bee/taskq/worker"
)

// latencyBuckets are the upper bounds, in seconds, of the claim and finish
// latency histograms: a claim takes a few milliseconds when all is well
// (README, "Results"), a batched finish tens of them, and lock waits once
// reached seconds.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Finish outcomes and rescue outcomes, the values of the outcome label.
const (
	outcomeCompleted = "completed"
	outcomeFailed    = "failed"
	outcomeRetried   = "retried"
	outcomeSkipped   = "skipped"
)

// PoolCollector is a prometheus.Collector of one worker.Pool's counters,
// read at scrape time. To collect several pools in one process, register
// each through prometheus.WrapRegistererWith with a label telling them apart.
type PoolCollector struct {
	pool   *worker.Pool
	bounds []time.Duration

	claimed, finished, released, lost, rescued, unrecorded *prometheus.Desc
	claimSeconds, finishSeconds                            *prometheus.Desc
	inFlight, workers, idle                                *prometheus.Desc
	workerSeconds                                          *prometheus.Desc
}

// NewPoolCollector returns a collector of p's measurements.
func NewPoolCollector(p *worker.Pool) *PoolCollector {
	bounds := make([]time.Duration, len(latencyBuckets))
	for i, b := range latencyBuckets {
		bounds[i] = time.Duration(b * float64(time.Second))
	}
	return &PoolCollector{
		pool:   p,
		bounds: bounds,
		claimed: prometheus.NewDesc("taskq_tasks_claimed_total",
			"Tasks this pool claimed.", nil, nil),
		finished: prometheus.NewDesc("taskq_tasks_finished_total",
			"Task outcomes this pool wrote: completed, failed (no retries left), or retried (failed, back to pending for another attempt).",
			[]string{"outcome"}, nil),
		released: prometheus.NewDesc("taskq_tasks_released_total",
			"Tasks this pool handed back to the queue unfinished, at shutdown.", nil, nil),
		lost: prometheus.NewDesc("taskq_tasks_lost_total",
			"Tasks whose outcome was not written because this pool no longer held them (their lease had expired); the rescuer returns them.",
			nil, nil),
		rescued: prometheus.NewDesc("taskq_tasks_rescued_total",
			"Tasks this process's maintenance took back from workers whose lease expired: retried (back to pending) or failed (no retries left).",
			[]string{"outcome"}, nil),
		unrecorded: prometheus.NewDesc("taskq_outcome_batches_unrecorded_total",
			"Batches of outcomes or hand-backs this pool gave up writing after retrying; their tasks wait out their lease and the rescuer returns them.",
			nil, nil),
		claimSeconds: prometheus.NewDesc("taskq_claim_duration_seconds",
			"Latency of this pool's claim statements (one task each, or up to the claim batch).", nil, nil),
		finishSeconds: prometheus.NewDesc("taskq_finish_duration_seconds",
			"Latency of this pool's statements writing outcomes (a batch each).", nil, nil),
		inFlight: prometheus.NewDesc("taskq_tasks_in_flight",
			"Tasks claimed by this pool whose outcome is not yet written.", nil, nil),
		workers: prometheus.NewDesc("taskq_workers",
			"Workers in this pool: how many tasks it runs at once.", nil, nil),
		idle: prometheus.NewDesc("taskq_workers_idle",
			"Workers of this pool not running a handler now (waiting for a task, claiming, or handing an outcome over).", nil, nil),
		workerSeconds: prometheus.NewDesc("taskq_worker_seconds_total",
			"Worker time summed over workers, by state: working (running handlers), claiming (in claim statements, when workers claim for themselves), handoff (handing outcomes over), idle (waiting for tasks).",
			[]string{"state"}, nil),
	}
}

// Describe sends the descriptors of every metric Collect sends.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.claimed, c.finished, c.released, c.lost, c.rescued, c.unrecorded,
		c.claimSeconds, c.finishSeconds, c.inFlight, c.workers, c.idle, c.workerSeconds} {
		ch <- d
	}
}

// Collect reads the pool's Stats and histograms and sends them as metrics.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.claimed, s.Claimed)
	counter(c.finished, s.Completed, outcomeCompleted)
	counter(c.finished, s.Failed, outcomeFailed)
	counter(c.finished, s.Retried, outcomeRetried)
	counter(c.finished, s.Skipped, outcomeSkipped)
	counter(c.released, s.Released)
	counter(c.lost, s.Lost)
	counter(c.rescued, s.RescuedRetried, outcomeRetried)
	counter(c.rescued, s.RescuedFailed, outcomeFailed)
	counter(c.unrecorded, s.Unrecorded)
	ch <- c.histogram(c.claimSeconds, c.pool.ClaimLatency())
	ch <- c.histogram(c.finishSeconds, c.pool.FinishLatency())

	workers := c.pool.Config().Workers
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(s.InFlight))
	ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(workers))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(int64(workers)-s.Running))
	for state, d := range map[string]time.Duration{
		"working": s.Working, "claiming": s.Claiming, "handoff": s.Handoff, "idle": s.Idle,
	} {
		ch <- prometheus.MustNewConstMetric(c.workerSeconds, prometheus.CounterValue, d.Seconds(), state)
	}
}

func (c *PoolCollector) histogram(d *prometheus.Desc, h *worker.Histogram) prometheus.Metric {
	cum, count, sum := h.Cumulative(c.bounds)
	buckets := make(map[float64]uint64, len(cum))
	for i, n := range cum {
		buckets[latencyBuckets[i]] = n
	}
	return prometheus.MustNewConstHistogram(d, count, sum.Seconds(), buckets)
}
