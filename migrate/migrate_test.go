package migrate_test

import (
	"context"
	_ "embed" // the old migration 1
	"errors"
	"io"
	"io/fs"
	neturl "net/url"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/amacneil/dbmate/v2/pkg/dbmate"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/internal/sharedtest"
	"github.com/blue-banded-bee/taskq/migrate"
)

// catalogSnapshot describes everything the migrations create, one line per
// object, so two states of a database's schema can be compared. ACL entries
// are sorted: their order carries no meaning; a NULL ACL is written out as
// the default it stands for, so that granting back what a migration revoked
// from PUBLIC reads as the same state. The schema taskq_meta is dbmate's
// (created for its migrations table before the first migration, kept after
// the last rollback); what migrations put in it is compared.
const catalogSnapshot = `
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname IN ('public', 'auth', 'private', 'taskq_meta')
)
SELECT line FROM (
    SELECT format('schema %s', nspname) AS line FROM ns WHERE nspname <> 'taskq_meta'
    UNION ALL
    SELECT format('relation %s.%s kind=%s rls=%s options=%s', ns.nspname, c.relname, c.relkind,
                  c.relrowsecurity, c.reloptions)
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'S', 'p') AND c.relname <> 'schema_migrations'
    UNION ALL
    SELECT format('column %s.%s.%s %s notnull=%s default=%s', ns.nspname, c.relname, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'p')
      AND c.relname <> 'schema_migrations'
    UNION ALL
    SELECT format('index %s valid=%s', pg_get_indexdef(i.indexrelid), i.indisvalid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relname NOT LIKE 'schema_migrations%'
    UNION ALL
    SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns)
      AND conrelid::regclass::text NOT IN ('schema_migrations', 'taskq_meta.schema_migrations')
    UNION ALL
    SELECT format('policy %s.%s %s %s to=%s using=%s check=%s', schemaname, tablename, policyname,
                  cmd, roles, qual, with_check)
    FROM pg_policies WHERE schemaname IN (SELECT nspname FROM ns)
    UNION ALL
    SELECT format('function %s', pg_get_functiondef(p.oid))
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
    UNION ALL
    SELECT format('trigger %s %s', tgrelid::regclass, pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('type %s.%s %s', ns.nspname, t.typname,
                  (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid))
    FROM pg_type t JOIN ns ON ns.oid = t.typnamespace WHERE t.typtype = 'e'
    UNION ALL
    SELECT format('acl %s.%s %s', ns.nspname, c.relname, (SELECT string_agg(a::text, ',' ORDER BY a::text)
                  FROM unnest(coalesce(c.relacl, acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a))
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'v', 'm', 'S', 'p') AND c.relname <> 'schema_migrations'
    UNION ALL
    SELECT format('column acl %s.%s.%s %s', ns.nspname, c.relname, a.attname, (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE a.attacl IS NOT NULL
    UNION ALL
    SELECT format('function acl %s %s', p.oid::regprocedure, (SELECT string_agg(x::text, ',' ORDER BY x::text)
                  FROM unnest(coalesce(p.proacl, acldefault('f'::"char", p.proowner))) x))
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
    UNION ALL
    SELECT format('schema acl %s %s', nspname, (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(n.nspacl) x))
    FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM ns) AND nspname <> 'taskq_meta'
) s
ORDER BY line`

func snapshot(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), catalogSnapshot)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return lines
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func versions(t *testing.T) []string {
	t.Helper()
	files, err := migrate.Files(migrate.VersionLatest)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	names, _ := fs.Glob(files, "*.sql")
	for _, name := range names {
		out = append(out, strings.SplitN(name, "_", 2)[0])
	}
	return out
}

