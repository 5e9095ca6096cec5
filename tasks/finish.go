package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/gen"
)

// TaskResult is what running a task produced: for the cache-warming service,
// what fetching the page recorded. Durations are stored in whole
// milliseconds, as the application stores them.
type TaskResult struct {
	// StatusCode is the HTTP status of the fetched page; 0 means there was
	// no response, and then the other response fields are not recorded.
	StatusCode   int
	ResponseTime time.Duration
	CacheStatus  string
	ContentType  string
	// ContentLength is the body's size in bytes; -1 when unknown.
	ContentLength int64
	Headers       http.Header
	// RedirectURL is where the page redirected to, when it did.
	RedirectURL string
	// Timing breaks the request's ResponseTime down. Recorded with the
	// response; zero parts are stored as 0 (a reused connection has no DNS
	// lookup, connect or handshake).
	Timing Timing
	// Second is the request made after the first found the page not in
	// the CDN's cache, to confirm the first warmed it; nil when none was.
	Second *SecondRequest
	// CacheCheckAttempts are the cache checks made between the two
	// requests, in order.
	CacheCheckAttempts []CacheCheckAttempt
	// RetryAfter is what the response's Retry-After header asked for (its
	// seconds, or the time until its HTTP date); with a back-off (see
	// BackOff) the domain's next task waits at least this long.
	RetryAfter time.Duration
	// ConnectionFailed: no response because the site could not be reached
	// (refused, reset, timed out). It counts as a back-off for the domain.
	ConnectionFailed bool
	// Err, when set, fails the task. It is retried after a backoff until the
	// job's max_retries, unless Permanent.
	Err       error
	Permanent bool
	// Skip finishes the task as skipped: the worker chose not to fetch it
	// (robots.txt disallows the page, say). Err, when set, is recorded as
	// the reason; the task is not retried and its links are not enqueued.
	Skip bool
	// Links are the pages of the job's domain the task found (paths from
	// "/"). When the task completes they are enqueued into its job in the
	// same transaction as the outcome, so a completed task's links are never
	// lost, and a task that dies first finds them again when it runs again.
	// A failed task's links are not enqueued. A link Enqueue would refuse
	// (see Page: empty, not from "/", as an absolute URL or a link to
	// another host is not, too long, with a NUL, not UTF-8, or of a NaN or
	// infinite priority) is dropped and counted (FinishReport.LinksInvalid):
	// it fails neither the batch nor the task, whose outcome is written.
	Links []Page
}

// Timing is where a request's time went, as net/http/httptrace reports it.
type Timing struct {
	DNSLookup     time.Duration
	TCPConnection time.Duration
	TLSHandshake  time.Duration
	// TTFB runs from sending the request to the first byte of the response.
	TTFB time.Duration
	// ContentTransfer runs from the first byte of the response to the last.
	ContentTransfer time.Duration
}

// SecondRequest is what the request after a cache miss recorded.
type SecondRequest struct {
	ResponseTime time.Duration
	CacheStatus  string
	// ContentLength is the body's size in bytes; -1 when unknown.
	ContentLength int64
	Headers       http.Header
	Timing        Timing
}

// CacheCheckAttempt is one check of a page's cache status between the two
// requests of a fetch.
type CacheCheckAttempt struct {
	Attempt     int
	CacheStatus string
	// Delay is how long the fetch waited before this check.
	Delay time.Duration
}

// cacheCheckAttemptJSON is CacheCheckAttempt as the application stores it
// in tasks.cache_check_attempts.
type cacheCheckAttemptJSON struct {
	Attempt     int    `json:"attempt"`
	CacheStatus string `json:"cache_status"`
	DelayMs     int64  `json:"delay_ms"`
}

// MarshalJSON writes the attempt as the application stores it, the delay in
// milliseconds.
func (a CacheCheckAttempt) MarshalJSON() ([]byte, error) {
	return json.Marshal(cacheCheckAttemptJSON{a.Attempt, a.CacheStatus, a.Delay.Milliseconds()})
}

// UnmarshalJSON reads an attempt as MarshalJSON writes it.
func (a *CacheCheckAttempt) UnmarshalJSON(b []byte) error {
	var j cacheCheckAttemptJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*a = CacheCheckAttempt{Attempt: j.Attempt, CacheStatus: j.CacheStatus, Delay: time.Duration(j.DelayMs) * time.Millisecond}
	return nil
}

