package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/db"
	"github.com/blue-banded-bee/taskq/internal/gensql"
	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/tasks"
)

// TestEnqueuePlansForTheTableItMeets: a crawl's first enqueues meet a nearly
// empty tasks table, and the same sessions go on enqueueing while it grows,
// long before autovacuum's ANALYZE. A plan made at the start and kept (a
// prepared statement's) takes the table for the few rows it had. Enqueue is
// planned for the table as it is: on a session whose first enqueues went
// into the empty table, once the table holds 100,000 tasks (never
// analysed), its "is this page queued" probe reads at most one task per
// page. The same statement prepared on that session, with the same history,
// reads far more, so the state is the one that matters.
func TestEnqueuePlansForTheTableItMeets(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("seeds 100,000 tasks")
	}
	ctx := context.Background()
	url := pgtest.URL(t, migrate.VersionLatest)
	admin := pgtest.Pool(t, url, 2)
	noAutovacuum(t, admin)

	// One session, every statement's plan logged to it (auto_explain).
	var mu sync.Mutex
	var plans []planNode
	cfg, err := db.PoolConfig(url, db.Options{MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		var logged struct {
			Query string   `json:"Query Text"`
			Plan  planNode `json:"Plan"`
		}
		if i := strings.Index(n.Message, "{"); i < 0 || json.Unmarshal([]byte(n.Message[i:]), &logged) != nil {
			return
		}
		if strings.Contains(logged.Query, "name: TaskEnqueue") {
			mu.Lock()
			plans = append(plans, logged.Plan)
			mu.Unlock()
		}
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		for _, set := range []string{"LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
			"SET auto_explain.log_analyze = on", "SET auto_explain.log_format = json",
			"SET auto_explain.log_level = notice"} {
			if _, err := c.Exec(ctx, set); err != nil {
				return err
			}
		}
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	q := tasks.New(pool, tasks.Config{})
	job, err := q.CreateJob(ctx, tasks.JobOptions{Domain: "example.com", Concurrency: 1000})
	if err != nil {
		t.Fatal(err)
	}
	// prepared runs TaskEnqueue as a prepared statement on the same session.
	prepared := func(paths []string) {
		t.Helper()
		_, err := admin.Exec(ctx, `INSERT INTO pages (domain_id, path)
			SELECT domain_id, unnest($2::text[]) FROM jobs WHERE id = $1 ON CONFLICT DO NOTHING`, job.ID, paths)
		if err != nil {
			t.Fatal(err)
		}
		priorities := make([]float64, len(paths))
		_, err = pool.Exec(ctx, gensql.MustQuery("TaskEnqueue"), pgx.QueryExecModeCacheStatement,
			job.ID, int32(0), pageIDsOf(t, pool, job.ID, paths), paths, priorities, "link", "https://example.com/", tasks.NotifyChannel)
		if err != nil {
			t.Fatal(err)
		}
	}
	// Ten enqueues into the empty table each way: past the five custom
	// plans after which PostgreSQL may keep a prepared statement's generic
	// plan (this session forces it: tasks.ConfigurePool).
	for i := range 10 {
		if _, err := q.Enqueue(ctx, job.ID, pagesAt([]string{fmt.Sprintf("/early%d", i)})); err != nil {
			t.Fatal(err)
		}
		prepared([]string{fmt.Sprintf("/early-prepared%d", i)})
	}

	seed(t, admin, fmt.Sprintf(`
		INSERT INTO pages (domain_id, path)
		SELECT j.domain_id, '/p' || g FROM jobs j, generate_series(1, 100000) g WHERE j.id = '%[1]s';
		INSERT INTO tasks (job_id, page_id, path, shard)
		SELECT '%[1]s', p.id, p.path, p.id %% 32 FROM pages p JOIN jobs j ON j.domain_id = p.domain_id
		WHERE j.id = '%[1]s' AND p.path LIKE '/p%%';`, job.ID))

	// reads is the most tasks rows a node of the TaskEnqueue plans logged
	// since the last call read, and whether one scanned tasks.
	reads := func() (most float64, scans bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range plans {
			p.walk(func(n planNode) {
				if n.RelationName != "tasks" {
					return
				}
				scans = scans || n.NodeType == "Seq Scan"
				most = max(most, n.ActualRows*n.ActualLoops+n.RemovedByFilter+n.RemovedByRecheck)
			})
		}
		plans = nil
		return most, scans
	}
	// 30 links: 20 pages the job has, 10 new.
	links := func(tag string) []string {
		var out []string
		for i := 1; i <= 30; i++ {
			if i <= 20 {
				out = append(out, fmt.Sprintf("/p%d", i*1000))
			} else {
				out = append(out, fmt.Sprintf("/%s%d", tag, i))
			}
		}
		return out
	}
	reads()
	res, err := q.Enqueue(ctx, job.ID, pagesAt(links("new")))
	if err != nil {
		t.Fatal(err)
	}
	if res.Pending != 10 || res.Duplicates != 20 {
		t.Fatalf("Enqueue of 20 queued pages and 10 new: %+v", res)
	}
	if most, scans := reads(); scans || most > 30 {
		t.Errorf("Enqueue's plan on a session that first enqueued into an empty table, the table now 100,000 tasks: "+
			"a node read %v tasks rows (scans: %v); at most 30 expected", most, scans)
	}
	prepared(links("again"))
	if most, scans := reads(); !scans && most <= 1000 {
		t.Fatalf("the prepared TaskEnqueue read at most %v tasks rows a node: the state no longer shows a plan made for a small table", most)
	}
}

func pagesAt(paths []string) []tasks.Page {
	out := make([]tasks.Page, len(paths))
	for i, p := range paths {
		out[i] = tasks.Page{Path: p}
	}
	return out
}
