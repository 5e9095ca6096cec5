-- Plan step 2: row-level-security policies that evaluate the caller once per
-- statement instead of once per row.
--
-- Problem: auth.uid() is a STABLE function; called bare in a policy it is
-- evaluated for every row the policy filters, and the tasks policy ran a
-- correlated EXISTS per task row. Wrapped as (SELECT auth.uid()) it becomes an
-- InitPlan, computed once per statement and reused.
--
-- Beyond the plan, as Supabase recommends:
--   * TO authenticated on every policy, so anon never evaluates them;
--   * one permissive policy per table, role and action (several are OR-ed
--     and each one evaluated);
--   * the tasks policy selects the caller's job ids once (a hashed subplan)
--     instead of a correlated EXISTS per task row;
--   * writes only where the dashboard needs them. Supabase grants every table
--     privilege to anon and authenticated, so the policies and column grants
--     are the whole defence: a user may rename themselves but not change
--     users.organisation_id (which would move them into another organisation
--     and show them its data), and tasks, domains and pages are read-only to
--     users because the queue's own bookkeeping (job_shards) must see every
--     task state change.
--
-- Rollback: restores the previous policies and grants.

-- migrate:up
DROP POLICY "Users can access own data" ON users;
CREATE POLICY "Users can access own data"
ON users FOR ALL TO authenticated
USING (id = (SELECT auth.uid()));

DROP POLICY "Users can access own organisation" ON organisations;
CREATE POLICY "Users can access own organisation"
ON organisations FOR ALL TO authenticated
USING (id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid())));

DROP POLICY "Organisation members can access jobs" ON jobs;
CREATE POLICY "Organisation members can access jobs"
ON jobs FOR ALL TO authenticated
USING (organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid())));

DROP POLICY "Organisation members can access tasks" ON tasks;
CREATE POLICY "Organisation members can access tasks"
ON tasks FOR SELECT TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);

DROP POLICY "Organisation members can access domains" ON domains;
CREATE POLICY "Organisation members can access domains"
ON domains FOR SELECT TO authenticated
USING (
    id IN (
        SELECT domain_id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);

DROP POLICY "Organisation members can access pages" ON pages;
CREATE POLICY "Organisation members can access pages"
ON pages FOR SELECT TO authenticated
USING (
    domain_id IN (
        SELECT domain_id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);

DROP POLICY "Organisation members can manage share links" ON job_share_links;
CREATE POLICY "Organisation members can manage share links"
ON job_share_links FOR ALL TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
)
WITH CHECK (
    created_by = (SELECT auth.uid())
    AND job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON users, organisations, tasks, domains, pages
    FROM anon, authenticated;
GRANT UPDATE (full_name, updated_at) ON users TO authenticated;
GRANT UPDATE (name, updated_at) ON organisations TO authenticated;
REVOKE TRUNCATE ON jobs, job_share_links FROM anon, authenticated;

-- migrate:down
GRANT ALL ON organisations, users, domains, pages, jobs, tasks, job_share_links
    TO anon, authenticated, service_role;
REVOKE UPDATE (full_name, updated_at) ON users FROM authenticated;
REVOKE UPDATE (name, updated_at) ON organisations FROM authenticated;

DROP POLICY "Users can access own data" ON users;
CREATE POLICY "Users can access own data"
ON users FOR ALL
USING (id = auth.uid());

DROP POLICY "Users can access own organisation" ON organisations;
CREATE POLICY "Users can access own organisation"
ON organisations FOR ALL
USING (id = (SELECT organisation_id FROM users WHERE id = auth.uid()));

DROP POLICY "Organisation members can access jobs" ON jobs;
CREATE POLICY "Organisation members can access jobs"
ON jobs FOR ALL
USING (organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid()));

DROP POLICY "Organisation members can access tasks" ON tasks;
CREATE POLICY "Organisation members can access tasks"
ON tasks FOR ALL
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.id = tasks.job_id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);

DROP POLICY "Organisation members can access domains" ON domains;
CREATE POLICY "Organisation members can access domains"
ON domains FOR SELECT
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.domain_id = domains.id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);

DROP POLICY "Organisation members can access pages" ON pages;
CREATE POLICY "Organisation members can access pages"
ON pages FOR SELECT
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.domain_id = pages.domain_id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);

DROP POLICY "Organisation members can manage share links" ON job_share_links;
CREATE POLICY "Organisation members can manage share links"
ON job_share_links FOR ALL
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.id = job_share_links.job_id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);
