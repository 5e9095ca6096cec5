package tasks

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/gen"
)

// MaxPaceInterval bounds a domain's interval between task starts, set or
// learned: a longer one is surely a mistake (a delay given in milliseconds
// read as seconds, say).
const MaxPaceInterval = 24 * time.Hour

// Defaults of the pacing knobs (Config.PaceStep, PaceMax, PaceRecoverAfter),
// as crawlers use them.
const (
	DefaultPaceStep         = 500 * time.Millisecond
	DefaultPaceMax          = time.Minute
	DefaultPaceRecoverAfter = 5
	DefaultPaceStartBudget  = 10 * time.Millisecond
)

// ErrPaceMissed is what a handler returns (in Result.Err) for a paced task
// it could not start by Task.StartBy: starting it late could put its request
// closer than the interval to the domain's next one. The worker pool hands
// such a task back instead of recording a failure.
var ErrPaceMissed = errors.New("paced task not started in time")

// Late says a paced task can no longer start in time (see Task.StartBy).
func (t Task) Late(now time.Time) bool { return !t.StartBy.IsZero() && now.After(t.StartBy) }

// Pace is a domain's pacing as the database holds it.
type Pace struct {
	DomainID int32
	Domain   string
	// Floor is the least interval: what the application set, or robots.txt's
	// Crawl-delay. Learned back-off never goes below it.
	Floor time.Duration
	// Interval is the current least time between two task starts of the
	// domain: Floor, or more while the site pushes back.
	Interval time.Duration
	// NextAllowedAt is when the next task of the domain may start.
	NextAllowedAt time.Time
	// Successes counts results since the interval last changed.
	Successes int32
	// Source is "set" (SetDomainPace), "robots" (Crawl-delay) or "learned"
	// (created by a back-off).
	Source    string
	UpdatedAt time.Time
}

// Pace sources.
const (
	PaceSet     = "set"
	PaceRobots  = "robots"
	PaceLearned = "learned"
)

// BackOff says whether a result asks its domain to slow down: 429 Too Many
// Requests, 503 Service Unavailable, or no connection at all.
func (r TaskResult) BackOff() bool {
	return r.StatusCode == http.StatusTooManyRequests || r.StatusCode == http.StatusServiceUnavailable ||
		r.ConnectionFailed
}

// checkDomain refuses a domain name CreateJob would refuse.
func checkDomain(domain string) error { return checkID("domain", domain) }

func checkPaceInterval(arg string, d time.Duration) error {
	switch {
	case d < 0:
		return invalid(arg, "negative (%v)", d)
	case d > MaxPaceInterval:
		return invalid(arg, "%v is longer than %v", d, MaxPaceInterval)
	}
	return nil
}

// CheckPaceSeconds turns a delay in seconds (a robots.txt Crawl-delay, an
// application's setting) into an interval, refusing NaN, infinities,
// negative values and more than MaxPaceInterval with an *ArgumentError.
func CheckPaceSeconds(arg string, seconds float64) (time.Duration, error) {
	switch {
	case math.IsNaN(seconds):
		return 0, invalid(arg, "NaN")
	case math.IsInf(seconds, 0):
		return 0, invalid(arg, "infinite")
	case seconds < 0:
		return 0, invalid(arg, "negative (%v s)", seconds)
	case seconds > MaxPaceInterval.Seconds():
		return 0, invalid(arg, "%v s is longer than %v", seconds, MaxPaceInterval)
	}
	return time.Duration(seconds * float64(time.Second)), nil
}

// SetDomainPace paces a domain: no two tasks of any of its jobs start less
// than interval apart, whichever worker claims them. The interval becomes
// the domain's floor (learned back-off starts again from it); a next start
// already scheduled stays. The domain is created if it is new, so a pace
// can be set before its first job. Jobs of the domain running now are paced
// from their next claim.
func (q *Queue) SetDomainPace(ctx context.Context, domain string, interval time.Duration) error {
	if err := checkDomain(domain); err != nil {
		return err
	}
	if err := checkPaceInterval("interval", interval); err != nil {
		return err
	}
	_, err := q.setPace(ctx, domain, interval, PaceSet, false)
	return err
}

