package tasks

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/gen"
)

// JobStatus and TaskStatus are the database's enums.
type (
	JobStatus  = gen.JobStatus
	TaskStatus = gen.TaskStatus
)

// Job statuses.
const (
	JobStatusPending   = gen.JobStatusPending
	JobStatusRunning   = gen.JobStatusRunning
	JobStatusPaused    = gen.JobStatusPaused
	JobStatusCompleted = gen.JobStatusCompleted
	JobStatusFailed    = gen.JobStatusFailed
	JobStatusCancelled = gen.JobStatusCancelled
)

// Task statuses.
const (
	TaskStatusPending   = gen.TaskStatusPending
	TaskStatusRunning   = gen.TaskStatusRunning
	TaskStatusCompleted = gen.TaskStatusCompleted
	TaskStatusFailed    = gen.TaskStatusFailed
	TaskStatusSkipped   = gen.TaskStatusSkipped
)

// JobOptions describes a job to create.
type JobOptions struct {
	// ID is optional; a UUID is generated when empty.
	ID             string
	Domain         string
	OrganisationID *uuid.UUID
	UserID         *uuid.UUID
	// Concurrency is the most tasks of the job running at once. Default 5.
	Concurrency int
	// MaxPages caps the tasks the job runs; enqueued pages beyond it are
	// recorded as skipped. 0 means no cap.
	MaxPages int
	// MaxRetries is how often a failed task is retried. Default 3; set
	// NoRetries for none.
	MaxRetries int
	NoRetries  bool
	// FindLinks says the job's workers add the links they find on its
	// pages to it (the crawl discovers its pages as it goes).
	FindLinks bool
}

// Job is a job with its exact progress.
type Job struct {
	ID       string
	DomainID int32
	// Domain is the domain's name, the host the job's pages are on.
	Domain         string
	OrganisationID *uuid.UUID
	UserID         *uuid.UUID
	Status         JobStatus
	Concurrency    int
	MaxPages       int
	MaxRetries     int
	FindLinks      bool
	Progress       Progress
	CreatedAt      time.Time
	StartedAt      *time.Time
	CompletedAt    *time.Time
}

// Progress counts a job's tasks by outcome.
type Progress struct {
	Total     int
	Completed int
	Failed    int
	Skipped   int
	Running   int
	// Pending is waiting to run, including failures waiting to be retried.
	Pending int
	// Percent of the tasks that are finished (completed, failed or skipped).
	Percent float64
}

// CreateJob creates a job (and the domain, if new). Its tasks are added with
// Enqueue, which also starts it.
func (q *Queue) CreateJob(ctx context.Context, spec JobOptions) (Job, error) {
	if spec.ID != "" {
		if err := checkID("spec.ID", spec.ID); err != nil {
			return Job{}, err
		}
	}
	if err := checkID("spec.Domain", spec.Domain); err != nil {
		return Job{}, err
	}
	if spec.Concurrency == 0 {
		spec.Concurrency = 5
	}
	if spec.MaxRetries == 0 && !spec.NoRetries {
		spec.MaxRetries = 3
	}
	switch {
	case spec.Concurrency < 1 || spec.Concurrency > math.MaxInt32:
		return Job{}, invalid("spec.Concurrency", "%d, want at least 1", spec.Concurrency)
	case spec.MaxPages < 0 || spec.MaxPages > math.MaxInt32:
		return Job{}, invalid("spec.MaxPages", "%d, want 0 (no cap) or more", spec.MaxPages)
	case spec.MaxRetries < 0 || spec.MaxRetries > 1000:
		return Job{}, invalid("spec.MaxRetries", "%d, want 0 to 1000", spec.MaxRetries)
	}
	var row gen.Job
	// One transaction: a job the database refuses leaves no domain behind.
	err := q.tx(ctx, func(db pgx.Tx) error {
		domainID, err := q.q.DomainUpsert(ctx, db, spec.Domain)
		if err != nil {
			return err
		}
		var id *string
		if spec.ID != "" {
			id = &spec.ID
		}
		row, err = q.q.JobCreate(ctx, db, gen.JobCreateParams{
			ID:             id,
			DomainID:       domainID,
			UserID:         spec.UserID,
			OrganisationID: spec.OrganisationID,
			Concurrency:    int32(spec.Concurrency),
			MaxPages:       int32(spec.MaxPages),
			MaxRetries:     int32(spec.MaxRetries),
			FindLinks:      spec.FindLinks,
		})
		return err
	})
	if err != nil {
		return Job{}, fmt.Errorf("create job for %s: %w", spec.Domain, refusedJob(err, spec))
	}
	return q.Job(ctx, row.ID)
}

