package rls_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/blue-banded-bee/taskq/migrate"
)

// countedUID replaces auth.uid() with a twin of the same logic that
// PostgreSQL cannot inline. The real one is a SQL function, which the
// planner inlines into the policy, so track_functions never sees it run;
// the PL/pgSQL twin is called, and counted, each time it is evaluated.
const countedUID = `
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE plpgsql STABLE
AS $fn$
BEGIN
    RETURN coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid;
END
$fn$`

// fullScans makes the planner read tables row by row. An index scan whose
// key is auth.uid() evaluates it once as the scan key whatever the policy
// looks like, which would hide the difference between the policies; read
// row by row, a policy that calls auth.uid() bare evaluates it for every
// row, one that wraps it in (SELECT auth.uid()) once per statement.
// PostgreSQL reads small tables this way anyway.
var fullScans = []string{
	"SET LOCAL enable_indexscan = off",
	"SET LOCAL enable_indexonlyscan = off",
	"SET LOCAL enable_bitmapscan = off",
}

// maxUIDCalls bounds the evaluations of auth.uid() in one statement under
// the optimised policies: one per (SELECT auth.uid()) in the policies the
// statement brings in, whatever the number of rows. The job_progress view
// brings in three tables' policies and takes the most.
const maxUIDCalls = 16

// uidCalls runs stmt as a, in a transaction of its own with function call
// counting on (and, when rowByRow, index scans off), and returns how many
// times auth.uid() ran.
func uidCalls(t *testing.T, pool *testDB, a actor, stmt string, rowByRow bool) int64 {
	t.Helper()
	ctx := context.Background()
	settings := []string{"SET LOCAL track_functions = 'pl'"}
	if rowByRow {
		settings = append(settings, fullScans...)
	}
	tx, err := begin(ctx, pool, a, settings...)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only measurement
	before := xactUIDCalls(t, tx)
	if _, err := tx.Exec(ctx, stmt); err != nil {
		t.Fatalf("%s as %s: %v", stmt, a.Name, err)
	}
	return xactUIDCalls(t, tx) - before
}

// xactUIDCalls reads the session's count of auth.uid() calls not yet
// reported to the statistics collector. Despite its name,
// pg_stat_xact_user_functions also holds calls of earlier transactions
// until the session reports them (at most once a second, between
// transactions), so a measurement is the difference of two readings inside
// one transaction, where nothing is reported. The view is read as the
// superuser, the role switched back for the reading.
func xactUIDCalls(t *testing.T, tx pgx.Tx) int64 {
	t.Helper()
	ctx := context.Background()
	role := ""
	if err := tx.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE NONE"); err != nil {
		t.Fatal(err)
	}
	var calls int64
	if err := tx.QueryRow(ctx, `
		SELECT coalesce(sum(calls), 0)::bigint
		FROM pg_catalog.pg_stat_xact_user_functions
		WHERE schemaname = 'auth' AND funcname = 'uid'`).Scan(&calls); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return calls
}

// evaluationFixture is a database with the counted auth.uid() and two
// organisations: a with 20 tasks, 20 members and one job; b with 2,000 tasks,
// 2,000 members and 51 jobs.
type evaluationFixture struct {
	pool       *testDB
	a, b       org
	statements []string
}

func setupEvaluation(t *testing.T, target string) evaluationFixture {
	t.Helper()
	pool := setup(t, target)
	f := evaluationFixture{pool: pool, a: seedOrg(t, pool, "a", 20), b: seedOrg(t, pool, "b", 2000)}
	addMembers(t, pool, f.a, 19)
	addMembers(t, pool, f.b, 1999)
	addJobs(t, pool, f.b, 50)
	exec(t, pool, "ANALYZE")
	exec(t, pool, countedUID)
	for _, r := range relations {
		if r.InBase || target == migrate.VersionLatest {
			// Every column, so that no join of the view is left out.
			f.statements = append(f.statements, "SELECT * FROM "+r.Name)
		}
	}

	// The twin must answer as the original did.
	var got string
	err := as(context.Background(), pool, memberOf(f.a), func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), "SELECT auth.uid()::text").Scan(&got)
	})
	if err != nil || got != f.a.User.String() {
		t.Fatalf("setup: the counted auth.uid() returned %q, %v; want %s", got, err, f.a.User)
	}
	return f
}

