package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/pgbouncertest"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// outcome is what one command line did, as a script sees it.
type outcome struct {
	code           int
	stdout, stderr string
}

func (o outcome) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", o.code, o.stdout, o.stderr)
}

// taskq runs a command line as main does, with stdin as its standard input.
func taskq(t *testing.T, stdin string, args ...string) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := cli(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	return outcome{code, stdout.String(), stderr.String()}
}

// want fails the test unless o exited with code and its stderr (or stdout)
// says each of says.
func (o outcome) want(t *testing.T, code int, says ...string) outcome {
	t.Helper()
	if o.code != code {
		t.Fatalf("want exit %d, got %s", code, o)
	}
	for _, s := range says {
		if !strings.Contains(o.stderr+o.stdout, s) {
			t.Fatalf("want output saying %q, got %s", s, o)
		}
	}
	return o
}

func decode[T any](t *testing.T, o outcome) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(o.stdout), &v); err != nil {
		t.Fatalf("stdout is not the JSON expected (%v): %s", err, o)
	}
	return v
}

// migrations is how many migrations this binary embeds.
func migrations(t *testing.T) int {
	t.Helper()
	vs, err := migrate.Versions(migrate.VersionLatest)
	if err != nil {
		t.Fatal(err)
	}
	return len(vs)
}

// TestPasswordNeverPrinted: with a password in DATABASE_URL, --database-url,
// --listen-url or PGPASSWORD, no output shows it: not help, usage, a flag
// mistake, a URL that does not parse, nor a connection that fails.
func TestPasswordNeverPrinted(t *testing.T) {
	const secret = "S3cret"
	good := "postgres://app:" + secret + "@127.0.0.1:1/prod?connect_timeout=1"
	for name, c := range map[string]struct {
		env  string // DATABASE_URL
		args []string
	}{
		"work --help":               {good, []string{"work", "--help"}},
		"stats --help":              {good, []string{"stats", "--help"}},
		"migrate --help":            {good, []string{"migrate", "--help"}},
		"loadtest --help":           {good, []string{"loadtest", "--help"}},
		"job create --help":         {good, []string{"job", "create", "--help"}},
		"a flag typo":               {good, []string{"work", "--wrokers", "3"}},
		"a bad flag value":          {good, []string{"stats", "--window", "soon"}},
		"a URL as a flag value":     {good, []string{"work", "--poll", good}},
		"a URL as a stray word":     {good, []string{"work", good}},
		"a URL as a migrate action": {good, []string{"migrate", good}},
		"connection refused":        {good, []string{"stats"}},
		"migrate status refused":    {good, []string{"migrate", "status"}},
		"migrate up refused":        {good, []string{"migrate", "up"}},
		"job list refused":          {good, []string{"job", "list"}},
		"the flag's URL refused":    {"", []string{"job", "show", "x", "--database-url", good}},
		"bad listen URL":            {good, []string{"work", "--listen-url", "postgres://l:" + secret + "@h:port/x"}},
		"bad port":                  {"postgres://app:" + secret + "@db.example.com:x/prod", []string{"stats"}},
		"bad escape":                {"postgres://app:" + secret + "%zz@db.example.com/prod", []string{"job", "list"}},
		"slash in password":         {"postgres://app:S3/" + secret + "@db.example.com/prod", []string{"work"}},
		"colon in password":         {"postgres://app:a:" + secret + "@db.example.com:x/prod", []string{"work"}},
		"keyword/value":             {"host=db.example.com password=" + secret + " port=x", []string{"stats"}},
		"keyword/value for migrate": {"host=127.0.0.1 port=1 password=" + secret, []string{"migrate"}},
		"password in the query":     {"postgres://app@127.0.0.1:1/prod?password=" + secret + "&connect_timeout=1", []string{"stats"}},
		"sslmode wrong":             {"postgres://app:" + secret + "@db.example.com/prod?sslmode=sometimes", []string{"stats"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("DATABASE_URL", c.env)
			t.Setenv("PGPASSWORD", secret)
			o := taskq(t, "", c.args...)
			if strings.Contains(o.stdout+o.stderr, secret) {
				t.Errorf("the password is in the output: %s", o)
			}
			if o.code == 1 && !strings.Contains(o.stderr, "127.0.0.1:1/prod as app (from ") {
				t.Errorf("a command that could not connect must say where it tried: %s", o)
			}
		})
	}
	t.Run("PGPASSWORD", func(t *testing.T) {
		t.Setenv("DATABASE_URL", "")
		t.Setenv("PGHOST", "127.0.0.1")
		t.Setenv("PGPORT", "1")
		t.Setenv("PGPASSWORD", secret)
		for _, args := range [][]string{{"job", "list"}, {"migrate", "status"}, {"work", "--simulate"}} {
			o := taskq(t, "", args...).want(t, 1, "127.0.0.1:1")
			if strings.Contains(o.stdout+o.stderr, secret) {
				t.Errorf("the password is in the output: %s", o)
			}
		}
	})
	t.Run("help shows no default URL", func(t *testing.T) {
		t.Setenv("DATABASE_URL", "postgres://app:"+secret+"@db.example.com/prod")
		o := taskq(t, "", "work", "--help").want(t, 0, "-database-url")
		if strings.Contains(o.stdout+o.stderr, "db.example.com") {
			t.Errorf("--help shows DATABASE_URL: %s", o)
		}
	})
}