// Outcome is a claimed task with its result.
type Outcome struct {
	Task   Task
	Result TaskResult
	// linkPages: page ids of Result.Links by path, from PrepareLinks.
	linkPages map[string]int32
}

// FinishReport counts what Finish recorded.
type FinishReport struct {
	Completed int
	Retried   int
	Failed    int
	Skipped   int
	// Lost lists tasks whose claim was no longer held (their lease expired
	// and they were rescued, or they were finished already): nothing was
	// written for them.
	Lost []string
	// Busy lists outcomes not written because another transaction (a
	// claimer passing over the row) held the task locked each time Finish
	// tried, until ctx ended; write them again. Finish retries such
	// outcomes itself, so Busy is empty unless ctx ended.
	Busy []Outcome
	// Jobs are the jobs of the tasks recorded.
	Jobs []string
	// Links counts what the completed tasks' links added to their jobs
	// (Duplicates: pages the jobs had already); Linked lists the tasks whose
	// links were written. LinksInvalid were dropped as not a path Enqueue
	// takes, LinksRefused because the job takes no more pages (cancelled).
	Links        EnqueueResult
	Linked       []string
	LinksInvalid int
	LinksRefused int
	// PaceErr, when not nil, says the outcomes' lessons for their domains'
	// paces (back-offs, successes) could not be written; the outcomes were.
	PaceErr error
}

// Complete records a task's success. It returns ErrLeaseLost if the worker
// no longer holds the task.
func (q *Queue) Complete(ctx context.Context, t Task, r TaskResult) error {
	r.Err = nil
	return q.finishOne(ctx, t, r)
}

// Fail records a task's failure: it is retried after a backoff, or fails for
// good once it has used the job's retries or when permanent is true.
func (q *Queue) Fail(ctx context.Context, t Task, cause error, permanent bool) error {
	if cause == nil {
		return invalid("cause", "nil: a failure needs a cause")
	}
	return q.finishOne(ctx, t, TaskResult{Err: cause, Permanent: permanent})
}

func (q *Queue) finishOne(ctx context.Context, t Task, r TaskResult) error {
	rep, err := q.Finish(ctx, []Outcome{{Task: t, Result: r}})
	switch {
	case err != nil:
		return err
	case len(rep.Lost) > 0:
		return fmt.Errorf("finish task %s (attempt %d) for %s: %w", t.ID, t.Attempt, t.WorkerID, ErrLeaseLost)
	case len(rep.Busy) > 0:
		return fmt.Errorf("finish task %s: still locked by another transaction: %w", t.ID, context.Cause(ctx))
	}
	return nil
}

// Finish records many outcomes in one statement: successes, and failures
// that are retried or final. Only tasks still held by the same claim change;
// the others are reported in FinishReport.Lost and nothing is written for
// them. A task that a claimer has locked for an instant is written again
// after a short pause, until ctx ends (see FinishReport.Busy). Should such a
// later round fail, Finish returns the error with a report of what earlier
// rounds wrote, the outcomes still to write in Busy.
func (q *Queue) Finish(ctx context.Context, outcomes []Outcome) (FinishReport, error) {
	var total FinishReport
	for attempt := 1; ; attempt++ {
		rep, err := q.finishRetryingConflicts(ctx, outcomes)
		if err != nil {
			if attempt == 1 {
				return FinishReport{}, err
			}
			// Earlier rounds were written: report them with what is left.
			total.Busy = outcomes
			return total, err
		}
		total.Completed += rep.Completed
		total.Retried += rep.Retried
		total.Failed += rep.Failed
		total.Skipped += rep.Skipped
		total.Lost = append(total.Lost, rep.Lost...)
		total.Jobs = appendNew(total.Jobs, rep.Jobs)
		total.Links.Pending += rep.Links.Pending
		total.Links.Skipped += rep.Links.Skipped
		total.Links.Duplicates += rep.Links.Duplicates
		total.Linked = append(total.Linked, rep.Linked...)
		total.LinksInvalid += rep.LinksInvalid
		total.LinksRefused += rep.LinksRefused
		// What this round wrote (or found lost: a 429 is news all the same)
		// tells the domains' paces; after the outcomes, in a statement of its
		// own, so pacing never holds up or fails the outcomes.
		if perr := q.learnPaces(ctx, notBusy(outcomes, rep.Busy)); perr != nil && total.PaceErr == nil {
			total.PaceErr = fmt.Errorf("learn paces: %w", perr)
		}
		outcomes = rep.Busy
		if len(outcomes) == 0 {
			return total, nil
		}
		select {
		case <-ctx.Done():
			total.Busy = outcomes
			return total, nil
		case <-time.After(time.Duration(attempt) * time.Millisecond):
		}
	}
}