// grow adds a third organisation with 1,000 tasks and 1,000 members: rows
// neither a nor b can see, but which a scan still reads.
func (f evaluationFixture) grow(t *testing.T) {
	t.Helper()
	c := seedOrg(t, f.pool, "c", 1000)
	addMembers(t, f.pool, c, 999)
	exec(t, f.pool, "ANALYZE")
}

// TestUserIDIsEvaluatedOncePerStatement counts how often auth.uid() runs in
// one statement on each guarded table (and the progress view).
//
// Optimised policies: the count is a small constant, the same for a user
// who sees 20 tasks as for one who sees 2,000, and the same again after the
// tables grow by rows the users cannot see; with index scans or without.
//
// Base schema: with tables read row by row, the count is at least the number
// of rows read. Every old policy finds the caller's organisation with
// "users WHERE id = auth.uid()" and the users policy is "id = auth.uid()",
// so the bare call runs for each users row. (The old tasks policy's EXISTS is
// not per task: PostgreSQL 15 turns it into a hashed subplan that reads jobs
// once, so in the old schema it is users, not tasks, that multiplies calls.)
func TestUserIDIsEvaluatedOncePerStatement(t *testing.T) {
	t.Parallel()

	t.Run("optimised", func(t *testing.T) {
		t.Parallel()
		f := setupEvaluation(t, migrate.VersionLatest)
		type measure struct {
			stmt     string
			rowByRow bool
		}
		first := map[measure]int64{}
		for _, stmt := range f.statements {
			for _, rowByRow := range []bool{false, true} {
				m := measure{stmt, rowByRow}
				first[m] = uidCalls(t, f.pool, memberOf(f.a), stmt, rowByRow)
				if first[m] < 1 || first[m] > maxUIDCalls {
					t.Errorf("%s (row by row %v) as the user of a: auth.uid() ran %d times, want 1..%d",
						stmt, rowByRow, first[m], maxUIDCalls)
				}
				got := uidCalls(t, f.pool, memberOf(f.b), stmt, rowByRow)
				if got != first[m] {
					t.Errorf("%s (row by row %v): auth.uid() ran %d times for a user with 2,000 tasks, %d for one with 20",
						stmt, rowByRow, got, first[m])
				}
				t.Logf("%s (row by row %v): auth.uid() ran %d times for the user of a, %d for b", stmt, rowByRow, first[m], got)
			}
		}
		f.grow(t)
		for m, want := range first {
			for _, o := range []org{f.a, f.b} {
				if got := uidCalls(t, f.pool, memberOf(o), m.stmt, m.rowByRow); got != want {
					t.Errorf("%s (row by row %v) as the user of %s: auth.uid() ran %d times after the tables grew, %d before",
						m.stmt, m.rowByRow, o.Name, got, want)
				}
			}
		}
	})

	t.Run("base schema", func(t *testing.T) {
		t.Parallel()
		f := setupEvaluation(t, migrate.VersionBaseSchema)
		usersRows := func() int64 {
			return int64(len(collect[string](t, f.pool, `SELECT id::text FROM users`)))
		}
		before := usersRows()
		first := map[string]int64{}
		for _, stmt := range f.statements {
			for _, o := range []org{f.a, f.b} {
				got := uidCalls(t, f.pool, memberOf(o), stmt, true)
				t.Logf("%s as the user of %s: auth.uid() ran %d times (%d users rows)", stmt, o.Name, got, before)
				if got < before {
					t.Errorf("%s as the user of %s: auth.uid() ran %d times, want at least once per users row (%d)",
						stmt, o.Name, got, before)
				}
				first[stmt+" as "+o.Name] = got
			}
		}
		f.grow(t)
		added := usersRows() - before
		for _, stmt := range f.statements {
			for _, o := range []org{f.a, f.b} {
				got := uidCalls(t, f.pool, memberOf(o), stmt, true)
				if grew := got - first[stmt+" as "+o.Name]; grew < added {
					t.Errorf("%s as the user of %s: auth.uid() ran %d more times after %d users rows were added, want at least %d",
						stmt, o.Name, grew, added, added)
				}
			}
		}
	})
}

