-- name: DomainUpsert :one
-- Finds or creates a domain by name. Relies on domains_name_key. The no-op
-- update makes RETURNING yield the existing row too.
INSERT INTO domains (name)
VALUES (sqlc.arg(name)::text)
ON CONFLICT (name) DO UPDATE SET name = excluded.name
RETURNING id;

-- name: JobCreate :one
-- Creates a job; the jobs_sync_shards trigger gives it its shards.
INSERT INTO jobs (id, domain_id, user_id, organisation_id, concurrency, max_pages, max_retries)
VALUES (
    coalesce(sqlc.narg('id')::text, gen_random_uuid()::text),
    sqlc.arg(domain_id)::integer,
    sqlc.narg('user_id')::uuid,
    sqlc.narg('organisation_id')::uuid,
    sqlc.arg(concurrency)::integer,
    sqlc.arg(max_pages)::integer,
    sqlc.arg(max_retries)::integer
)
RETURNING *;

-- name: JobLockForEnqueue :one
-- The first statement of the enqueue transaction: locks the job's row, so
-- that TaskEnqueue's snapshot, taken after the lock is held, sees every
-- task an earlier batch of the same job added (a snapshot taken before
-- waiting for the lock would count them as new and skip admissible pages
-- under max_pages). Relies on jobs_pkey.
SELECT status FROM jobs WHERE id = sqlc.arg(id)::text FOR UPDATE;

-- name: PageUpsertMany :exec
-- Creates the pages of a batch that the domain does not have yet. Relies on
-- pages_domain_id_path_key. Runs in the enqueue transaction before
-- TaskEnqueue, whose own snapshot then sees every page, including one another
-- transaction inserted meanwhile (ON CONFLICT waited for it).
INSERT INTO pages (domain_id, path)
SELECT j.domain_id, p.path
FROM jobs j, unnest(sqlc.arg(paths)::text[]) AS p(path)
WHERE j.id = sqlc.arg(job_id)::text
ORDER BY p.path
ON CONFLICT (domain_id, path) DO NOTHING;

-- name: TaskEnqueue :one
-- Adds a batch of pages to a job as tasks in one statement: duplicates within
-- the batch and pages the job already has are dropped (tasks_job_id_page_id_key),
-- pages beyond max_pages are recorded as 'skipped', tasks are dealt to the
-- job's shards, and the job's total and skipped counts move once per batch.
-- The job row is locked so two batches of one job count max_pages
-- correctly; claims never lock it, so they go on. A pending job starts
-- running; a completed one is reopened (a crawl finds pages as it goes, and
-- its queue may drain between batches), which recreates its shards
-- (jobs_sync_shards). Relies on pages_domain_id_path_key and
-- tasks_job_id_page_id_key. Notifies idle workers when it adds pending tasks.
WITH job AS (
    SELECT
        id,
        domain_id,
        status,
        max_pages,
        total_tasks - skipped_tasks AS admitted,
        -- What jobs_sync_shards keeps, not the rows there now: a completed
        -- job being reopened has none until this statement makes it running.
        job_shard_count(concurrency) AS shards
    FROM jobs
    WHERE id = sqlc.arg(job_id)::text
    FOR UPDATE
),
input AS (
    SELECT DISTINCT ON (u.path) u.path, u.priority, u.ord
    FROM (
        SELECT
            unnest(sqlc.arg(paths)::text[]) AS path,
            unnest(sqlc.arg(priorities)::double precision[]) AS priority,
            generate_series(1, cardinality(sqlc.arg(paths)::text[])) AS ord
    ) u
    ORDER BY u.path, u.ord
),
fresh AS (
    SELECT
        p.id AS page_id,
        i.path,
        i.priority,
        row_number() OVER (ORDER BY i.priority DESC, i.ord) AS rank
    FROM input i
    JOIN job ON job.status IN ('pending', 'running', 'paused', 'completed')
    JOIN pages p ON p.domain_id = job.domain_id AND p.path = i.path
    WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = job.id AND t.page_id = p.id)
),
inserted AS (
    INSERT INTO tasks (job_id, page_id, path, priority_score, status, shard)
    SELECT
        job.id,
        f.page_id,
        f.path,
        f.priority,
        CASE WHEN job.max_pages > 0 AND job.admitted + f.rank > job.max_pages
             THEN 'skipped'::task_status ELSE 'pending'::task_status END,
        -- Dealt round-robin in priority order, so every shard holds a fair
        -- share of the best tasks.
        ((job.admitted + f.rank - 1) % greatest(job.shards, 1))::smallint
    FROM fresh f, job
    ORDER BY f.rank
    ON CONFLICT (job_id, page_id) DO NOTHING
    RETURNING status
),
added AS (
    SELECT
        count(*) FILTER (WHERE status = 'pending')::integer AS pending,
        count(*) FILTER (WHERE status = 'skipped')::integer AS skipped
    FROM inserted
),
counted AS (
    UPDATE jobs j
    SET total_tasks = j.total_tasks + a.pending + a.skipped,
        skipped_tasks = j.skipped_tasks + a.skipped,
        status = CASE WHEN j.status IN ('pending', 'completed') AND a.pending > 0 THEN 'running'::job_status
                      ELSE j.status END,
        completed_at = CASE WHEN j.status = 'completed' AND a.pending > 0 THEN NULL ELSE j.completed_at END,
        started_at = coalesce(j.started_at, now()),
        progress = CASE WHEN j.total_tasks + a.pending + a.skipped = 0 THEN 0
                        ELSE 100.0 * (j.completed_tasks + j.failed_tasks + j.skipped_tasks + a.skipped)
                             / (j.total_tasks + a.pending + a.skipped) END
    FROM added a, job
    WHERE j.id = job.id AND job.status IN ('pending', 'running', 'paused', 'completed')
    RETURNING j.status
),
-- Delivered at commit; one notification per batch, not per task.
notified AS (
    SELECT pg_notify('taskq_tasks', job.id)
    FROM job, added a
    WHERE a.pending > 0
)
SELECT
    job.status AS job_status,
    a.pending,
    a.skipped,
    (SELECT count(*) FROM notified) > 0 AS notified