// Page is a page to crawl as part of a job.
type Page struct {
	// Path is the page's path on the job's domain, from "/" (with its
	// query, if any): at most MaxPathLength bytes of UTF-8 without NUL.
	Path     string
	Priority float64
}

// EnqueueResult counts what Enqueue added.
type EnqueueResult struct {
	// Pending tasks were added to run.
	Pending int
	// Skipped tasks were added as skipped because the job reached max_pages.
	Skipped int
	// Duplicates were dropped: repeated in the batch or already in the job.
	Duplicates int
}

// Enqueue adds pages to a job as tasks: new pages are
// created for the job's domain, pages already in the job (or repeated in the
// batch) are dropped, and pages beyond the job's max_pages are recorded as
// skipped. A pending job starts running, a completed one is reopened (a
// crawl finds pages as it goes, and its queue may drain between batches),
// a paused one stays paused. It fails with ErrJobNotFound for an unknown job
// and ErrInvalidTransition for a cancelled or failed one, writing nothing;
// a page that is not a storable path from "/" (see Page) is refused with an
// *ArgumentError naming it, before anything is sent.
//
// Concurrent enqueues into one job do not wait for each other: each
// statement spends the quota of one of the job's admission slots (see
// TaskEnqueue), and the jobs row is not locked. It is not one transaction:
// should a later statement fail, pages placed by earlier ones stay, and
// enqueueing the same pages again drops them as duplicates.
func (q *Queue) Enqueue(ctx context.Context, jobID string, pages []Page) (EnqueueResult, error) {
	return q.EnqueueFrom(ctx, jobID, Source{}, pages)
}

// Source says where a batch of pages was found, recorded on their tasks
// (tasks.source_type and source_url); empty fields are stored as NULL.
type Source struct {
	// Type is how the pages were found: "sitemap", "link", "manual", ...
	Type string
	// URL is the page or sitemap they were found on.
	URL string
}

// EnqueueFrom is Enqueue recording where the pages were found.
func (q *Queue) EnqueueFrom(ctx context.Context, jobID string, src Source, pages []Page) (EnqueueResult, error) {
	if err := checkID("jobID", jobID); err != nil {
		return EnqueueResult{}, err
	}
	if len(pages) == 0 {
		return EnqueueResult{}, invalid("pages", "empty")
	}
	for i, p := range pages {
		if err := checkPage(fmt.Sprintf("pages[%d]", i), p); err != nil {
			return EnqueueResult{}, err
		}
	}
	if err := checkText("src.Type", src.Type); err != nil {
		return EnqueueResult{}, err
	}
	if err := checkText("src.URL", src.URL); err != nil {
		return EnqueueResult{}, err
	}
	var res EnqueueResult
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		res, err = q.enqueue(ctx, db, jobID, src, pages, nil)
		return err
	})
	if err != nil {
		return EnqueueResult{}, fmt.Errorf("enqueue %d pages into job %s: %w", len(pages), jobID, err)
	}
	return res, nil
}

// checkPage refuses a page the database could not store or index, and a
// path that does not start with "/": a fetcher appends the path to the job's
// domain, and "@other.example/x" or ".other.example/x" would move the fetch
// to another host.
func checkPage(arg string, p Page) error {
	switch {
	case p.Path == "":
		return invalid(arg+".Path", "empty")
	case p.Path[0] != '/':
		return invalid(arg+".Path", "does not start with \"/\": a page is a path on the job's domain")
	case len(p.Path) > MaxPathLength:
		return invalid(arg+".Path", "%d bytes, more than %d", len(p.Path), MaxPathLength)
	case math.IsNaN(p.Priority) || math.IsInf(p.Priority, 0):
		return invalid(arg+".Priority", "%v", p.Priority)
	}
	return checkText(arg+".Path", p.Path)
}

