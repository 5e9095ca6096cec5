-- Plan step 3 and what the queue needs: leases, exact per-job concurrency and
-- exact progress counters, all without a hot job row.
--
-- Problem: the per-task trigger update_job_counters updated the job's row on
-- every task insert and status change. With 40 workers on one job every
-- completion queued on that one row: the 2-6 s lock waits of the load test,
-- and deadlocks when two workers' transactions touched it in another order.
--
-- What replaces it:
--   * job_shards: each job's concurrency is split over a few shard rows.
--     Every task belongs to one shard of its job (tasks.shard, dealt
--     round-robin in priority order when enqueued). A claim locks one free
--     shard with SKIP LOCKED and takes that shard's best tasks, so claimers
--     of one job work on different shards and never scan or lock each
--     other's tasks. A shard counts the claims made on it; its twin row in
--     job_tallies counts the tasks released from it (finished or rescued),
--     with how many completed and failed. running = claims - releases, and a
--     claim only proceeds while that is below the shard's capacity, so the
--     job's concurrency is never exceeded. Claims and finishes write
--     different rows and never wait for each other: a claim reads releases
--     without a lock, and since releases only grow, a stale value can only
--     make it claim less. Counters move in the same statement as the task, so
--     they are exact at every commit, and no statement writes the jobs row
--     per task.
--   * Progress = jobs counters (rolled up periodically and when the job ends)
--     + the tallies' counts since; the job_progress view adds them.
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
    -- Not claimable before this (a retry's backoff). A finite default, not
    -- '-infinity', which Go's time.Time cannot hold.
    ADD COLUMN run_after        timestamptz NOT NULL DEFAULT 'epoch',
    -- The job shard the task belongs to (job_shards.shard).
    ADD COLUMN shard            smallint    NOT NULL DEFAULT 0;

-- A task is written three times (inserted, claimed, finished). Leaving 30% of
-- each page free lets the new row versions go on the same page instead of
-- extending the table, where concurrent workers queue on the relation
-- extension lock. Applies to pages written from now on.
ALTER TABLE tasks SET (fillfactor = 70);

CREATE TABLE job_shards (
    job_id   text     NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    shard    smallint NOT NULL,
    -- Tasks of this shard that may run at once.
    capacity integer  NOT NULL CHECK (capacity >= 0),
    -- Claims ever made on this shard; written only by claims.
    claims   bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, shard)
) WITH (fillfactor = 50);

CREATE TABLE job_tallies (
    job_id    text     NOT NULL,
    shard     smallint NOT NULL,
    -- Tasks released from the shard (finished or rescued); never decreases.
    releases  bigint   NOT NULL DEFAULT 0,
    -- Outcomes since the last roll-up into the jobs row.
    completed integer  NOT NULL DEFAULT 0,
    failed    integer  NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, shard),
    FOREIGN KEY (job_id, shard) REFERENCES job_shards (job_id, shard) ON DELETE CASCADE
) WITH (fillfactor = 50);
-- No column of either table but the key is indexed, and half of each page is
-- kept free, so their updates are HOT: one heap write each.

COMMENT ON TABLE job_shards IS
    'A job''s concurrency split over shard rows that claims lock with SKIP LOCKED; claims counts the claims made on each.';
COMMENT ON TABLE job_tallies IS
    'Per job shard: tasks released (finished or rescued), and outcomes since the last roll-up into jobs. Running = job_shards.claims - releases.';

