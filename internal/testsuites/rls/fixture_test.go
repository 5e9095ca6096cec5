package rls_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blue-banded-bee/taskq/internal/pgtest"
	"github.com/blue-banded-bee/taskq/migrate"
)

// sqlStateRefused is insufficient_privilege: PostgreSQL's answer both to a
// missing table or column privilege and to a row a policy's WITH CHECK (or,
// for ON CONFLICT DO UPDATE, USING) rejects.
const sqlStateRefused = "42501"

// claimSettings is how a request's JWT claims reach the database: the
// settings PostgREST makes, which auth.uid() reads.
type claimSettings int

const (
	// claimsJSON is request.jwt.claims, every claim in one JSON object, as
	// PostgREST 9 and later set it.
	claimsJSON claimSettings = iota + 1
	// claimPerSetting is request.jwt.claim.sub, .role and so on, one
	// setting per claim, as PostgREST set them before version 9; the
	// auth.uid() of Supabase's init scripts reads only these.
	claimPerSetting
)

// testDB is a superuser pool on a test database, and the claim settings its
// auth.uid() reads.
type testDB struct {
	*pgxpool.Pool
	claims claimSettings
}

// backend is a kind of database the suite runs against.
type backend struct {
	name   string
	url    func(t testing.TB, target string) string
	claims claimSettings
}

// backends: plain PostgreSQL with the project's own auth.uid(), and a
// Supabase-shaped database (internal/pgtest/supabase.sql, migrated by a
// role that is no superuser) with each of Supabase's: the init scripts',
// fed the old per-claim settings, and the current one, fed the JSON.
var backends = []backend{
	{name: "plain", url: pgtest.URL, claims: claimsJSON},
	{name: "supabase_claim_sub", claims: claimPerSetting, url: func(t testing.TB, target string) string {
		return pgtest.SupabaseURL(t, target, pgtest.SupabaseAuthClaimSub)
	}},
	{name: "supabase_claims", claims: claimsJSON, url: func(t testing.TB, target string) string {
		return pgtest.SupabaseURL(t, target, pgtest.SupabaseAuthClaims)
	}},
}

func (b backend) setup(t *testing.T, target string) *testDB {
	t.Helper()
	return &testDB{Pool: pgtest.Pool(t, b.url(t, target), 4), claims: b.claims}
}

// setup returns a superuser pool on a new plain database migrated to target.
func setup(t *testing.T, target string) *testDB {
	t.Helper()
	return backends[0].setup(t, target)
}

// eachBackend runs test, in a parallel subtest per backend, on a new
// database of that backend with every migration applied.
func eachBackend(t *testing.T, test func(t *testing.T, pool *testDB)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			test(t, b.setup(t, migrate.VersionLatest))
		})
	}
}

// org is one organisation's rows, as seedOrg wrote them.
type org struct {
	Name   string
	ID     uuid.UUID
	User   uuid.UUID
	Domain int32
	Pages  []int32
	Job    string
	Tasks  []string
	Link   uuid.UUID
	Token  string
	Shards []int16
}