// TestRedact: the one helper masks a password in every shape it comes in.
func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://app:pw@db/x":                         "postgres://app:xxxxx@db/x",
		`parse "postgres://app:pw@db:x/y": invalid port`: `parse "postgres://xxxxx@db:x/y": invalid port`,
		"postgres://app:p/w@db/x":                        "postgres://xxxxx@db/x",
		"see postgres://app@db/x?password=pw&a=b now":    "see postgres://app@db/x?password=xxxxx&a=b now",
		"host=db password=pw port=1":                     "host=db password=xxxxx port=1",
		"host=db password='p w' port=1":                  "host=db password=xxxxx port=1",
		"https://example.com/sitemap.xml":                "https://example.com/sitemap.xml",
		"no URL here":                                    "no URL here",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStrayWordsRejected: a word where none belongs is a usage error (exit
// 2) before anything connects, wherever it stands; flags after positional
// arguments count.
func TestStrayWordsRejected(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://x@127.0.0.1:1/x?connect_timeout=1")
	for _, args := range [][]string{
		{"work", "extra", "--workers", "0", "--simulate"},
		{"work", "extra", "--workers", "2", "--simulate"},
		{"work", "--simulate", "extra"},
		{"stats", "now"},
		{"migrate", "status", "extra"},
		{"migrate", "up", "down"},
		{"job", "list", "all"},
		{"job", "show", "a", "b"},
		{"job", "pause", "a", "b"},
		{"job", "create", "example.com"},
		{"loadtest", "quick"},
		{"version", "now"},
	} {
		o := taskq(t, "", args...)
		if o.code != 2 || strings.Contains(o.stderr, "taskq: using") {
			t.Errorf("taskq %q: want exit 2 before connecting, got %s", args, o)
		}
	}

	url := pgtest.URL(t, migrate.VersionLatest)
	taskq(t, "", "migrate", "status", "--database-url", url).want(t, 0, "0 pending")
	taskq(t, "", "stats", "--json", "--database-url", url, "--window", "1m").want(t, 0)
}

// TestNotMigrated: every command that uses the queue checks the schema
// first and says what to run: not migrated, half migrated, or migrated by a
// newer binary (exit 1).
func TestNotMigrated(t *testing.T) {
	t.Parallel()
	n := migrations(t)
	empty := pgtest.EmptyURL(t)
	base := pgtest.URL(t, migrate.VersionBaseSchema)
	ahead := pgtest.URL(t, migrate.VersionLatest)
	pool := pgtest.Pool(t, ahead, 1)
	if _, err := pool.Exec(context.Background(),
		"INSERT INTO taskq_meta.schema_migrations (version) VALUES ('29991231000000')"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"work", "--simulate"},
		{"stats"},
		{"job", "list"},
		{"job", "show", "some-job"},
		{"job", "create", "--domain", "example.com"},
	} {
		run := func(url string) outcome { return taskq(t, "", append(args, "--database-url", url)...) }
		run(empty).want(t, 1, fmt.Sprintf("not migrated (0/%d): run taskq migrate up", n))
		run(base).want(t, 1, fmt.Sprintf("not migrated (2/%d): run taskq migrate up", n))
		run(ahead).want(t, 1, "migrated ahead of this binary", "29991231000000")
	}
	// Nothing was written: the empty database is still empty.
	taskq(t, "", "migrate", "status", "--database-url", empty).want(t, exitPending, fmt.Sprintf("0 applied, %d pending", n))
}

