-- Plan step 3 and what the queue needs: leases, exact per-job concurrency and
-- exact progress counters, all without a hot job row.
--
-- Problem: the per-task trigger update_job_counters updated the job's row on
-- every task insert and status change. With 40 workers on one job every
-- completion queued on that one row: the 2-6 s lock waits of the load test,
-- and deadlocks when two workers' transactions touched it in another order.
--
-- What replaces it:
--   * job_shards: each job's concurrency is split over a few shard rows
--     (capacity, running) that also carry the job's completed and failed
--     counts since the last roll-up. A claim locks one free shard with
--     SKIP LOCKED, so claimers of one job proceed in parallel on different
--     shards, and running <= capacity on every shard bounds the job exactly.
--     Completing tasks moves their counts on the same shard row in the same
--     statement, so counters are exact and no statement writes the jobs row
--     per task.
--   * Progress = jobs counters (rolled up periodically and when the job ends)
--     + the shards' counts since; the job_progress view adds them.
--   * tasks get a lease: claimed_by and attempt identify the claim, and
--     lease_expires_at says when a rescuer may take the task back. An update
--     for a finished claim only lands while (claimed_by, attempt) still match.
--   * run_after delays a retried task (backoff).
--
-- Rollback: restores the counter trigger (after folding the shards' counts
-- into the jobs rows) and drops the new columns and objects.

-- migrate:up
ALTER TABLE jobs
    ADD COLUMN max_retries integer NOT NULL DEFAULT 3 CHECK (max_retries >= 0);

ALTER TABLE tasks
    ADD COLUMN attempt          integer     NOT NULL DEFAULT 0,
    ADD COLUMN claimed_by       text,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN run_after        timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN shard            smallint;

CREATE TABLE job_shards (
    job_id    text     NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    shard     smallint NOT NULL,
    -- Tasks of the job this shard may have running at once.
    capacity  integer  NOT NULL CHECK (capacity >= 0),
    -- Tasks of the job running on this shard now.
    running   integer  NOT NULL DEFAULT 0 CHECK (running >= 0),
    -- Counts since the last roll-up into the jobs row.
    completed integer  NOT NULL DEFAULT 0,
    failed    integer  NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, shard)
) WITH (fillfactor = 50);
-- No column of job_shards but the key is indexed, and half of each page is
-- kept free, so its updates are HOT and cost one heap write each.

COMMENT ON TABLE job_shards IS
    'A job''s concurrency split over shard rows that claims lock with SKIP LOCKED, and its task counts since the last roll-up into jobs.';

