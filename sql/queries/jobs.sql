-- name: DomainUpsert :one
-- Finds or creates a domain by name. Relies on domains_name_key. The no-op
-- update makes RETURNING yield the existing row too.
INSERT INTO domains (name)
VALUES (sqlc.arg(name)::text)
ON CONFLICT (name) DO UPDATE SET name = excluded.name
RETURNING id;

-- name: JobCreate :one
-- Creates a job; the jobs_sync_shards and jobs_sync_admissions triggers give
-- it its shards and admission slots.
INSERT INTO jobs (id, domain_id, user_id, organisation_id, concurrency, max_pages, max_retries, find_links)
VALUES (
    coalesce(sqlc.narg('id')::text, gen_random_uuid()::text),
    sqlc.arg(domain_id)::integer,
    sqlc.narg('user_id')::uuid,
    sqlc.narg('organisation_id')::uuid,
    sqlc.arg(concurrency)::integer,
    sqlc.arg(max_pages)::integer,
    sqlc.arg(max_retries)::integer,
    sqlc.arg(find_links)::boolean
)
RETURNING *;

-- name: PageUpsertMany :many
-- The page ids of a batch of paths on a job's domain, if the job can take
-- pages, creating the pages the domain does not have yet: what TaskEnqueue
-- takes. Most links of a crawl point at pages that exist: those are read
-- (pages_domain_id_path_key, a probe per path, not an anti-join), not
-- written, so they wait on nobody. New ones are inserted in path order, so
-- that two enqueues of overlapping batches cannot deadlock. A path whose
-- insert met a concurrent insert of the same path (ON CONFLICT waited for
-- it) is not returned, since this statement's snapshot cannot see that row:
-- the caller asks again.
WITH job AS (
    SELECT j.domain_id
    FROM jobs j
    WHERE j.id = sqlc.arg(job_id)::text
      AND j.status IN ('pending', 'running', 'paused', 'completed')
),
known AS (
    SELECT p.path,
           (SELECT e.id FROM pages e WHERE e.domain_id = job.domain_id AND e.path = p.path LIMIT 1) AS id
    FROM job, (SELECT DISTINCT unnest(sqlc.arg(paths)::text[]) AS path) p
),
created AS (
    INSERT INTO pages (domain_id, path)
    SELECT job.domain_id, k.path
    FROM job, known k
    WHERE k.id IS NULL
    ORDER BY k.path
    ON CONFLICT (domain_id, path) DO NOTHING
    RETURNING path, id
)
SELECT known.path::text AS path, known.id::integer AS id FROM known WHERE known.id IS NOT NULL
UNION ALL
SELECT created.path, created.id FROM created;

