package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blue-banded-bee/taskq/crawl"
	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/tasks"
)

const jobUsage = `Usage: taskq job <action> [arguments and flags]

Actions:
  create --domain HOST        create a job; prints its id
  enqueue JOB [PAGE...]       add pages: arguments, --from FILE (- for standard
                              input), --sitemap URL
  list                        jobs, newest first, with their progress
  show JOB                    one job: settings, progress, times
  pause JOB                   stop claiming a running job's tasks
  resume JOB                  let a paused job's tasks be claimed again
  cancel JOB                  end a job: its pending tasks are skipped

Exit status: 0 done, 1 failed, 2 bad command line (nothing done), 4 no such
job, 5 the job's status does not allow it (or, for create, the id is taken).
Run "taskq job <action> --help" for an action's flags.
`

func jobCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, jobUsage)
		return usageError{"job: no action given"}
	}
	action, rest := args[0], args[1:]
	switch action {
	case "create":
		return jobCreateCmd(ctx, rest, stdout, stderr)
	case "enqueue":
		return jobEnqueueCmd(ctx, rest, stdin, stdout, stderr)
	case "list":
		return jobListCmd(ctx, rest, stdout, stderr)
	case "show":
		return jobShowCmd(ctx, rest, stdout, stderr)
	case "pause", "resume", "cancel":
		return jobStatusCmd(ctx, action, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, jobUsage)
		return nil
	}
	fmt.Fprint(stderr, jobUsage)
	return usageError{fmt.Sprintf("job: unknown action %q", redact(action))}
}

// connectionFlags are the flags every job action takes to reach the queue.
type connectionFlags struct {
	url    *string
	pooler *bool
}

func newConnectionFlags(fs *flag.FlagSet) connectionFlags {
	return connectionFlags{url: databaseFlag(fs), pooler: poolerFlag(fs)}
}

// open resolves, announces and opens the database, its schema checked.
func (c connectionFlags) open(ctx context.Context, stderr io.Writer) (*db.DB, error) {
	t, err := resolveTarget(*c.url)
	if err != nil {
		return nil, err
	}
	announce(stderr, t)
	return openQueue(ctx, t, db.Options{Pooler: *c.pooler, MaxConns: 4})
}

func jobCreateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("job create", `
Usage: taskq job create --domain HOST [flags]

Creates a job that crawls pages of HOST and prints its id on standard output
(the whole job with --json), for a script to keep:

  JOB=$(taskq job create --domain example.com --concurrency 8)
  taskq job enqueue "$JOB" --sitemap https://example.com/sitemap.xml

The job starts running when its first pages are enqueued.`, stderr)
	conn := newConnectionFlags(fs)
	domain := fs.String("domain", "", "the site's host: example.com, or host:port (required)")
	concurrency := fs.Int("concurrency", 5, "most of the job's tasks running at once, over every worker")
	maxPages := fs.Int("max-pages", 0, "most pages the job crawls; pages enqueued beyond it are recorded as skipped (0: no limit)")
	maxRetries := fs.Int("max-retries", 3, "how often a failed page is tried again (0: never)")
	findLinks := fs.Bool("find-links", false, "workers add the same-site links of each page they fetch to the job (a crawl that discovers its pages)")
	id := fs.String("id", "", "the job's id (default: a new UUID)")
	jsonOut := fs.Bool("json", false, "print the job as JSON")
	if _, err := parse(fs, args, stdout, 0, 0); err != nil {
		return err
	}
	if err := checkDomain(*domain); err != nil {
		return err
	}
	d, err := conn.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	job, err := d.CreateJob(ctx, db.JobOptions{
		ID: *id, Domain: *domain, Concurrency: *concurrency, MaxPages: *maxPages,
		MaxRetries: *maxRetries, NoRetries: *maxRetries == 0, FindLinks: *findLinks,
	})
	if err != nil {
		return jobError(err, *id)
	}
	if *jsonOut {
		return writeJSON(stdout, newJobJSON(job))
	}
	fmt.Fprintln(stdout, job.ID)
	fmt.Fprintf(stderr, "taskq: created job %s for %s (%s); add pages with: taskq job enqueue %s PAGE... | --from FILE | --sitemap URL\n",
		job.ID, job.Domain, jobSettings(job), job.ID)
	return nil
}