FROM job, added a;

-- name: JobProgressGet :one
-- A job with its exact progress. Relies on jobs_pkey, job_shards_pkey and
-- job_tallies_pkey (through job_progress).
SELECT
    j.*,
    p.completed_tasks AS done_completed,
    p.failed_tasks AS done_failed,
    p.skipped_tasks AS done_skipped,
    p.running_tasks AS running_tasks
FROM jobs j
JOIN job_progress p ON p.job_id = j.id
WHERE j.id = sqlc.arg(id)::text;

-- name: JobSetStatus :one
-- Moves a job to a new status if it is in one of the statuses allowed to move
-- there (the caller supplies them). Relies on jobs_pkey.
UPDATE jobs
SET status = sqlc.arg(status)::job_status,
    completed_at = CASE WHEN sqlc.arg(status)::job_status IN ('completed', 'failed', 'cancelled')
                        THEN now() ELSE completed_at END
WHERE id = sqlc.arg(id)::text
  AND status::text = ANY(sqlc.arg(from_statuses)::text[])
RETURNING status;

-- name: JobStatusGet :one
-- A job's status, to tell an unknown job from a refused transition.
-- Relies on jobs_pkey.
SELECT status FROM jobs WHERE id = sqlc.arg(id)::text;

-- name: TaskSkipPending :one
-- A cancelled job's pending tasks become 'skipped', counted once in the job's
-- row. Relies on idx_tasks_job_id_status.
WITH skipped AS (
    UPDATE tasks
    SET status = 'skipped', completed_at = now()
    WHERE job_id = sqlc.arg(job_id)::text AND status = 'pending'
    RETURNING 1
),
counted AS (
    UPDATE jobs
    SET skipped_tasks = skipped_tasks + (SELECT count(*) FROM skipped),
        progress = CASE WHEN total_tasks = 0 THEN 0
                        ELSE 100.0 * (completed_tasks + failed_tasks + skipped_tasks
                                      + (SELECT count(*) FROM skipped)) / total_tasks END
    WHERE id = sqlc.arg(job_id)::text
    RETURNING 1
)
SELECT count(*)::integer AS skipped FROM skipped;

-- name: JobFinishDrained :many
-- Marks running jobs that have nothing pending or running as completed. Only
-- jobs with shards are looked at, each with one probe of
-- idx_tasks_job_id_status that stops at the first unfinished task. The probe
-- is a scalar subquery ordered by the index's column: NOT EXISTS was planned
-- as a hash anti-join over every unfinished task, and an unordered LIMIT 1
-- as a sequential scan that expects an early match, which for a drained
-- job (the case this looks for) reads the whole table.
UPDATE jobs j
SET status = 'completed', completed_at = coalesce(sqlc.narg('now')::timestamptz, now())
WHERE j.id IN (SELECT job_id FROM job_shards WHERE shard = 0)
  AND j.status = 'running'
  AND (
      SELECT count(*)
      FROM (
          SELECT 1 FROM tasks t
          WHERE t.job_id = j.id AND t.status IN ('pending', 'running')
          ORDER BY t.status
          LIMIT 1
      ) unfinished
  ) = 0
RETURNING j.id;