-- name: TaskEnqueue :one
-- Adds a batch of pages (their ids from PageUpsertMany, with their paths) to
-- a job as tasks, in one statement, without locking or writing the jobs row
-- (but to start or reopen the job). Pages the job already has are dropped
-- (read through tasks_job_id_page_id_key before any write). The statement locks one of the job's admission slots with SKIP
-- LOCKED, one with quota left if it can: new pages up to the slot's quota
-- become pending tasks, dealt round-robin over the job's shards in priority
-- order; when no slot of the job has quota left, they are recorded as
-- skipped. What it could not place (no free slot with quota at that
-- instant, or a concurrent enqueue inserting the same page) comes back as
-- deferred, for the caller to send again. Inserts go in page order, so
-- overlapping enqueues cannot deadlock. A pending job starts running; a
-- completed one is reopened (jobs_sync_shards gives it shards again).
-- Notifies idle workers when it adds pending tasks.
WITH job AS (
    SELECT id, domain_id, status, job_shard_count(concurrency) AS shards
    FROM jobs
    WHERE id = sqlc.arg(job_id)::text
),
slot AS (
    SELECT a.job_id, a.slot, a.quota, a.dealt
    FROM job_admissions a
    WHERE a.job_id = sqlc.arg(job_id)::text
    ORDER BY (a.quota IS NULL OR a.quota > 0) DESC,
             (a.slot + sqlc.arg(start)::integer) % job_admission_slots()
    LIMIT 1
    FOR NO KEY UPDATE OF a SKIP LOCKED
),
exhausted AS (
    -- Quotas only shrink, so a quota spent in this snapshot is spent.
    SELECT NOT EXISTS (
        SELECT 1 FROM job_admissions a
        WHERE a.job_id = sqlc.arg(job_id)::text AND (a.quota IS NULL OR a.quota > 0)
    ) AS spent
),
input AS (
    SELECT DISTINCT ON (u.page_id) u.page_id, u.path, u.priority, u.ord
    FROM (
        SELECT
            unnest(sqlc.arg(page_ids)::integer[]) AS page_id,
            unnest(sqlc.arg(paths)::text[]) AS path,
            unnest(sqlc.arg(priorities)::double precision[]) AS priority,
            generate_series(1, cardinality(sqlc.arg(paths)::text[])) AS ord
    ) u
    ORDER BY u.page_id, u.ord
),
-- One probe of tasks_job_id_page_id_key per input row: a LATERAL LIMIT 1,
-- which the planner must run per row. An EXISTS it hashed over a scan of
-- the whole table whenever it took the table for small. The caller plans
-- the statement at each execution (Queue.replanning), so "small" is the
-- table as it is, not as it was when the session began.
known AS (
    SELECT i.path, i.priority, i.ord, i.page_id, q.page_id IS NOT NULL AS queued
    FROM input i
    JOIN job ON job.status IN ('pending', 'running', 'paused', 'completed')
    LEFT JOIN LATERAL (
        SELECT t.page_id FROM tasks t WHERE t.job_id = job.id AND t.page_id = i.page_id LIMIT 1
    ) q ON true
),
fresh AS (
    SELECT k.page_id, k.path, k.priority,
           row_number() OVER (ORDER BY k.priority DESC, k.ord) AS rank
    FROM known k
    WHERE NOT k.queued
),
placed AS (
    SELECT f.*,
           CASE WHEN slot.quota IS NULL OR f.rank <= slot.quota THEN 'pending'::task_status
                WHEN exhausted.spent THEN 'skipped'::task_status END AS status
    FROM fresh f, slot, exhausted
),
inserted AS (
    INSERT INTO tasks (job_id, page_id, path, priority_score, status, shard, source_type, source_url)
    SELECT
        job.id,
        p.page_id,
        p.path,
        p.priority,
        p.status,
        ((slot.dealt + slot.slot + p.rank - 1) % greatest(job.shards, 1))::smallint,
        -- Where the pages were found (the application's sitemap, link, ...),
        -- one source per statement as the application's EnqueueURLs takes it.
        sqlc.narg(source_type)::text,
        sqlc.narg(source_url)::text
    FROM placed p, job, slot
    WHERE p.status IS NOT NULL
    ORDER BY p.page_id
    ON CONFLICT (job_id, page_id) DO NOTHING
    RETURNING page_id, status
),
added AS (
    SELECT
        count(*) FILTER (WHERE status = 'pending')::integer AS pending,
        count(*) FILTER (WHERE status = 'skipped')::integer AS skipped
    FROM inserted
),
counted AS (
    UPDATE job_admissions a
    SET quota = a.quota - d.pending,
        added = a.added + d.pending + d.skipped,
        skipped = a.skipped + d.skipped,
        dealt = a.dealt + d.pending
    FROM slot, added d
    WHERE a.job_id = slot.job_id AND a.slot = slot.slot
      AND d.pending + d.skipped > 0
    RETURNING a.slot
),
started AS (
    UPDATE jobs j
    SET status = 'running',
        started_at = coalesce(j.started_at, now()),
        completed_at = NULL
    FROM added d
    WHERE j.id = sqlc.arg(job_id)::text
      AND j.status IN ('pending', 'completed')
      AND d.pending > 0
    RETURNING j.status
),
-- Delivered at commit; one notification per batch, not per task.
notified AS (
    SELECT pg_notify(sqlc.arg(channel)::text, job.id)
    FROM job, added a
    WHERE a.pending > 0
)
-- counted and started run to completion though nothing reads them.
SELECT
    job.status AS job_status,
    a.pending,
    a.skipped,
    (SELECT count(*) FROM known WHERE queued)::integer AS duplicates,
    -- Sent, new to the job, and not inserted by this statement.
    coalesce((
        SELECT array_agg(k.path ORDER BY k.ord)
        FROM known k
        WHERE NOT k.queued
          AND k.page_id NOT IN (SELECT page_id FROM inserted)
    ), '{}')::text[] AS deferred,
    (SELECT count(*) FROM notified) > 0 AS notified,
    -- A completed job's slots are retired: JobAdmissionsOpen gives it new ones.
    EXISTS (SELECT 1 FROM job_admissions s WHERE s.job_id = job.id) AS has_slots
FROM job, added a;

-- name: JobProgressGet :one
-- A job with its domain's name and its exact progress (the jobs row's
-- counters lag until the roll-up). Relies on jobs_pkey, domains_pkey,
-- job_shards_pkey, job_tallies_pkey and job_admissions_pkey (through
-- job_progress).
SELECT
    sqlc.embed(j),
    d.name AS domain,
    p.total_tasks AS exact_total,
    p.completed_tasks AS done_completed,
    p.failed_tasks AS done_failed,
    p.skipped_tasks AS done_skipped,
    p.running_tasks AS running_tasks,
    job_percent_done(p.total_tasks, p.completed_tasks + p.failed_tasks + p.skipped_tasks) AS percent_done