// finishRetryingConflicts is finish, written again while its transaction
// ends in ErrConflict (a deadlock's victim, or an enqueue of its links that
// found no admission slot free and gave its locks up rather than wait
// holding them: see enqueue), until AcquireTimeout. Such a transaction was
// rolled back whole.
func (q *Queue) finishRetryingConflicts(ctx context.Context, outcomes []Outcome) (FinishReport, error) {
	deadline := time.Now().Add(q.cfg.AcquireTimeout)
	for attempt := 0; ; attempt++ {
		rep, err := q.finish(ctx, outcomes)
		if !errors.Is(err, ErrConflict) || time.Now().After(deadline) {
			return rep, err
		}
		if err := pause(ctx, attempt); err != nil {
			return FinishReport{}, err
		}
	}
}

// notBusy is outcomes without those in busy.
func notBusy(outcomes, busy []Outcome) []Outcome {
	if len(busy) == 0 {
		return outcomes
	}
	skip := make(map[string]bool, len(busy))
	for _, o := range busy {
		skip[o.Task.ID] = true
	}
	var out []Outcome
	for _, o := range outcomes {
		if !skip[o.Task.ID] {
			out = append(out, o)
		}
	}
	return out
}

// appendNew appends the elements of add not already in to.
func appendNew(to, add []string) []string {
	for _, s := range add {
		if !slices.Contains(to, s) {
			to = append(to, s)
		}
	}
	return to
}

// finish is one TaskFinishMany round; busy outcomes are in the report.
func (q *Queue) finish(ctx context.Context, outcomes []Outcome) (FinishReport, error) {
	if err := checkBatch("outcomes", len(outcomes)); err != nil {
		return FinishReport{}, err
	}
	p := gen.TaskFinishManyParams{
		Now:            q.now(),
		Ids:            make([]string, len(outcomes)),
		WorkerIds:      make([]string, len(outcomes)),
		Attempts:       make([]int32, len(outcomes)),
		Failed:         make([]bool, len(outcomes)),
		Retryable:      make([]bool, len(outcomes)),
		Skipped:        make([]bool, len(outcomes)),
		StatusCodes:    make([]int32, len(outcomes)),
		ResponseTimes:  make([]int32, len(outcomes)),
		CacheStatuses:  make([]string, len(outcomes)),
		ContentTypes:   make([]string, len(outcomes)),
		ContentLengths: make([]int64, len(outcomes)),
		Headers:        make([]json.RawMessage, len(outcomes)),
		Errors:         make([]string, len(outcomes)),
		BackoffBaseMs:  q.cfg.BackoffBase.Milliseconds(),
		BackoffMaxMs:   q.cfg.BackoffMax.Milliseconds(),

		RedirectUrls:               make([]string, len(outcomes)),
		DnsLookupTimes:             make([]int32, len(outcomes)),
		TcpConnectionTimes:         make([]int32, len(outcomes)),
		TlsHandshakeTimes:          make([]int32, len(outcomes)),
		Ttfbs:                      make([]int32, len(outcomes)),
		ContentTransferTimes:       make([]int32, len(outcomes)),
		SecondResponseTimes:        make([]int64, len(outcomes)),
		SecondCacheStatuses:        make([]string, len(outcomes)),
		SecondContentLengths:       make([]int64, len(outcomes)),
		SecondHeaders:              make([]json.RawMessage, len(outcomes)),
		SecondDnsLookupTimes:       make([]int32, len(outcomes)),
		SecondTcpConnectionTimes:   make([]int32, len(outcomes)),
		SecondTlsHandshakeTimes:    make([]int32, len(outcomes)),
		SecondTtfbs:                make([]int32, len(outcomes)),
		SecondContentTransferTimes: make([]int32, len(outcomes)),
		CacheCheckAttempts:         make([]json.RawMessage, len(outcomes)),
	}
	seen := make(map[string]bool, len(outcomes))
	for i, o := range outcomes {
		if err := checkID(fmt.Sprintf("outcomes[%d].Task.ID", i), o.Task.ID); err != nil {
			return FinishReport{}, err
		}
		if err := checkID(fmt.Sprintf("outcomes[%d].Task.WorkerID", i), o.Task.WorkerID); err != nil {
			return FinishReport{}, err
		}
		if seen[o.Task.ID] {
			return FinishReport{}, invalid(fmt.Sprintf("outcomes[%d]", i), "task %s appears twice", o.Task.ID)
		}
		seen[o.Task.ID] = true
		if err := fillOutcome(&p, i, o); err != nil {
			return FinishReport{}, err
		}
	}

	var rows []gen.TaskFinishManyRow
	var rep FinishReport
	write := func(db gen.DBTX) (err error) {
		rows, err = q.q.TaskFinishMany(ctx, db, p)
		if err != nil || !hasLinks(outcomes) {
			return err
		}
		return q.enqueueLinks(ctx, db, outcomes, rows, &rep)
	}
	var err error
	if hasLinks(outcomes) {
		err = q.tx(ctx, func(tx pgx.Tx) error { return write(tx) })
	} else {
		err = q.run(ctx, write)
	}
	if err != nil {
		return FinishReport{}, fmt.Errorf("finish %d tasks: %w", len(outcomes), err)
	}
	returned := make(map[string]bool, len(rows))
	busy := map[string]bool{}
	jobs := map[string]bool{}
	for _, r := range rows {
		returned[r.ID] = true
		if r.Outcome == "busy" {
			busy[r.ID] = true
			continue
		}
		if !jobs[r.JobID] {
			jobs[r.JobID] = true
			rep.Jobs = append(rep.Jobs, r.JobID)
		}
		switch gen.TaskStatus(r.Outcome) {
		case gen.TaskStatusCompleted:
			rep.Completed++
		case gen.TaskStatusPending:
			rep.Retried++
		case gen.TaskStatusSkipped:
			rep.Skipped++
		default:
			rep.Failed++
		}
	}
	for _, o := range outcomes {
		switch {
		case busy[o.Task.ID]:
			rep.Busy = append(rep.Busy, o)
		case !returned[o.Task.ID]:
			rep.Lost = append(rep.Lost, o.Task.ID)
		}
	}
	return rep, nil
}

