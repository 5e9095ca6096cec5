package worker

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/blue-banded-bee/taskq/tasks"
)

// Stats are a pool's own measurements since Run started.
type Stats struct {
	Elapsed time.Duration
	// Claimed counts tasks claimed; ClaimCalls the claim statements, whose
	// latency ClaimLatency summarises (from the statement's start: not the
	// wait for a place among Config.Claimers).
	Claimed      int64
	ClaimCalls   int64
	ClaimLatency Summary
	// FinishLatency summarises the statements writing outcomes (Finish
	// calls, each up to CompletionBatch outcomes).
	FinishLatency Summary
	// Outcomes written: completed, failed, retried later and skipped
	// (TaskResult.Skip); Released were
	// handed back unfinished at shutdown. Lost were no longer held by this
	// pool when their outcome was written (their lease had expired), and
	// Unrecorded could not be written at all; the rescuer returns both.
	Completed int64
	Retried   int64
	Failed    int64
	Skipped   int64
	Released  int64
	// PaceMissed counts paced tasks handed back unrun because their request
	// could not go out by Task.StartBy (included in Released).
	PaceMissed int64
	Lost       int64
	Unrecorded int64
	// Tasks this pool's maintenance took back from workers (of any process)
	// whose lease expired: RescuedRetried went back to pending,
	// RescuedFailed had used their retries and failed.
	RescuedRetried int64
	RescuedFailed  int64
	// Links the handlers returned with completed tasks: LinksSeen were
	// dropped by the pool as written before or on their way with another
	// outcome; of the rest, the database added
	// LinksAdded as pending and LinksSkipped past max_pages, and found
	// LinksDuplicate in their jobs already. LinksDropped were not paths
	// Enqueue takes, or their job took no more pages.
	LinksFound     int64
	LinksSeen      int64
	LinksAdded     int64
	LinksSkipped   int64
	LinksDuplicate int64
	LinksDropped   int64
	// Worker time, summed over workers: running handlers, in claim
	// statements, handing outcomes over, and idle for lack of tasks.
	Working  time.Duration
	Claiming time.Duration
	Handoff  time.Duration
	Idle     time.Duration
	// Now, not since Run started: handlers running, and tasks claimed by
	// this pool whose outcome is not yet written (running, waiting for a
	// worker, or on their way to the database).
	Running  int64
	InFlight int64
}

// TasksPerSecond is the rate of tasks finished (completed, failed, retried
// or skipped).
func (s Stats) TasksPerSecond() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Completed+s.Failed+s.Retried+s.Skipped) / s.Elapsed.Seconds()
}

// Efficiency is the share of the workers' non-idle time spent running
// handlers rather than waiting on the queue (claim statements and handing
// outcomes over). The plan's "worker efficiency" is another measure, the
// load test's (time not spent waiting on locks). Meaningful when handlers do
// real work; with no-op handlers it is near zero by definition.
func (s Stats) Efficiency() float64 {
	busy := s.Working + s.Claiming + s.Handoff
	if busy <= 0 {
		return 0
	}
	return float64(s.Working) / float64(busy)
}

// Stats returns the pool's measurements so far.
func (p *Pool) Stats() Stats {
	s := p.stats.snapshot()
	p.heldMu.Lock()
	s.InFlight = int64(len(p.held))
	p.heldMu.Unlock()
	return s
}

type counters struct {
	mu               sync.Mutex
	started, stopped time.Time

	claimedTasks, claimCalls                            atomic.Int64
	claimLatency, finishLatency                         Histogram
	completed, retried, failed, skipped, released, lost atomic.Int64
	unrecordedBatches                                   atomic.Int64
	rescuedRetried, rescuedFailed                       atomic.Int64
	running                                             atomic.Int64
	paceMissed                                          atomic.Int64
	linksFound, linksSeen, linksAdded                   atomic.Int64
	linksSkipped, linksDuplicate, linksDropped          atomic.Int64
	workingNs, claimingNs, handoffNs, idleNs            atomic.Int64
}

func (c *counters) start(t time.Time) {
	c.mu.Lock()
	c.started, c.stopped = t, time.Time{}
	c.mu.Unlock()
}