// TestEachDownReversesItsUp applies the migrations one at a time; after each,
// it rolls that one back and checks the schema is exactly what it was before,
// then applies it again.
func TestEachDownReversesItsUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	conn := connect(t, url)

	before := snapshot(t, conn)
	for _, v := range versions(t) {
		r := migrate.Runner{URL: url, Target: v}
		if err := r.Up(ctx); err != nil {
			t.Fatalf("up to %s: %v", v, err)
		}
		after := snapshot(t, conn)
		if diff := cmp.Diff(before, after); diff == "" {
			t.Errorf("migration %s changed nothing in the catalog", v)
		}
		if err := r.Down(ctx); err != nil {
			t.Fatalf("down from %s: %v", v, err)
		}
		if diff := cmp.Diff(before, snapshot(t, conn)); diff != "" {
			t.Fatalf("down of %s does not restore the schema (-before +after down):\n%s", v, diff)
		}
		if err := r.Up(ctx); err != nil {
			t.Fatalf("up again to %s: %v", v, err)
		}
		if diff := cmp.Diff(after, snapshot(t, conn)); diff != "" {
			t.Fatalf("second up of %s differs from the first (-first +second):\n%s", v, diff)
		}
		before = after
	}
}

// TestUpDownUpKeepsRows migrates, writes rows, rolls back to the schema
// production had before round 2, checks the rows survived, and migrates again.
func TestUpDownUpKeepsRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	conn := connect(t, url)
	latest := migrate.Runner{URL: url}
	if err := latest.Up(ctx); err != nil {
		t.Fatal(err)
	}
	mustExec(t, conn, `
		INSERT INTO organisations (id, name) VALUES ('00000000-0000-0000-0000-00000000000a', 'Org A');
		INSERT INTO users (id, email, organisation_id)
		VALUES ('00000000-0000-0000-0000-0000000000a1', 'a@example.com', '00000000-0000-0000-0000-00000000000a');
		INSERT INTO domains (name) VALUES ('example.com');
		INSERT INTO pages (domain_id, path) SELECT 1, '/p' || g FROM generate_series(1, 50) g;
		INSERT INTO jobs (id, domain_id, organisation_id, user_id, concurrency)
		VALUES ('job-1', 1, '00000000-0000-0000-0000-00000000000a', '00000000-0000-0000-0000-0000000000a1', 8);
		INSERT INTO tasks (job_id, page_id, path) SELECT 'job-1', id, path FROM pages;
		UPDATE tasks SET status = 'completed', completed_at = now() WHERE page_id <= 10;
		INSERT INTO job_share_links (job_id, created_by) VALUES ('job-1', '00000000-0000-0000-0000-0000000000a1');`)
	rowsBefore := tableCounts(t, conn)

	for {
		status, err := latest.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if lastApplied(status) == migrate.VersionBaseSchema {
			break
		}
		if err := latest.Down(ctx); err != nil {
			t.Fatalf("down: %v", err)
		}
	}
	if diff := cmp.Diff(rowsBefore, tableCounts(t, conn)); diff != "" {
		t.Fatalf("rolling back to the base schema lost rows (-before +after):\n%s", diff)
	}
	if err := latest.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if diff := cmp.Diff(rowsBefore, tableCounts(t, conn)); diff != "" {
		t.Fatalf("migrating up again lost rows (-before +after):\n%s", diff)
	}
	var shards int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM job_shards WHERE job_id = 'job-1'`).Scan(&shards); err != nil {
		t.Fatal(err)
	}
	if shards == 0 {
		t.Errorf("the queue migration gave the existing running job no shards")
	}
}

func lastApplied(ms []migrate.Migration) string {
	last := ""
	for _, m := range ms {
		if m.Applied {
			last = m.Version
		}
	}
	return last
}

func tableCounts(t *testing.T, conn *pgx.Conn) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, table := range []string{"organisations", "users", "domains", "pages", "jobs", "tasks", "job_share_links"} {
		var n int64
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	var completed int64
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM tasks WHERE status = 'completed'").Scan(&completed); err != nil {
		t.Fatal(err)
	}
	out["tasks completed"] = completed
	return out
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

// planIndexes are the plan's seven foreign-key indexes, the one it missed,
// and the claim index, with the columns each must cover.
var planIndexes = map[string]string{
	"idx_jobs_domain_id":             "CREATE INDEX idx_jobs_domain_id ON public.jobs USING btree (domain_id)",
	"idx_jobs_user_id":               "CREATE INDEX idx_jobs_user_id ON public.jobs USING btree (user_id)",
	"idx_jobs_organisation_id":       "CREATE INDEX idx_jobs_organisation_id ON public.jobs USING btree (organisation_id)",
	"idx_tasks_page_id":              "CREATE INDEX idx_tasks_page_id ON public.tasks USING btree (page_id)",
	"idx_tasks_job_id_status":        "CREATE INDEX idx_tasks_job_id_status ON public.tasks USING btree (job_id, status)",
	"idx_users_organisation_id":      "CREATE INDEX idx_users_organisation_id ON public.users USING btree (organisation_id)",
	"idx_job_share_links_created_by": "CREATE INDEX idx_job_share_links_created_by ON public.job_share_links USING btree (created_by)",
	"idx_job_share_links_job_id":     "CREATE INDEX idx_job_share_links_job_id ON public.job_share_links USING btree (job_id)",
	"idx_tasks_claim":                "CREATE INDEX idx_tasks_claim ON public.tasks USING btree (job_id COLLATE \"C\", shard, priority_score DESC, created_at) WHERE (status = 'pending'::task_status)",
}

type indexState struct {
	Def   string
	Valid bool
}

func indexStates(t *testing.T, conn *pgx.Conn) map[string]indexState {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid AND i.indisready
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE c.relname = ANY($1)`, mapKeys(planIndexes))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]indexState{}
	for rows.Next() {
		var name string
		var st indexState
		if err := rows.Scan(&name, &st.Def, &st.Valid); err != nil {
			t.Fatal(err)
		}
		got[name] = st
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func wantIndexes() map[string]indexState {
	want := map[string]indexState{}
	for name, def := range planIndexes {
		want[name] = indexState{Def: def, Valid: true}
	}
	return want
}

func TestIndexesExistAndAreValid(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.URL(t, migrate.VersionLatest))
	if diff := cmp.Diff(wantIndexes(), indexStates(t, conn)); diff != "" {
		t.Fatalf("indexes (-want +got):\n%s", diff)
	}
}