FROM jobs j
JOIN domains d ON d.id = j.domain_id
JOIN job_progress p ON p.job_id = j.id
WHERE j.id = sqlc.arg(id)::text;

-- name: JobProgressList :many
-- Jobs newest first, as JobProgressGet returns them, for an operator's
-- listing: every job, or those in the given statuses, at most max_jobs.
-- Jobs are few next to tasks: the jobs table is read and sorted whole, and
-- each listed job costs JobProgressGet's primary-key probes.
SELECT
    sqlc.embed(j),
    d.name AS domain,
    p.total_tasks AS exact_total,
    p.completed_tasks AS done_completed,
    p.failed_tasks AS done_failed,
    p.skipped_tasks AS done_skipped,
    p.running_tasks AS running_tasks,
    job_percent_done(p.total_tasks, p.completed_tasks + p.failed_tasks + p.skipped_tasks) AS percent_done
FROM jobs j
JOIN domains d ON d.id = j.domain_id
JOIN job_progress p ON p.job_id = j.id
WHERE cardinality(sqlc.arg(statuses)::text[]) = 0
   OR j.status::text = ANY(sqlc.arg(statuses)::text[])
ORDER BY j.created_at DESC, j.id
LIMIT sqlc.arg(max_jobs)::integer;

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

-- name: JobSiteGet :one
-- What a fetcher needs of a task's job: its domain's name and whether it
-- follows links. Relies on jobs_pkey and domains_pkey.
SELECT d.name AS domain, j.find_links
FROM jobs j
JOIN domains d ON d.id = j.domain_id
WHERE j.id = sqlc.arg(id)::text;

-- name: JobNotify :exec
-- Wakes the workers listening for new pending tasks (ResumeJob).
SELECT pg_notify(sqlc.arg(channel)::text, sqlc.arg(job_id)::text);

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
        progress = job_percent_done(total_tasks,
                                    completed_tasks + failed_tasks + skipped_tasks + (SELECT count(*)::integer FROM skipped))
    WHERE id = sqlc.arg(job_id)::text
    RETURNING 1
)
SELECT count(*)::integer AS skipped FROM skipped;