// TestMigrateStatus: status exits 3 while migrations are pending, 0 once
// they are applied, 1 on a database ahead of the binary; --json says the
// same.
func TestMigrateStatus(t *testing.T) {
	t.Parallel()
	n := migrations(t)
	url := pgtest.URL(t, migrate.VersionBaseSchema)
	type status struct {
		Migrations []struct {
			Version string `json:"version"`
			File    string `json:"file"`
			Applied bool   `json:"applied"`
		} `json:"migrations"`
		Applied int      `json:"applied"`
		Pending int      `json:"pending"`
		Unknown []string `json:"unknown"`
		Current bool     `json:"current"`
	}

	taskq(t, "", "migrate", "status", "--database-url", url).want(t, exitPending,
		fmt.Sprintf("2 applied, %d pending", n-2), "[ ] 20251024000003_idx_jobs_domain_id.sql", "run taskq migrate up")
	s := decode[status](t, taskq(t, "", "migrate", "--json", "--database-url", url, "status").want(t, exitPending))
	if s.Applied != 2 || s.Pending != n-2 || s.Current || len(s.Migrations) != n || !s.Migrations[1].Applied || s.Migrations[2].Applied {
		t.Errorf("status --json = %+v, want 2 applied of %d", s, n)
	}

	taskq(t, "", "migrate", "up", "--database-url", url).want(t, 0)
	taskq(t, "", "migrate", "status", "--database-url", url).want(t, 0, fmt.Sprintf("%d applied, 0 pending", n))
	s = decode[status](t, taskq(t, "", "migrate", "status", "--json", "--database-url", url).want(t, 0))
	if s.Applied != n || s.Pending != 0 || !s.Current || s.Unknown == nil {
		t.Errorf("status --json = %+v, want all %d applied", s, n)
	}

	pool := pgtest.Pool(t, url, 1)
	if _, err := pool.Exec(context.Background(),
		"INSERT INTO taskq_meta.schema_migrations (version) VALUES ('29991231000000')"); err != nil {
		t.Fatal(err)
	}
	taskq(t, "", "migrate", "status", "--database-url", url).want(t, 1, "[?] 29991231000000", "ahead of this binary")
	taskq(t, "", "migrate", "status", "--json", "--database-url", url, "--json=false", "extra").want(t, 2)
	taskq(t, "", "migrate", "up", "--json", "--database-url", url).want(t, 2, "--json goes with migrate status")
}

// TestPGEnvironment: without DATABASE_URL, every command uses libpq's PG*
// variables, migrate (dbmate) included, and says so on one line.
func TestPGEnvironment(t *testing.T) {
	n := migrations(t)
	url := pgtest.EmptyURL(t)
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", "")
	t.Setenv("PGHOST", cfg.Host)
	t.Setenv("PGPORT", fmt.Sprint(cfg.Port))
	t.Setenv("PGUSER", cfg.User)
	t.Setenv("PGPASSWORD", cfg.Password)
	t.Setenv("PGDATABASE", cfg.Database)
	where := fmt.Sprintf("taskq: using %s:%d/%s as %s (from PG* environment)\n", cfg.Host, cfg.Port, cfg.Database, cfg.User)

	o := taskq(t, "", "migrate", "status").want(t, exitPending, fmt.Sprintf("0 applied, %d pending", n))
	if !strings.HasPrefix(o.stderr, where) {
		t.Errorf("want stderr to start with %q, got %s", where, o)
	}
	taskq(t, "", "migrate").want(t, 0, where)
	taskq(t, "", "migrate", "status").want(t, 0, where, fmt.Sprintf("%d applied, 0 pending", n))
	id := strings.TrimSpace(taskq(t, "", "job", "create", "--domain", "example.com").want(t, 0, where).stdout)
	taskq(t, "", "job", "show", id).want(t, 0, where, "example.com")

	// The environment names a database the server does not have: the
	// error names it, and nothing is created.
	t.Setenv("PGDATABASE", "taskq_no_such_database")
	taskq(t, "", "job", "list").want(t, 1, "taskq_no_such_database")
}

