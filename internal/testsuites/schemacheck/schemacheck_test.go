package schemacheck_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
	"github.com/blue-banded-bee/taskq/sql/checks"
)

// problem is one row of the schema check.
type problem struct {
	Check  string
	Object string
	Detail string
}

// sortProblems makes comparisons independent of the database's collation,
// which decides the query's own ORDER BY.
var sortProblems = cmpopts.SortSlices(func(a, b problem) bool {
	return a.Check+"\x00"+a.Object+"\x00"+a.Detail < b.Check+"\x00"+b.Object+"\x00"+b.Detail
})

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func runCheck(t *testing.T, conn *pgx.Conn) []problem {
	t.Helper()
	rows, err := conn.Query(context.Background(), checks.SchemaCheck)
	if err != nil {
		t.Fatalf("schema check: %v", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[problem])
	if err != nil {
		t.Fatalf("schema check: %v", err)
	}
	return got
}

// problems runs the check with the default search_path and again with auth
// on it (where PostgreSQL prints auth.uid() as uid()), and fails the test
// unless both report the same.
func problems(t *testing.T, conn *pgx.Conn) []problem {
	t.Helper()
	got := runCheck(t, conn)
	mustExec(t, conn, "SET search_path = auth, public")
	withAuth := runCheck(t, conn)
	mustExec(t, conn, "RESET search_path")
	if diff := cmp.Diff(got, withAuth, sortProblems, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("the check depends on search_path (-default +with auth):\n%s", diff)
	}
	return got
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

func assertProblems(t *testing.T, want, got []problem) {
	t.Helper()
	if diff := cmp.Diff(want, got, sortProblems, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("schema check (-want +got):\n%s", diff)
	}
}

func TestLatestSchemaHasNoProblems(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.URL(t, migrate.VersionLatest))
	assertProblems(t, nil, problems(t, conn))
}

// TestRunsWithoutSupabaseSchemas runs the check on an empty database, where
// there is no auth schema and no Supabase role.
func TestRunsWithoutSupabaseSchemas(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.EmptyURL(t))
	assertProblems(t, nil, runCheck(t, conn))
}

// TestBaseSchemaReportsWhatThePlanFixed checks the schema production ran
// before the plan: the check must find the seven foreign keys the plan's
// idx_* migrations index and the seven policies optimise_rls_policies
// rewrites, and nothing else (tasks.job_id and pages.domain_id were already
// covered by their UNIQUE constraints).
func TestBaseSchemaReportsWhatThePlanFixed(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.URL(t, migrate.VersionBaseSchema))
	unindexed := func(table, fk, column string) problem {
		return problem{"unindexed_foreign_keys", "public." + table,
			"foreign key " + fk + " (" + column + ") has no valid index led by its columns"}
	}
	bareUID := func(table, policy string) problem {
		return problem{"auth_rls_initplan", "public." + table + ` policy "` + policy + `"`,
			"USING: 1 of 1 call(s) to auth.uid() not written as (SELECT auth.uid())"}
	}
	want := []problem{
		unindexed("jobs", "jobs_domain_id_fkey", "domain_id"),
		unindexed("jobs", "jobs_user_id_fkey", "user_id"),
		unindexed("jobs", "jobs_organisation_id_fkey", "organisation_id"),
		unindexed("tasks", "tasks_page_id_fkey", "page_id"),
		unindexed("users", "users_organisation_id_fkey", "organisation_id"),
		unindexed("job_share_links", "job_share_links_created_by_fkey", "created_by"),
		unindexed("job_share_links", "job_share_links_job_id_fkey", "job_id"),
		bareUID("users", "Users can access own data"),
		bareUID("organisations", "Users can access own organisation"),
		bareUID("jobs", "Organisation members can access jobs"),
		bareUID("tasks", "Organisation members can access tasks"),
		bareUID("domains", "Organisation members can access domains"),
		bareUID("pages", "Organisation members can access pages"),
		bareUID("job_share_links", "Organisation members can manage share links"),
	}
	assertProblems(t, want, problems(t, conn))
}