// TestDbmateCLIAppliesMigrations runs the pinned dbmate CLI itself (as
// scripts/deploy does) over sql/schema: the CONCURRENTLY index files must
// apply and roll back through it, not only through this package.
func TestDbmateCLIAppliesMigrations(t *testing.T) {
	t.Parallel()
	url := pgtest.EmptyURL(t)
	root := sharedtest.RepoRoot(t)
	dbmate := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", append([]string{"tool", "-modfile=tools/go.mod", "dbmate",
			"--url", url, "--migrations-dir", "sql/schema", "--migrations-table", migrate.MigrationsTable,
			"--no-dump-schema"}, args...)...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("dbmate %v: %v\n%s", args, err, out)
		}
	}
	dbmate("up", "--strict")
	conn := connect(t, url)
	if diff := cmp.Diff(wantIndexes(), indexStates(t, conn)); diff != "" {
		t.Fatalf("indexes after dbmate up (-want +got):\n%s", diff)
	}
	for range versions(t) {
		dbmate("rollback")
	}
	if got := indexStates(t, conn); len(got) != 0 {
		t.Fatalf("indexes left after rolling everything back: %v", got)
	}
	dbmate("up", "--strict")
	if diff := cmp.Diff(wantIndexes(), indexStates(t, conn)); diff != "" {
		t.Fatalf("indexes after a second dbmate up (-want +got):\n%s", diff)
	}
}