// SetDomainPaceIfAbsent is SetDomainPace for a domain that has no pace yet,
// as the fetcher does with robots.txt's Crawl-delay: a pace the application
// set or the queue learned is kept. It reports whether it set one.
func (q *Queue) SetDomainPaceIfAbsent(ctx context.Context, domain string, interval time.Duration, source string) (bool, error) {
	if err := checkDomain(domain); err != nil {
		return false, err
	}
	if err := checkPaceInterval("interval", interval); err != nil {
		return false, err
	}
	if source != PaceSet && source != PaceRobots {
		return false, invalid("source", "%q: want %q or %q", source, PaceSet, PaceRobots)
	}
	return q.setPace(ctx, domain, interval, source, true)
}

// setPace creates or replaces (unless ifAbsent) a domain's pace, and marks
// its jobs' shards paced, under the domain's row lock (see DomainLockForPace).
func (q *Queue) setPace(ctx context.Context, domain string, interval time.Duration, source string, ifAbsent bool) (bool, error) {
	created := true
	err := q.tx(ctx, func(tx pgx.Tx) error {
		id, err := q.q.DomainUpsert(ctx, tx, domain)
		if err != nil {
			return err
		}
		if _, err := q.q.DomainLockForPace(ctx, tx, []int32{id}); err != nil {
			return err
		}
		if ifAbsent {
			created, err = q.q.DomainPaceSetIfAbsent(ctx, tx, gen.DomainPaceSetIfAbsentParams{
				DomainID: id, IntervalMs: interval.Milliseconds(), Source: source, Now: q.now(),
			})
		} else {
			_, err = q.q.DomainPaceSet(ctx, tx, gen.DomainPaceSetParams{
				DomainID: id, IntervalMs: interval.Milliseconds(), Source: source, Now: q.now(),
			})
		}
		if err != nil || !created {
			return err
		}
		if err := q.q.DomainPaceFlag(ctx, tx, []int32{id}); err != nil {
			return err
		}
		// Idle workers sleeping until the old pace's next start look again.
		return q.q.JobNotify(ctx, tx, gen.JobNotifyParams{Channel: NotifyChannel, JobID: ""})
	})
	if err != nil {
		return false, fmt.Errorf("pace domain %s: %w", domain, err)
	}
	return created, nil
}

// ClearDomainPace removes a domain's pace, set or learned: its jobs are
// claimed as fast as their concurrency allows again. It reports whether the
// domain had one; an unknown domain has none.
func (q *Queue) ClearDomainPace(ctx context.Context, domain string) (bool, error) {
	if err := checkDomain(domain); err != nil {
		return false, err
	}
	var had bool
	err := q.tx(ctx, func(tx pgx.Tx) error {
		id, err := q.q.DomainIDByName(ctx, tx, domain)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := q.q.DomainLockForPace(ctx, tx, []int32{id}); err != nil {
			return err
		}
		if had, err = q.q.DomainPaceDelete(ctx, tx, id); err != nil || !had {
			return err
		}
		if err := q.q.DomainPaceFlag(ctx, tx, []int32{id}); err != nil {
			return err
		}
		return q.q.JobNotify(ctx, tx, gen.JobNotifyParams{Channel: NotifyChannel, JobID: ""})
	})
	if err != nil {
		return false, fmt.Errorf("clear pace of domain %s: %w", domain, err)
	}
	return had, nil
}

// DomainPace returns a domain's pace, or ErrNotFound when it has none.
func (q *Queue) DomainPace(ctx context.Context, domain string) (Pace, error) {
	if err := checkDomain(domain); err != nil {
		return Pace{}, err
	}
	var r gen.DomainPaceGetRow
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		r, err = q.q.DomainPaceGet(ctx, db, domain)
		return err
	})
	if err != nil {
		return Pace{}, fmt.Errorf("pace of domain %s: %w", domain, err)
	}
	return paceFromRow(gen.DomainPaceListRow(r)), nil
}

