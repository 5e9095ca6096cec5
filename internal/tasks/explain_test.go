package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/gensql"
	"github.com/blue-banded-bee/taskq/internal/migrate"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/internal/tasks"
)

// planNode is the part of EXPLAIN (FORMAT JSON) the checks read.
type planNode struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	IndexName    string     `json:"Index Name"`
	CTEName      string     `json:"CTE Name"`
	ActualRows   float64    `json:"Actual Rows"`
	ActualLoops  float64    `json:"Actual Loops"`
	Plans        []planNode `json:"Plans"`
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

func sprintAll[T any](v []T) []string {
	items := make([]string, len(v))
	for i, n := range v {
		items[i] = fmt.Sprint(n)
	}
	return items
}

// seedLargeQueue fills a running job of 32 shards with n tasks, a third of
// them already completed, next to three finished jobs whose 1.5 n completed
// tasks are history, as in a database that has been in use; then gathers
// statistics.
func seedLargeQueue(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	ctx := context.Background()
	_, err := pool.Exec(ctx, fmt.Sprintf(`
		INSERT INTO domains (name) VALUES ('big.example'), ('old.example');
		INSERT INTO jobs (id, domain_id, concurrency, status) VALUES ('big', 1, 1000, 'running');
		INSERT INTO jobs (id, domain_id, status, completed_at)
		SELECT 'old' || g, 2, 'completed', now() - interval '1 day' FROM generate_series(1, 3) g;
		DELETE FROM job_shards WHERE job_id LIKE 'old%%';
		INSERT INTO pages (domain_id, path) SELECT 1, '/p' || g FROM generate_series(1, %[1]d) g;
		INSERT INTO pages (domain_id, path) SELECT 2, '/p' || g FROM generate_series(1, %[1]d / 2) g;
		INSERT INTO tasks (job_id, page_id, path, priority_score, shard, status, completed_at)
		SELECT 'big', p.id, p.path, random(), p.id %% 32,
		       CASE WHEN p.id %% 3 = 0 THEN 'completed'::task_status ELSE 'pending' END,
		       CASE WHEN p.id %% 3 = 0 THEN now() END
		FROM pages p WHERE p.domain_id = 1;
		INSERT INTO tasks (job_id, page_id, path, priority_score, status, completed_at)
		SELECT 'old' || g, p.id, p.path, random(), 'completed', now() - interval '1 day'
		FROM pages p, generate_series(1, 3) g WHERE p.domain_id = 2;
		ANALYZE;`, n))
	if err != nil {
		t.Fatal(err)
	}
}

// seedFilledQueue fills a running job of 32 shards with n pending tasks, the
// only tasks of the table, as just after a large crawl is enqueued; then
// gathers statistics.
func seedFilledQueue(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), fmt.Sprintf(`
		INSERT INTO domains (name) VALUES ('big.example');
		INSERT INTO jobs (id, domain_id, concurrency, status)
		VALUES ('0d9c3bde-5b7e-4c41-9a8e-6f1b2a3c4d5e', 1, 100000, 'running');
		INSERT INTO pages (domain_id, path) SELECT 1, '/p' || g FROM generate_series(1, %d) g;
		INSERT INTO tasks (job_id, page_id, path, priority_score, shard)
		SELECT '0d9c3bde-5b7e-4c41-9a8e-6f1b2a3c4d5e', p.id, p.path, random(), p.id %% 32 FROM pages p;
		ANALYZE;`, n))
	if err != nil {
		t.Fatal(err)
	}
}