-- How many shards a job of the given concurrency gets (one per 4 tasks of
-- concurrency, at most 32), and shard i's share of it. A claimer holds a
-- shard only for the length of its claim statement, so a few dozen shards let
-- that many claimers work on one job at once.
CREATE FUNCTION job_shard_count(concurrency integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT least(32, greatest(1, concurrency / 4)) $fn$;

CREATE FUNCTION job_shard_capacity(concurrency integer, shard integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT concurrency / job_shard_count(concurrency)
        + (shard < concurrency % job_shard_count(concurrency))::integer
$fn$;

-- Whether a failed task runs again: it may be retried, has retries left, and
-- its job can still run tasks (a finished or cancelled job runs nothing more,
-- so its failures are final).
CREATE FUNCTION task_should_retry(retryable boolean, retry_count integer, max_retries integer, job job_status)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT retryable AND retry_count < max_retries AND job IN ('pending', 'running', 'paused')
$fn$;

-- Keeps a job's shards in step with jobs.concurrency: created with the job,
-- resized when concurrency changes, and created again when a completed job
-- is reopened (its shards are retired when it completes). When the number
-- of shards changes, the job's pending tasks are dealt to the new shards; a
-- shard that loses its capacity keeps its running tasks, and any of them that
-- later become pending again are dealt again by TaskRedealOrphans.
CREATE FUNCTION job_shards_sync() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $fn$
DECLARE
    shards integer := job_shard_count(NEW.concurrency);
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.concurrency = OLD.concurrency
       AND NOT (OLD.status = 'completed' AND NEW.status = 'running') THEN
        RETURN NULL;
    END IF;

    INSERT INTO job_shards (job_id, shard, capacity)
    SELECT NEW.id, s, job_shard_capacity(NEW.concurrency, s)
    FROM generate_series(0, shards - 1) AS s
    ON CONFLICT (job_id, shard) DO UPDATE SET capacity = excluded.capacity;
    INSERT INTO job_tallies (job_id, shard)
    SELECT NEW.id, s
    FROM generate_series(0, shards - 1) AS s
    ON CONFLICT (job_id, shard) DO NOTHING;

    UPDATE job_shards
    SET capacity = 0
    WHERE job_id = NEW.id AND shard >= shards;

    IF TG_OP = 'UPDATE' AND job_shard_count(OLD.concurrency) <> shards THEN
        UPDATE tasks t
        SET shard = d.shard
        FROM (
            SELECT id, ((row_number() OVER (ORDER BY priority_score DESC, created_at) - 1) % shards)::smallint AS shard
            FROM tasks
            WHERE job_id = NEW.id AND status = 'pending'
        ) d
        WHERE t.id = d.id AND t.shard <> d.shard;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER jobs_sync_shards
AFTER INSERT OR UPDATE OF concurrency, status ON jobs
FOR EACH ROW EXECUTE FUNCTION job_shards_sync();

-- Existing jobs that can still run get their shards, and their waiting and
-- running tasks are spread over them. Tasks already running under the old
-- code count against their shard and get a lease, so that the rescuer
-- returns them if their worker is gone.
INSERT INTO job_shards (job_id, shard, capacity)
SELECT j.id, s, job_shard_capacity(j.concurrency, s)
FROM jobs j, generate_series(0, job_shard_count(j.concurrency) - 1) AS s
WHERE j.status IN ('pending', 'running', 'paused');
INSERT INTO job_tallies (job_id, shard)
SELECT job_id, shard FROM job_shards;

UPDATE tasks t
SET shard = abs(hashtext(t.id)) % job_shard_count(j.concurrency),
    lease_expires_at = CASE WHEN t.status = 'running' THEN now() + interval '5 minutes' END,
    attempt = CASE WHEN t.status = 'running' THEN 1 ELSE 0 END
FROM jobs j
WHERE j.id = t.job_id
  AND j.status IN ('pending', 'running', 'paused')
  AND t.status IN ('pending', 'running');

UPDATE job_shards s
SET claims = r.running
FROM (
    SELECT job_id, shard, count(*)::integer AS running
    FROM tasks
    WHERE status = 'running'
    GROUP BY job_id, shard
) r
WHERE s.job_id = r.job_id AND s.shard = r.shard;

DROP TRIGGER tasks_update_job_counters ON tasks;
DROP FUNCTION update_job_counters();

-- A job's exact progress: the counts rolled up into its row plus those its
-- shards gathered since. security_invoker applies the reader's own policies.
CREATE VIEW job_progress WITH (security_invoker = true) AS
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

ALTER TABLE job_shards ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_tallies ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Organisation members can read job shards"
ON job_shards FOR SELECT TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);
CREATE POLICY "Organisation members can read job tallies"
ON job_tallies FOR SELECT TO authenticated
USING (
    job_id IN (
        SELECT id
        FROM jobs
        WHERE organisation_id = (SELECT organisation_id FROM users WHERE id = (SELECT auth.uid()))
    )
);
-- Supabase's default privileges would hand these to anon too.
REVOKE ALL ON job_shards, job_tallies, job_progress FROM anon;
REVOKE TRIGGER, REFERENCES ON job_shards, job_tallies FROM authenticated;
GRANT SELECT ON job_shards, job_tallies, job_progress TO authenticated;
GRANT ALL ON job_shards, job_tallies TO service_role;
GRANT SELECT ON job_progress TO service_role;

-- migrate:down
DROP VIEW job_progress;

UPDATE jobs
SET completed_tasks = jobs.completed_tasks + s.completed,
    failed_tasks = jobs.failed_tasks + s.failed
FROM (
    SELECT job_id, sum(completed) AS completed, sum(failed) AS failed
    FROM job_tallies
    GROUP BY job_id
) s
WHERE jobs.id = s.job_id;

DROP TRIGGER jobs_sync_shards ON jobs;
DROP FUNCTION job_shards_sync();
DROP TABLE job_tallies;
DROP TABLE job_shards;
DROP FUNCTION job_shard_capacity(integer, integer);
DROP FUNCTION task_should_retry(boolean, integer, integer, job_status);
DROP FUNCTION job_shard_count(integer);

ALTER TABLE tasks
    DROP COLUMN attempt,
    DROP COLUMN claimed_by,
    DROP COLUMN lease_expires_at,
    DROP COLUMN run_after,
    DROP COLUMN shard;
ALTER TABLE jobs DROP COLUMN max_retries;
ALTER TABLE tasks RESET (fillfactor);

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
