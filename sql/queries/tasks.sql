-- name: TaskClaim :many
-- Every statement here that moves a task into or out of 'running' moves the
-- job_shards counts in the same statement, so the concurrency limit and the
-- progress counters are exact at every commit; "now" defaults to the server's
-- clock and is a parameter so tests can move time without sleeping.
-- Claims up to max_tasks of the best pending tasks of running jobs. Relies on
-- job_shards_pkey to find free capacity and idx_tasks_claim
-- (job_id, priority_score DESC, created_at) WHERE status = 'pending' to read a
-- job's next tasks in order. Shards and tasks are locked FOR UPDATE SKIP
-- LOCKED, so concurrent claimers never wait on each other, and the jobs row is
-- only read, never locked: locking it would serialise every claimer of a job.
WITH now AS MATERIALIZED (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS ts
),
free_shard AS (
    SELECT s.job_id, s.shard, s.capacity - s.running AS free
    FROM job_shards s
    WHERE s.running < s.capacity
      AND EXISTS (
          SELECT 1 FROM jobs j WHERE j.id = s.job_id AND j.status = 'running'
      )
      AND EXISTS (
          SELECT 1
          FROM tasks t, now
          WHERE t.job_id = s.job_id AND t.status = 'pending' AND t.run_after <= now.ts
      )
    -- A batch may need several shards; a single claim locks one.
    LIMIT least(sqlc.arg(max_tasks)::integer, 8)
    FOR UPDATE OF s SKIP LOCKED
),
-- How many tasks each locked shard takes: its free capacity, until max_tasks.
allotment AS (
    SELECT
        job_id,
        shard,
        least(free, sqlc.arg(max_tasks)::integer - coalesce(sum(free) OVER (
            ORDER BY job_id, shard ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ), 0)) AS take
    FROM free_shard
),
-- Each shard's share as a range of ranks within its job: (first_rank, first_rank + take].
shard_range AS (
    SELECT
        job_id,
        shard,
        take,
        coalesce(sum(take) OVER (
            PARTITION BY job_id ORDER BY shard ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ), 0) AS first_rank
    FROM allotment
    WHERE take > 0
),
job_want AS (
    SELECT job_id, sum(take)::integer AS want
    FROM shard_range
    GROUP BY job_id
),
-- One index scan per job (not per shard: a second scan of the same job
-- would return the rows this statement already locked).
picked AS (
    SELECT
        c.id,
        w.job_id,
        row_number() OVER (PARTITION BY w.job_id ORDER BY c.priority_score DESC, c.created_at) AS rank
    FROM job_want w
    CROSS JOIN LATERAL (
        SELECT t.id, t.priority_score, t.created_at
        FROM tasks t, now
        WHERE t.job_id = w.job_id AND t.status = 'pending' AND t.run_after <= now.ts
        ORDER BY t.priority_score DESC, t.created_at
        LIMIT w.want
        FOR UPDATE OF t SKIP LOCKED
    ) c
),
assigned AS (
    SELECT p.id, r.job_id, r.shard
    FROM picked p
    JOIN shard_range r
      ON r.job_id = p.job_id AND p.rank > r.first_rank AND p.rank <= r.first_rank + r.take
),
claimed AS (
    UPDATE tasks t
    SET status = 'running',
        started_at = now.ts,
        claimed_by = sqlc.arg(worker_id)::text,
        attempt = t.attempt + 1,
        lease_expires_at = now.ts + sqlc.arg(lease_ms)::bigint * interval '1 millisecond',
        shard = a.shard
    FROM assigned a, now
    WHERE t.id = a.id
    RETURNING t.id, t.job_id, t.page_id, t.path, t.priority_score, t.retry_count, t.attempt,
              t.created_at, t.started_at, t.lease_expires_at, t.shard
),
occupied AS (
    UPDATE job_shards s
    SET running = s.running + c.n
    FROM (SELECT job_id, shard, count(*)::integer AS n FROM claimed GROUP BY job_id, shard) c
    WHERE s.job_id = c.job_id AND s.shard = c.shard
    RETURNING s.job_id
)
SELECT
    claimed.id,
    claimed.job_id,
    claimed.page_id,
    claimed.path,
    claimed.priority_score,
    claimed.retry_count,
    claimed.attempt,
    claimed.created_at,
    claimed.started_at::timestamptz AS started_at,
    claimed.lease_expires_at::timestamptz AS lease_expires_at
