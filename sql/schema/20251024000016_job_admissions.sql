-- Enqueueing without a hot job row.
--
-- Problem: a crawl finds its pages as it goes, and every worker that finishes
-- a page adds the links it found to the same job. Each enqueue locked the
-- job's row to count max_pages and moved its total once per call, so 32
-- workers discovering links in one job queued behind one row (2,898
-- tasks/min against 119,583 for the same pages enqueued up front).
--
-- What replaces it: job_admissions, a fixed set of slot rows per job that
-- enqueues lock with SKIP LOCKED, as claims lock job_shards. A job's
-- max_pages is split over its slots as quotas; a page becomes a pending task
-- only by spending one unit of some slot's quota, so never more than
-- max_pages are admitted, and while any slot has quota left an enqueue finds
-- it, so max_pages are admitted when the site has that many pages. The
-- slots also count the tasks added and skipped since the last roll-up into
-- the jobs row (job_progress adds them), so no statement writes the jobs row
-- per enqueue. A job has slots while it runs or may run; they are retired,
-- their counts moved into the jobs row, when it completes or is cancelled,
-- and a completed job that a crawl reopens gets them back.
--
-- Rollback: folds the slots' counts into the jobs rows, restores the view
-- and drops the table and functions.

-- migrate:up
-- The share of the job's pages finished, in percent: the one formula every
-- statement that writes jobs.progress uses.
CREATE FUNCTION job_percent_done(total integer, done integer) RETURNS real
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT CASE WHEN total > 0 THEN (100.0 * done / total)::real ELSE 0 END $fn$;

-- How many admission slots every job has. Enough that the workers of one
-- host adding links at once each find a free one.
CREATE FUNCTION job_admission_slots() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT 32 $fn$;

CREATE TABLE job_admissions (
    job_id  text     NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    slot    smallint NOT NULL,
    -- Pages this slot may still admit as pending tasks; NULL when the job has
    -- no max_pages.
    quota   integer  CHECK (quota >= 0),
    -- Tasks added (pending or skipped) and skipped since the last roll-up.
    added   integer  NOT NULL DEFAULT 0,
    skipped integer  NOT NULL DEFAULT 0,
    -- Pending tasks this slot ever admitted: where its round-robin over the
    -- job's shards goes on.
    dealt   bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, slot)
) WITH (fillfactor = 50);
-- Only the key is indexed and half of each page is free: updates are HOT.

COMMENT ON TABLE job_admissions IS
    'Per job slot: what is left of max_pages to admit, and tasks added and skipped since the last roll-up into jobs. Enqueues lock one slot with SKIP LOCKED.';

-- Sets a job's slot quotas to what is left of max_pages: at creation, when
-- max_pages changes, and for jobs that exist when this migration runs.
-- Admitted = tasks added minus skipped, rolled up or not.
CREATE FUNCTION job_admissions_spread(p_job_id text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $fn$
DECLARE
    n integer := job_admission_slots();
    cap integer;
    admitted bigint;
BEGIN
    INSERT INTO job_admissions (job_id, slot)
    SELECT p_job_id, s FROM generate_series(0, n - 1) AS s
    ON CONFLICT (job_id, slot) DO NOTHING;
    -- Every slot locked, in key order, so that no enqueue spends a quota
    -- while it is being recomputed.
    PERFORM 1 FROM job_admissions WHERE job_id = p_job_id ORDER BY slot FOR NO KEY UPDATE;
    SELECT j.max_pages,
           j.total_tasks - j.skipped_tasks + coalesce(sum(a.added - a.skipped), 0)
    INTO cap, admitted
    FROM jobs j LEFT JOIN job_admissions a ON a.job_id = j.id
    WHERE j.id = p_job_id
    GROUP BY j.id;
    UPDATE job_admissions
    SET quota = CASE WHEN cap = 0 THEN NULL
                     ELSE greatest(cap - admitted, 0) / n
                          + (slot < greatest(cap - admitted, 0) % n)::integer END
    WHERE job_id = p_job_id;
END
$fn$;

-- A completed job has no slots (JobAdmissionsClose retired them): it gets
-- them back when an enqueue reopens it.
CREATE FUNCTION job_admissions_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $fn$
BEGIN
    IF NEW.status IN ('pending', 'running', 'paused') THEN
        PERFORM job_admissions_spread(NEW.id);
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER jobs_sync_admissions
AFTER INSERT OR UPDATE OF max_pages ON jobs
FOR EACH ROW EXECUTE FUNCTION job_admissions_sync();

SELECT job_admissions_spread(id) FROM jobs WHERE status IN ('pending', 'running', 'paused');

-- Exact progress now also adds what the slots counted since the roll-up.
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

ALTER TABLE job_admissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Organisation members can read job admissions"
ON job_admissions FOR SELECT TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);
-- As migration 20251024000015 does for the earlier objects: the API roles
-- hold what they need and no more (Supabase's default privileges would hand
-- them everything, PostgreSQL's every function to PUBLIC); the worker's
-- role calls the functions its queries use.
REVOKE ALL ON job_admissions FROM PUBLIC, anon, authenticated;
GRANT SELECT ON job_admissions TO authenticated;
GRANT ALL ON job_admissions TO service_role;
REVOKE ALL ON FUNCTION job_percent_done(integer, integer), job_admission_slots(),
    job_admissions_spread(text), job_admissions_sync() FROM PUBLIC, anon, authenticated;
GRANT EXECUTE ON FUNCTION job_percent_done(integer, integer), job_admission_slots(),
    job_admissions_spread(text) TO service_role;

-- migrate:down
UPDATE jobs
SET total_tasks = jobs.total_tasks + a.added,
    skipped_tasks = jobs.skipped_tasks + a.skipped
FROM (
    SELECT job_id, sum(added) AS added, sum(skipped) AS skipped
    FROM job_admissions
    GROUP BY job_id
) a
WHERE jobs.id = a.job_id;

CREATE OR REPLACE VIEW job_progress WITH (security_invoker = true) AS
SELECT
    j.id AS job_id,
    j.status,
    j.total_tasks,
    j.completed_tasks + coalesce(t.completed, 0) AS completed_tasks,
    j.failed_tasks + coalesce(t.failed, 0) AS failed_tasks,
    j.skipped_tasks,
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
) t ON true;

DROP TRIGGER jobs_sync_admissions ON jobs;
DROP FUNCTION job_admissions_sync();
DROP FUNCTION job_admissions_spread(text);
DROP TABLE job_admissions;
DROP FUNCTION job_admission_slots();
DROP FUNCTION job_percent_done(integer, integer);