// checkDomain refuses what the fetcher could not put between "https://"
// and a path: a URL, a path, spaces.
func checkDomain(domain string) error {
	if domain == "" {
		return usageError{"--domain is required: the site's host, such as example.com"}
	}
	if u, err := url.Parse(domain); err == nil && u.Host != "" {
		return usageError{fmt.Sprintf("--domain is a host, not a URL: try --domain %s", u.Host)}
	}
	if u, err := url.Parse("https://" + domain); err != nil || u.Host != domain {
		return usageError{fmt.Sprintf("--domain %q is not a host such as example.com or host:port", redact(domain))}
	}
	return nil
}

func jobEnqueueCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("job enqueue", `
Usage: taskq job enqueue JOB [PAGE...] [--from FILE|-] [--sitemap URL] [flags]

Adds pages to a job. A PAGE is a path (/about) or a URL on the job's domain
(https://example.com/about). Pages come from the arguments, from --from (a
file with a page per line, optionally followed by its priority; blank lines
and lines starting with # are skipped; - reads standard input), and from
--sitemap (an XML sitemap or sitemap index, gzip-compressed or not; its URLs
on other hosts are left out, and counted).

Every page is read and checked before any is sent: a bad one stops the
command (exit 2) with where it was, and nothing is enqueued. Pages the job
has already are dropped, and pages past its --max-pages are recorded as
skipped. A pending job starts running, a completed one reopens, a paused one
stays paused; a cancelled or failed job takes no pages (exit 5).`, stderr)
	conn := newConnectionFlags(fs)
	from := fs.String("from", "", "read pages from this file, one per line (- for standard input)")
	sitemap := fs.String("sitemap", "", "read pages from the XML sitemap (or sitemap index) at this URL")
	priority := fs.Float64("priority", 0.5, "priority of pages that give none (higher runs first; a sitemap's <priority> counts)")
	jsonOut := fs.Bool("json", false, "print the counts as JSON")
	pos, err := parse(fs, args, stdout, 1, -1)
	if err != nil {
		return err
	}
	jobID, given := pos[0], pos[1:]
	switch {
	case len(given) == 0 && *from == "" && *sitemap == "":
		return usageError{"no pages: give PAGE arguments, --from FILE (- for standard input) or --sitemap URL"}
	case math.IsNaN(*priority) || math.IsInf(*priority, 0):
		return usageError{"--priority must be a number"}
	}
	d, err := conn.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	job, err := d.GetJob(ctx, jobID)
	if err != nil {
		return jobError(err, jobID)
	}
	if job.Status == tasks.JobStatusCancelled || job.Status == tasks.JobStatusFailed {
		return exitError{exitJobRefused, fmt.Errorf("job %s is %s: it takes no more pages", job.ID, job.Status)}
	}

	var pages []db.Page
	for i, raw := range given {
		p, err := pagePath(raw, job.Domain)
		if err != nil {
			return usageError{fmt.Sprintf("argument %d: %s", i+2, err)}
		}
		pages = append(pages, db.Page{Path: p, Priority: *priority})
	}
	if *from != "" {
		read, err := readPages(*from, stdin, job.Domain, *priority)
		if err != nil {
			return err
		}
		pages = append(pages, read...)
	}
	ignored := 0
	if *sitemap != "" {
		listed, err := crawl.Sitemap(ctx, nil, *sitemap)
		if err != nil {
			return err
		}
		var elsewhere string
		for _, sp := range listed {
			u, err := url.Parse(sp.URL)
			p, ok := "", false
			if err == nil {
				p, ok = crawl.PagePath(u, job.Domain)
			}
			if !ok {
				ignored++
				if err == nil && elsewhere == "" {
					elsewhere = u.Host
				}
				continue
			}
			pr := *priority
			if sp.HasPriority {
				pr = sp.Priority
			}
			pages = append(pages, db.Page{Path: p, Priority: pr})
		}
		if len(listed) > 0 && ignored == len(listed) {
			return fmt.Errorf("the sitemap lists %s URLs, none on %s (the first on %q): is the job's domain the sitemap's?",
				count(len(listed)), job.Domain, elsewhere)
		}
	}
	if len(pages) == 0 {
		return fmt.Errorf("no pages to enqueue")
	}

	var res db.EnqueueResult
	for start := 0; start < len(pages); start += enqueueBatch {
		r, err := d.EnqueuePages(ctx, job.ID, pages[start:min(len(pages), start+enqueueBatch)])
		if err != nil {
			if errors.Is(err, db.ErrInvalidTransition) {
				// Cancelled (or failed) since it was read above.
				err = exitError{exitJobRefused, fmt.Errorf("job %s takes no more pages: %w", job.ID, err)}
			} else {
				err = jobError(err, job.ID)
			}
			if start > 0 {
				err = fmt.Errorf("%w (the first %s pages were enqueued; enqueueing them again drops them as duplicates)", err, count(start))
			}
			return err
		}
		res.Pending += r.Pending
		res.Skipped += r.Skipped
		res.Duplicates += r.Duplicates
	}
	if *jsonOut {
		return writeJSON(stdout, struct {
			Job        string `json:"job"`
			Sent       int    `json:"sent"`
			Added      int    `json:"added"`
			Skipped    int    `json:"skipped"`
			Duplicates int    `json:"duplicates"`
			Ignored    int    `json:"ignored_other_hosts"`
		}{job.ID, len(pages), res.Pending, res.Skipped, res.Duplicates, ignored})
	}
	fmt.Fprintf(stdout, "job %s: %s pages sent: %s added, %s skipped (past max pages), %s already in the job",
		job.ID, count(len(pages)), count(res.Pending), count(res.Skipped), count(res.Duplicates))
	if ignored > 0 {
		fmt.Fprintf(stdout, "; %s sitemap URLs on other hosts left out", count(ignored))
	}
	fmt.Fprintln(stdout)
	return nil
}

