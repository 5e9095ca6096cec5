package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/gensql"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the checks read.
type planNode struct {
	NodeType     string  `json:"Node Type"`
	RelationName string  `json:"Relation Name"`
	IndexName    string  `json:"Index Name"`
	CTEName      string  `json:"CTE Name"`
	ActualRows   float64 `json:"Actual Rows"`
	ActualLoops  float64 `json:"Actual Loops"`
	// Rows a scan read and then dropped: a plan that filters what its index
	// cannot select reads them too.
	RemovedByFilter  float64    `json:"Rows Removed by Filter"`
	RemovedByRecheck float64    `json:"Rows Removed by Index Recheck"`
	Plans            []planNode `json:"Plans"`
	// An INSERT ... ON CONFLICT probes these for each row it inserts.
	ConflictArbiters []string `json:"Conflict Arbiter Indexes"`
}

// outline renders the plan one node a line, for a failed check's log.
func (n planNode) outline() string {
	var b strings.Builder
	var write func(planNode, int)
	write = func(n planNode, depth int) {
		fmt.Fprintf(&b, "%s%s %s %s %s rows=%v loops=%v\n", strings.Repeat("  ", depth),
			n.NodeType, n.CTEName, n.RelationName, n.IndexName, n.ActualRows, n.ActualLoops)
		for _, c := range n.Plans {
			write(c, depth+1)
		}
	}
	write(n, 0)
	return b.String()
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

// explain returns the plan of sql with args, as a custom plan (the values
// known) and as the generic plan that the queue's sessions run
// (plan_cache_mode = force_generic_plan, see tasks.ConfigurePool).
func explain(t *testing.T, pool *pgxpool.Pool, name, sql string, args ...any) map[string]planNode {
	t.Helper()
	return explainWith(t, pool, "FORMAT JSON", name, sql, args...)
}

// explainAnalyze is explain with the statement run (EXPLAIN ANALYZE), each
// time in a transaction that is rolled back, so that both plans run against
// the same rows.
func explainAnalyze(t *testing.T, pool *pgxpool.Pool, name, sql string, args ...any) map[string]planNode {
	t.Helper()
	return explainWith(t, pool, "ANALYZE, FORMAT JSON", name, sql, args...)
}

func explainWith(t *testing.T, pool *pgxpool.Pool, options, name, sql string, args ...any) map[string]planNode {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	plans := map[string]planNode{}
	read := func(kind, query string, args ...any) {
		var out []struct {
			Plan planNode `json:"Plan"`
		}
		var raw []byte
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // nothing is kept
		if err := tx.QueryRow(ctx, query, args...).Scan(&raw); err != nil {
			t.Fatalf("%s (%s plan): %v", name, kind, err)
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
		plans[kind] = out[0].Plan
	}
	read("custom", "EXPLAIN ("+options+") "+sql, args...)
	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "PREPARE explained AS "+sql); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "DEALLOCATE explained") //nolint:errcheck // the connection is released to a test pool
	// EXECUTE in a utility statement takes no bind parameters: the values
	// go in as text literals, which take each parameter's declared type.
	literals := make([]string, len(args))
	for i, a := range args {
		literals[i] = literal(t, a)
	}
	execute := "EXPLAIN (" + options + ") EXECUTE explained"
	if len(args) > 0 {
		execute += "(" + strings.Join(literals, ", ") + ")"
	}
	read("generic", execute)
	return plans
}

// literal renders a test argument as a quoted SQL literal.
func literal(t *testing.T, a any) string {
	t.Helper()
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	array := func(items []string) string { return quote("{" + strings.Join(items, ",") + "}") }
	switch v := a.(type) {
	case *time.Time:
		return quote(v.Format(time.RFC3339Nano))
	case int32, int64:
		return quote(fmt.Sprint(v))
	case string:
		return quote(v)
	case *string:
		if v == nil {
			return "NULL"
		}
		return quote(*v)
	case []string:
		items := make([]string, len(v))
		for i, s := range v {
			items[i] = `"` + s + `"`
		}
		return array(items)
	case []int32:
		return array(sprintAll(v))
	case []int64:
		return array(sprintAll(v))
	case []float64:
		return array(sprintAll(v))
	case []bool:
		items := make([]string, len(v))
		for i, b := range v {
			items[i] = fmt.Sprint(b)
		}
		return array(items)
	case [][]byte:
		items := make([]string, len(v))
		for i, b := range v {
			items[i] = `"` + strings.ReplaceAll(string(b), `"`, `\"`) + `"`
		}
		return array(items)
	}
	t.Fatalf("no literal for %T", a)
	return ""
}

// finishArgs are TaskFinishMany's arguments for claims (ids, workers,
// attempts), each completed with a full fetch result: a response, its
// redirect and timing, a second request and the cache checks.
func finishArgs(ids, workers []string, attempts []int32, now *time.Time) []any {
	var (
		texts   []string
		codes   []int32
		falses  []bool
		lengths []int64
		headers [][]byte
		checks  [][]byte
	)
	for range ids {
		texts = append(texts, "x")
		codes = append(codes, 200)
		falses = append(falses, false)
		lengths = append(lengths, 1)
		headers = append(headers, []byte(`{"Content-Type": ["text/html"]}`))
		checks = append(checks, []byte(`[]`))
	}
	return []any{ids, workers, attempts, falses, falses, falses, codes, codes,
		texts, texts, lengths, headers, texts,
		texts, codes, codes, codes, codes, codes,
		lengths, texts, lengths, headers, codes, codes, codes, codes, codes, checks,
		now, int64(1000), int64(100)}
}

