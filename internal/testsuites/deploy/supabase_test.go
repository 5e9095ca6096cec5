package deploy_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
)

// apiRolePrivileges lists every privilege anon or authenticated holds, one
// line each, on every schema, relation and function outside PostgreSQL's
// own schemas: directly, through PUBLIC or through a role they belong to.
// A column privilege shows only where the role lacks it on the whole table.
const apiRolePrivileges = `
WITH roles(name) AS (VALUES ('anon'), ('authenticated')),
ns AS (
    SELECT oid, nspname FROM pg_catalog.pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nspname NOT LIKE 'pg_temp_%'
      AND nspname NOT LIKE 'pg_toast_temp_%'
)
SELECT line FROM (
    SELECT format('%s %s on schema %s', r.name, p, ns.nspname) AS line
    FROM roles r, ns, unnest(ARRAY['USAGE', 'CREATE']) p
    WHERE has_schema_privilege(r.name, ns.oid, p)
    UNION ALL
    SELECT format('%s %s on %s', r.name, p, c.oid::regclass)
    FROM roles r, pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace,
         unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND has_table_privilege(r.name, c.oid, p)
    UNION ALL
    SELECT format('%s %s on some columns of %s', r.name, p, c.oid::regclass)
    FROM roles r, pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace,
         unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND has_any_column_privilege(r.name, c.oid, p)
      AND NOT has_table_privilege(r.name, c.oid, p)
    UNION ALL
    SELECT format('%s %s on sequence %s', r.name, p, c.oid::regclass)
    FROM roles r, pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
    WHERE c.relkind = 'S' AND has_sequence_privilege(r.name, c.oid, p)
    UNION ALL
    SELECT format('%s EXECUTE on function %s.%s(%s)', r.name, ns.nspname, f.proname, pg_get_function_identity_arguments(f.oid))
    FROM roles r, pg_catalog.pg_proc f JOIN ns ON ns.oid = f.pronamespace
    WHERE has_function_privilege(r.name, f.oid, 'EXECUTE')
) s
ORDER BY line`

// apiRolesMayHold is what apiRolePrivileges must list on a migrated
// database, plain or Supabase-shaped: the schemas the API reads, reading
// every table (the policies choose the rows), the column grants share links
// and profile edits need, and the functions the policies and share links
// call.
var apiRolesMayHold = []string{
	"anon EXECUTE on function auth.role()",
	"anon EXECUTE on function auth.uid()",
	"anon EXECUTE on function public.shared_job(p_token text)",
	"anon USAGE on schema auth",
	"anon USAGE on schema public",
	"authenticated DELETE on job_share_links",
	"authenticated EXECUTE on function auth.role()",
	"authenticated EXECUTE on function auth.uid()",
	"authenticated EXECUTE on function public.shared_job(p_token text)",
	"authenticated INSERT on some columns of job_share_links",
	"authenticated SELECT on domains",
	"authenticated SELECT on job_admissions",
	"authenticated SELECT on job_progress",
	"authenticated SELECT on job_shards",
	"authenticated SELECT on job_share_links",
	"authenticated SELECT on job_tallies",
	"authenticated SELECT on jobs",
	"authenticated SELECT on organisations",
	"authenticated SELECT on pages",
	"authenticated SELECT on tasks",
	"authenticated SELECT on users",
	"authenticated UPDATE on some columns of job_share_links",
	"authenticated UPDATE on some columns of organisations",
	"authenticated UPDATE on some columns of users",
	"authenticated USAGE on schema auth",
	"authenticated USAGE on schema public",
}

// unprotectedRelations lists the relations in public that no row-level
// security guards (a table without it, a view that runs as its owner, a
// materialized view, a sequence, a foreign table) on which anon or
// authenticated holds any privilege at all. It must list nothing.
const unprotectedRelations = `
SELECT format('%s %s', r.name, c.oid::regclass)
FROM (VALUES ('anon'), ('authenticated')) r(name), pg_catalog.pg_class c
WHERE c.relnamespace = 'public'::regnamespace
  AND CASE c.relkind
          WHEN 'r' THEN NOT c.relrowsecurity
          WHEN 'p' THEN NOT c.relrowsecurity
          WHEN 'v' THEN NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)
          ELSE c.relkind IN ('m', 'S', 'f')
      END
  AND CASE c.relkind
          WHEN 'S' THEN has_sequence_privilege(r.name, c.oid, 'USAGE, SELECT, UPDATE')
          ELSE has_table_privilege(r.name, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
               OR has_any_column_privilege(r.name, c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
      END
ORDER BY 1`