func hasLinks(outcomes []Outcome) bool {
	for _, o := range outcomes {
		if len(o.Result.Links) > 0 && o.Result.Err == nil && !o.Result.Skip {
			return true
		}
	}
	return false
}

// enqueueLinks enqueues the links of the outcomes TaskFinishMany recorded as
// completed, in its transaction: one enqueue per job, jobs in id order (so
// that two finishing processes lock in the same order), each link once.
func (q *Queue) enqueueLinks(ctx context.Context, db gen.DBTX, outcomes []Outcome, rows []gen.TaskFinishManyRow, rep *FinishReport) error {
	completed := make(map[string]bool, len(rows))
	for _, r := range rows {
		if gen.TaskStatus(r.Outcome) == gen.TaskStatusCompleted {
			completed[r.ID] = true
		}
	}
	links := linksByJob(outcomes, func(o Outcome) bool { return completed[o.Task.ID] })
	rep.Linked = append(rep.Linked, links.linked...)
	rep.LinksInvalid += links.invalid
	rep.Links.Duplicates += links.repeated
	perJob, ids := links.pages, links.ids
	for _, job := range slices.Sorted(maps.Keys(perJob)) {
		// One statement per job, so the page each link was found on is not
		// recorded, only that it was found as a link.
		res, err := q.enqueue(ctx, db, job, Source{Type: "link"}, perJob[job], ids[job])
		switch {
		case errors.Is(err, ErrInvalidTransition), errors.Is(err, ErrJobNotFound):
			rep.LinksRefused += len(perJob[job])
			continue
		case err != nil:
			return fmt.Errorf("enqueue the links found in job %s: %w", job, err)
		}
		rep.Links.Pending += res.Pending
		rep.Links.Skipped += res.Skipped
		rep.Links.Duplicates += res.Duplicates
	}
	return nil
}