func sprintAll[T any](v []T) []string {
	items := make([]string, len(v))
	for i, n := range v {
		items[i] = fmt.Sprint(n)
	}
	return items
}

// seedLargeQueue fills a running job of 32 shards with n tasks, a third of
// them already completed, next to three finished jobs whose 1.5 n completed
// tasks are history, as in a database that has been in use.
func seedLargeQueue(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	seedHistory(t, pool, n)
	seed(t, pool, fmt.Sprintf(`
		INSERT INTO domains (name) VALUES ('big.example');
		INSERT INTO jobs (id, domain_id, concurrency, status)
		SELECT '0d9c3bde-5b7e-4c41-9a8e-6f1b2a3c4d51', id, 1000, 'running' FROM domains WHERE name = 'big.example';
		INSERT INTO pages (domain_id, path)
		SELECT d.id, '/p' || g FROM domains d, generate_series(1, %d) g WHERE d.name = 'big.example';
		INSERT INTO tasks (job_id, page_id, path, priority_score, shard, status, completed_at)
		SELECT '0d9c3bde-5b7e-4c41-9a8e-6f1b2a3c4d51', p.id, p.path, random(), p.id %% 32,
		       CASE WHEN p.id %% 3 = 0 THEN 'completed'::task_status ELSE 'pending' END,
		       CASE WHEN p.id %% 3 = 0 THEN now() END
		FROM pages p JOIN domains d ON d.id = p.domain_id WHERE d.name = 'big.example';`, n))
}

// liveJob is a running job in every seeded state, whose pages /p1... are
// queued.
const liveJob = "0d9c3bde-5b7e-4c41-9a8e-6f1b2a3c4d51"

// anyJob is the claim's job_id for "any job".
var anyJob *string

// seedHistory adds three completed jobs whose 1.5 n completed tasks are
// history.
func seedHistory(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	seed(t, pool, fmt.Sprintf(`
		INSERT INTO domains (name) VALUES ('old.example');
		INSERT INTO jobs (id, domain_id, status, completed_at)
		SELECT 'old' || g, d.id, 'completed', now() - interval '1 day'
		FROM domains d, generate_series(1, 3) g WHERE d.name = 'old.example';
		DELETE FROM job_shards WHERE job_id LIKE 'old%%';
		INSERT INTO pages (domain_id, path)
		SELECT d.id, '/p' || g FROM domains d, generate_series(1, %d / 2) g WHERE d.name = 'old.example';
		INSERT INTO tasks (job_id, page_id, path, priority_score, status, completed_at)
		SELECT 'old' || g, p.id, p.path, random(), 'completed', now() - interval '1 day'
		FROM pages p JOIN domains d ON d.id = p.domain_id, generate_series(1, 3) g
		WHERE d.name = 'old.example';`, n))
}

// seedFilledQueue fills jobs running jobs of 32 shards with n pending tasks
// in all, as just after large crawls are enqueued.
func seedFilledQueue(t *testing.T, pool *pgxpool.Pool, n, jobs int) {
	t.Helper()
	seed(t, pool, fmt.Sprintf(`
		INSERT INTO domains (name) VALUES ('new.example');
		INSERT INTO jobs (id, domain_id, concurrency, status)
		SELECT '0d9c3bde-5b7e-4c41-9a8e-6f1b2a3c4d5' || g, d.id, 100000, 'running'
		FROM domains d, generate_series(1, %[2]d) g WHERE d.name = 'new.example';
		INSERT INTO pages (domain_id, path)
		SELECT d.id, '/p' || g FROM domains d, generate_series(1, %[1]d / %[2]d) g WHERE d.name = 'new.example';
		INSERT INTO tasks (job_id, page_id, path, priority_score, shard)
		SELECT j.id, p.id, p.path, random(), p.id %% 32
		FROM pages p JOIN jobs j ON j.domain_id = p.domain_id JOIN domains d ON d.id = p.domain_id
		WHERE d.name = 'new.example';`, n, jobs))
}