// enqueueBatch is how many pages one EnqueuePages call sends.
const enqueueBatch = 1000

// pagePath is the path by which a job on domain knows a page an operator
// gave: a path is taken on the job's site, a URL must be on it.
func pagePath(raw, domain string) (string, error) {
	if !strings.HasPrefix(raw, "/") && !strings.Contains(raw, "://") {
		return "", fmt.Errorf("%q is neither a path (/about) nor a URL (https://%s/about)", redact(raw), domain)
	}
	base := &url.URL{Scheme: "https", Host: domain, Path: "/"}
	u, err := base.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%q: %v", redact(raw), redact(err.Error()))
	}
	p, ok := crawl.PagePath(u, domain)
	if !ok {
		if !strings.EqualFold(u.Host, domain) || (u.Scheme != "http" && u.Scheme != "https") {
			return "", fmt.Errorf("%q is not a page of %s", redact(raw), domain)
		}
		return "", fmt.Errorf("%q cannot be stored: too long (over %d bytes) or not UTF-8", redact(raw), tasks.MaxPathLength)
	}
	return p, nil
}

// readPages reads the pages of --from: "PAGE [PRIORITY]" per line.
func readPages(name string, stdin io.Reader, domain string, priority float64) ([]db.Page, error) {
	in, where := stdin, "standard input"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, usageError{fmt.Sprintf("--from: %v", err)}
		}
		defer f.Close()
		in, where = f, name
	}
	var pages []db.Page
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 4*tasks.MaxPathLength)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) > 2 {
			return nil, usageError{fmt.Sprintf("%s line %d: want a page and at most a priority, got %d words", where, line, len(fields))}
		}
		p, err := pagePath(fields[0], domain)
		if err != nil {
			return nil, usageError{fmt.Sprintf("%s line %d: %s", where, line, err)}
		}
		pr := priority
		if len(fields) == 2 {
			pr, err = strconv.ParseFloat(fields[1], 64)
			if err != nil || math.IsNaN(pr) || math.IsInf(pr, 0) {
				return nil, usageError{fmt.Sprintf("%s line %d: priority %q is not a number", where, line, fields[1])}
			}
		}
		pages = append(pages, db.Page{Path: p, Priority: pr})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", where, err)
	}
	return pages, nil
}

func jobListCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("job list", `
Usage: taskq job list [flags]

Lists jobs, newest first, with their progress: done (completed, failed or
skipped) of all their tasks, running now, failed.`, stderr)
	conn := newConnectionFlags(fs)
	status := fs.String("status", "", "only jobs in these statuses, comma-separated: pending, running, paused, completed, failed, cancelled")
	limit := fs.Int("limit", 50, "most jobs listed")
	jsonOut := fs.Bool("json", false, "print the jobs as a JSON array")
	if _, err := parse(fs, args, stdout, 0, 0); err != nil {
		return err
	}
	filter := db.JobFilter{Limit: *limit}
	if *limit < 1 {
		return usageError{"--limit must be at least 1"}
	}
	if *status != "" {
		for _, s := range strings.Split(*status, ",") {
			st := tasks.JobStatus(strings.TrimSpace(s))
			if !st.Valid() {
				return usageError{fmt.Sprintf("--status: %q is no job status (pending, running, paused, completed, failed, cancelled)", redact(s))}
			}
			filter.Statuses = append(filter.Statuses, st)
		}
	}
	d, err := conn.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	jobs, err := d.ListJobs(ctx, filter)
	if err != nil {
		return jobError(err, "")
	}
	if *jsonOut {
		out := make([]jobJSON, len(jobs))
		for i, j := range jobs {
			out[i] = newJobJSON(&j)
		}
		return writeJSON(stdout, out)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(stdout, "no jobs")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "job\tdomain\tstatus\tprogress\tdone\trunning\tfailed\tcreated")
	for _, j := range jobs {
		p := j.Progress
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f%%\t%s / %s\t%s\t%s\t%s\n", j.ID, j.Domain, j.Status, p.Percent,
			count(p.Completed+p.Failed+p.Skipped), count(p.Total), count(p.Running), count(p.Failed),
			j.CreatedAt.Local().Format("2006-01-02 15:04"))
	}
	return tw.Flush()
}

func jobShowCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("job show", `
Usage: taskq job show JOB [flags]

Shows a job: its domain, status and settings, its exact progress, and when
it was created, started and finished.`, stderr)
	conn := newConnectionFlags(fs)
	jsonOut := fs.Bool("json", false, "print the job as JSON")
	pos, err := parse(fs, args, stdout, 1, 1)
	if err != nil {
		return err
	}
	d, err := conn.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	job, err := d.GetJob(ctx, pos[0])
	if err != nil {
		return jobError(err, pos[0])
	}
	if *jsonOut {
		return writeJSON(stdout, newJobJSON(job))
	}
	p := job.Progress
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return fmt.Sprintf("%s (%s ago)", t.Local().Format("2006-01-02 15:04:05 MST"), duration(time.Since(*t)))
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "job\t%s\n", job.ID)
	fmt.Fprintf(tw, "domain\t%s\n", job.Domain)
	fmt.Fprintf(tw, "status\t%s\n", job.Status)
	fmt.Fprintf(tw, "settings\t%s\n", jobSettings(job))
	fmt.Fprintf(tw, "progress\t%.1f%%: %s of %s tasks done (%s completed, %s failed, %s skipped)\n", p.Percent,
		count(p.Completed+p.Failed+p.Skipped), count(p.Total), count(p.Completed), count(p.Failed), count(p.Skipped))
	fmt.Fprintf(tw, "\t%s running, %s pending\n", count(p.Running), count(p.Pending))
	fmt.Fprintf(tw, "created\t%s\n", when(&job.CreatedAt))
	fmt.Fprintf(tw, "started\t%s\n", when(job.StartedAt))
	fmt.Fprintf(tw, "finished\t%s\n", when(job.CompletedAt))
	return tw.Flush()
}

