package rls_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blue-banded-bee/taskq/migrate"
)

// TestServiceRoleSeesEveryRow: service_role has BYPASSRLS, as on Supabase,
// so it reads every row of every guarded table and of the progress view.
func TestServiceRoleSeesEveryRow(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, pool *testDB) {
		a := seedOrg(t, pool, "a", 5)
		b := seedOrg(t, pool, "b", 7)

		var bypass bool
		if err := pool.QueryRow(context.Background(),
			`SELECT rolbypassrls FROM pg_roles WHERE rolname = 'service_role'`).Scan(&bypass); err != nil {
			t.Fatal(err)
		}
		if !bypass {
			t.Fatal("service_role lacks BYPASSRLS")
		}
		if diff := cmp.Diff(union(a.rows(), b.rows()), visible(t, pool, serviceRole()), sameRows); diff != "" {
			t.Errorf("service_role sees (-every row +got):\n%s", diff)
		}
	})
}

// TestServiceRoleStatementsCarryNoPolicy explains statements of the queue's
// kind as service_role: each plan is exactly the table owner's, with no
// InitPlan, SubPlan or filter that a policy would add. As a check that the
// comparison can see a policy, the same tasks statement as a user does differ.
func TestServiceRoleStatementsCarryNoPolicy(t *testing.T) {
	t.Parallel()
	pool := setup(t, migrate.VersionLatest)
	a := seedOrg(t, pool, "a", 50)
	exec(t, pool, "ANALYZE")

	statements := []string{
		`SELECT id, page_id, path FROM tasks
		 WHERE job_id = 'job-a' AND shard = 0 AND status = 'pending'
		 ORDER BY priority_score DESC, created_at LIMIT 5`,
		`SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at < now()`,
		`SELECT status, concurrency FROM jobs WHERE id = 'job-a'`,
		`SELECT s.shard, s.capacity - (s.claims - r.releases)
		 FROM job_shards s JOIN job_tallies r USING (job_id, shard)
		 WHERE s.job_id = 'job-a'`,
		`SELECT * FROM job_progress WHERE job_id = 'job-a'`,
	}
	for _, stmt := range statements {
		owner, ownerText := explain(t, pool, superuser, stmt)
		service, serviceText := explain(t, pool, serviceRole(), stmt)
		if diff := cmp.Diff(ownerText, serviceText); diff != "" {
			t.Errorf("%s\nas service_role differs from the table owner's plan (-owner +service_role):\n%s", stmt, diff)
		}
		if n := policyNodes(owner); n != 0 {
			t.Errorf("%s\nthe owner's plan has %d InitPlan or SubPlan nodes; pick a statement without subqueries:\n%s",
				stmt, n, ownerText)
		}
		if n := policyNodes(service); n != 0 || placeUID(service) != (uidPlacement{}) {
			t.Errorf("%s\nas service_role has %d InitPlan or SubPlan nodes and auth.uid() in %+v:\n%s",
				stmt, n, placeUID(service), serviceText)
		}
	}

	_, ownerText := explain(t, pool, superuser, statements[0])
	_, userText := explain(t, pool, memberOf(a), statements[0])
	if ownerText == userText {
		t.Errorf("a user's plan of the claim statement is the owner's: the comparison cannot see policies\n%s", userText)
	}
}

// policyNodes counts the plan nodes that run a subquery: where a policy's
// (SELECT auth.uid()) or job_id IN (...) would show.
func policyNodes(root planNode) int {
	n := 0
	root.walk(func(p planNode) {
		if p.ParentRelationship == "InitPlan" || p.ParentRelationship == "SubPlan" {
			n++
		}
	})
	return n
}