-- name: JobLockDrained :many
-- The first statement of finishing drained jobs: the running jobs (those
-- with shards) that have nothing pending or running, with every one of
-- their admission slots locked, so that no enqueue adds to them until the
-- transaction ends (a job an enqueue holds a slot of right now is passed
-- over). job_drained (inlined) is one ordered probe of
-- idx_tasks_job_id_status per job (DATABASE.md, "Plans that do not wait for
-- ANALYZE").
WITH drained AS (
    SELECT j.id
    FROM jobs j
    WHERE j.id IN (SELECT job_id FROM job_shards WHERE shard = 0)
      AND j.status = 'running'
      AND (SELECT d.drained FROM job_drained(j.id) d)
),
locked AS (
    SELECT a.job_id
    FROM job_admissions a
    WHERE a.job_id IN (SELECT id FROM drained)
    FOR NO KEY UPDATE OF a SKIP LOCKED
)
SELECT l.job_id
FROM locked l
GROUP BY l.job_id
HAVING count(*) = (SELECT count(*) FROM job_admissions a WHERE a.job_id = l.job_id);

-- name: JobFinishDrained :many
-- Marks the jobs JobLockDrained locked as completed if they are still
-- drained in this statement's snapshot, which comes after the locks: every
-- enqueue into them has committed or waits. JobAdmissionsClose then retires
-- their slots in the same transaction; an enqueue that comes later finds
-- the job completed without slots and reopens it.
UPDATE jobs j
SET status = 'completed', completed_at = coalesce(sqlc.narg('now')::timestamptz, now())
WHERE j.id = ANY(sqlc.arg(ids)::text[])
  AND j.status = 'running'
  AND (SELECT d.drained FROM job_drained(j.id) d)
RETURNING j.id;

-- name: JobAdmissionsClose :exec
-- Retires the admission slots of jobs that take no more pages (completed or
-- cancelled), moving what they counted into the jobs rows, and keeps
-- job_admissions as small as the set of live jobs. The delete waits for an
-- enqueue statement holding a slot and returns the slot as that statement
-- left it; an enqueue that comes later finds no slot. Relies on
-- job_admissions_pkey and jobs_pkey.
WITH retired AS (
    DELETE FROM job_admissions a
    WHERE a.job_id = ANY(sqlc.arg(ids)::text[])
    RETURNING a.job_id, a.added, a.skipped
),
per_job AS (
    SELECT job_id, sum(added)::integer AS added, sum(skipped)::integer AS skipped
    FROM retired
    GROUP BY job_id
)
UPDATE jobs j
SET total_tasks = j.total_tasks + p.added,
    skipped_tasks = j.skipped_tasks + p.skipped,
    progress = job_percent_done(
        j.total_tasks + p.added,
        j.completed_tasks + j.failed_tasks + j.skipped_tasks + p.skipped)
FROM per_job p
WHERE j.id = p.job_id;

-- name: JobRollUp :many
-- Moves the outcomes the tallies gathered, and the tasks the admission slots
-- added, into the jobs rows (once per job, not per task) and recomputes
-- progress. SKIP LOCKED: a tally that a finishing worker holds right now, or
-- a slot an enqueue holds, is left for the next pass, so the roll-up never
-- waits on workers, and a worker waits at most for this short statement
-- (waiting, the roll-up held the tallies it had locked for as long as the
-- finish it waited on: 13 ms waits in the load test). Progress stays exact
-- meanwhile: job_progress adds the tallies and slots to the jobs rows.
-- Relies on job_tallies_pkey, job_admissions_pkey and jobs_pkey.
WITH locked AS (
    SELECT r.job_id, r.shard, r.completed, r.failed, r.skipped
    FROM job_tallies r
    WHERE r.completed > 0 OR r.failed > 0 OR r.skipped > 0
    FOR NO KEY UPDATE OF r SKIP LOCKED
),
moved AS (
    UPDATE job_tallies r
    SET completed = 0, failed = 0, skipped = 0
    FROM locked l
    WHERE r.job_id = l.job_id AND r.shard = l.shard
    RETURNING l.job_id, l.completed, l.failed, 0 AS added, l.skipped
),
admitted AS (
    SELECT a.job_id, a.slot, a.added, a.skipped
    FROM job_admissions a
    WHERE a.added > 0 OR a.skipped > 0
    FOR NO KEY UPDATE OF a SKIP LOCKED
),
moved_admitted AS (
    UPDATE job_admissions a
    SET added = 0, skipped = 0
    FROM admitted l
    WHERE a.job_id = l.job_id AND a.slot = l.slot
    RETURNING l.job_id, 0 AS completed, 0 AS failed, l.added, l.skipped
),
per_job AS (
    SELECT job_id,
           sum(completed)::integer AS completed,
           sum(failed)::integer AS failed,
           sum(added)::integer AS added,
           sum(skipped)::integer AS skipped
    FROM (SELECT * FROM moved UNION ALL SELECT * FROM moved_admitted) m
    GROUP BY job_id
)
UPDATE jobs j
SET completed_tasks = j.completed_tasks + p.completed,
    failed_tasks = j.failed_tasks + p.failed,
    total_tasks = j.total_tasks + p.added,
    skipped_tasks = j.skipped_tasks + p.skipped,
    progress = job_percent_done(
        j.total_tasks + p.added,
        j.completed_tasks + p.completed + j.failed_tasks + p.failed + j.skipped_tasks + p.skipped)
FROM per_job p
WHERE j.id = p.job_id
RETURNING j.id;

-- name: JobAdmissionsOpen :exec
-- Gives a job that can take pages its admission slots again, with quotas of
-- what is left of its max_pages: a completed job's slots were retired, and
-- an enqueue that reopens it comes here first. Relies on jobs_pkey and
-- job_admissions_pkey.
SELECT job_admissions_spread(j.id)
FROM jobs j
WHERE j.id = sqlc.arg(job_id)::text
  AND j.status IN ('pending', 'running', 'paused', 'completed');

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
        AND (o.claims <> r.releases OR r.completed > 0 OR r.failed > 0 OR r.skipped > 0)
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
                WHERE p.job_id = c.id COLLATE "C" AND p.status = 'pending'
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
    progress = job_percent_done(j.total_tasks, j.completed_tasks + j.failed_tasks + j.skipped_tasks + s.n)
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
            WHERE p.job_id = o.id COLLATE "C"
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