FROM claimed
ORDER BY claimed.priority_score DESC, claimed.created_at;

-- name: TaskClaimableExists :one
-- Whether a claim could find work right now: used when a claim returned
-- nothing only because every free shard was locked by another claimer at that
-- instant. Reads job_shards_pkey and idx_tasks_claim; locks nothing.
SELECT EXISTS (
    SELECT 1
    FROM job_shards s
    WHERE s.running < s.capacity
      AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = s.job_id AND j.status = 'running')
      AND EXISTS (
          SELECT 1
          FROM tasks t
          WHERE t.job_id = s.job_id AND t.status = 'pending'
            AND t.run_after <= coalesce(sqlc.narg('now')::timestamptz, now())
      )
) AS claimable;

-- name: TaskFinishMany :many
-- Records the outcome of many claimed tasks in one statement. Only rows still
-- held by the same claim (running, same worker, same attempt) change, so a
-- task that was rescued and claimed again elsewhere is not overwritten; the
-- ids returned are the ones that landed. A failure is retried after a backoff
-- until the job's max_retries, then it is final. Relies on tasks_pkey for the
-- tasks and job_shards_pkey for the shards, which are locked in key order so
-- that two finishing workers cannot deadlock.
WITH now AS MATERIALIZED (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS ts
),
input AS (
    -- Set-returning functions in one select list advance in lockstep.
    SELECT
        unnest(sqlc.arg(ids)::text[]) AS id,
        unnest(sqlc.arg(attempts)::integer[]) AS attempt,
        unnest(sqlc.arg(failed)::boolean[]) AS failed,
        unnest(sqlc.arg(retryable)::boolean[]) AS retryable,
        unnest(sqlc.arg(status_codes)::integer[]) AS status_code,
        unnest(sqlc.arg(response_times)::integer[]) AS response_time,
        unnest(sqlc.arg(cache_statuses)::text[]) AS cache_status,
        unnest(sqlc.arg(content_types)::text[]) AS content_type,
        unnest(sqlc.arg(content_lengths)::bigint[]) AS content_length,
        unnest(sqlc.arg(headers)::jsonb[]) AS headers,
        unnest(sqlc.arg(errors)::text[]) AS error
),
held AS (
    SELECT
        t.id,
        t.job_id,
        t.shard,
        i.failed AND i.retryable AND t.retry_count < j.max_retries AS retry,
        i.*
    FROM input i
    JOIN tasks t ON t.id = i.id
    JOIN jobs j ON j.id = t.job_id
    WHERE t.status = 'running'
      AND t.claimed_by = sqlc.arg(worker_id)::text
      AND t.attempt = i.attempt
),
finished AS (
    UPDATE tasks t
    SET status = CASE WHEN NOT h.failed THEN 'completed'::task_status
                      WHEN h.retry THEN 'pending'::task_status
                      ELSE 'failed'::task_status END,
        retry_count = t.retry_count + h.retry::integer,
        run_after = CASE WHEN h.retry
                         THEN now.ts + least(
                                  sqlc.arg(backoff_max_ms)::bigint,
                                  sqlc.arg(backoff_base_ms)::bigint * (2 ^ t.retry_count)::bigint
                              ) * interval '1 millisecond'
                         ELSE t.run_after END,
        completed_at = CASE WHEN h.retry THEN NULL ELSE now.ts END,
        lease_expires_at = NULL,
        shard = NULL,
        status_code = nullif(h.status_code, 0),
        response_time = nullif(h.response_time, -1),
        cache_status = nullif(h.cache_status, ''),
        content_type = nullif(h.content_type, ''),
        content_length = nullif(h.content_length, -1),
        headers = h.headers,
        error = nullif(h.error, '')
    FROM held h, now
    WHERE t.id = h.id
    RETURNING t.id, h.job_id, h.shard, t.status
),
shard_delta AS (
    SELECT
        job_id,
        coalesce(shard, 0) AS shard,
        count(shard)::integer AS released,
        count(*) FILTER (WHERE status = 'completed')::integer AS completed,
        count(*) FILTER (WHERE status = 'failed')::integer AS failed
    FROM finished
    GROUP BY job_id, coalesce(shard, 0)
),
locked_shard AS (
    SELECT s.job_id, s.shard
    FROM job_shards s
    JOIN shard_delta d ON d.job_id = s.job_id AND d.shard = s.shard
    ORDER BY s.job_id, s.shard
    FOR UPDATE OF s
),
counted AS (
    UPDATE job_shards s
    SET running = s.running - d.released,
        completed = s.completed + d.completed,
        failed = s.failed + d.failed
    FROM shard_delta d, locked_shard l
    WHERE s.job_id = d.job_id AND s.shard = d.shard
      AND l.job_id = s.job_id AND l.shard = s.shard
    RETURNING s.job_id
)
SELECT finished.id, finished.job_id, finished.status
FROM finished;