// TestJobCommands goes through an operator's day: create a job, feed it
// from arguments, a file, standard input and a sitemap, list and show it,
// pause, resume and cancel it, with the exit statuses scripts test.
func TestJobCommands(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t, migrate.VersionLatest)
	job := func(args ...string) outcome {
		return taskq(t, "", append([]string{"job"}, append(args, "--database-url", url)...)...)
	}

	created := decode[jobJSON](t, job("create", "--domain", "example.com", "--concurrency", "4", "--max-pages", "10", "--json").want(t, 0))
	want := jobJSON{ID: created.ID, Domain: "example.com", Status: "pending", Concurrency: 4, MaxPages: 10, MaxRetries: 3}
	if diff := cmp.Diff(want, created, cmpopts.IgnoreFields(jobJSON{}, "CreatedAt")); diff != "" {
		t.Errorf("job create --json (-want +got):\n%s", diff)
	}
	id := created.ID

	// Plain create prints the id alone, for JOB=$(taskq job create ...).
	other := job("create", "--domain", "example.org", "--id", "nightly", "--find-links", "--max-retries", "0").want(t, 0)
	if other.stdout != "nightly\n" {
		t.Errorf("job create printed %q on stdout, want the id alone", other.stdout)
	}
	job("create", "--domain", "example.org", "--id", "nightly").want(t, exitJobRefused, `a job with id "nightly" exists already`)
	job("create", "--domain", "example.com", "--concurrency", "-1").want(t, 2, "--concurrency: -1, want at least 1")
	job("create", "--domain", "https://example.com/").want(t, 2, "try --domain example.com")
	job("create").want(t, 2, "--domain is required")

	// Pages from arguments, then a file.
	job("enqueue", id, "/", "https://example.com/about", "/about").want(t, 0,
		"3 pages sent: 2 added, 0 skipped (past max pages), 1 already in the job")
	file := filepath.Join(t.TempDir(), "pages.txt")
	if err := os.WriteFile(file, []byte("# more pages\n/blog 0.9\n\n  /contact  \nhttps://example.com/about\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	job("enqueue", "--from", file, id).want(t, 0, "3 pages sent: 2 added, 0 skipped (past max pages), 1 already in the job")
	// A bad line stops everything: nothing of the file is enqueued.
	bad := filepath.Join(t.TempDir(), "bad.txt")
	if err := os.WriteFile(bad, []byte("/fine\nhttps://elsewhere.com/x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	job("enqueue", id, "--from", bad).want(t, 2, "bad.txt line 2", "not a page of example.com")
	job("enqueue", id, "--from", bad+".missing").want(t, 2, "no such file")
	job("enqueue", id, "ftp://example.com/x").want(t, 2, "not a page of example.com")
	job("enqueue", id, "about").want(t, 2, "neither a path")
	job("enqueue", id, "/a 1").want(t, 0, "1 added") // a path with a space is a path
	job("enqueue", id).want(t, 2, "no pages")

	// Standard input.
	type counts struct {
		Job        string `json:"job"`
		Sent       int    `json:"sent"`
		Added      int    `json:"added"`
		Skipped    int    `json:"skipped"`
		Duplicates int    `json:"duplicates"`
		Ignored    int    `json:"ignored_other_hosts"`
	}
	got := decode[counts](t, taskq(t, "/from-stdin\n/blog\n", "job", "enqueue", id, "--from", "-", "--database-url", url, "--json").want(t, 0))
	if diff := cmp.Diff(counts{Job: id, Sent: 2, Added: 1, Duplicates: 1}, got); diff != "" {
		t.Errorf("enqueue --from - --json (-want +got):\n%s", diff)
	}

	// A sitemap index, one of its sitemaps gzipped, with a page elsewhere
	// left out.
	srv := sitemapServer(t)
	job("enqueue", id, "--sitemap", srv.URL+"/sitemap_index.xml").want(t, 0,
		"5 pages sent: 4 added, 0 skipped (past max pages), 1 already in the job; 1 sitemap URLs on other hosts left out")
	job("enqueue", id, "--sitemap", srv.URL+"/elsewhere.xml").want(t, 1, `none on example.com (the first on "www.example.com")`)
	job("enqueue", id, "--sitemap", srv.URL+"/missing.xml").want(t, 1, "404")
	// Past --max-pages (10), pages are recorded as skipped.
	job("enqueue", id, "/x1", "/x2").want(t, 0, "2 pages sent: 0 added, 2 skipped (past max pages)")

	shown := decode[jobJSON](t, job("show", id, "--json").want(t, 0))
	wantProgress := progressJSON{Total: 12, Pending: 10, Skipped: 2, Percent: 100.0 * 2 / 12}
	// job_percent_done's percentage is a real.
	if diff := cmp.Diff(wantProgress, shown.Progress, cmpopts.EquateApprox(1e-6, 0)); shown.Status != "running" || diff != "" {
		t.Errorf("job show --json: status %s, progress (-want +got):\n%s", shown.Status, diff)
	}
	job("show", id).want(t, 0, "example.com", "16.7%: 2 of 12 tasks done", "10 pending", "at most 10 pages")

	listed := decode[[]jobJSON](t, job("list", "--json").want(t, 0))
	if len(listed) != 2 || listed[0].ID != "nightly" || listed[1].ID != id {
		t.Errorf("job list --json = %+v, want nightly then %s", listed, id)
	}
	listed = decode[[]jobJSON](t, job("list", "--status", "running,paused", "--json").want(t, 0))
	if len(listed) != 1 || listed[0].ID != id {
		t.Errorf("job list --status running,paused --json = %+v, want %s alone", listed, id)
	}
	job("list").want(t, 0, "nightly", "example.org", "pending", id, "2 / 12")
	job("list", "--status", "later").want(t, 2, `"later" is no job status`)

	job("pause", id).want(t, 0, "job "+id+" paused")
	job("pause", id).want(t, exitJobRefused, "is paused already")
	job("enqueue", id, "/while-paused").want(t, 0, "1 skipped")
	job("resume", id).want(t, 0, "resumed")
	job("resume", id).want(t, exitJobRefused, "is running already")
	job("pause", "nightly").want(t, exitJobRefused, "job nightly is pending: only a running job can be paused")
	job("cancel", id).want(t, 0, "cancelled")
	job("cancel", id).want(t, exitJobRefused, "cancelled already")
	job("enqueue", id, "/late").want(t, exitJobRefused, "is cancelled: it takes no more pages")
	shown = decode[jobJSON](t, job("show", id, "--json").want(t, 0))
	if shown.Status != "cancelled" || shown.Progress.Pending != 0 {
		t.Errorf("after cancel: %+v, want cancelled with nothing pending", shown)
	}

	for _, args := range [][]string{{"show", "nope"}, {"pause", "nope"}, {"resume", "nope"}, {"cancel", "nope"}, {"enqueue", "nope", "/"}} {
		job(args...).want(t, exitNoJob, `no job "nope"`)
	}
}

// sitemapServer serves a sitemap index of two sitemaps (one gzipped) that
// list 6 pages, one of them on another host.
func sitemapServer(t *testing.T) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/sitemap_index.xml", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<sitemapindex><sitemap><loc>%s/a.xml</loc></sitemap><sitemap><loc>/b.xml.gz</loc></sitemap></sitemapindex>`, srv.URL)
	})
	mux.HandleFunc("/a.xml", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `<urlset><url><loc>https://example.com/</loc><priority>1.0</priority></url>
			<url><loc>https://example.com/s1</loc></url><url><loc>https://www.example.com/s2</loc></url></urlset>`)
	})
	mux.HandleFunc("/b.xml.gz", func(w http.ResponseWriter, r *http.Request) {
		gz := gzip.NewWriter(w)
		io.WriteString(gz, `<urlset><url><loc>https://example.com/s3</loc></url><url><loc>https://example.com/s4</loc></url>
			<url><loc>https://example.com/s5</loc></url></urlset>`)
		gz.Close()
	})
	mux.HandleFunc("/elsewhere.xml", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `<urlset><url><loc>https://www.example.com/</loc></url></urlset>`)
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestWork runs taskq work on a job's pages until they are done and checks
// what it says: a start line naming the workers and the database, and
// readable totals when it stops.
func TestWork(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t, migrate.VersionLatest)
	ctx := context.Background()
	d, err := db.Open(ctx, url, db.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	job, err := d.CreateJob(ctx, db.JobOptions{Domain: "example.com", Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	pages := make([]db.Page, 1200)
	for i := range pages {
		pages[i] = db.Page{Path: fmt.Sprintf("/p/%d", i)}
	}
	if _, err := d.EnqueuePages(ctx, job.ID, pages); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	var stdout, stderr sharedtest.Buffer
	done := make(chan int)
	go func() {
		done <- cli(runCtx, []string{"work", "--simulate", "--workers", "3", "--claim-batch", "10", "--progress", "0",
			"--database-url", url}, strings.NewReader(""), &stdout, &stderr)
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		j, err := d.GetJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status == tasks.JobStatusCompleted {
			break
		}
		if time.Now().After(deadline) {
			stop()
			<-done
			t.Fatalf("job not completed within a minute: %+v; stderr:\n%s", j.Progress, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	o := outcome{<-done, stdout.String(), stderr.String()}
	o.want(t, 0, "taskq: 3 workers on 127.0.0.1:", "simulating fetches of 0s, claims of up to 10 tasks, woken by LISTEN")
	if !regexp.MustCompile(`^ran \S+: 1,200 completed, 0 failed, 0 retried, 0 handed back; [\d,]+ tasks/s; claim p50 \S+ p99 \S+; efficiency \d+\.\d%\n$`).MatchString(o.stdout) {
		t.Errorf("work's summary is not as expected: %s", o)
	}
}

// TestStatsJSON: stats --json is one JSON object with every section.
func TestStatsJSON(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t, migrate.VersionLatest)
	got := decode[map[string]json.RawMessage](t, taskq(t, "", "stats", "--json", "--database-url", url).want(t, 0))
	for _, key := range []string{"window_seconds", "tasks_per_minute", "wait_events", "lock_waits", "queue_depth"} {
		if _, ok := got[key]; !ok {
			t.Errorf("stats --json has no %q: %v", key, got)
		}
	}
	taskq(t, "", "stats", "--database-url", url).want(t, 0, "Tasks finished per minute (last 15m0s)", "Queue depth")
}

// TestPoolerNeedsFlag: through PgBouncer in transaction mode, which refuses
// the session settings a direct connection sends, a command says to add
// --pooler, and works with it, the schema check included.
func TestPoolerNeedsFlag(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t, migrate.VersionLatest)
	bouncer := pgbouncertest.Start(t, url, pgbouncertest.Options{})
	for _, args := range [][]string{{"stats"}, {"job", "list"}, {"work", "--simulate"}} {
		taskq(t, "", append(args, "--database-url", bouncer.URL)...).want(t, 1, "add --pooler")
	}
	taskq(t, "", "stats", "--pooler", "--database-url", bouncer.URL).want(t, 0)
	id := strings.TrimSpace(taskq(t, "", "job", "create", "--domain", "example.com", "--pooler", "--database-url", bouncer.URL).want(t, 0).stdout)
	taskq(t, "", "job", "enqueue", id, "/", "--pooler", "--database-url", bouncer.URL).want(t, 0, "1 added")
}

// TestHelpAndVersion: --help exits 0 with the command's flags on stdout;
// --version names the schema.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"work", "--help"}, {"job", "--help"}, {"job", "enqueue", "-h"}, {"migrate", "-help"}} {
		o := taskq(t, "", args...).want(t, 0)
		if o.stdout == "" || o.stderr != "" {
			t.Errorf("taskq %q: want help on stdout alone, got %s", args, o)
		}
	}
	taskq(t, "", "work", "--help").want(t, 0, "efficiency", "handed back", "--progress")
	vs, _ := migrate.Versions(migrate.VersionLatest)
	taskq(t, "", "--version").want(t, 0, "schema "+vs[len(vs)-1])
	taskq(t, "", "version").want(t, 0, fmt.Sprintf("(%d migrations)", len(vs)))
	taskq(t, "").want(t, 2, "no command given")
	taskq(t, "", "bogus").want(t, 2, `unknown command "bogus"`)
}

// TestFigures: counts with thousands separated, durations rounded.
func TestFigures(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 41893: "41,893", -1234567: "-1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{
		1234567 * time.Nanosecond:              "1.23ms",
		45678 * time.Microsecond:               "45.7ms",
		2*time.Second + 345*time.Millisecond:   "2.35s",
		125*time.Second + 600*time.Millisecond: "2m6s",
		850 * time.Nanosecond:                  "850ns",
	} {
		if got := duration(d).String(); got != want {
			t.Errorf("duration(%d) = %s, want %s", d, got, want)
		}
	}
}