// Paces lists up to limit paced domains, latest next start first, and how
// many there are in all.
func (q *Queue) Paces(ctx context.Context, limit int) ([]Pace, int, error) {
	if limit <= 0 || limit > MaxBatch {
		return nil, 0, invalid("limit", "%d: want 1 to %d", limit, MaxBatch)
	}
	var out []Pace
	var total int32
	err := q.run(ctx, func(db gen.DBTX) error {
		rows, err := q.q.DomainPaceList(ctx, db, int32(limit))
		if err != nil {
			return err
		}
		for _, r := range rows {
			out = append(out, paceFromRow(r))
		}
		total, err = q.q.DomainPaceCount(ctx, db)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list paced domains: %w", err)
	}
	return out, int(total), nil
}

func paceFromRow(r gen.DomainPaceListRow) Pace {
	return Pace{
		DomainID:      r.DomainID,
		Domain:        r.Name,
		Floor:         time.Duration(r.FloorMs) * time.Millisecond,
		Interval:      time.Duration(r.IntervalMs) * time.Millisecond,
		NextAllowedAt: r.NextAllowedAt,
		Successes:     r.Successes,
		Source:        r.Source,
		UpdatedAt:     r.UpdatedAt,
	}
}

// NextPacedStart is how long until the next task of a paced domain whose
// job has a claimable task waiting for its pace may start, of any job
// (jobID "") or of one; ok is false when no such task waits. A claim that
// found nothing asks this to sleep until then rather than poll.
func (q *Queue) NextPacedStart(ctx context.Context, jobID string) (wait time.Duration, ok bool, err error) {
	var job *string
	if jobID != "" {
		job = &jobID
	}
	var ms int64
	err = q.run(ctx, func(db gen.DBTX) (err error) {
		ms, err = q.q.TaskPacedNext(ctx, db, gen.TaskPacedNextParams{JobID: job, Now: q.now()})
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("next paced start: %w", err)
	}
	return time.Duration(ms) * time.Millisecond, ms >= 0, nil
}

// learnPaces feeds the outcomes' results to their domains' paces: back-offs
// (TaskResult.BackOff) from any task, successes from tasks of paced domains. One
// statement for the paces that exist; a back-off on a domain without one
// creates a learned pace (a short transaction, rare: once per domain).
func (q *Queue) learnPaces(ctx context.Context, outcomes []Outcome) error {
	var jobIDs []string
	var backOff []bool
	var retryAfter []int64
	newDomainJobs := map[string]int64{} // job of a back-off: its Retry-After
	for _, o := range outcomes {
		b := o.Result.BackOff()
		if !b && !o.Task.Paced {
			continue
		}
		ra := max(0, min(o.Result.RetryAfter, MaxPaceInterval)).Milliseconds()
		jobIDs = append(jobIDs, o.Task.JobID)
		backOff = append(backOff, b)
		retryAfter = append(retryAfter, ra)
		if b && !o.Task.Paced {
			newDomainJobs[o.Task.JobID] = max(newDomainJobs[o.Task.JobID], ra)
		}
	}
	if len(jobIDs) == 0 {
		return nil
	}
	err := q.run(ctx, func(db gen.DBTX) error {
		_, err := q.q.DomainPaceLearn(ctx, db, gen.DomainPaceLearnParams{
			JobIds: jobIDs, BackOff: backOff, RetryAfterMs: retryAfter,
			MaxMs: q.cfg.PaceMax.Milliseconds(), StepMs: q.cfg.PaceStep.Milliseconds(),
			RecoverAfter: int32(q.cfg.PaceRecoverAfter), Now: q.now(),
		})
		return err
	})
	if err != nil || len(newDomainJobs) == 0 {
		return err
	}
	jobs := slices.Sorted(func(yield func(string) bool) {
		for j := range newDomainJobs {
			if !yield(j) {
				return
			}
		}
	})
	return q.tx(ctx, func(tx pgx.Tx) error {
		domains, err := q.q.DomainsWithoutPace(ctx, tx, jobs)
		if err != nil || len(domains) == 0 {
			return err
		}
		ids := make([]int32, len(domains))
		ras := make([]int64, len(domains))
		for i, d := range domains {
			ids[i] = d.DomainID
			for _, j := range d.JobIds {
				ras[i] = max(ras[i], newDomainJobs[j])
			}
		}
		if _, err := q.q.DomainLockForPace(ctx, tx, ids); err != nil {
			return err
		}
		if err := q.q.DomainPaceBackOffNew(ctx, tx, gen.DomainPaceBackOffNewParams{
			DomainIds: ids, RetryAfterMs: ras, MaxMs: q.cfg.PaceMax.Milliseconds(),
			StepMs: q.cfg.PaceStep.Milliseconds(), Now: q.now(),
		}); err != nil {
			return err
		}
		return q.q.DomainPaceFlag(ctx, tx, ids)
	})
}