// seedOrg writes, as the superuser, an organisation with one member, a
// domain with n pages, a job of concurrency 8 (two shards) with one task per
// page, and a live share link of the job. From the task_queue migration on,
// the jobs insert trigger creates the job's job_shards and job_tallies rows.
func seedOrg(t *testing.T, pool *testDB, name string, n int) org {
	t.Helper()
	ctx := context.Background()
	o := org{Name: name, ID: uuid.New(), User: uuid.New(), Job: "job-" + name}
	exec(t, pool, `INSERT INTO organisations (id, name) VALUES ($1, $2)`, o.ID, "Organisation "+name)
	exec(t, pool, `INSERT INTO users (id, email, full_name, organisation_id) VALUES ($1, $2, $3, $4)`,
		o.User, "member@"+name+".example", "Member of "+name, o.ID)
	if err := pool.QueryRow(ctx, `INSERT INTO domains (name) VALUES ($1) RETURNING id`,
		name+".example").Scan(&o.Domain); err != nil {
		t.Fatalf("seed %s domain: %v", name, err)
	}
	o.Pages = collect[int32](t, pool, `
		INSERT INTO pages (domain_id, path)
		SELECT $1, '/page-' || g FROM generate_series(1, $2::integer) AS g
		RETURNING id`, o.Domain, n)
	exec(t, pool, `
		INSERT INTO jobs (id, domain_id, user_id, organisation_id, status, concurrency)
		VALUES ($1, $2, $3, $4, 'running', 8)`, o.Job, o.Domain, o.User, o.ID)
	o.Tasks = collect[string](t, pool, `
		INSERT INTO tasks (job_id, page_id, path)
		SELECT $1, id, path FROM pages WHERE domain_id = $2
		RETURNING id`, o.Job, o.Domain)
	if err := pool.QueryRow(ctx, `
		INSERT INTO job_share_links (job_id, created_by) VALUES ($1, $2) RETURNING id, token`,
		o.Job, o.User).Scan(&o.Link, &o.Token); err != nil {
		t.Fatalf("seed %s share link: %v", name, err)
	}
	var queue bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('job_shards') IS NOT NULL`).Scan(&queue); err != nil {
		t.Fatal(err)
	}
	if !queue {
		return o // the base schema, before job_shards
	}
	o.Shards = collect[int16](t, pool, `SELECT shard FROM job_shards WHERE job_id = $1`, o.Job)
	if len(o.Shards) < 2 {
		t.Fatalf("seed %s: the job has %d shards, want at least 2", name, len(o.Shards))
	}
	return o
}

// addMembers adds n more users to o's organisation.
func addMembers(t *testing.T, pool *testDB, o org, n int) {
	t.Helper()
	exec(t, pool, `
		INSERT INTO users (id, email, organisation_id)
		SELECT gen_random_uuid(), 'member-' || g || '@' || $1 || '.example', $2
		FROM generate_series(1, $3::integer) AS g`, o.Name, o.ID, n)
}

// addJobs adds n more jobs, without tasks, to o's organisation.
func addJobs(t *testing.T, pool *testDB, o org, n int) {
	t.Helper()
	exec(t, pool, `
		INSERT INTO jobs (id, domain_id, user_id, organisation_id, concurrency)
		SELECT $1 || '-extra-' || g, $2, $3, $4, 8
		FROM generate_series(1, $5::integer) AS g`, o.Job, o.Domain, o.User, o.ID, n)
}

// rows lists, per relation, the keys of o's rows (see relations).
func (o org) rows() map[string][]string {
	shards := make([]string, len(o.Shards))
	for i, s := range o.Shards {
		shards[i] = o.Job + "/" + strconv.Itoa(int(s))
	}
	pages := make([]string, len(o.Pages))
	for i, p := range o.Pages {
		pages[i] = strconv.Itoa(int(p))
	}
	return map[string][]string{
		"organisations":   {o.ID.String()},
		"users":           {o.User.String()},
		"domains":         {strconv.Itoa(int(o.Domain))},
		"pages":           pages,
		"jobs":            {o.Job},
		"tasks":           o.Tasks,
		"job_share_links": {o.Link.String()},
		"job_shards":      shards,
		"job_tallies":     shards,
		"job_progress":    {o.Job},
	}
}

// relation is a table the policies guard, or the progress view, with a
// query listing the key of every row the caller can see.
type relation struct {
	Name string
	Keys string
	// View is true for job_progress, which has no rows of its own.
	View bool
	// InBase is true for the tables the base schema already had.
	InBase bool
}

var relations = []relation{
	{Name: "organisations", Keys: `SELECT id::text FROM organisations`, InBase: true},
	{Name: "users", Keys: `SELECT id::text FROM users`, InBase: true},
	{Name: "domains", Keys: `SELECT id::text FROM domains`, InBase: true},
	{Name: "pages", Keys: `SELECT id::text FROM pages`, InBase: true},
	{Name: "jobs", Keys: `SELECT id FROM jobs`, InBase: true},
	{Name: "tasks", Keys: `SELECT id FROM tasks`, InBase: true},
	{Name: "job_share_links", Keys: `SELECT id::text FROM job_share_links`, InBase: true},
	{Name: "job_shards", Keys: `SELECT job_id || '/' || shard FROM job_shards`},
	{Name: "job_tallies", Keys: `SELECT job_id || '/' || shard FROM job_tallies`},
	{Name: "job_progress", Keys: `SELECT job_id FROM job_progress`, View: true},
}

// nothing is what a caller who may see no row gets: every relation empty.
func nothing() map[string][]string {
	out := map[string][]string{}
	for _, r := range relations {
		out[r.Name] = nil
	}
	return out
}

// union merges row lists per relation.
func union(views ...map[string][]string) map[string][]string {
	out := map[string][]string{}
	for _, v := range views {
		for name, keys := range v {
			out[name] = append(out[name], keys...)
		}
	}
	return out
}

// actor is who runs a statement: a database role and, for authenticated,
// the user id the JWT names.
type actor struct {
	Name string
	Role string
	// Sub is the JWT's subject; uuid.Nil sends no JWT at all.
	Sub uuid.UUID
}

func anon() actor { return actor{Name: "anon", Role: "anon"} }

func serviceRole() actor { return actor{Name: "service_role", Role: "service_role"} }

func memberOf(o org) actor {
	return actor{Name: "user of " + o.Name, Role: "authenticated", Sub: o.User}
}

// begin opens a transaction that runs as a: SET LOCAL ROLE and the JWT
// claims PostgREST would set, both undone when the transaction ends. The
// statements in first run before the role switch, as the superuser.
func begin(ctx context.Context, pool *testDB, a actor, first ...string) (pgx.Tx, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (pgx.Tx, error) {
		tx.Rollback(ctx) //nolint:errcheck // the first error is the one to report
		return nil, err
	}
	for _, stmt := range first {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fail(fmt.Errorf("%s: %w", stmt, err))
		}
	}
	if a.Sub != uuid.Nil {
		if err := setClaims(ctx, tx, pool.claims, map[string]string{"sub": a.Sub.String(), "role": a.Role}); err != nil {
			return fail(err)
		}
	}
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{a.Role}.Sanitize()); err != nil {
		return fail(fmt.Errorf("set role %s: %w", a.Role, err))
	}
	return tx, nil
}

// setClaims sets the JWT claims for the transaction in the settings style
// names.
func setClaims(ctx context.Context, tx pgx.Tx, style claimSettings, claims map[string]string) error {
	switch style {
	case claimsJSON:
		text, err := json.Marshal(claims)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claims', $1, true)`, string(text)); err != nil {
			return fmt.Errorf("set claims: %w", err)
		}
	case claimPerSetting:
		for name, value := range claims {
			if _, err := tx.Exec(ctx, `SELECT set_config('request.jwt.claim.' || $1, $2, true)`, name, value); err != nil {
				return fmt.Errorf("set claim %s: %w", name, err)
			}
		}
	default:
		return fmt.Errorf("unknown claim settings %d", style)
	}
	return nil
}

