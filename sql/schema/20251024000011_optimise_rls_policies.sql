-- Plan step 2: row-level-security policies that evaluate the caller once per
-- statement instead of once per row.
--
-- Problem: auth.uid() is a STABLE function; called bare in a policy filter
-- (users: id = auth.uid()) it is evaluated for every row the filter sees.
-- Wrapped as (SELECT auth.uid()) it becomes an InitPlan, computed once per
-- statement and reused. (The old EXISTS policies on tasks, domains, pages and
-- share links were already planned as hashed subplans, run once; they are
-- rewritten in the same once-per-statement style for clarity.)
--
-- Beyond the plan, as Supabase recommends:
--   * TO authenticated on every policy, so anon never evaluates them;
--   * one permissive policy per table, role and action (several are OR-ed
--     and each one evaluated);
--   * privileges as narrow as the dashboard needs. Supabase grants every
--     table privilege to anon and authenticated and leaves the rest to the
--     policies; here the grants are a second wall:
--       - anon gets no table privilege at all (shared links are read through
--         the shared_job() function);
--       - users may rename themselves and their organisation, but not change
--         users.organisation_id, which would move them into another
--         organisation and show them its data;
--       - jobs, tasks, domains and pages are read-only to users: creating,
--         pausing and cancelling jobs and enqueueing tasks go through the API
--         (the service role), because they change queue state (shards,
--         pending tasks) that a bare UPDATE would bypass, and because a job
--         pointed at any domain_id would show that domain's pages, crawled
--         for another organisation. The jobs policy stays FOR ALL, as in the
--         plan, so granting writes later needs no policy change;
--       - share links: users create them in their own name for their
--         organisation's jobs (job_id, created_by, expires_at; the token
--         always comes from the column default, never from the client), and
--         any member may expire, revoke and delete the organisation's links.
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

-- One policy per action: links are created only in one's own name, while
-- any member may see, expire, revoke or delete the organisation's links
-- (UPDATE may change only expires_at and revoked_at, by column grant).
DROP POLICY "Organisation members can manage share links" ON job_share_links;
CREATE POLICY "Organisation members can read share links"
ON job_share_links FOR SELECT TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);
CREATE POLICY "Organisation members can create share links"
ON job_share_links FOR INSERT TO authenticated
WITH CHECK (
    created_by = (SELECT auth.uid())
    AND job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);
CREATE POLICY "Organisation members can expire and revoke share links"
ON job_share_links FOR UPDATE TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
)
WITH CHECK (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);
CREATE POLICY "Organisation members can delete share links"
ON job_share_links FOR DELETE TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);

REVOKE ALL ON organisations, users, domains, pages, jobs, tasks, job_share_links FROM anon;
REVOKE ALL ON SEQUENCE domains_id_seq, pages_id_seq FROM anon, authenticated;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES
    ON organisations, users, domains, pages, jobs, tasks FROM authenticated;
REVOKE TRIGGER, REFERENCES ON job_share_links FROM authenticated;
REVOKE INSERT, UPDATE, TRUNCATE ON job_share_links FROM authenticated;
GRANT UPDATE (full_name, updated_at) ON users TO authenticated;
GRANT UPDATE (name, updated_at) ON organisations TO authenticated;
GRANT INSERT (job_id, created_by, expires_at), UPDATE (expires_at, revoked_at)
    ON job_share_links TO authenticated;

-- migrate:down
GRANT USAGE, SELECT ON SEQUENCE domains_id_seq, pages_id_seq TO anon, authenticated;
REVOKE UPDATE (full_name, updated_at) ON users FROM authenticated;
REVOKE UPDATE (name, updated_at) ON organisations FROM authenticated;
REVOKE INSERT (job_id, created_by, expires_at), UPDATE (expires_at, revoked_at)
    ON job_share_links FROM authenticated;
GRANT ALL ON organisations, users, domains, pages, jobs, tasks, job_share_links
    TO anon, authenticated, service_role;

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

DROP POLICY "Organisation members can read share links" ON job_share_links;
DROP POLICY "Organisation members can create share links" ON job_share_links;
DROP POLICY "Organisation members can expire and revoke share links" ON job_share_links;
DROP POLICY "Organisation members can delete share links" ON job_share_links;
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