func queryLines(t *testing.T, conn *pgx.Conn, sql string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// checkAPIRoles: the API roles hold exactly apiRolesMayHold, and nothing in
// public that row-level security does not guard.
func checkAPIRoles(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	if diff := cmp.Diff(apiRolesMayHold, queryLines(t, conn, apiRolePrivileges)); diff != "" {
		t.Errorf("privileges of anon and authenticated (-may hold +hold):\n%s", diff)
	}
	if got := queryLines(t, conn, unprotectedRelations); len(got) > 0 {
		t.Errorf("the API roles can use relations in public that row-level security does not guard: %v", got)
	}
}

// authObjects lists what the auth schema holds, which on Supabase is
// Supabase's: the migrations must add nothing there.
func authObjects(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	return queryLines(t, conn, `
		SELECT format('relation %s', c.oid::regclass) FROM pg_catalog.pg_class c WHERE c.relnamespace = 'auth'::regnamespace
		UNION ALL
		SELECT format('function %s owner=%s', p.oid::regprocedure, p.proowner::regrole)
		FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'auth'::regnamespace
		ORDER BY 1`)
}

// TestAPIRolesHoldOnlyWhatTheyNeed on plain PostgreSQL, where the
// compatibility migration makes the roles and auth.
func TestAPIRolesHoldOnlyWhatTheyNeed(t *testing.T) {
	t.Parallel()
	checkAPIRoles(t, connect(t, pgtest.URL(t, migrate.VersionLatest)))
}

// TestSupabaseUpDownUp deploys to a Supabase-shaped database (see
// internal/pgtest/supabase.sql) as its migration role, not a superuser,
// rolls every migration back and deploys again, all through the script
// and so the dbmate CLI. After each deploy the API roles hold only what they
// need; auth never holds anything but Supabase's own functions.
func TestSupabaseUpDownUp(t *testing.T) {
	t.Parallel()
	admin, migrator := pgtest.SupabaseEmptyURL(t, pgtest.SupabaseAuthClaimSub)
	conn := connect(t, admin)
	var superuser, createInAuth bool
	if err := conn.QueryRow(context.Background(), `
		SELECT rolsuper, has_schema_privilege(rolname, 'auth', 'CREATE') FROM pg_roles WHERE rolname = $1`,
		pgtest.SupabaseMigrationRole).Scan(&superuser, &createInAuth); err != nil {
		t.Fatal(err)
	}
	if superuser || createInAuth {
		t.Fatalf("setup: %s is a superuser (%v) or may create in auth (%v)", pgtest.SupabaseMigrationRole, superuser, createInAuth)
	}
	supabaseAuth := []string{
		"function auth.role() owner=supabase_auth_admin",
		"function auth.uid() owner=supabase_auth_admin",
	}
	if diff := cmp.Diff(supabaseAuth, authObjects(t, conn)); diff != "" {
		t.Fatalf("setup: auth (-want +got):\n%s", diff)
	}

	mustDeploy(t, migrator, nil)
	checkFullyMigrated(t, conn)
	checkAPIRoles(t, conn)
	if diff := cmp.Diff(supabaseAuth, authObjects(t, conn)); diff != "" {
		t.Errorf("auth after deploying (-Supabase's +now):\n%s", diff)
	}

	for range fileVersions(t) {
		mustDeploy(t, migrator, nil, "rollback")
	}
	if applied := appliedVersions(t, conn); len(applied) > 0 {
		t.Fatalf("applied after rolling everything back: %v", applied)
	}
	if left := queryLines(t, conn, `
		SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN ('public', 'taskq_meta') AND c.relkind IN ('r', 'v', 'S', 'm', 'p')
		  AND c.relname NOT LIKE 'schema_migrations%' ORDER BY 1`); len(left) > 0 {
		t.Errorf("left after rolling everything back: %v", left)
	}
	if diff := cmp.Diff(supabaseAuth, authObjects(t, conn)); diff != "" {
		t.Errorf("auth after rolling back (-Supabase's +now):\n%s", diff)
	}

	mustDeploy(t, migrator, nil)
	checkFullyMigrated(t, conn)
	checkAPIRoles(t, conn)
}