-- name: JobRollUp :many
-- Moves the outcomes the tallies gathered into the jobs rows (once per job,
-- not per task) and recomputes progress. SKIP LOCKED: a tally that a
-- finishing worker holds right now is left for the next pass, so the roll-up
-- never waits on workers, and a worker waits at most for this short
-- statement (waiting, the roll-up held the tallies it had locked for as long
-- as the finish it waited on: 13 ms waits in the load test). Progress stays
-- exact meanwhile: job_progress adds the tallies to the jobs rows. Relies on
-- job_tallies_pkey and jobs_pkey.
WITH locked AS (
    SELECT r.job_id, r.shard, r.completed, r.failed
    FROM job_tallies r
    WHERE r.completed > 0 OR r.failed > 0
    FOR NO KEY UPDATE OF r SKIP LOCKED
),
moved AS (
    UPDATE job_tallies r
    SET completed = 0, failed = 0
    FROM locked l
    WHERE r.job_id = l.job_id AND r.shard = l.shard
    RETURNING l.job_id, l.completed, l.failed
),
per_job AS (
    SELECT job_id, sum(completed)::integer AS completed, sum(failed)::integer AS failed
    FROM moved
    GROUP BY job_id
)
UPDATE jobs j
SET completed_tasks = j.completed_tasks + p.completed,
    failed_tasks = j.failed_tasks + p.failed,
    progress = CASE WHEN j.total_tasks = 0 THEN 0
                    ELSE 100.0 * (j.completed_tasks + p.completed + j.failed_tasks + p.failed
                                  + j.skipped_tasks) / j.total_tasks END
FROM per_job p
WHERE j.id = p.job_id
RETURNING j.id;

-- name: JobShardsRetire :many
-- Deletes the shards (and, by cascade, tallies) of finished jobs once nothing
-- runs on them and their outcomes are rolled up, keeping job_shards as small
-- as the set of live jobs, since claims scan it. Relies on job_shards_pkey,
-- job_tallies_pkey and jobs_pkey.
DELETE FROM job_shards s
USING jobs j
WHERE j.id = s.job_id
  AND j.status IN ('completed', 'failed', 'cancelled')
  AND NOT EXISTS (
      SELECT 1
      FROM job_shards o
      JOIN job_tallies r ON r.job_id = o.job_id AND r.shard = o.shard
      WHERE o.job_id = s.job_id
        AND (o.claims <> r.releases OR r.completed > 0 OR r.failed > 0)
  )
RETURNING s.job_id;

-- name: JobSweepCancelled :many
-- Skips tasks that became pending in a cancelled job after it was cancelled
-- (handed back by a worker shutting down), counting them once per job, so a
-- cancelled job never keeps pending tasks. Only cancelled jobs that still
-- have shards are looked at. Maintenance runs this every second and it
-- almost never has work, so the update is gated (a one-time filter) on one
-- ordered probe of idx_tasks_claim per such job: planned on its own, the
-- update joins every pending task of the table when most tasks are pending,
-- and scanned them all each pass. When there is work, it may scan.
WITH skipped AS (
    UPDATE tasks t
    SET status = 'skipped', completed_at = now()
    FROM jobs j
    WHERE EXISTS (
          SELECT 1
          FROM jobs c
          WHERE c.status = 'cancelled'
            AND c.id IN (SELECT job_id FROM job_shards WHERE shard = 0)
            AND (
                SELECT true
                FROM tasks p
                WHERE p.job_id = c.id AND p.status = 'pending'
                ORDER BY p.shard
                LIMIT 1
            )
      )
      AND j.id = t.job_id
      AND j.status = 'cancelled'
      AND j.id IN (SELECT job_id FROM job_shards WHERE shard = 0)
      AND t.status = 'pending'
    RETURNING t.job_id
)
UPDATE jobs j
SET skipped_tasks = j.skipped_tasks + s.n,
    progress = CASE WHEN j.total_tasks = 0 THEN 0
                    ELSE 100.0 * (j.completed_tasks + j.failed_tasks + j.skipped_tasks + s.n) / j.total_tasks END
FROM (SELECT job_id, count(*)::integer AS n FROM skipped GROUP BY job_id) s
WHERE j.id = s.job_id
RETURNING j.id;

-- name: TaskRedealOrphans :execrows
-- Deals pending tasks that sit on a shard a concurrency change took away
-- (one that was running there when the job's shards were cut, then came back
-- to pending) to the job's current shards, so that every pending task can be
-- claimed. Gated like JobSweepCancelled: one ordered probe of idx_tasks_claim
-- (job_id, shard beyond the job's shard count) per live job, and the update
-- runs only when one finds a task.
UPDATE tasks t
SET shard = (t.shard % job_shard_count(j.concurrency))::smallint
FROM jobs j
WHERE EXISTS (
      SELECT 1
      FROM jobs o
      WHERE o.id IN (SELECT job_id FROM job_shards WHERE shard = 0)
        AND (
            SELECT true
            FROM tasks p
            WHERE p.job_id = o.id
              AND p.status = 'pending'
              AND p.shard >= job_shard_count(o.concurrency)
            ORDER BY p.shard
            LIMIT 1
        )
  )
  AND j.id IN (SELECT job_id FROM job_shards WHERE shard = 0)
  AND t.job_id = j.id
  AND t.status = 'pending'
  AND t.shard >= job_shard_count(j.concurrency);