// TestEachRuleReports breaks the fully migrated schema in one way per case,
// each in a database of its own, and checks the report names exactly that
// problem. Near misses in the same setup (things that look alike but are
// fine) prove the rules do not over-report.
func TestEachRuleReports(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup string
		want  []problem
	}{
		{
			name:  "foreign key index dropped",
			setup: `DROP INDEX idx_tasks_page_id;`,
			want: []problem{{"unindexed_foreign_keys", "public.tasks",
				"foreign key tasks_page_id_fkey (page_id) has no valid index led by its columns"}},
		},
		{
			name: "foreign key index left invalid",
			// What a cancelled concurrent build leaves, written straight
			// into the catalog (the test role is a superuser).
			setup: `
				UPDATE pg_index SET indisvalid = false
				WHERE indexrelid = 'idx_job_share_links_created_by'::regclass;`,
			want: []problem{{"unindexed_foreign_keys", "public.job_share_links",
				"foreign key job_share_links_created_by_fkey (created_by) has no valid index led by its columns" +
					"; idx_job_share_links_created_by is invalid"}},
		},
		{
			name: "partial, expression, brin and other-collation indexes do not count",
			setup: `
				DROP INDEX idx_jobs_user_id;
				CREATE INDEX jobs_user_id_running ON jobs (user_id) WHERE status = 'running';
				DROP INDEX idx_users_organisation_id;
				CREATE INDEX users_organisation_id_text ON users ((organisation_id::text));
				DROP INDEX idx_jobs_organisation_id;
				CREATE INDEX jobs_organisation_id_brin ON jobs USING brin (organisation_id);
				DROP INDEX idx_job_share_links_job_id;
				CREATE INDEX job_share_links_job_id_c ON job_share_links (job_id COLLATE "C");
				-- Near misses: a longer index led by the column, a hash
				-- index and another operator class all serve the lookup.
				DROP INDEX idx_jobs_domain_id;
				CREATE INDEX jobs_domain_id_status ON jobs (domain_id, status);
				DROP INDEX idx_tasks_page_id;
				CREATE INDEX tasks_page_id_hash ON tasks USING hash (page_id);
				ALTER TABLE tasks DROP CONSTRAINT tasks_job_id_page_id_key;
				DROP INDEX idx_tasks_job_id_status;
				CREATE INDEX tasks_job_id_pattern ON tasks (job_id text_pattern_ops);`,
			want: []problem{
				{"unindexed_foreign_keys", "public.jobs",
					"foreign key jobs_user_id_fkey (user_id) has no valid index led by its columns" +
						"; jobs_user_id_running is partial"},
				{"unindexed_foreign_keys", "public.users",
					"foreign key users_organisation_id_fkey (organisation_id) has no valid index led by its columns"},
				{"unindexed_foreign_keys", "public.jobs",
					"foreign key jobs_organisation_id_fkey (organisation_id) has no valid index led by its columns" +
						"; jobs_organisation_id_brin is a brin index"},
				{"unindexed_foreign_keys", "public.job_share_links",
					"foreign key job_share_links_job_id_fkey (job_id) has no valid index led by its columns" +
						"; job_share_links_job_id_c is of another collation"},
			},
		},
		{
			name: "multi-column foreign key needs its columns leading, in order",
			setup: `
				ALTER TABLE job_tallies DROP CONSTRAINT job_tallies_pkey;
				CREATE INDEX job_tallies_shard_job_id ON job_tallies (shard, job_id);
				CREATE INDEX job_tallies_job_id ON job_tallies (job_id) INCLUDE (shard);`,
			want: []problem{{"unindexed_foreign_keys", "public.job_tallies",
				"foreign key job_tallies_job_id_shard_fkey (job_id, shard) has no valid index led by its columns"}},
		},
		{
			name: "multi-column foreign key served by a longer index",
			setup: `
				ALTER TABLE job_tallies DROP CONSTRAINT job_tallies_pkey;
				CREATE INDEX job_tallies_job_id_shard_releases ON job_tallies (job_id, shard, releases);`,
			want: nil,
		},
		{
			name:  "policy calls auth.uid() bare",
			setup: `ALTER POLICY "Users can access own data" ON users USING (id = auth.uid());`,
			want: []problem{{"auth_rls_initplan", `public.users policy "Users can access own data"`,
				"USING: 1 of 1 call(s) to auth.uid() not written as (SELECT auth.uid())"}},
		},
		{
			name: "one bare call among wrapped ones",
			setup: `
				ALTER POLICY "Organisation members can create share links" ON job_share_links
				WITH CHECK (
				    created_by = auth.uid()
				    AND job_id IN (
				        SELECT id FROM jobs
				        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
				    )
				);`,
			want: []problem{{"auth_rls_initplan", `public.job_share_links policy "Organisation members can create share links"`,
				"WITH CHECK: 1 of 2 call(s) to auth.uid() not written as (SELECT auth.uid())"}},
		},
		{
			name: "any auth function, whatever the literals say",
			setup: `
				CREATE FUNCTION public.uid() RETURNS uuid LANGUAGE sql STABLE AS 'SELECT NULL::uuid';
				CREATE POLICY "Signed-in callers only" ON jobs AS RESTRICTIVE FOR ALL TO authenticated
				USING (
				    -- Reported: a bare call, which the literal only imitates wrapped.
				    auth.role() <> '( SELECT auth.role() AS role)'
				    -- Fine: wrapped with an alias, with a cast, or not an auth function.
				    AND (SELECT auth.uid() AS me) IS NOT NULL
				    AND (SELECT auth.uid()::text) <> ''
				    AND public.uid() IS NULL
				)
				WITH CHECK ((SELECT auth.role()) = 'authenticated');`,
			want: []problem{{"auth_rls_initplan", `public.jobs policy "Signed-in callers only"`,
				"USING: 1 of 1 call(s) to auth.role() not written as (SELECT auth.role())"}},
		},
		{
			name: "duplicate indexes",
			setup: `
				CREATE INDEX tasks_page_id_copy ON tasks (page_id);
				CREATE INDEX tasks_page_id_fillfactor ON tasks (page_id) WITH (fillfactor = 70);
				CREATE UNIQUE INDEX jobs_id_key ON jobs (id);
				-- Near misses: each differs from idx_tasks_page_id in one way.
				CREATE INDEX tasks_page_id_desc ON tasks (page_id DESC);
				CREATE INDEX tasks_page_id_pending ON tasks (page_id) WHERE status = 'pending';
				CREATE INDEX tasks_page_id_hash ON tasks USING hash (page_id);
				CREATE INDEX tasks_page_id_include ON tasks (page_id) INCLUDE (status);
				CREATE UNIQUE INDEX tasks_page_id_job_id ON tasks (page_id, job_id);
				CREATE INDEX tasks_path ON tasks (path);
				CREATE INDEX tasks_path_c ON tasks (path COLLATE "C");
				CREATE INDEX tasks_path_pattern ON tasks (path text_pattern_ops);
				-- An invalid copy is not a duplicate (it is not used either).
				CREATE INDEX jobs_domain_id_copy ON jobs (domain_id);
				UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'jobs_domain_id_copy'::regclass;`,
			want: []problem{
				{"duplicate_index", "public.tasks",
					"indexes idx_tasks_page_id, tasks_page_id_copy, tasks_page_id_fillfactor are identical apart from their names"},
				{"duplicate_index", "public.jobs",
					"indexes jobs_id_key, jobs_pkey are identical apart from their names"},
			},
		},
		{
			name: "second permissive policy for a role and action",
			setup: `
				CREATE POLICY "Members can read jobs" ON jobs FOR SELECT TO authenticated
				USING (organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid())));`,
			want: []problem{{"multiple_permissive_policies", "public.jobs",
				`role authenticated, action SELECT: permissive policies "Members can read jobs", "Organisation members can access jobs"`}},
		},
		{
			name: "a policy TO public counts for Supabase's roles",
			setup: `
				CREATE POLICY "Anyone can read shards" ON job_shards FOR SELECT USING (true);
				-- Near misses: restrictive, and another action.
				CREATE POLICY "Only running jobs" ON job_shards AS RESTRICTIVE FOR SELECT TO authenticated
				USING (job_id IN (SELECT id FROM jobs WHERE status = 'running'));
				CREATE POLICY "Members can add tallies" ON job_tallies FOR INSERT TO authenticated
				WITH CHECK (false);`,
			want: []problem{{"multiple_permissive_policies", "public.job_shards",
				`role authenticated, action SELECT: permissive policies "Anyone can read shards", "Organisation members can read job shards"`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn := connect(t, pgtest.URL(t, migrate.VersionLatest))
			mustExec(t, conn, tt.setup)
			assertProblems(t, tt.want, problems(t, conn))
		})
	}
}

// TestFailedConcurrentBuildDoesNotIndexForeignKey makes a real
// CREATE INDEX CONCURRENTLY fail (a unique build over duplicate values): it
// leaves an INVALID index behind under the migration's own name, which must
// not count as the foreign key's index.
func TestFailedConcurrentBuildDoesNotIndexForeignKey(t *testing.T) {
	t.Parallel()
	conn := connect(t, pgtest.URL(t, migrate.VersionLatest))
	mustExec(t, conn, `
		INSERT INTO domains (name) VALUES ('example.com');
		INSERT INTO jobs (domain_id) SELECT id FROM domains;
		INSERT INTO jobs (domain_id) SELECT id FROM domains;
		DROP INDEX idx_jobs_domain_id;`)
	_, err := conn.Exec(context.Background(), "CREATE UNIQUE INDEX CONCURRENTLY idx_jobs_domain_id ON jobs (domain_id)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Fatalf("setup: the concurrent build should fail on a duplicate key, got %v", err)
	}
	want := []problem{{"unindexed_foreign_keys", "public.jobs",
		"foreign key jobs_domain_id_fkey (domain_id) has no valid index led by its columns; idx_jobs_domain_id is invalid"}}
	assertProblems(t, want, problems(t, conn))
}