// enqueue adds checked pages to a job: their page ids (those not in ids,
// from PageUpsertMany), then TaskEnqueue until every page is placed. A round
// defers the pages it could not place (every slot with quota left was held
// by another enqueue at that instant, or another enqueue was inserting the
// same page); they go again, after a short pause when the round placed
// nothing, until AcquireTimeout. Outside a transaction, a round the server
// chose as a deadlock's victim goes again too: it was rolled back whole, and
// nothing before it was. In a transaction (Finish's), every row written so
// far stays locked to its end, and the enqueue holding the slot it waits
// for may be waiting for one of those rows: it does not pause but, after
// two rounds in a row that placed nothing, fails with ErrConflict, and
// Finish writes the transaction again. No slot is held while pages are
// created.
func (q *Queue) enqueue(ctx context.Context, db gen.DBTX, jobID string, src Source, pages []Page, ids map[string]int32) (EnqueueResult, error) {
	var missing []string
	for _, p := range pages {
		if _, ok := ids[p.Path]; !ok {
			missing = append(missing, p.Path)
		}
	}
	if len(missing) > 0 {
		found, err := q.pageIDs(ctx, db, jobID, missing)
		if err != nil {
			return EnqueueResult{}, err
		}
		for path, id := range ids {
			found[path] = id
		}
		ids = found
	}
	var pageIDs []int32
	var paths []string
	var priorities []float64
	for _, p := range pages {
		// No id: the job takes no pages (TaskEnqueue says why).
		if id, ok := ids[p.Path]; ok {
			pageIDs, paths, priorities = append(pageIDs, id), append(paths, p.Path), append(priorities, p.Priority)
		}
	}
	_, inTx := db.(pgx.Tx)
	var res EnqueueResult
	deadline := time.Now().Add(q.cfg.AcquireTimeout)
	stalled := 0 // rounds in a row that placed nothing
	for round := 0; ; round++ {
		row, err := q.q.TaskEnqueue(ctx, q.replanning(db), gen.TaskEnqueueParams{
			// Start: where this round's search for a free slot begins, so that
			// concurrent enqueues spread over the slots.
			JobID: jobID, Start: rand.Int32N(1 << 30), PageIds: pageIDs, Paths: paths, Priorities: priorities,
			SourceType: nullIfEmpty(src.Type), SourceUrl: nullIfEmpty(src.URL), Channel: NotifyChannel,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return EnqueueResult{}, ErrJobNotFound
		}
		if err != nil && !inTx && errors.Is(interpretError(err), ErrConflict) && time.Now().Before(deadline) {
			if err := pause(ctx, round); err != nil {
				return EnqueueResult{}, err
			}
			continue
		}
		if err != nil {
			return EnqueueResult{}, err
		}
		switch row.JobStatus {
		case JobStatusPending, JobStatusRunning, JobStatusPaused, JobStatusCompleted:
		default:
			return EnqueueResult{}, fmt.Errorf("%w: job is %s", ErrInvalidTransition, row.JobStatus)
		}
		res.Pending += int(row.Pending)
		res.Skipped += int(row.Skipped)
		if len(row.Deferred) == 0 {
			break
		}
		if !row.HasSlots {
			if err := q.q.JobAdmissionsOpen(ctx, db, jobID); err != nil {
				return EnqueueResult{}, err
			}
			continue
		}
		pageIDs, paths, priorities = only(row.Deferred, pageIDs, paths, priorities)
		if row.Pending+row.Skipped > 0 {
			stalled = 0
			continue
		}
		if stalled++; inTx && stalled >= 2 {
			return EnqueueResult{}, fmt.Errorf("%w: no admission slot of job %s free in two rounds", ErrConflict, jobID)
		}
		if inTx {
			continue
		}
		if time.Now().After(deadline) {
			return EnqueueResult{}, fmt.Errorf("%w: no admission slot of job %s free within %s",
				ErrUnavailable, jobID, q.cfg.AcquireTimeout)
		}
		if err := pause(ctx, round); err != nil {
			return EnqueueResult{}, err
		}
	}
	res.Duplicates = len(pages) - res.Pending - res.Skipped
	return res, nil
}

// pageIDs returns the page ids of paths on the job's domain, creating the
// pages it does not have: PageUpsertMany, again for the paths whose insert
// met a concurrent one (committed, or rolled back, by the time it returned).
// Empty when the job takes no pages.
func (q *Queue) pageIDs(ctx context.Context, db gen.DBTX, jobID string, paths []string) (map[string]int32, error) {
	ids := make(map[string]int32, len(paths))
	for round := 0; len(paths) > 0; round++ {
		if round == 5 {
			return nil, fmt.Errorf("%w: pages of job %s still being created by other transactions", ErrUnavailable, jobID)
		}
		rows, err := q.q.PageUpsertMany(ctx, db, gen.PageUpsertManyParams{JobID: jobID, Paths: paths})
		if err != nil {
			return nil, err
		}
		if len(rows) == 0 && round > 0 {
			break // the job takes no pages: TaskEnqueue says why
		}
		for _, r := range rows {
			ids[r.Path] = r.ID
		}
		var again []string
		for _, p := range paths {
			if _, ok := ids[p]; !ok {
				again = append(again, p)
			}
		}
		paths = again
	}
	return ids, nil
}

// only keeps the pages whose paths are in keep, with their ids and
// priorities, in their order.
func only(keep []string, ids []int32, paths []string, priorities []float64) ([]int32, []string, []float64) {
	want := make(map[string]bool, len(keep))
	for _, p := range keep {
		want[p] = true
	}
	var outIDs []int32
	var outPaths []string
	var outPriorities []float64
	for i, p := range paths {
		if want[p] {
			outIDs = append(outIDs, ids[i])
			outPaths = append(outPaths, p)
			outPriorities = append(outPriorities, priorities[i])
			delete(want, p) // the first of repeated paths, as TaskEnqueue takes
		}
	}
	return outIDs, outPaths, outPriorities
}

// Job returns a job with its exact progress.
func (q *Queue) Job(ctx context.Context, id string) (Job, error) {
	if err := checkID("id", id); err != nil {
		return Job{}, err
	}
	var r gen.JobProgressGetRow
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		r, err = q.q.JobProgressGet(ctx, db, id)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return Job{}, fmt.Errorf("job %s: %w", id, ErrJobNotFound)
	}
	if err != nil {
		return Job{}, fmt.Errorf("job %s: %w", id, err)
	}
	return jobWithProgress(gen.JobProgressListRow(r)), nil
}