// TestUpRebuildsIndexLeftInvalid makes a CREATE INDEX CONCURRENTLY fail
// half-way (cancelled while it waits for an old transaction), which leaves an
// INVALID index. Plain re-running the migration fails on the name; the
// runner drops the invalid index first and the migration builds it valid.
func TestUpRebuildsIndexLeftInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	const version = "20251024000005" // idx_tasks_page_id is the next one
	if err := (migrate.Runner{URL: url, Target: version}).Up(ctx); err != nil {
		t.Fatal(err)
	}

	// An open transaction with a snapshot: the concurrent build waits for it.
	holder := connect(t, url)
	tx, err := holder.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT count(*) FROM tasks"); err != nil {
		t.Fatal(err)
	}
	builder := connect(t, url)
	watcher := connect(t, url)
	done := make(chan error, 1)
	go func() {
		_, err := builder.Exec(ctx, "CREATE INDEX CONCURRENTLY idx_tasks_page_id ON tasks (page_id)")
		done <- err
	}()
	waitFor(t, func() bool {
		var waiting bool
		err := watcher.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock')`).Scan(&waiting)
		return err == nil && waiting
	})
	if _, err := watcher.Exec(ctx, `SELECT pg_cancel_backend(pid) FROM pg_stat_activity
		WHERE query LIKE 'CREATE INDEX CONCURRENTLY%' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("the concurrent build was not cancelled")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var valid bool
	if err := watcher.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_tasks_page_id'::regclass`).Scan(&valid); err != nil {
		t.Fatal(err)
	}
	if valid {
		t.Fatal("setup: the cancelled build left a valid index")
	}
	// What plain dbmate would do: run the migration's statement again.
	if _, err := watcher.Exec(ctx, "CREATE INDEX CONCURRENTLY idx_tasks_page_id ON tasks (page_id)"); err == nil {
		t.Fatal("re-running the statement over an invalid index should fail on the name")
	}

	if err := (migrate.Runner{URL: url}).Up(ctx); err != nil {
		t.Fatalf("runner over an invalid index: %v", err)
	}
	if diff := cmp.Diff(wantIndexes(), indexStates(t, watcher)); diff != "" {
		t.Fatalf("indexes after the runner (-want +got):\n%s", diff)
	}
}

// TestConcurrentUpsTakeTurns starts several migrators on one empty database at
// once: one migrates, the others wait for the lock and find nothing to do.
func TestConcurrentUpsTakeTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = migrate.Runner{URL: url}.Up(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent migrations: %v", err)
	}
	conn := connect(t, url)
	if diff := cmp.Diff(wantIndexes(), indexStates(t, conn)); diff != "" {
		t.Fatalf("indexes (-want +got):\n%s", diff)
	}
	var applied int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+migrate.MigrationsTable).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	if applied != len(versions(t)) {
		t.Fatalf("schema_migrations has %d rows, want %d", applied, len(versions(t)))
	}
}