// jobLinks are the links of some outcomes, per job: each storable path
// once, in the order found, with the page ids PrepareLinks recorded.
type jobLinks struct {
	pages map[string][]Page
	ids   map[string]map[string]int32
	// linked: the outcomes with links; invalid: links not a path Enqueue
	// takes; repeated: paths already found in the same job.
	linked            []string
	invalid, repeated int
}

// linksByJob gathers the links of the outcomes take says are enqueued.
func linksByJob(outcomes []Outcome, take func(Outcome) bool) jobLinks {
	out := jobLinks{pages: map[string][]Page{}, ids: map[string]map[string]int32{}}
	seen := map[string]map[string]bool{}
	for _, o := range outcomes {
		if len(o.Result.Links) == 0 || !take(o) {
			continue
		}
		out.linked = append(out.linked, o.Task.ID)
		job := o.Task.JobID
		if seen[job] == nil {
			seen[job] = map[string]bool{}
			out.ids[job] = map[string]int32{}
		}
		for _, l := range o.Result.Links {
			switch {
			case checkPage("link", l) != nil:
				out.invalid++
			case seen[job][l.Path]:
				out.repeated++
			default:
				seen[job][l.Path] = true
				out.pages[job] = append(out.pages[job], l)
				if id, ok := o.linkPages[l.Path]; ok {
					out.ids[job][l.Path] = id
				}
			}
		}
	}
	return out
}