-- How many shards a job of the given concurrency gets, and shard i's share of
-- it. A few shards suffice: one claimer holds a shard only for the length of
-- its claim statement.
CREATE FUNCTION job_shard_count(concurrency integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT least(16, greatest(1, concurrency / 4)) $fn$;

CREATE FUNCTION job_shard_capacity(concurrency integer, shard integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT concurrency / job_shard_count(concurrency)
        + (shard < concurrency % job_shard_count(concurrency))::integer
$fn$;

-- Keeps a job's shards in step with jobs.concurrency: created with the job,
-- resized when concurrency changes (a shard that loses capacity keeps its
-- running tasks; new claims wait until they finish).
CREATE FUNCTION job_shards_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $fn$
BEGIN
    INSERT INTO job_shards (job_id, shard, capacity)
    SELECT NEW.id, s, job_shard_capacity(NEW.concurrency, s)
    FROM generate_series(0, job_shard_count(NEW.concurrency) - 1) AS s
    ON CONFLICT (job_id, shard) DO UPDATE SET capacity = excluded.capacity;

    UPDATE job_shards
    SET capacity = 0
    WHERE job_id = NEW.id AND shard >= job_shard_count(NEW.concurrency);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER jobs_sync_shards
AFTER INSERT OR UPDATE OF concurrency ON jobs
FOR EACH ROW EXECUTE FUNCTION job_shards_sync();

-- Existing jobs that can still run get their shards. Tasks already running
-- under the old code get a lease so that the rescuer returns them if their
-- worker is gone; they hold no shard, so they do not count against the limit
-- during the switch-over.
INSERT INTO job_shards (job_id, shard, capacity)
SELECT j.id, s, job_shard_capacity(j.concurrency, s)
FROM jobs j, generate_series(0, job_shard_count(j.concurrency) - 1) AS s
WHERE j.status IN ('pending', 'running', 'paused');

UPDATE tasks
SET lease_expires_at = now() + interval '5 minutes', attempt = 1
WHERE status = 'running';

DROP TRIGGER tasks_update_job_counters ON tasks;
DROP FUNCTION update_job_counters();

-- A job's exact progress: the counts rolled up into its row plus those its
-- shards gathered since. security_invoker applies the reader's own policies.
CREATE VIEW job_progress WITH (security_invoker = true) AS
SELECT
    j.id AS job_id,
    j.status,
    j.total_tasks,
    j.completed_tasks + coalesce(s.completed, 0) AS completed_tasks,
    j.failed_tasks + coalesce(s.failed, 0) AS failed_tasks,
    j.skipped_tasks,
    coalesce(s.running, 0) AS running_tasks,
    j.created_at,
    j.started_at,
    j.completed_at
FROM jobs j
LEFT JOIN LATERAL (
    SELECT
        sum(completed)::integer AS completed,
        sum(failed)::integer AS failed,
        sum(running)::integer AS running
    FROM job_shards
    WHERE job_shards.job_id = j.id
) s ON true;

ALTER TABLE job_shards ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Organisation members can read job shards"
ON job_shards FOR SELECT TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);
GRANT SELECT ON job_shards, job_progress TO authenticated;
GRANT ALL ON job_shards TO service_role;
GRANT SELECT ON job_progress TO service_role;

-- migrate:down
DROP VIEW job_progress;

UPDATE jobs
SET completed_tasks = jobs.completed_tasks + s.completed,
    failed_tasks = jobs.failed_tasks + s.failed
FROM (
    SELECT job_id, sum(completed) AS completed, sum(failed) AS failed
    FROM job_shards
    GROUP BY job_id
) s
WHERE jobs.id = s.job_id;

DROP TRIGGER jobs_sync_shards ON jobs;
DROP FUNCTION job_shards_sync();
DROP TABLE job_shards;
DROP FUNCTION job_shard_capacity(integer, integer);
DROP FUNCTION job_shard_count(integer);

ALTER TABLE tasks
    DROP COLUMN attempt,
    DROP COLUMN claimed_by,
    DROP COLUMN lease_expires_at,
    DROP COLUMN run_after,
    DROP COLUMN shard;
ALTER TABLE jobs DROP COLUMN max_retries;

CREATE FUNCTION update_job_counters() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE jobs
        SET total_tasks   = total_tasks + 1,
            skipped_tasks = skipped_tasks + (NEW.status = 'skipped')::int
        WHERE id = NEW.job_id;
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        UPDATE jobs
        SET completed_tasks = completed_tasks + (NEW.status = 'completed')::int - (OLD.status = 'completed')::int,
            failed_tasks    = failed_tasks + (NEW.status = 'failed')::int - (OLD.status = 'failed')::int,
            skipped_tasks   = skipped_tasks + (NEW.status = 'skipped')::int - (OLD.status = 'skipped')::int,
            started_at      = coalesce(started_at, CASE WHEN NEW.status = 'running' THEN now() END)
        WHERE id = NEW.job_id;
        UPDATE jobs
        SET progress = CASE WHEN total_tasks = 0 THEN 0
                            ELSE 100.0 * (completed_tasks + failed_tasks + skipped_tasks) / total_tasks END
        WHERE id = NEW.job_id;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER tasks_update_job_counters
AFTER INSERT OR UPDATE OF status ON tasks
FOR EACH ROW EXECUTE FUNCTION update_job_counters();
