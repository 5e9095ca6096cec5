-- One home for two rules the queue's statements wrote out several times.
--
-- Problem: TaskFinishMany, TaskRescueExpired and TaskReleaseMany each
-- counted the tasks they released into job_tallies with the same three CTEs
-- (group per shard, lock the tallies in key order, add), and JobLockDrained
-- and JobFinishDrained each wrote out the probe for "nothing pending or
-- running". A change to either rule had to be made in every copy.
--
-- What this adds:
--   * job_tallies_release(job_ids, shards, statuses): counts released tasks
--     (finished, handed back or rescued; one array element per task, its
--     new status) into their shards' tallies: releases, and completed,
--     failed or skipped by status. One UPDATE per shard, in key order, so
--     two releasing transactions cannot deadlock. Volatile (it writes); its
--     statements take their own snapshot, which for these increments does
--     not matter (an UPDATE adds to the newest row version). enable_seqscan
--     is off inside it: job_tallies is small, and the planner would scan it
--     once per shard even for a primary-key equality.
--   * job_drained(job_id): whether the job has no pending or running task,
--     one ordered probe of idx_tasks_job_id_status. A set-returning SQL
--     function that is STABLE, not STRICT and has no SET clause, so that
--     the planner inlines it into the calling statement: the probe runs in
--     that statement's snapshot and shows in its plan.
--
-- DATABASE.md ("The job_shards / job_tallies design") says why.
--
-- Rollback: drops both functions; the statements of the previous release
-- do not call them.

-- migrate:up
CREATE FUNCTION job_tallies_release(job_ids text[], shards smallint[], statuses task_status[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $fn$
DECLARE
    d record;
    n integer := 0;
BEGIN
    FOR d IN
        SELECT u.job_id,
               u.shard,
               count(*)::integer AS released,
               count(*) FILTER (WHERE u.status = 'completed')::integer AS completed,
               count(*) FILTER (WHERE u.status = 'failed')::integer AS failed,
               count(*) FILTER (WHERE u.status = 'skipped')::integer AS skipped
        FROM unnest(job_ids, shards, statuses) AS u(job_id, shard, status)
        GROUP BY u.job_id, u.shard
        ORDER BY u.job_id, u.shard
    LOOP
        UPDATE public.job_tallies r
        SET releases = r.releases + d.released,
            completed = r.completed + d.completed,
            failed = r.failed + d.failed,
            skipped = r.skipped + d.skipped
        WHERE r.job_id = d.job_id AND r.shard = d.shard;
        n := n + d.released;
    END LOOP;
    RETURN n;
END
$fn$;

CREATE FUNCTION job_drained(job_id text)
RETURNS TABLE (drained boolean)
LANGUAGE sql STABLE
AS $fn$
    -- status <= 'running': pending or running, a range the index returns in
    -- order, so the ordered LIMIT 1 stops at the first unfinished task.
    SELECT count(*) = 0
    FROM (
        SELECT 1
        FROM public.tasks t
        WHERE t.job_id = job_drained.job_id AND t.status <= 'running'::public.task_status
        ORDER BY t.status
        LIMIT 1
    ) unfinished
$fn$;

-- As 20251024000015 does for the earlier functions: the workers' role only.
REVOKE ALL ON FUNCTION job_tallies_release(text[], smallint[], task_status[]), job_drained(text)
    FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION job_tallies_release(text[], smallint[], task_status[]), job_drained(text)
    TO service_role;

-- migrate:down
DROP FUNCTION job_drained(text);
DROP FUNCTION job_tallies_release(text[], smallint[], task_status[]);