func TestFilesUpToUnknownVersion(t *testing.T) {
	t.Parallel()
	if _, err := migrate.Files("19990101000000"); !errors.Is(err, migrate.ErrUnknownVersion) {
		t.Fatalf("Files(unknown) error = %v, want ErrUnknownVersion", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestUpStopsAtLockTimeout: a migration that needs a lock held by a long
// transaction fails with the lock timeout instead of queueing (and stalling
// every query behind it); once the transaction ends, Up finishes.
func TestUpStopsAtLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	if err := (migrate.Runner{URL: url, Target: "20251024000011"}).Up(ctx); err != nil {
		t.Fatal(err)
	}
	holder := connect(t, url)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT count(*) FROM tasks"); err != nil { // holds ACCESS SHARE on tasks
		t.Fatal(err)
	}
	err = migrate.Runner{URL: url, LockTimeout: 300 * time.Millisecond}.Up(ctx)
	if err == nil || !strings.Contains(err.Error(), "lock timeout") {
		t.Fatalf("Up behind a held lock: %v, want a lock timeout", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := (migrate.Runner{URL: url}).Up(ctx); err != nil {
		t.Fatalf("Up after the lock was released: %v", err)
	}
	if diff := cmp.Diff(wantIndexes(), indexStates(t, connect(t, url))); diff != "" {
		t.Fatalf("indexes (-want +got):\n%s", diff)
	}
}

// versionBeforeTaskqMeta is the last migration deployed before the record
// moved to taskq_meta.
const versionBeforeTaskqMeta = "20251024000014"

// legacyMigrationOne is migration 20251024000001 as databases migrated before
// taskq_meta ran it: its record in auth.compat_created.
//
//go:embed testdata/20251024000001_supabase_auth_compat_v1.sql
var legacyMigrationOne []byte

// TestDatabaseMigratedTheOldWayKeepsWorking builds a database as deploys did
// before taskq_meta: every migration up to share links applied, dbmate's
// record in public.schema_migrations and migration 1's in
// auth.compat_created. The runner moves the record to taskq_meta and applies
// only the migrations added since; rolling every migration back then leaves
// exactly the empty database, auth.compat_created included.
func TestDatabaseMigratedTheOldWayKeepsWorking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	conn := connect(t, url)
	empty := snapshot(t, conn)

	files, err := migrate.Files(versionBeforeTaskqMeta)
	if err != nil {
		t.Fatal(err)
	}
	old := fstest.MapFS{}
	names, _ := fs.Glob(files, "*.sql")
	for _, name := range names {
		data, _ := fs.ReadFile(files, name)
		if strings.HasPrefix(name, "20251024000001_") {
			data = legacyMigrationOne
		}
		old[name] = &fstest.MapFile{Data: data}
	}
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	db := dbmate.New(u)
	db.FS, db.MigrationsDir, db.AutoDumpSchema, db.Log = old, []string{"."}, false, io.Discard
	if err := db.Migrate(); err != nil {
		t.Fatalf("migrate the old way: %v", err)
	}
	var legacy bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('public.schema_migrations') IS NOT NULL
		AND to_regclass('auth.compat_created') IS NOT NULL`).Scan(&legacy); err != nil || !legacy {
		t.Fatalf("setup: the old tables are not there (%v)", err)
	}

	s, err := migrate.ReadSchema(ctx, conn, migrate.VersionLatest)
	if err != nil || !s.InPublic || s.Applied() != 0 || s.Current() {
		t.Errorf("ReadSchema of the old way = %+v, %v; want the record in public and nothing applied", s, err)
	}

	var log sharedtest.Buffer
	r := migrate.Runner{URL: url, Log: &log}
	if err := r.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	if s, err := migrate.ReadSchema(ctx, conn, migrate.VersionLatest); err != nil || !s.Current() {
		t.Errorf("ReadSchema after up = %+v, %v; want current", s, err)
	}
	applied := regexp.MustCompile(`Applying: (\d+)_`).FindAllStringSubmatch(log.String(), -1)
	var appliedVersions []string
	for _, m := range applied {
		appliedVersions = append(appliedVersions, m[1])
	}
	all := versions(t)
	if diff := cmp.Diff(all[slices.Index(all, versionBeforeTaskqMeta)+1:], appliedVersions); diff != "" ||
		!strings.Contains(log.String(), "moved public.schema_migrations") {
		t.Errorf("up should have moved the record and applied only the newer migrations (-want +applied):\n%s\n%s",
			diff, log.String())
	}
	var inPublic bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('public.schema_migrations') IS NOT NULL`).Scan(&inPublic); err != nil {
		t.Fatal(err)
	}
	if inPublic {
		t.Error("public.schema_migrations is still there")
	}
	ms, err := r.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !m.Applied {
			t.Errorf("%s is pending after the move", m.File)
		}
	}

	for range versions(t) {
		if err := r.Down(ctx); err != nil {
			t.Fatalf("down: %v", err)
		}
	}
	if diff := cmp.Diff(empty, snapshot(t, conn)); diff != "" {
		t.Errorf("after rolling everything back (-empty database +now):\n%s", diff)
	}
}