// seedThroughQueue creates jobs jobs (the first is liveJob) and enqueues n
// pages /p1... in all through the queue, in batches as a crawl's are, then
// runs and completes a few hundred tasks, as the load test's database is a
// second into its run.
func seedThroughQueue(t *testing.T, pool *pgxpool.Pool, n, jobs int) {
	t.Helper()
	ctx := context.Background()
	q := tasks.New(pool, tasks.Config{})
	for j := range jobs {
		spec := tasks.JobOptions{Domain: fmt.Sprintf("site%d.example", j), Concurrency: 1000}
		if j == 0 {
			spec.ID = liveJob
		}
		job, err := q.CreateJob(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		var batch []tasks.Page
		for i := 1; i <= n/jobs; i++ {
			batch = append(batch, tasks.Page{Path: fmt.Sprintf("/p%d", i), Priority: rand.Float64()})
			if len(batch) == 1000 || i == n/jobs {
				if _, err := q.Enqueue(ctx, job.ID, batch); err != nil {
					t.Fatal(err)
				}
				batch = batch[:0]
			}
		}
	}
	claimed, err := q.Claim(ctx, "seed", 500)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := make([]tasks.Outcome, len(claimed))
	for i, c := range claimed {
		outcomes[i] = tasks.Outcome{Task: c, Result: tasks.TaskResult{StatusCode: 200}}
	}
	if _, err := q.Finish(ctx, outcomes); err != nil {
		t.Fatal(err)
	}
}

func seed(t testing.TB, pool *pgxpool.Pool, sql string) {
	t.Helper()
	ctx := context.Background()
	// Set-up, not a queue statement: it may fill 100,000 rows on a busy
	// machine, past the pool's statement timeout.
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = 0"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, sql)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// statsStates are the states of a queue's tables as the planner can meet
// them: what the tables hold, and what their statistics last said. A crawl's
// rows are always newer than the statistics, and autovacuum's ANALYZE comes
// when it comes, so each queue statement must hold its plan in all of them.
// The states without a fresh ANALYZE switch autovacuum off on their (test)
// database's tables, so that it cannot analyze them during the test.
// emptyStats is the state whose statistics say that tasks is empty over
// its pages: every plan is costed at one row, and a full index scan with a
// filter costs the planner no more than a probe. The batch statements that
// probe tasks_pkey per row read the table through an index in it, and
// TaskEnqueue hashes its EXISTS over the table (known limits); it lasts
// until autovacuum's next ANALYZE, 50 changed rows later.
const emptyStats = "just filled, analyzed while it held only deleted rows"

var statsStates = []struct {
	name string
	// liveIsMost: the live jobs' tasks are much of the table, or more than
	// its statistics know of, so reading them all by a scan may be right.
	liveIsMost bool
	seed       func(*testing.T, *pgxpool.Pool, int)
}{
	{"in use, analyzed", false, func(t *testing.T, p *pgxpool.Pool, n int) {
		seedLargeQueue(t, p, n)
		seed(t, p, "ANALYZE")
	}},
	{"just filled, analyzed", true, func(t *testing.T, p *pgxpool.Pool, n int) {
		seedFilledQueue(t, p, n, 1)
		seed(t, p, "ANALYZE")
	}},
	{"just filled, never analyzed", true, func(t *testing.T, p *pgxpool.Pool, n int) {
		noAutovacuum(t, p)
		seedFilledQueue(t, p, n, 6)
	}},
	{"just filled, analyzed while empty", true, func(t *testing.T, p *pgxpool.Pool, n int) {
		noAutovacuum(t, p)
		seed(t, p, "ANALYZE")
		seedFilledQueue(t, p, n, 6)
	}},
	{emptyStats, true, func(t *testing.T, p *pgxpool.Pool, n int) {
		noAutovacuum(t, p)
		seedHistory(t, p, n)
		seed(t, p, "DELETE FROM tasks; ANALYZE")
		seedFilledQueue(t, p, n, 6)
	}},
	{"enqueued and partly run through the queue, never analyzed", true, func(t *testing.T, p *pgxpool.Pool, n int) {
		noAutovacuum(t, p)
		seedThroughQueue(t, p, n, 6)
	}},
	{"filled after history, analyzed on the history", true, func(t *testing.T, p *pgxpool.Pool, n int) {
		noAutovacuum(t, p)
		seedHistory(t, p, n)
		seed(t, p, "ANALYZE")
		seedFilledQueue(t, p, n, 6)
	}},
}

// noAutovacuum keeps autovacuum off the queue's tables in this database.
func noAutovacuum(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	for _, table := range []string{"domains", "pages", "jobs", "job_shards", "job_tallies", "job_admissions", "domain_paces", "tasks"} {
		seed(t, pool, "ALTER TABLE "+table+" SET (autovacuum_enabled = false)")
	}
}

// TestQueueStatementsUseIndexes runs the claim, the other hot-path statements
// and the maintenance passes (EXPLAIN ANALYZE, rolled back) in each of
// statsStates, on 100,000 tasks, in the plan a queue session runs and in a
// custom plan, and checks that each reaches tasks through its intended index,
// never scans tasks, and reads no more tasks rows than its work needs: a
// plan can use the right index and still read the whole table through it (a
// nested loop with tasks on the outer side once did). The old claim on the
// base schema is checked the same way and does scan, so the check is known to
// bite.
func TestQueueStatementsUseIndexes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("seeds 100,000 tasks in each of six states")
	}
	now := time.Now()
	one := []string{"x"}
	var links []string
	var linkPriorities []float64
	for i := 1; i <= 30; i++ {
		if i <= 20 {
			links = append(links, fmt.Sprintf("/p%d", i))
		} else {
			links = append(links, fmt.Sprintf("/new%d", i))
		}
		linkPriorities = append(linkPriorities, 0.5)
	}
	cases := []struct {
		query string
		args  []any
		// wantIndex: an index the plan must use (alternatives separated by "|").
		wantIndex string
		// reads bounds the tasks or pages rows any one plan node may read
		// (actual rows times loops); 0: as many as the statement's answer
		// holds.
		reads int
		// readsLiveJobs: the statement reads every task of the live jobs, so
		// scanning is right when they are the whole table (just filled).
		readsLiveJobs bool
		// knownLimitIn names a state in which the statement is known to read
		// more than its work needs (logged, not failed): see DATABASE.md,
		// "Plans that do not wait for ANALYZE".
		knownLimitIn string
	}{
		// A claim probes at most every shard once, then takes its batch.
		{"TaskClaim", []any{anyJob, &now, int32(1), "w", int64(60000), int64(0)}, "idx_tasks_claim", 32 + 1, false, ""},
		{"TaskClaim", []any{anyJob, &now, int32(500), "w", int64(60000), int64(0)}, "idx_tasks_claim", 32 + 500, false, ""},
		{"TaskClaimableExists", []any{anyJob, &now}, "idx_tasks_claim", 32, false, ""},
		// The application's GetNextTask(ctx, jobID): one job's shards only.
		{"TaskClaim", []any{liveJob, &now, int32(1), "w", int64(60000), int64(0)}, "idx_tasks_claim", 32 + 1, false, ""},
		{"TaskClaim", []any{liveJob, &now, int32(500), "w", int64(60000), int64(0)}, "idx_tasks_claim", 32 + 500, false, ""},
		{"TaskClaimableExists", []any{liveJob, &now}, "idx_tasks_claim", 32, false, ""},
		{"TaskFinishMany", finishArgs(one, one, []int32{1}, &now), "tasks_pkey", 1, false, emptyStats},
		{"TaskExtendLease", []any{&now, int64(60000), one, one, []int32{1}}, "tasks_pkey", 1, false, emptyStats},
		{"TaskReleaseMany", []any{one, one, []int32{1}, &now}, "tasks_pkey", 1, false, emptyStats},
		{"TaskRescueExpired", []any{&now, int32(100)}, "idx_tasks_job_id_status", 100, false, ""},
		{"TaskRedealOrphans", nil, "idx_tasks_claim", 32, false, ""},
		{"JobSweepCancelled", nil, "idx_tasks_claim", 32, false, ""},
		{"JobLockDrained", nil, "idx_tasks_job_id_status", 32, false, ""},
		{"JobFinishDrained", []any{&now, one}, "idx_tasks_job_id_status", 32, false, ""},
		// A page's links: 20 the job has, 10 it has not.
		{"PageUpsertMany", []any{liveJob, links}, "pages_domain_id_path_key", 30, false, ""},
		{"QueueDepth", nil, "idx_tasks_job_id_status", 0, true, ""},
		{"TaskThroughputPerMinute", []any{int32(900)}, "idx_tasks_job_id_status", 0, false, ""},
	}
	// The same claims with the live job's domain paced (in the states
	// seeded by seedFilledQueue every job is on it), next to 1,000 other
	// paced domains: first with its next start due, then an hour away.
	type explainCase = struct {
		query         string
		args          []any
		wantIndex     string
		reads         int
		readsLiveJobs bool
		knownLimitIn  string
	}
	pacedCases := []explainCase{
		{"TaskClaim", []any{anyJob, &now, int32(1), "w", int64(60000), int64(0)}, "domain_paces_pkey", 32 + 1, false, ""},
		{"TaskClaim", []any{anyJob, &now, int32(500), "w", int64(60000), int64(0)}, "domain_paces_pkey", 32 + 500, false, ""},
		{"TaskClaim", []any{liveJob, &now, int32(500), "w", int64(60000), int64(0)}, "domain_paces_pkey", 32 + 500, false, ""},
		// With no domain due, a plan that materialises job_shards probes
		// every shard once (6 jobs of 32 here) before it can answer.
		{"TaskClaimableExists", []any{anyJob, &now}, "domain_paces_pkey", 6 * 32, false, ""},
		// Probes every paced shard with room, once.
		{"TaskPacedNext", []any{&now, anyJob}, "domain_paces_pkey", 6 * 32, false, ""},
		{"TaskPacedNext", []any{&now, liveJob}, "domain_paces_pkey", 32, false, ""},
		{"DomainPaceLearn", []any{[]string{liveJob, liveJob}, []bool{true, false}, []int64{2000, 0},
			int64(60000), int64(500), int32(5), &now}, "domain_paces_pkey", 0, false, ""},
	}
	pace := fmt.Sprintf(`
		INSERT INTO domains (name) SELECT 'paced' || g || '.example' FROM generate_series(1, 1000) g;
		INSERT INTO domain_paces (domain_id, interval_ms, source)
		SELECT id, 1000, 'set' FROM domains WHERE name LIKE 'paced%%'
		UNION ALL SELECT domain_id, 1000, 'set' FROM jobs WHERE id = '%[1]s';
		UPDATE job_shards s SET paced_domain_id = j.domain_id
		FROM jobs j WHERE j.id = s.job_id AND j.domain_id = (SELECT domain_id FROM jobs WHERE id = '%[1]s');`, liveJob)
	notDue := "UPDATE domain_paces SET next_allowed_at = now() + interval '1 hour'"
	for _, state := range statsStates {
		t.Run(state.name, func(t *testing.T) {
			pool := pgtest.Pool(t, pgtest.URL(t, migrate.VersionLatest), 2)
			state.seed(t, pool, 100_000)
			checkPlans(t, pool, state.name, state.liveIsMost, cases)
			t.Run("job_tallies_release", func(t *testing.T) { checkTallyPlans(t, pool) })
			// The same links' tasks, their pages created (as PageUpsertMany
			// leaves them): 20 the job has, 10 new to it. Whether the job
			// has a page is a probe of tasks_job_id_page_id_key, or of
			// idx_tasks_page_id where the statistics say a page has one task
			// (the reads bound holds either way). Where they say the table is
			// empty, the probe goes through idx_tasks_job_id_status: a known
			// limit. A plan made while the table was small, run once it is
			// large: TestEnqueuePlansForTheTableItMeets.
			seed(t, pool, fmt.Sprintf(`INSERT INTO pages (domain_id, path)
				SELECT j.domain_id, p FROM jobs j, unnest('%s'::text[]) p WHERE j.id = '%s'
				ON CONFLICT DO NOTHING`, pgArray(links), liveJob))
			checkPlans(t, pool, state.name, state.liveIsMost, []explainCase{
				{"TaskEnqueue", []any{liveJob, int32(0), pageIDsOf(t, pool, liveJob, links), links, linkPriorities, "link", "https://example.com/", tasks.NotifyChannel},
					"tasks_job_id_page_id_key|idx_tasks_page_id", 30, false, emptyStats},
			})
			seed(t, pool, pace)
			t.Run("paced, due", func(t *testing.T) { checkPlans(t, pool, state.name, state.liveIsMost, pacedCases) })
			seed(t, pool, notDue)
			t.Run("paced, not due", func(t *testing.T) { checkPlans(t, pool, state.name, state.liveIsMost, pacedCases) })
		})
	}

	// idx_tasks_claim must be the only index that can serve the claim, not
	// merely the cheapest in the states above: the load test's database
	// met a state in which the planner preferred idx_tasks_job_id_status and
	// a sort. Without idx_tasks_claim, the claim can only scan.
	t.Run("no other index serves the claim's probes", func(t *testing.T) {
		pool := pgtest.Pool(t, pgtest.URL(t, migrate.VersionLatest), 2)
		seedFilledQueue(t, pool, 10_000, 6)
		for _, c := range cases {
			// The maintenance passes' gated updates may use other indexes.
			if !strings.HasPrefix(c.query, "TaskClaim") {
				continue
			}
			ctx := context.Background()
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// On a failure too: an open transaction would hold the pool's
			// Close, and the test would hang instead of failing.
			defer tx.Rollback(ctx) //nolint:errcheck // rolled back below, or after a failure
			if _, err := tx.Exec(ctx, "DROP INDEX idx_tasks_claim"); err != nil {
				t.Fatal(err)
			}
			var raw []byte
			if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+gensql.MustQuery(c.query), c.args...).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			var out []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatal(err)
			}
			out[0].Plan.walk(func(n planNode) {
				if n.RelationName == "tasks" && n.IndexName != "" && n.IndexName != "tasks_pkey" {
					t.Errorf("%s reads %s where idx_tasks_claim is missing: another index can serve it", c.query, n.IndexName)
				}
			})
		}
	})

	legacy := pgtest.Pool(t, pgtest.URL(t, migrate.VersionBaseSchema), 2)
	if _, err := legacy.Exec(context.Background(), `
		INSERT INTO domains (name) VALUES ('big.example');
		INSERT INTO jobs (id, domain_id, status) VALUES ('big', 1, 'running');
		INSERT INTO pages (domain_id, path) SELECT 1, '/p' || g FROM generate_series(1, 100000) g;
		ALTER TABLE tasks DISABLE TRIGGER tasks_update_job_counters;
		INSERT INTO tasks (job_id, page_id, path, priority_score) SELECT 'big', id, path, random() FROM pages;
		ANALYZE;`); err != nil {
		t.Fatal(err)
	}
	scanned := false
	explain(t, legacy, "LegacyTaskNextPending", gensql.MustQuery("LegacyTaskNextPending"))["generic"].walk(func(n planNode) {
		scanned = scanned || (n.NodeType == "Seq Scan" && n.RelationName == "tasks")
	})
	if !scanned {
		t.Errorf("the old claim on the base schema should scan tasks; the check cannot tell")
	}
}