// JobSite is what a fetcher needs of a task's job.
type JobSite struct {
	Domain    string // the host the job's pages are on
	FindLinks bool   // whether the job follows the links its pages yield
}

// JobSite returns the job's domain and whether it follows links.
func (q *Queue) JobSite(ctx context.Context, id string) (JobSite, error) {
	if err := checkID("id", id); err != nil {
		return JobSite{}, err
	}
	var r gen.JobSiteGetRow
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		r, err = q.q.JobSiteGet(ctx, db, id)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return JobSite{}, fmt.Errorf("job %s: %w", id, ErrJobNotFound)
	}
	if err != nil {
		return JobSite{}, fmt.Errorf("job %s: %w", id, err)
	}
	return JobSite(r), nil
}

// JobFilter selects the jobs Jobs lists.
type JobFilter struct {
	// Statuses, when not empty, lists only jobs in one of them.
	Statuses []JobStatus
	// Limit is the most jobs listed, newest first. Default 100.
	Limit int
}

// Jobs lists jobs, newest first, with their exact progress.
func (q *Queue) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	if f.Limit == 0 {
		f.Limit = 100
	}
	if f.Limit < 0 || f.Limit > math.MaxInt32 {
		return nil, invalid("filter.Limit", "%d, want 1 or more", f.Limit)
	}
	statuses := make([]string, len(f.Statuses))
	for i, s := range f.Statuses {
		if !s.Valid() {
			return nil, invalid("filter.Statuses", "%q is no job status", s)
		}
		statuses[i] = string(s)
	}
	var rows []gen.JobProgressListRow
	err := q.run(ctx, func(db gen.DBTX) (err error) {
		rows, err = q.q.JobProgressList(ctx, db, gen.JobProgressListParams{Statuses: statuses, MaxJobs: int32(f.Limit)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	jobs := make([]Job, len(rows))
	for i, r := range rows {
		jobs[i] = jobWithProgress(r)
	}
	return jobs, nil
}

// jobWithProgress is a job as JobProgressGet and JobProgressList read it.
func jobWithProgress(r gen.JobProgressListRow) Job {
	p := Progress{
		Total:     int(r.ExactTotal),
		Completed: int(r.DoneCompleted),
		Failed:    int(r.DoneFailed),
		Skipped:   int(r.DoneSkipped),
		Running:   int(r.RunningTasks),
	}
	p.Pending = p.Total - p.Completed - p.Failed - p.Skipped - p.Running
	p.Percent = float64(r.PercentDone) // job_percent_done, the formula's one home
	j := r.Job
	return Job{
		ID:             j.ID,
		DomainID:       j.DomainID,
		Domain:         r.Domain,
		OrganisationID: j.OrganisationID,
		UserID:         j.UserID,
		Status:         j.Status,
		Concurrency:    int(j.Concurrency),
		MaxPages:       int(j.MaxPages),
		MaxRetries:     int(j.MaxRetries),
		FindLinks:      j.FindLinks,
		Progress:       p,
		CreatedAt:      j.CreatedAt,
		StartedAt:      j.StartedAt,
		CompletedAt:    j.CompletedAt,
	}
}

// PauseJob stops a running job's tasks from being claimed; running ones
// finish.
func (q *Queue) PauseJob(ctx context.Context, id string) error {
	return q.setJobStatus(ctx, id, JobStatusPaused, JobStatusRunning)
}

// ResumeJob lets a paused job's tasks be claimed again.
func (q *Queue) ResumeJob(ctx context.Context, id string) error {
	if err := q.setJobStatus(ctx, id, JobStatusRunning, JobStatusPaused); err != nil {
		return err
	}
	return q.run(ctx, func(db gen.DBTX) error {
		return q.q.JobNotify(ctx, db, gen.JobNotifyParams{Channel: NotifyChannel, JobID: id})
	})
}

// CancelJob ends a job: its pending tasks become skipped and are never
// claimed; running ones may still finish and record their results. Pages
// enqueued into it from now on are refused.
func (q *Queue) CancelJob(ctx context.Context, id string) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	err := q.tx(ctx, func(tx pgx.Tx) error {
		if err := q.transition(ctx, tx, id, JobStatusCancelled, JobStatusPending, JobStatusRunning, JobStatusPaused); err != nil {
			return err
		}
		if _, err := q.q.TaskSkipPending(ctx, tx, id); err != nil {
			return err
		}
		return q.q.JobAdmissionsClose(ctx, tx, []string{id})
	})
	if err != nil {
		return fmt.Errorf("cancel job %s: %w", id, err)
	}
	return nil
}

func (q *Queue) setJobStatus(ctx context.Context, id string, to JobStatus, from ...JobStatus) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	err := q.run(ctx, func(db gen.DBTX) error { return q.transition(ctx, db, id, to, from...) })
	if err != nil {
		return fmt.Errorf("set job %s %s: %w", id, to, err)
	}
	return nil
}

// transition moves a job from one of from to to, telling an unknown job
// (ErrJobNotFound) from one in another status (ErrInvalidTransition).
func (q *Queue) transition(ctx context.Context, db gen.DBTX, id string, to JobStatus, from ...JobStatus) error {
	names := make([]string, len(from))
	for i, s := range from {
		names[i] = string(s)
	}
	_, err := q.q.JobSetStatus(ctx, db, gen.JobSetStatusParams{ID: id, Status: to, FromStatuses: names})
	if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	current, err := q.q.JobStatusGet(ctx, db, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrJobNotFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: job is %s, want one of %v to become %s", ErrInvalidTransition, current, from, to)
}

// nullIfEmpty is s as an optional query argument: nil (NULL) when empty.
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