// TestOldMigrationOneFailsOnSupabase: on a Supabase-shaped database the
// earlier migration 1, which created its record in auth, fails as it did on
// Supabase ("permission denied for schema auth"), and the current one
// applies. It shows the shape refuses what Supabase refuses.
func TestOldMigrationOneFailsOnSupabase(t *testing.T) {
	t.Parallel()
	_, migrator := pgtest.SupabaseEmptyURL(t, pgtest.SupabaseAuthClaimSub)
	u, err := neturl.Parse(migrator) // pgtest URLs set sslmode=disable
	if err != nil {
		t.Fatal(err)
	}
	db := dbmate.New(u)
	db.FS = fstest.MapFS{"20251024000001_supabase_auth_compat.sql": &fstest.MapFile{Data: legacyMigrationOne}}
	db.MigrationsDir, db.AutoDumpSchema, db.Log = []string{"."}, false, io.Discard
	db.MigrationsTableName = migrate.MigrationsTable
	err = db.Migrate()
	if err == nil || !strings.Contains(err.Error(), "permission denied for schema auth") {
		t.Fatalf("the old migration 1 as %s: %v, want permission denied for schema auth", pgtest.SupabaseMigrationRole, err)
	}
	if err := (migrate.Runner{URL: migrator, Target: "20251024000001"}).Up(context.Background()); err != nil {
		t.Fatalf("the current migration 1: %v", err)
	}
}

// TestReadSchema compares databases with the binary's migrations: none
// applied, some, all, and one the binary does not know. Reading writes
// nothing: the empty database stays without a record.
func TestReadSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	all := versions(t)
	if got, err := migrate.Versions(migrate.VersionLatest); err != nil || !slices.Equal(got, all) {
		t.Fatalf("Versions = %v, %v; want %v", got, err, all)
	}
	read := func(url, target string) migrate.Schema {
		t.Helper()
		s, err := migrate.ReadSchema(ctx, connect(t, url), target)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	empty := pgtest.EmptyURL(t)
	if s := read(empty, migrate.VersionLatest); s.Applied() != 0 || s.Pending() != len(all) || s.InPublic || s.Current() {
		t.Errorf("empty database: %+v", s)
	}
	var recorded bool
	if err := connect(t, empty).QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", migrate.MigrationsTable).Scan(&recorded); err != nil || recorded {
		t.Errorf("ReadSchema created %s (%v)", migrate.MigrationsTable, err)
	}

	base := pgtest.URL(t, migrate.VersionBaseSchema)
	s := read(base, migrate.VersionLatest)
	if s.Applied() != 2 || s.Current() || !s.Migrations[1].Applied || s.Migrations[2].Applied || s.Migrations[2].Version != all[2] {
		t.Errorf("base schema: %+v", s)
	}
	if s := read(base, migrate.VersionBaseSchema); !s.Current() || len(s.Migrations) != 2 {
		t.Errorf("base schema up to its own target: %+v, want current", s)
	}

	latest := pgtest.URL(t, migrate.VersionLatest)
	if s := read(latest, migrate.VersionLatest); !s.Current() || s.Applied() != len(all) {
		t.Errorf("latest: %+v, want current", s)
	}
	if _, err := connect(t, latest).Exec(ctx, "INSERT INTO taskq_meta.schema_migrations (version) VALUES ('29991231000000')"); err != nil {
		t.Fatal(err)
	}
	s, err := migrate.Runner{URL: latest}.Schema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Current() || !slices.Equal(s.Unknown, []string{"29991231000000"}) || s.Pending() != 0 {
		t.Errorf("ahead: %+v, want 29991231000000 unknown", s)
	}
}