// as runs fn in its own transaction as a, and commits when fn succeeds, so
// that anything fn managed to change stays for the caller to find.
func as(ctx context.Context, pool *testDB, a actor, fn func(pgx.Tx) error) error {
	tx, err := begin(ctx, pool, a)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback(ctx) //nolint:errcheck // the statement's error is the one to report
		return err
	}
	return tx.Commit(ctx)
}

// visible lists, per relation, the keys of the rows a sees. A relation a
// may not read at all (SQLSTATE 42501) counts as one where a sees nothing;
// any other error fails the test.
func visible(t *testing.T, pool *testDB, a actor) map[string][]string {
	t.Helper()
	ctx := context.Background()
	out := map[string][]string{}
	for _, r := range relations {
		var keys []string
		err := as(ctx, pool, a, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, r.Keys)
			if err != nil {
				return err
			}
			keys, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		switch {
		case sqlState(err) == sqlStateRefused:
			t.Logf("%s may not read %s at all: %v", a.Name, r.Name, err)
		case err != nil:
			t.Fatalf("%s reading %s: %v", a.Name, r.Name, err)
		}
		out[r.Name] = keys
	}
	return out
}

// snapshot is every row of every table, as the superuser sees it.
func snapshot(t *testing.T, pool *testDB) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range relations {
		if r.View {
			continue
		}
		out[r.Name] = collect[string](t, pool,
			fmt.Sprintf(`SELECT to_jsonb(t)::text FROM %s t ORDER BY 1`, pgx.Identifier{r.Name}.Sanitize()))
	}
	return out
}

// sqlState is the SQLSTATE of a PostgreSQL error, or "" for anything else.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func exec(t *testing.T, pool *testDB, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

func collect[T any](t *testing.T, pool *testDB, sql string, args ...any) []T {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	if err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	return out
}