-- name: TaskExtendLease :many
-- Extends the leases of tasks a worker still holds; returns the ids extended.
-- Relies on tasks_pkey.
UPDATE tasks t
SET lease_expires_at = coalesce(sqlc.narg('now')::timestamptz, now())
                       + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
FROM (
    SELECT unnest(sqlc.arg(ids)::text[]) AS id, unnest(sqlc.arg(attempts)::integer[]) AS attempt
) i
WHERE t.id = i.id
  AND t.status = 'running'
  AND t.claimed_by = sqlc.arg(worker_id)::text
  AND t.attempt = i.attempt
RETURNING t.id, t.lease_expires_at::timestamptz AS lease_expires_at;

-- name: TaskRescueExpired :many
-- Returns running tasks whose lease has expired (their worker died or hung)
-- to 'pending', counting the attempt against max_retries; past it they fail.
-- Relies on idx_tasks_job_id_status, reached through the jobs that have
-- shards (every job that can have running tasks), so no extra index is
-- written on the claim path. SKIP LOCKED: a worker finishing one of these
-- tasks right now wins, and the next rescue pass looks again.
WITH now AS MATERIALIZED (
    SELECT coalesce(sqlc.narg('now')::timestamptz, now()) AS ts
),
expired AS (
    SELECT t.id, t.job_id, t.shard, t.claimed_by, t.retry_count < j.max_retries AS retry
    FROM job_shards s
    JOIN jobs j ON j.id = s.job_id
    JOIN tasks t ON t.job_id = s.job_id
    CROSS JOIN now
    WHERE s.shard = 0
      AND t.status = 'running'
      AND t.lease_expires_at < now.ts
    LIMIT sqlc.arg(max_tasks)::integer
    FOR UPDATE OF t SKIP LOCKED
),
rescued AS (
    UPDATE tasks t
    SET status = CASE WHEN e.retry THEN 'pending'::task_status ELSE 'failed'::task_status END,
        retry_count = t.retry_count + 1,
        run_after = now.ts,
        completed_at = CASE WHEN e.retry THEN NULL ELSE now.ts END,
        lease_expires_at = NULL,
        shard = NULL,
        error = 'lease expired: worker ' || coalesce(e.claimed_by, 'unknown') || ' stopped renewing it'
    FROM expired e, now
    WHERE t.id = e.id
    RETURNING t.id, e.job_id, e.shard, t.status, e.claimed_by
),
shard_delta AS (
    SELECT
        job_id,
        coalesce(shard, 0) AS shard,
        count(shard)::integer AS released,
        count(*) FILTER (WHERE status = 'failed')::integer AS failed
    FROM rescued
    GROUP BY job_id, coalesce(shard, 0)
),
locked_shard AS (
    SELECT s.job_id, s.shard
    FROM job_shards s
    JOIN shard_delta d ON d.job_id = s.job_id AND d.shard = s.shard
    ORDER BY s.job_id, s.shard
    FOR UPDATE OF s
),
counted AS (
    UPDATE job_shards s
    SET running = s.running - d.released,
        failed = s.failed + d.failed
    FROM shard_delta d, locked_shard l
    WHERE s.job_id = d.job_id AND s.shard = d.shard
      AND l.job_id = s.job_id AND l.shard = s.shard
    RETURNING s.job_id
)
SELECT rescued.id, rescued.job_id, rescued.status, rescued.claimed_by::text AS claimed_by
FROM rescued;

-- name: TaskGet :one
-- One task by id. Relies on tasks_pkey.
SELECT * FROM tasks WHERE id = sqlc.arg(id)::text;

-- name: TaskListByJob :many
-- A job's tasks in claim order, for inspection and tests. Relies on the
-- unique index on (job_id, page_id) to find the job's rows.
SELECT * FROM tasks
WHERE job_id = sqlc.arg(job_id)::text
ORDER BY priority_score DESC, created_at, id;