// TestProgressLines: when stderr is not a terminal, each tick prints the
// progress as a line of its own.
func TestProgressLines(t *testing.T) {
	t.Parallel()
	var out sharedtest.Buffer
	tick := make(chan time.Time)
	done := make(chan struct{})
	finished := make(chan struct{})
	n := 0
	go func() {
		defer close(finished)
		progressLoop(context.Background(), &out, tick, done, false, func() string { n++; return fmt.Sprintf("%d done", n) })
	}()
	tick <- time.Now()
	tick <- time.Now()
	close(done)
	<-finished
	if got, want := out.String(), "taskq: 1 done\ntaskq: 2 done\n"; got != want {
		t.Errorf("progress lines = %q, want %q", got, want)
	}
}

// TestTargetURL: the URL given is used as it is; libpq's environment
// becomes a URL dbmate can read, over TCP or a Unix socket.
func TestTargetURL(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("PGHOST", "/var/run/postgresql")
	t.Setenv("PGPORT", "5433")
	t.Setenv("PGUSER", "ops")
	t.Setenv("PGPASSWORD", "p@ss/word")
	t.Setenv("PGDATABASE", "prod")
	tg, err := resolveTarget("")
	if err != nil {
		t.Fatal(err)
	}
	u, err := tg.url("migrate")
	if err != nil {
		t.Fatal(err)
	}
	back, err := pgconn.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	if back.Host != "/var/run/postgresql" || back.Port != 5433 || back.User != "ops" || back.Password != "p@ss/word" || back.Database != "prod" {
		t.Errorf("URL %s reads back as %s:%d %s/%s %s", u, back.Host, back.Port, back.User, back.Password, back.Database)
	}
	if got, want := tg.String(), "/var/run/postgresql:5433/prod as ops (from PG* environment)"; got != want {
		t.Errorf("target = %q, want %q", got, want)
	}
	given := "postgres://a@h:1/d?sslmode=require&application_name=x"
	if tg, err = resolveTarget(given); err != nil {
		t.Fatal(err)
	}
	if u, _ := tg.url("migrate"); u != given {
		t.Errorf("url(%q) = %q, want it as given", given, u)
	}
	if tg, err = resolveTarget("host=h port=1"); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.url("migrate"); err == nil || !strings.Contains(err.Error(), "needs a postgres:// URL") {
		t.Errorf("a keyword/value string for migrate: %v", err)
	}
}