// TestClaimMeetsOnlyShardsItMayTake: next to 300 jobs of paced domains whose
// next start is an hour away, a claim of an unpaced job reads no paced shard,
// whatever the statistics say (never analyzed, analyzed with them present,
// analyzed before any existed), in the plan a queue session runs and in a
// custom plan; once those domains are due, a claim takes one of their tasks
// before the unpaced job's, and reads as few shards.
func TestClaimMeetsOnlyShardsItMayTake(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("creates 300 jobs in each of three states")
	}
	for _, analyze := range []string{"never", "after the jobs", "before the jobs"} {
		t.Run("analyzed "+analyze, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := setupConns(t, tasks.Config{Now: time.Now}, 2)
			if analyze != "after the jobs" {
				noAutovacuum(t, f.pool)
			}
			if analyze == "before the jobs" {
				seed(t, f.pool, "ANALYZE")
			}
			// The unpaced job between paced ones (a second job on each of
			// the 150 domains): a scan in the table's order would meet paced
			// shards before its own, and its own before the rest.
			pacedDomains(t, f, 150, 1, time.Second, true)
			free := f.job(t, tasks.JobOptions{Domain: "free.example", Concurrency: 64}, 100)
			pacedDomains(t, f, 150, 1, time.Second, true)
			if analyze == "after the jobs" {
				seed(t, f.pool, "ANALYZE")
			}
			var unpaced int
			if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM job_shards WHERE paced_domain_id IS NULL").Scan(&unpaced); err != nil {
				t.Fatal(err)
			}
			// The claim's scans of job_shards, and its update's probe.
			shardReads := func() {
				t.Helper()
				now := time.Now()
				for kind, plan := range explainAnalyze(t, f.pool, "TaskClaim", gensql.MustQuery("TaskClaim"),
					anyJob, &now, int32(1), "w", int64(60000), int64(0)) {
					read := 0.0
					plan.walk(func(n planNode) {
						if n.RelationName == "job_shards" && strings.Contains(n.NodeType, "Scan") {
							read += n.ActualRows*n.ActualLoops + n.RemovedByFilter + n.RemovedByRecheck
						}
					})
					if read > float64(unpaced+1) {
						t.Errorf("%s plan: the claim read %v job_shards rows; at most %d expected (the unpaced shards and the update's); the plan:\n%s",
							kind, read, unpaced+1, plan.outline())
					}
				}
			}
			shardReads()
			task, err := f.queue.ClaimOne(ctx, "w")
			if err != nil || task == nil || task.JobID != free.ID {
				t.Fatalf("ClaimOne next to paced domains not due = %+v, %v; want a task of %s", task, err, free.ID)
			}
			seed(t, f.pool, `
				UPDATE domain_paces SET next_allowed_at = now() - interval '1 second';
				UPDATE job_shards SET paced_until = now() - interval '1 second' WHERE paced_domain_id IS NOT NULL`)
			shardReads()
			task, err = f.queue.ClaimOne(ctx, "w")
			if err != nil || task == nil || task.JobID == free.ID {
				t.Fatalf("ClaimOne with the paced domains due = %+v, %v; want a paced domain's task first", task, err)
			}
		})
	}
}