// jobSettings says how a job was created, in words.
func jobSettings(j *db.Job) string {
	pages := "no page limit"
	if j.MaxPages > 0 {
		pages = "at most " + count(j.MaxPages) + " pages"
	}
	links := "links not followed"
	if j.FindLinks {
		links = "finds links"
	}
	return fmt.Sprintf("concurrency %s, %s, %d retries, %s", count(j.Concurrency), pages, j.MaxRetries, links)
}

// jobStatusCmd pauses, resumes or cancels a job.
func jobStatusCmd(ctx context.Context, action string, args []string, stdout, stderr io.Writer) error {
	synopsis := map[string]string{
		"pause": `
Usage: taskq job pause JOB [flags]

Stops a running job's tasks from being claimed; tasks running now finish.
Resume it with taskq job resume.`,
		"resume": `
Usage: taskq job resume JOB [flags]

Lets a paused job's tasks be claimed again, and wakes idle workers.`,
		"cancel": `
Usage: taskq job cancel JOB [flags]

Ends a pending, running or paused job: its pending tasks are skipped and
never run, tasks running now may still finish, and it takes no more pages.
It cannot be undone.`,
	}[action]
	fs := newFlags("job "+action, synopsis, stderr)
	conn := newConnectionFlags(fs)
	pos, err := parse(fs, args, stdout, 1, 1)
	if err != nil {
		return err
	}
	id := pos[0]
	d, err := conn.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	change, done, from := d.PauseJob, "paused", "running"
	switch action {
	case "resume":
		change, done, from = d.ResumeJob, "resumed", "paused"
	case "cancel":
		change, done, from = d.CancelJob, "cancelled", "pending, running or paused"
	}
	err = change(ctx, id)
	if errors.Is(err, db.ErrInvalidTransition) {
		// Say what the job is instead, which the caller can act on.
		job, getErr := d.GetJob(ctx, id)
		if getErr != nil {
			return jobError(getErr, id)
		}
		now := string(job.Status)
		if now == done || (action == "resume" && job.Status == tasks.JobStatusRunning) {
			return exitError{exitJobRefused, fmt.Errorf("job %s is %s already", id, now)}
		}
		return exitError{exitJobRefused, fmt.Errorf("job %s is %s: only a %s job can be %s", id, now, from, done)}
	}
	if err != nil {
		return jobError(err, id)
	}
	fmt.Fprintf(stdout, "job %s %s\n", id, done)
	return nil
}

// jobJSON is a job as the job commands print it with --json.
type jobJSON struct {
	ID          string       `json:"id"`
	Domain      string       `json:"domain"`
	Status      string       `json:"status"`
	Concurrency int          `json:"concurrency"`
	MaxPages    int          `json:"max_pages"`
	MaxRetries  int          `json:"max_retries"`
	FindLinks   bool         `json:"find_links"`
	Progress    progressJSON `json:"progress"`
	CreatedAt   time.Time    `json:"created_at"`
	StartedAt   *time.Time   `json:"started_at"`
	CompletedAt *time.Time   `json:"completed_at"`
}

type progressJSON struct {
	Total     int     `json:"total"`
	Pending   int     `json:"pending"`
	Running   int     `json:"running"`
	Completed int     `json:"completed"`
	Failed    int     `json:"failed"`
	Skipped   int     `json:"skipped"`
	Percent   float64 `json:"percent"`
}

func newJobJSON(j *db.Job) jobJSON {
	p := j.Progress
	return jobJSON{
		ID: j.ID, Domain: j.Domain, Status: string(j.Status), Concurrency: j.Concurrency, MaxPages: j.MaxPages,
		MaxRetries: j.MaxRetries, FindLinks: j.FindLinks,
		Progress: progressJSON{Total: p.Total, Pending: p.Pending, Running: p.Running, Completed: p.Completed,
			Failed: p.Failed, Skipped: p.Skipped, Percent: p.Percent},
		CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, CompletedAt: j.CompletedAt,
	}
}