func (c *counters) stop(t time.Time) {
	c.mu.Lock()
	c.stopped = t
	c.mu.Unlock()
}

func (c *counters) claimed(d time.Duration, got bool) {
	c.claimCalls.Add(1)
	c.claimLatency.Record(d)
	c.claimingNs.Add(int64(d))
	if got {
		c.claimedTasks.Add(1)
	}
}

func (c *counters) claimedBatch(d time.Duration, n int) {
	c.claimCalls.Add(1)
	c.claimLatency.Record(d)
	c.claimedTasks.Add(int64(n))
}

func (c *counters) worked(d time.Duration) { c.workingNs.Add(int64(d)) }
func (c *counters) waited(d time.Duration) { c.handoffNs.Add(int64(d)) }
func (c *counters) idled(d time.Duration)  { c.idleNs.Add(int64(d)) }
func (c *counters) unrecorded()            { c.unrecordedBatches.Add(1) }

func (c *counters) finishCall(d time.Duration) { c.finishLatency.Record(d) }

func (c *counters) rescued(rs []tasks.Rescued) {
	for _, r := range rs {
		if r.Status == tasks.TaskStatusFailed {
			c.rescuedFailed.Add(1)
		} else {
			c.rescuedRetried.Add(1)
		}
	}
}

func (c *counters) finished(r tasks.FinishReport) {
	c.completed.Add(int64(r.Completed))
	c.retried.Add(int64(r.Retried))
	c.failed.Add(int64(r.Failed))
	c.skipped.Add(int64(r.Skipped))
	c.lost.Add(int64(len(r.Lost)))
	c.linksAdded.Add(int64(r.Links.Pending))
	c.linksSkipped.Add(int64(r.Links.Skipped))
	c.linksDuplicate.Add(int64(r.Links.Duplicates))
	c.linksDropped.Add(int64(r.LinksInvalid + r.LinksRefused))
}

func (c *counters) foundLinks(found, seen int) {
	c.linksFound.Add(int64(found))
	c.linksSeen.Add(int64(seen))
}

func (c *counters) handedBack(n, lost int) {
	c.released.Add(int64(n))
	c.lost.Add(int64(lost))
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	started, stopped := c.started, c.stopped
	c.mu.Unlock()
	if stopped.IsZero() {
		stopped = time.Now()
	}
	var elapsed time.Duration
	if !started.IsZero() {
		elapsed = stopped.Sub(started)
	}
	return Stats{
		Elapsed:        elapsed,
		Claimed:        c.claimedTasks.Load(),
		ClaimCalls:     c.claimCalls.Load(),
		ClaimLatency:   c.claimLatency.Summary(),
		FinishLatency:  c.finishLatency.Summary(),
		Completed:      c.completed.Load(),
		Skipped:        c.skipped.Load(),
		Retried:        c.retried.Load(),
		Failed:         c.failed.Load(),
		Released:       c.released.Load(),
		PaceMissed:     c.paceMissed.Load(),
		Lost:           c.lost.Load(),
		Unrecorded:     c.unrecordedBatches.Load(),
		RescuedRetried: c.rescuedRetried.Load(),
		RescuedFailed:  c.rescuedFailed.Load(),
		LinksFound:     c.linksFound.Load(),
		LinksSeen:      c.linksSeen.Load(),
		LinksAdded:     c.linksAdded.Load(),
		LinksSkipped:   c.linksSkipped.Load(),
		LinksDuplicate: c.linksDuplicate.Load(),
		LinksDropped:   c.linksDropped.Load(),
		Working:        time.Duration(c.workingNs.Load()),
		Claiming:       time.Duration(c.claimingNs.Load()),
		Handoff:        time.Duration(c.handoffNs.Load()),
		Idle:           time.Duration(c.idleNs.Load()),
		Running:        c.running.Load(),
	}
}

// ClaimLatency is the histogram of claim-call latencies.
func (p *Pool) ClaimLatency() *Histogram { return &p.stats.claimLatency }

// FinishLatency is the histogram of the latencies of the statements that
// write outcomes.
func (p *Pool) FinishLatency() *Histogram { return &p.stats.finishLatency }