// TestShardVersionsStayMarkable makes many dead versions of the shards'
// rows while a snapshot can still see them (as concurrent claims'
// transactions do under load; claims' own versions come from updates that
// find no room on their page for a HOT one) and checks that
// idx_job_shards_claim_order holds no posting list: every unpaced shard has the same key there, and
// B-tree deduplication, when a page filled, merged the dead versions'
// entries with the live shards' into posting lists, which no scan can mark
// dead unless every row in them is. Every claim then read every dead version
// until a VACUUM (DATABASE.md, "No deduplication in that index"). The
// entries a claim reads once the snapshot ends are not checked here: when a
// scan may mark an entry depends on every session of the server, not only
// this test's.
func TestShardVersionsStayMarkable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := setupConns(t, tasks.Config{Now: time.Now}, 2)
	noAutovacuum(t, f.pool)
	f.job(t, tasks.JobOptions{Domain: "a.example", Concurrency: 64}, 100)
	snapshot, err := f.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer snapshot.Rollback(ctx) //nolint:errcheck // it only reads
	if _, err := snapshot.Exec(ctx, "SELECT count(*) FROM job_shards"); err != nil {
		t.Fatal(err)
	}
	for range 40 {
		// Updates of an indexed column are not HOT: each leaves a dead entry
		// under the unpaced shards' key.
		seed(t, f.pool, `UPDATE job_shards SET paced_until = 'epoch'::timestamptz + interval '1 second'`)
		seed(t, f.pool, `UPDATE job_shards SET paced_until = 'epoch'`)
	}
	// As a superuser (the test role is one): pageinspect reads the pages.
	seed(t, f.pool, "CREATE EXTENSION IF NOT EXISTS pageinspect")
	var shards, pages, rows, postings int
	err = f.pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM job_shards), count(DISTINCT b),
		       coalesce(sum(CASE WHEN i.tids IS NOT NULL THEN cardinality(i.tids) WHEN i.htid IS NOT NULL THEN 1 ELSE 0 END), 0),
		       count(*) FILTER (WHERE i.tids IS NOT NULL)
		FROM generate_series(1, pg_relation_size('idx_job_shards_claim_order') / current_setting('block_size')::int - 1) b,
		     bt_page_items('idx_job_shards_claim_order', b::int) i`).Scan(&shards, &pages, &rows, &postings)
	if err != nil {
		t.Fatal(err)
	}
	if rows < 80*shards {
		t.Fatalf("idx_job_shards_claim_order points at %d row versions (%d pages); %d updates of %d shards should have left at least %d",
			rows, pages, 80, shards, 80*shards)
	}
	if postings > 0 {
		t.Errorf("idx_job_shards_claim_order holds %d posting lists (%d row versions, %d pages): dead shard versions merged with live ones, which no scan can mark",
			postings, rows, pages)
	}
}

// TestBatchStatementsScaleLinearly runs each statement that takes a batch
// (claim, finish, release, extend) on 500 tasks with EXPLAIN ANALYZE, in the
// generic plan the queue's sessions run and in a custom plan (pooler mode),
// and checks that no CTE is read more than once: a CTE on the inner side of
// a nested loop is read again for every outer row, and the statement then
// costs its batch size squared. TaskFinishMany once did that in its generic
// plan, and batches of 500 ran at half the rate of batches of 100.
func TestBatchStatementsScaleLinearly(t *testing.T) {
	t.Parallel()
	for _, analyze := range []string{"after the enqueue", "never", "before the enqueue"} {
		t.Run("analyzed "+analyze, func(t *testing.T) { batchStatementsScaleLinearly(t, analyze) })
	}
}

func batchStatementsScaleLinearly(t *testing.T, analyze string) {
	ctx := context.Background()
	const n = 500
	f := setupConns(t, tasks.Config{}, 2)
	if analyze != "after the enqueue" {
		noAutovacuum(t, f.pool)
	}
	if analyze == "before the enqueue" {
		seed(t, f.pool, "ANALYZE")
	}
	// 32 shards of n tasks each, so that one claim can take n.
	job := f.job(t, tasks.JobOptions{Concurrency: 32 * n}, 32*n)
	if analyze == "after the enqueue" {
		seed(t, f.pool, "ANALYZE")
	}
	now := f.clock.Now()
	claimed, err := f.queue.Claim(ctx, "w", n)
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != n {
		t.Fatalf("claimed %d tasks, want %d", len(claimed), n)
	}
	var ids, workers []string
	var attempts []int32
	for _, c := range claimed {
		ids = append(ids, c.ID)
		workers = append(workers, c.WorkerID)
		attempts = append(attempts, c.Attempt)
	}
	// A flush's links: n paths, the first half pages the job has, the rest
	// pages of the domain the job has not (as PageUpsertMany leaves them).
	seed(t, f.pool, fmt.Sprintf(`INSERT INTO pages (domain_id, path)
		SELECT j.domain_id, '/scale/new/' || i FROM jobs j, generate_series(0, %d) i WHERE j.id = '%s'`, n-1, job.ID))
	var links []string
	var priorities []float64
	known := pages(n / 2)
	for i := range n {
		path := fmt.Sprintf("/scale/new/%d", i)
		if i < n/2 {
			path = known[i].Path
		}
		links = append(links, path)
		priorities = append(priorities, 0.5)
	}
	cases := []struct {
		query string
		args  []any
		// rows is how many rows the statement returns; 0: n.
		rows float64
	}{
		{"TaskClaim", []any{anyJob, &now, int32(n), "w2", int64(60000), int64(0)}, 0},
		{"TaskFinishMany", finishArgs(ids, workers, attempts, &now), 0},
		{"TaskReleaseMany", []any{ids, workers, attempts, &now}, 0},
		{"TaskExtendLease", []any{&now, int64(60000), ids, workers, attempts}, 0},
		{"TaskEnqueue", []any{job.ID, int32(0), pageIDsOf(t, f.pool, job.ID, links), links, priorities, "link", "https://example.com/", tasks.NotifyChannel}, 1},
	}
	for _, c := range cases {
		want := c.rows
		if want == 0 {
			want = n
		}
		for kind, plan := range explainAnalyze(t, f.pool, c.query, gensql.MustQuery(c.query), c.args...) {
			if plan.ActualRows != want {
				t.Errorf("%s (%s plan) returned %v rows, want %v: the check needs a full batch", c.query, kind, plan.ActualRows, want)
			}
			plan.walk(func(node planNode) {
				if read := node.ActualRows * node.ActualLoops; node.NodeType == "CTE Scan" && read > n {
					t.Errorf("%s (%s plan) reads CTE %s %v times for %v rows: %v rows for a batch of %d",
						c.query, kind, node.CTEName, node.ActualLoops, node.ActualRows, read, n)
				}
			})
		}
	}
}

// checkPlans runs each case's statement in both plans (EXPLAIN ANALYZE,
// rolled back) and fails when one scans tasks or pages, misses its index, or
// reads more rows of them than its work needs (see
// TestQueueStatementsUseIndexes).
func checkPlans(t *testing.T, pool *pgxpool.Pool, stateName string, liveIsMost bool, cases []struct {
	query         string
	args          []any
	wantIndex     string
	reads         int
	readsLiveJobs bool
	knownLimitIn  string
}) {
	t.Helper()
	for _, c := range cases {
		if c.readsLiveJobs && liveIsMost {
			continue
		}
		for kind, plan := range explainAnalyze(t, pool, c.query, gensql.MustQuery(c.query), c.args...) {
			name := fmt.Sprintf("%s (%s plan, %d args)", c.query, kind, len(c.args))
			var problems, indexes []string
			plan.walk(func(n planNode) {
				if n.IndexName != "" {
					indexes = append(indexes, n.IndexName)
				}
				indexes = append(indexes, n.ConflictArbiters...)
				if (n.RelationName != "tasks" && n.RelationName != "pages") || n.ActualLoops == 0 {
					return
				}
				if n.NodeType == "Seq Scan" {
					problems = append(problems, "scans "+n.RelationName+" sequentially")
				}
				// Removed rows are totals over the loops; returned rows are per loop.
				if read := n.ActualRows*n.ActualLoops + n.RemovedByFilter + n.RemovedByRecheck; c.reads > 0 && read > float64(c.reads) {
					problems = append(problems, fmt.Sprintf("reads %v %s rows in a %s %s, at most %d expected",
						read, n.RelationName, n.NodeType, n.IndexName, c.reads))
				}
			})
			if !slices.ContainsFunc(strings.Split(c.wantIndex, "|"), func(want string) bool { return contains(indexes, want) }) {
				problems = append(problems, fmt.Sprintf("does not use %s; indexes used: %v", c.wantIndex, indexes))
			}
			if len(problems) > 0 && c.knownLimitIn == stateName {
				t.Logf("%s: %s (a known limit in this state)", name, strings.Join(problems, "; "))
				continue
			}
			if len(problems) > 0 {
				t.Errorf("%s: %s; the plan:\n%s", name, strings.Join(problems, "; "), plan.outline())
			}
		}
	}
}

// checkTallyPlans releases tasks through each statement that counts them
// into job_tallies (finish, hand back, rescue), with auto_explain logging
// the statements job_tallies_release runs to this session, in the plan a
// queue session runs and in a custom plan: EXPLAIN of the calling statement
// shows only the call. It fails unless the function ran, one UPDATE per
// shard released from, each one probe of job_tallies_pkey.
func checkTallyPlans(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
		for _, query := range []string{"TaskFinishMany", "TaskReleaseMany", "TaskRescueExpired"} {
			name := fmt.Sprintf("%s (%s)", query, mode)
			var notices []string
			cfg := pool.Config().ConnConfig.Copy()
			cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n.Message) }
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var shards int
			err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				// Two claims: two shards, tallied in key order.
				now := time.Now()
				var ids, workers []string
				var attempts []int32
				for range 2 {
					rows, err := tx.Query(ctx, gensql.MustQuery("TaskClaim"), anyJob, &now, int32(10), "w", int64(60000), int64(0))
					if err != nil {
						return err
					}
					claimed, err := pgx.CollectRows(rows, pgx.RowToMap)
					if err != nil {
						return err
					}
					for _, c := range claimed {
						ids, workers, attempts = append(ids, c["id"].(string)), append(workers, "w"), append(attempts, c["attempt"].(int32))
					}
				}
				if err := tx.QueryRow(ctx, "SELECT count(DISTINCT (job_id, shard)) FROM tasks WHERE id = ANY($1)", ids).Scan(&shards); err != nil {
					return err
				}
				for _, set := range []string{"LOAD 'auto_explain'", "SET LOCAL plan_cache_mode = " + mode,
					"SET LOCAL auto_explain.log_min_duration = 0", "SET LOCAL auto_explain.log_nested_statements = on",
					"SET LOCAL auto_explain.log_analyze = on", "SET LOCAL auto_explain.log_format = json",
					"SET LOCAL auto_explain.log_level = notice"} {
					if _, err := tx.Exec(ctx, set); err != nil {
						return err
					}
				}
				var args []any
				switch query {
				case "TaskFinishMany":
					args = finishArgs(ids, workers, attempts, &now)
				case "TaskReleaseMany":
					args = []any{ids, workers, attempts, &now}
				case "TaskRescueExpired":
					later := now.Add(time.Hour)
					args = []any{&later, int32(100)}
				}
				rows, err := tx.Query(ctx, gensql.MustQuery(query), args...)
				if err != nil {
					return err
				}
				released, err := pgx.CollectRows(rows, pgx.RowToMap)
				if err != nil {
					return err
				}
				if len(released) != len(ids) || shards == 0 {
					return fmt.Errorf("released %d of %d tasks claimed from %d shards: the check needs them all", len(released), len(ids), shards)
				}
				return errRollback
			})
			conn.Close(ctx)
			if !errors.Is(err, errRollback) {
				t.Fatalf("%s: %v", name, err)
			}
			updates := 0
			for _, n := range notices {
				var logged struct {
					Plan planNode `json:"Plan"`
				}
				if i := strings.Index(n, "{"); i < 0 || json.Unmarshal([]byte(n[i:]), &logged) != nil {
					t.Fatalf("%s: not an auto_explain plan: %s", name, n)
				}
				logged.Plan.walk(func(p planNode) {
					if p.RelationName != "job_tallies" {
						return
					}
					if p.NodeType == "ModifyTable" {
						updates++
						return
					}
					if p.IndexName != "job_tallies_pkey" || p.ActualRows*p.ActualLoops > 1 {
						t.Errorf("%s: job_tallies_release reads job_tallies in a %s %s, %v rows; the plan:\n%s",
							name, p.NodeType, p.IndexName, p.ActualRows*p.ActualLoops, logged.Plan.outline())
					}
				})
			}
			if updates != shards {
				t.Errorf("%s: job_tallies_release updated job_tallies %d times for %d shards", name, updates, shards)
			}
		}
	}
}

// errRollback ends a pgx.BeginFunc whose work is only looked at.
var errRollback = errors.New("rolled back")

// pageIDsOf is the ids of the pages of paths on the job's domain, in their
// order, as PageUpsertMany returns them to TaskEnqueue.
func pageIDsOf(t *testing.T, pool *pgxpool.Pool, jobID string, paths []string) []int32 {
	t.Helper()
	var ids []int32
	err := pool.QueryRow(context.Background(), `
		SELECT array_agg(p.id ORDER BY w.ord)
		FROM jobs j, unnest($2::text[]) WITH ORDINALITY w(path, ord), pages p
		WHERE j.id = $1 AND p.domain_id = j.domain_id AND p.path = w.path`, jobID, paths).Scan(&ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(paths) {
		t.Fatalf("%d pages of %d paths", len(ids), len(paths))
	}
	return ids
}

// pgArray is paths as a text[] literal (plain paths: no quotes or commas).
func pgArray(paths []string) string {
	return "{" + strings.Join(paths, ",") + "}"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestSqlcVet runs `sqlc vet` (sqlc.yaml's rules) against a database holding
// a queue of 100,000 tasks and 150,000 finished ones with statistics: every
// query must prepare, and none may scan tasks or pages sequentially. A query
// that does scan is then added in a copy of the configuration, and vet must
// reject it, so the rule is known to bite.
func TestSqlcVet(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("seeds 250,000 tasks and builds sqlc")
	}
	url := pgtest.URL(t, migrate.VersionLatest)
	pool := pgtest.Pool(t, url, 2)
	seedLargeQueue(t, pool, 100_000)
	seed(t, pool, "ANALYZE")
	root := sharedtest.RepoRoot(t)
	// The built sqlc binary (go tool -n prints its path), to run it outside
	// the module too.
	which := exec.Command("go", "tool", "-n", "-modfile=tools/go.mod", "sqlc")
	which.Dir = root
	bin, err := which.Output()
	if err != nil {
		t.Fatalf("go tool -n sqlc: %v", err)
	}
	vet := func(dir, config string) (string, error) {
		cmd := exec.Command(strings.TrimSpace(string(bin)), "vet", "-f", config)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "VET_DATABASE_URL="+url)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := vet(root, "sqlc.yaml"); err != nil {
		t.Fatalf("sqlc vet: %v\n%s", err, out)
	}

	dir := t.TempDir()
	config, err := os.ReadFile(filepath.Join(root, "sqlc.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// sqlc wants relative paths.
	schema, err := filepath.Rel(dir, filepath.Join(root, "sql", "schema"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := filepath.Rel(dir, filepath.Join(root, "sql", "meta"))
	if err != nil {
		t.Fatal(err)
	}
	config = []byte(strings.NewReplacer(
		"- sql/schema\n", "- "+schema+"\n",
		"- sql/meta\n", "- "+meta+"\n",
		"queries: sql/queries", "queries: queries",
	).Replace(string(config)))
	if err := os.WriteFile(filepath.Join(dir, "sqlc.yaml"), config, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "queries"), 0o755); err != nil {
		t.Fatal(err)
	}
	scan := "-- name: TasksByPath :many\nSELECT id FROM tasks WHERE path = sqlc.arg(path)::text;\n"
	if err := os.WriteFile(filepath.Join(dir, "queries", "scan.sql"), []byte(scan), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := vet(dir, "sqlc.yaml")
	if err == nil || !strings.Contains(out, "no-seq-scan-on-large-tables") {
		t.Fatalf("sqlc vet passed a query that scans tasks: %v\n%s", err, out)
	}
}