// planNode is the part of EXPLAIN (FORMAT JSON) these tests read.
type planNode struct {
	NodeType           string     `json:"Node Type"`
	ParentRelationship string     `json:"Parent Relationship"`
	SubplanName        string     `json:"Subplan Name"`
	RelationName       string     `json:"Relation Name"`
	Output             []string   `json:"Output"`
	Filter             string     `json:"Filter"`
	OneTimeFilter      string     `json:"One-Time Filter"`
	IndexCond          string     `json:"Index Cond"`
	Plans              []planNode `json:"Plans"`
}

// walk calls fn for n and every node below it.
func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

// explain returns the plan of stmt run as a (VERBOSE, without costs) and
// its JSON text.
func explain(t *testing.T, pool *testDB, a actor, stmt string) (planNode, string) {
	t.Helper()
	ctx := context.Background()
	var text string
	run := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) error {
		return q.QueryRow(ctx, "EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) "+stmt).Scan(&text)
	}
	var err error
	if a.Role == "" {
		err = run(pool)
	} else {
		err = as(ctx, pool, a, func(tx pgx.Tx) error { return run(tx) })
	}
	if err != nil {
		t.Fatalf("explain %s as %s: %v", stmt, a.Name, err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(text), &plans); err != nil || len(plans) != 1 {
		t.Fatalf("explain %s: %v\n%s", stmt, err, text)
	}
	return plans[0].Plan, text
}

// superuser runs statements as the connecting superuser, who owns the tables.
var superuser = actor{Name: "superuser"}

// computesUID reports whether an expression is auth.uid(), called or
// inlined (the inlined body reads the request.jwt.claim settings).
func computesUID(expr string) bool {
	return strings.Contains(expr, "auth.uid()") || strings.Contains(expr, "request.jwt.claim")
}

// uidPlacement says where a plan evaluates auth.uid(): in InitPlans (once per
// statement) or in the filters and index conditions of plan nodes.
type uidPlacement struct {
	InitPlans int
	InFilters int
}

func placeUID(root planNode) uidPlacement {
	var p uidPlacement
	root.walk(func(n planNode) {
		if n.ParentRelationship == "InitPlan" {
			for _, out := range n.Output {
				if computesUID(out) {
					p.InitPlans++
				}
			}
		}
		for _, cond := range []string{n.Filter, n.OneTimeFilter, n.IndexCond} {
			if computesUID(cond) {
				p.InFilters++
			}
		}
	})
	return p
}

// TestOptimisedTasksPolicyComputesUserIDInAnInitPlan reads the plan of a
// user's "SELECT count(*) FROM tasks" with the real, inlinable auth.uid():
// under the optimised policies auth.uid() is the output of InitPlans and
// appears in no filter; under the base schema's it sits in filters, evaluated
// for each row they test.
func TestOptimisedTasksPolicyComputesUserIDInAnInitPlan(t *testing.T) {
	t.Parallel()
	const stmt = "SELECT count(*) FROM tasks"
	for _, tc := range []struct {
		name   string
		target string
		check  func(uidPlacement) error
	}{
		{"optimised", migrate.VersionLatest, func(p uidPlacement) error {
			if p.InitPlans == 0 || p.InFilters != 0 {
				return fmt.Errorf("auth.uid() in %d InitPlans and %d filters, want InitPlans only", p.InitPlans, p.InFilters)
			}
			return nil
		}},
		{"base schema", migrate.VersionBaseSchema, func(p uidPlacement) error {
			if p.InitPlans != 0 || p.InFilters == 0 {
				return fmt.Errorf("auth.uid() in %d InitPlans and %d filters, want filters only", p.InitPlans, p.InFilters)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := setup(t, tc.target)
			a := seedOrg(t, pool, "a", 20)
			plan, text := explain(t, pool, memberOf(a), stmt)
			if err := tc.check(placeUID(plan)); err != nil {
				t.Errorf("%s: %v\n%s", stmt, err, text)
			}
		})
	}
}