// PrepareLinks creates the pages of the links that the outcomes would
// enqueue (see TaskResult.Links) and records their ids in the outcomes, so
// that Finish then writes only the links' tasks. The worker pool calls it
// in a goroutine of its own before the outcomes reach Finish: pages are
// written beside the finishing of earlier outcomes, not in its transaction.
// A page whose task is never written (the outcome is lost, say) is
// harmless, and Finish creates the pages this did not. Invalid links are
// left for Finish to count.
func (q *Queue) PrepareLinks(ctx context.Context, outcomes []Outcome) error {
	perJob := linksByJob(outcomes, func(o Outcome) bool { return o.Result.Err == nil && !o.Result.Skip }).pages
	if len(perJob) == 0 {
		return nil
	}
	ids := map[string]map[string]int32{}
	err := q.run(ctx, func(db gen.DBTX) error {
		// Jobs in id order, paths in path order (PageUpsertMany): two
		// processes creating the same pages cannot deadlock.
		for _, job := range slices.Sorted(maps.Keys(perJob)) {
			paths := make([]string, len(perJob[job]))
			for i, l := range perJob[job] {
				paths[i] = l.Path
			}
			m, err := q.pageIDs(ctx, db, job, paths)
			if err != nil {
				return fmt.Errorf("job %s: %w", job, err)
			}
			ids[job] = m
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create the pages of %d outcomes' links: %w", len(outcomes), err)
	}
	for i := range outcomes {
		o := &outcomes[i]
		m := ids[o.Task.JobID]
		if len(m) == 0 || len(o.Result.Links) == 0 {
			continue
		}
		o.linkPages = make(map[string]int32, len(o.Result.Links))
		for _, l := range o.Result.Links {
			if id, ok := m[l.Path]; ok {
				o.linkPages[l.Path] = id
			}
		}
	}
	return nil
}

// fillOutcome writes outcome i into the statement's arrays. Absent values are
// sent as sentinels the statement turns into NULL (0 status, -1 numbers,
// empty text), since sqlc types array elements as non-null.
func fillOutcome(p *gen.TaskFinishManyParams, i int, o Outcome) error {
	r := o.Result
	p.Ids[i] = o.Task.ID
	p.WorkerIds[i] = o.Task.WorkerID
	p.Attempts[i] = o.Task.Attempt
	p.Failed[i] = r.Err != nil && !r.Skip
	p.Retryable[i] = r.Err != nil && !r.Permanent
	p.Skipped[i] = r.Skip
	p.ResponseTimes[i] = -1
	p.ContentLengths[i] = -1
	p.DnsLookupTimes[i], p.TcpConnectionTimes[i], p.TlsHandshakeTimes[i], p.Ttfbs[i], p.ContentTransferTimes[i] = -1, -1, -1, -1, -1
	p.SecondResponseTimes[i], p.SecondContentLengths[i] = -1, -1
	p.SecondDnsLookupTimes[i], p.SecondTcpConnectionTimes[i], p.SecondTlsHandshakeTimes[i], p.SecondTtfbs[i],
		p.SecondContentTransferTimes[i] = -1, -1, -1, -1, -1
	if r.Err != nil {
		msg := r.Err.Error()
		if msg == "" {
			msg = fmt.Sprintf("%T", r.Err)
		}
		p.Errors[i] = sanitize(msg)
	}
	if r.StatusCode == 0 {
		return nil
	}
	if r.StatusCode < 100 || r.StatusCode > 999 {
		return invalid(fmt.Sprintf("outcomes[%d].Result.StatusCode", i), "%d is not an HTTP status", r.StatusCode)
	}
	if r.ResponseTime < 0 || r.ContentLength < -1 {
		return invalid(fmt.Sprintf("outcomes[%d].Result", i), "negative response time or content length")
	}
	at := fmt.Sprintf("outcomes[%d].Result", i)
	if err := checkTiming(at+".Timing", r.Timing); err != nil {
		return err
	}
	p.StatusCodes[i] = int32(r.StatusCode)
	p.ResponseTimes[i] = ms32(r.ResponseTime)
	p.CacheStatuses[i] = sanitize(r.CacheStatus)
	p.ContentTypes[i] = sanitize(r.ContentType)
	p.ContentLengths[i] = r.ContentLength
	p.RedirectUrls[i] = sanitize(r.RedirectURL)
	p.DnsLookupTimes[i], p.TcpConnectionTimes[i], p.TlsHandshakeTimes[i], p.Ttfbs[i], p.ContentTransferTimes[i] =
		timingMs(r.Timing)
	var err error
	if p.Headers[i], err = headersJSON(at+".Headers", r.Headers); err != nil {
		return err
	}
	if s := r.Second; s != nil {
		if s.ResponseTime < 0 || s.ContentLength < -1 {
			return invalid(at+".Second", "negative response time or content length")
		}
		if err := checkTiming(at+".Second.Timing", s.Timing); err != nil {
			return err
		}
		p.SecondResponseTimes[i] = s.ResponseTime.Milliseconds()
		p.SecondCacheStatuses[i] = sanitize(s.CacheStatus)
		p.SecondContentLengths[i] = s.ContentLength
		p.SecondDnsLookupTimes[i], p.SecondTcpConnectionTimes[i], p.SecondTlsHandshakeTimes[i], p.SecondTtfbs[i],
			p.SecondContentTransferTimes[i] = timingMs(s.Timing)
		if p.SecondHeaders[i], err = headersJSON(at+".Second.Headers", s.Headers); err != nil {
			return err
		}
	}
	if r.CacheCheckAttempts != nil {
		attempts := make([]CacheCheckAttempt, len(r.CacheCheckAttempts))
		for j, a := range r.CacheCheckAttempts {
			if a.Delay < 0 {
				return invalid(fmt.Sprintf("%s.CacheCheckAttempts[%d].Delay", at, j), "negative: %s", a.Delay)
			}
			a.CacheStatus = sanitize(a.CacheStatus)
			attempts[j] = a
		}
		if p.CacheCheckAttempts[i], err = json.Marshal(attempts); err != nil {
			return invalid(at+".CacheCheckAttempts", "%v", err)
		}
	}
	return nil
}

// headersJSON is h as stored: cleaned, as JSON; nil for no headers.
func headersJSON(arg string, h http.Header) (json.RawMessage, error) {
	if h == nil {
		return nil, nil
	}
	b, err := json.Marshal(sanitizeHeaders(h))
	if err != nil {
		return nil, invalid(arg, "%v", err)
	}
	return b, nil
}

func checkTiming(arg string, t Timing) error {
	if t.DNSLookup < 0 || t.TCPConnection < 0 || t.TLSHandshake < 0 || t.TTFB < 0 || t.ContentTransfer < 0 {
		return invalid(arg, "negative duration in %+v", t)
	}
	return nil
}

// timingMs is t's parts in the integer milliseconds the columns hold.
func timingMs(t Timing) (dns, tcp, tls, ttfb, transfer int32) {
	return ms32(t.DNSLookup), ms32(t.TCPConnection), ms32(t.TLSHandshake), ms32(t.TTFB), ms32(t.ContentTransfer)
}

// ms32 is a non-negative duration in whole milliseconds, capped to fit an
// integer column.
func ms32(d time.Duration) int32 {
	return int32(min(d.Milliseconds(), 1<<31-1))
}

// sanitizeHeaders is sanitize over every header name and value: jsonb
// refuses the \u0000 escape that a NUL in a header would become.
func sanitizeHeaders(h http.Header) http.Header {
	out := make(http.Header, len(h))
	// Names that differ only in bytes sanitize replaces ("X-A\x00" and
	// "X-A\xff") become one name holding the values of all of them, in the
	// order of the names as sent, so that no value is dropped.
	for _, k := range slices.Sorted(maps.Keys(h)) {
		name := sanitize(k)
		for _, v := range h[k] {
			out[name] = append(out[name], sanitize(v))
		}
		if _, ok := out[name]; !ok {
			out[name] = []string{}
		}
	}
	return out
}

// sanitize makes text from the outside world storable: PostgreSQL text holds
// no NUL bytes and only valid UTF-8. Results are evidence, so they are kept
// (with replacement characters) rather than refused.
func sanitize(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", "\uFFFD"), "\uFFFD")
}

// Release hands claimed tasks back unfinished, as a worker that is shutting
// down does: they are pending again at once, and the claim does not count
// as a failure. It returns the ids of the tasks that were no longer held
// (nothing was written for them).
func (q *Queue) Release(ctx context.Context, held []Task) (lost []string, err error) {
	if err := checkBatch("tasks", len(held)); err != nil {
		return nil, err
	}
	if err := checkHeld(held); err != nil {
		return nil, err
	}
	p := gen.TaskReleaseManyParams{
		Now:       q.now(),
		Ids:       make([]string, len(held)),
		WorkerIds: make([]string, len(held)),
		Attempts:  make([]int32, len(held)),
	}
	for i, t := range held {
		p.Ids[i], p.WorkerIds[i], p.Attempts[i] = t.ID, t.WorkerID, t.Attempt
	}
	var released []string
	err = q.run(ctx, func(db gen.DBTX) (err error) {
		released, err = q.q.TaskReleaseMany(ctx, db, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("release %d tasks: %w", len(held), err)
	}
	done := make(map[string]bool, len(released))
	for _, id := range released {
		done[id] = true
	}
	for _, id := range p.Ids {
		if !done[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// checkHeld refuses, before anything is sent, task and worker ids that no
// claim could have produced.
func checkHeld(held []Task) error {
	for i, t := range held {
		if err := checkID(fmt.Sprintf("tasks[%d].ID", i), t.ID); err != nil {
			return err
		}
		if err := checkID(fmt.Sprintf("tasks[%d].WorkerID", i), t.WorkerID); err != nil {
			return err
		}
	}
	return nil
}

// ExtendLeases extends the leases of tasks their workers still hold, and
// returns them with their new expiry. Tasks no longer held are left out and
// the error wraps ErrLeaseLost.
func (q *Queue) ExtendLeases(ctx context.Context, held []Task) ([]Task, error) {
	if err := checkBatch("tasks", len(held)); err != nil {
		return nil, err
	}
	if err := checkHeld(held); err != nil {
		return nil, err
	}
	p := gen.TaskExtendLeaseParams{
		Now:       q.now(),
		LeaseMs:   q.cfg.Lease.Milliseconds(),
		Ids:       make([]string, len(held)),
		WorkerIds: make([]string, len(held)),
		Attempts:  make([]int32, len(held)),
	}
	for i, t := range held {
		p.Ids[i], p.WorkerIds[i], p.Attempts[i] = t.ID, t.WorkerID, t.Attempt
	}
	var rows []gen.TaskExtendLeaseRow
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.TaskExtendLease(ctx, db, p)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("extend %d leases: %w", len(held), err)
	}
	until := make(map[string]time.Time, len(rows))
	for _, r := range rows {
		until[r.ID] = r.LeaseExpiresAt
	}
	out := make([]Task, 0, len(rows))
	var lost []string
	for _, t := range held {
		if exp, ok := until[t.ID]; ok {
			t.LeaseExpiresAt = exp
			out = append(out, t)
		} else {
			lost = append(lost, t.ID)
		}
	}
	if len(lost) > 0 {
		return out, fmt.Errorf("extend leases: %d of %d tasks no longer held %v: %w", len(lost), len(held), lost, ErrLeaseLost)
	}
	return out, nil
}