// TestQueueStatementsUseIndexes checks, on a queue of 100,000 tasks (and
// 150,000 finished ones) and on one just filled with 100,000 pending tasks,
// with statistics, that the claim, the other hot-path statements and the
// maintenance passes reach tasks through an index, in the plan a queue
// session runs and in a custom plan, and that the claim reads
// idx_tasks_claim. The old claim on the base schema
// is checked the same way and does scan, so the check is known to bite.
func TestQueueStatementsUseIndexes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("seeds 100,000 tasks")
	}
	now := time.Now()
	one := []string{"x"}
	cases := []struct {
		query     string
		args      []any
		wantIndex string
		// readsLiveJobs: the statement reads every task of the live jobs, so
		// scanning is right when they are the whole table (just filled).
		readsLiveJobs bool
		// gated: a maintenance statement whose update runs only when a probe
		// finds work (there is none here), and which may scan when it runs;
		// it is run (EXPLAIN ANALYZE, rolled back), and no scan of tasks may
		// execute.
		gated bool
	}{
		{"TaskClaim", []any{&now, int32(1), "w", int64(60000)}, "idx_tasks_claim", false, false},
		{"TaskClaim", []any{&now, int32(500), "w", int64(60000)}, "idx_tasks_claim", false, false},
		{"TaskClaimableExists", []any{&now}, "idx_tasks_claim", false, false},
		{"TaskFinishMany", []any{one, one, []int32{1}, []bool{false}, []bool{false}, []int32{200}, []int32{5},
			one, one, []int64{1}, [][]byte{[]byte("{}")}, one, &now, int64(1000), int64(100)}, "tasks_pkey", false, false},
		{"TaskExtendLease", []any{&now, int64(60000), one, one, []int32{1}}, "tasks_pkey", false, false},
		{"TaskReleaseMany", []any{one, one, []int32{1}, &now}, "tasks_pkey", false, false},
		{"TaskRescueExpired", []any{&now, int32(100)}, "idx_tasks_job_id_status", false, false},
		{"TaskRedealOrphans", nil, "idx_tasks_claim", false, true},
		{"JobSweepCancelled", nil, "idx_tasks_claim", false, true},
		{"JobLockDrained", nil, "idx_tasks_job_id_status", false, false},
		{"JobFinishDrained", []any{&now, one}, "idx_tasks_job_id_status", false, false},
		{"TaskEnqueue", []any{"x", int32(0), one, []float64{1}}, "pages_domain_id_path_key", false, false},
		{"QueueDepth", nil, "idx_tasks_job_id_status", true, false},
		{"TaskThroughputPerMinute", []any{int32(900)}, "idx_tasks_job_id_status", false, false},
	}
	// A queue in use, and one just filled: every task of the table pending
	// in one job, where a join on the job once planned a sequential scan.
	seeds := map[string]func(*testing.T, *pgxpool.Pool, int){"in use": seedLargeQueue, "just filled": seedFilledQueue}
	for queue, seed := range seeds {
		pool := pgtest.Pool(t, pgtest.URL(t, migrate.VersionLatest), 2)
		seed(t, pool, 100_000)
		for _, c := range cases {
			if c.readsLiveJobs && queue == "just filled" {
				continue
			}
			plans := explain(t, pool, c.query, gensql.MustQuery(c.query), c.args...)
			if c.gated {
				plans = explainAnalyze(t, pool, c.query, gensql.MustQuery(c.query), c.args...)
			}
			for kind, plan := range plans {
				var seqScans, indexes []string
				plan.walk(func(n planNode) {
					if n.NodeType == "Seq Scan" && n.RelationName == "tasks" && (!c.gated || n.ActualLoops > 0) {
						seqScans = append(seqScans, n.NodeType)
					}
					if n.IndexName != "" {
						indexes = append(indexes, n.IndexName)
					}
				})
				if len(seqScans) > 0 {
					t.Errorf("%s (queue %s, %s plan, %d args) scans tasks sequentially", c.query, queue, kind, len(c.args))
				}
				if !contains(indexes, c.wantIndex) {
					t.Errorf("%s (queue %s, %s plan) does not use %s; indexes used: %v", c.query, queue, kind, c.wantIndex, indexes)
				}
			}
		}
	}

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

// TestBatchStatementsScaleLinearly runs each statement that takes a batch
// (claim, finish, release, extend) on 500 tasks with EXPLAIN ANALYZE, in the
// generic plan the queue's sessions run and in a custom plan (pooler mode),
// and checks that no CTE is read more than once: a CTE on the inner side of
// a nested loop is read again for every outer row, and the statement then
// costs its batch size squared. TaskFinishMany once did that in its generic
// plan, and batches of 500 ran at half the rate of batches of 100.
func TestBatchStatementsScaleLinearly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n = 500
	f := setupConns(t, tasks.Config{}, 2)
	// 32 shards of n tasks each, so that one claim can take n.
	f.job(t, tasks.JobSpec{Concurrency: 32 * n}, 32*n)
	if _, err := f.pool.Exec(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	claimed, err := f.queue.Claim(ctx, "w", n)
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != n {
		t.Fatalf("claimed %d tasks, want %d", len(claimed), n)
	}
	var (
		ids, workers, texts []string
		attempts, codes     []int32
		falses              []bool
		lengths             []int64
		headers             [][]byte
	)
	for _, c := range claimed {
		ids = append(ids, c.ID)
		workers = append(workers, c.WorkerID)
		attempts = append(attempts, c.Attempt)
		texts = append(texts, "x")
		codes = append(codes, 200)
		falses = append(falses, false)
		lengths = append(lengths, 1)
		headers = append(headers, []byte(`{"Content-Type": ["text/html"]}`))
	}
	cases := []struct {
		query string
		args  []any
	}{
		{"TaskClaim", []any{&now, int32(n), "w2", int64(60000)}},
		{"TaskFinishMany", []any{ids, workers, attempts, falses, falses, codes, codes,
			texts, texts, lengths, headers, texts, &now, int64(1000), int64(100)}},
		{"TaskReleaseMany", []any{ids, workers, attempts, &now}},
		{"TaskExtendLease", []any{&now, int64(60000), ids, workers, attempts}},
	}
	for _, c := range cases {
		for kind, plan := range explainAnalyze(t, f.pool, c.query, gensql.MustQuery(c.query), c.args...) {
			if plan.ActualRows != n {
				t.Errorf("%s (%s plan) returned %v rows, want %d: the check needs a full batch", c.query, kind, plan.ActualRows, n)
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
	seedLargeQueue(t, pgtest.Pool(t, url, 2), 100_000)
	root := repoRoot(t)
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
	schema, err := filepath.Rel(dir, filepath.Join(root, "sql", "schema")) // sqlc wants a relative path
	if err != nil {
		t.Fatal(err)
	}
	config = []byte(strings.NewReplacer(
		"schema: sql/schema", "schema: "+schema,
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

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
