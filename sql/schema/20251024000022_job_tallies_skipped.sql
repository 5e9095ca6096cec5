-- A claimed task can be finished as skipped.
--
-- Problem: the application's worker writes 'skipped' for a task it decides
-- not to fetch after claiming it (UpdateTaskStatus). The queue counted a
-- finished task in the shard's tally only as completed or failed, so it had
-- no way to record a skip: skipped counts came only from enqueues past
-- max_pages and cancelled jobs (job_admissions, JobSweepCancelled).
--
-- The tally gains a skipped count, moved into jobs.skipped_tasks by the
-- roll-up as completed and failed are, and job_progress adds it. A constant
-- default is a catalog change: nothing is rewritten.
--
-- Rollback: folds the tallies' skipped counts into the jobs rows, restores
-- the view and drops the column.

-- migrate:up
ALTER TABLE job_tallies ADD COLUMN skipped integer NOT NULL DEFAULT 0;

CREATE OR REPLACE VIEW job_progress WITH (security_invoker = true) AS
SELECT
    j.id AS job_id,
    j.status,
    j.total_tasks + coalesce(a.added, 0) AS total_tasks,
    j.completed_tasks + coalesce(t.completed, 0) AS completed_tasks,
    j.failed_tasks + coalesce(t.failed, 0) AS failed_tasks,
    j.skipped_tasks + coalesce(a.skipped, 0) + coalesce(t.skipped, 0) AS skipped_tasks,
    coalesce(s.claims, 0) - coalesce(t.releases, 0) AS running_tasks,
    j.created_at,
    j.started_at,
    j.completed_at
FROM jobs j
LEFT JOIN LATERAL (
    SELECT sum(claims)::integer AS claims
    FROM job_shards
    WHERE job_shards.job_id = j.id
) s ON true
LEFT JOIN LATERAL (
    SELECT
        sum(releases)::integer AS releases,
        sum(completed)::integer AS completed,
        sum(failed)::integer AS failed,
        sum(skipped)::integer AS skipped
    FROM job_tallies
    WHERE job_tallies.job_id = j.id
) t ON true
LEFT JOIN LATERAL (
    SELECT sum(added)::integer AS added, sum(skipped)::integer AS skipped
    FROM job_admissions
    WHERE job_admissions.job_id = j.id
) a ON true;

-- migrate:down
UPDATE jobs
SET skipped_tasks = jobs.skipped_tasks + t.skipped,
    progress = job_percent_done(jobs.total_tasks,
                                jobs.completed_tasks + jobs.failed_tasks + jobs.skipped_tasks + t.skipped)
FROM (
    SELECT job_id, sum(skipped)::integer AS skipped
    FROM job_tallies
    GROUP BY job_id
) t
WHERE jobs.id = t.job_id AND t.skipped > 0;

CREATE OR REPLACE VIEW job_progress WITH (security_invoker = true) AS
SELECT
    j.id AS job_id,
    j.status,
    j.total_tasks + coalesce(a.added, 0) AS total_tasks,
    j.completed_tasks + coalesce(t.completed, 0) AS completed_tasks,
    j.failed_tasks + coalesce(t.failed, 0) AS failed_tasks,
    j.skipped_tasks + coalesce(a.skipped, 0) AS skipped_tasks,
    coalesce(s.claims, 0) - coalesce(t.releases, 0) AS running_tasks,
    j.created_at,
    j.started_at,
    j.completed_at
FROM jobs j
LEFT JOIN LATERAL (
    SELECT sum(claims)::integer AS claims
    FROM job_shards
    WHERE job_shards.job_id = j.id
) s ON true
LEFT JOIN LATERAL (
    SELECT
        sum(releases)::integer AS releases,
        sum(completed)::integer AS completed,
        sum(failed)::integer AS failed
    FROM job_tallies
    WHERE job_tallies.job_id = j.id
) t ON true
LEFT JOIN LATERAL (
    SELECT sum(added)::integer AS added, sum(skipped)::integer AS skipped
    FROM job_admissions
    WHERE job_admissions.job_id = j.id
) a ON true;

ALTER TABLE job_tallies DROP COLUMN skipped;
