-- name: TaskClaim :many
-- Claims up to max_tasks of the best pending tasks of a running job: of
-- job_id, or of any job when job_id is NULL (the application's
-- GetNextTask(ctx, jobID)). A claim locks one free job shard with SKIP LOCKED
-- and takes that shard's best tasks (idx_tasks_claim; job_id compared in "C",
-- the index's collation, so that no other index can serve it), so concurrent
-- claimers hold different shards and never scan or lock each other's tasks.
-- The jobs row is only read: locking it would serialise every claimer of the
-- job. The shard's claims count moves in the same statement, so
-- claims - releases <= capacity holds at every commit. One shard per
-- statement keeps the plan small; a shard's capacity is concurrency / shards,
-- so a batch still fills from a large job. "now" is a parameter (default: the
-- server's clock) so tests can move time. DATABASE.md ("The job_shards /
-- job_tallies design", "Plans that do not wait for ANALYZE") says why each
-- probe is written so.
--
-- Politeness ("Politeness" in DATABASE.md): a shard of a paced job carries
-- its domain (paced_domain_id), and only for those is domain_paces probed.
-- A paced shard is taken only when its
-- domain's next_allowed_at has come and no other claimer holds the domain
-- (advisory lock, then the pace row FOR NO KEY UPDATE SKIP LOCKED, which
-- re-checks next_allowed_at on the newest version); at most one task is
-- taken, and next_allowed_at moves to the end of this statement plus the
-- interval in the same statement. Every later claim's now() is past it, so
-- no two task starts of a domain are closer than its interval.
WITH shard AS (
    -- Correlated scalar subqueries: an index probe per shard whatever the
    -- statistics say. The releases are read again here only for the shard
    -- taken.
    SELECT s.job_id, s.shard, s.capacity - (s.claims - (
               SELECT r.releases FROM job_tallies r WHERE r.job_id = s.job_id AND r.shard = s.shard
           )) AS free, s.paced_domain_id
    FROM job_shards s
    -- Two ranges of idx_job_shards_claim_order in one scan: first the paced
    -- shards whose bound (paced_until, a lower bound of the domain's next
    -- start, set by the shard's last claim or a back-off) has come, oldest
    -- first, then the unpaced shards (their paced_until stays 'epoch'). A
    -- due paced domain's turn is one task per interval, and unpaced work
    -- would otherwise take every claim. Paced shards not due lie between the two
    -- ranges: a claim never reads them.
    WHERE (sqlc.narg('job_id')::text IS NULL OR s.job_id = sqlc.narg('job_id')::text)
      AND (s.paced_domain_id IS NULL) = ANY ('{false,true}'::boolean[])
      AND coalesce(s.paced_until, '-infinity') <= coalesce(sqlc.narg('now')::timestamptz, now())
      -- A shard another claimer is working on is passed over for the cost
      -- of an in-memory lock attempt (no WAL), before the probes below run:
      -- the planner orders quals by cost. Released at commit. Exactness
      -- does not rest on it: FOR NO KEY UPDATE below re-checks the newest
      -- row version.
      AND pg_try_advisory_xact_lock(hashtext(s.job_id), s.shard)
      AND (SELECT j.status FROM jobs j WHERE j.id = s.job_id) = 'running'
      -- A CASE, evaluated in order whatever the costs say: a paced shard's
      -- pace first (a domain not due costs no tasks probe), then the
      -- domain's advisory lock (a domain another claimer is taking a task
      -- of is passed over like a locked shard), then the tasks probe, then
      -- the shard's room (a job's drained shards cost no tallies probe).
      -- The room's releases are read without a lock: they only grow, so a
      -- stale value can only make this claim take less, never exceed the
      -- capacity.
      AND CASE WHEN s.paced_domain_id IS NULL
                    OR ((SELECT p.next_allowed_at <= coalesce(sqlc.narg('now')::timestamptz, now())
                         FROM domain_paces p WHERE p.domain_id = s.paced_domain_id)
                        AND pg_try_advisory_xact_lock(1885430629, s.paced_domain_id))
               THEN coalesce((
                   SELECT true
                   FROM tasks t
                   WHERE t.job_id = s.job_id COLLATE "C"
                     AND t.shard = s.shard
                     AND t.status = 'pending'
                     AND t.run_after <= coalesce(sqlc.narg('now')::timestamptz, now())
                   ORDER BY t.priority_score DESC, t.created_at
                   LIMIT 1
               ), false)
               AND s.claims - (
                   SELECT r.releases FROM job_tallies r WHERE r.job_id = s.job_id AND r.shard = s.shard
               ) < s.capacity
               ELSE false END
    LIMIT 1
    FOR NO KEY UPDATE OF s SKIP LOCKED
),
-- The paced shard's pace row, locked; read only for a paced shard. The
-- newest version must still be due: another claim may have moved it since
-- this statement's snapshot.
pace AS (
    SELECT p.domain_id, p.interval_ms
    FROM domain_paces p
    WHERE p.domain_id = (SELECT shard.paced_domain_id FROM shard)
      AND p.next_allowed_at <= coalesce(sqlc.narg('now')::timestamptz, now())
    FOR NO KEY UPDATE OF p SKIP LOCKED
),
picked AS (
    SELECT c.id
    FROM shard
    CROSS JOIN LATERAL (
        SELECT t.id
        FROM tasks t
        WHERE t.job_id = shard.job_id COLLATE "C"
          AND t.shard = shard.shard
          AND t.status = 'pending'
          AND t.run_after <= coalesce(sqlc.narg('now')::timestamptz, now())
        ORDER BY t.priority_score DESC, t.created_at
        -- One task of a paced domain per claim (none if its pace row was
        -- not ours); an interval of 0 only serialises the domain's claims.
        LIMIT CASE WHEN shard.paced_domain_id IS NULL THEN least(shard.free, sqlc.arg(max_tasks)::integer)
                   WHEN (SELECT pace.interval_ms FROM pace) > 0 THEN 1
                   WHEN EXISTS (SELECT 1 FROM pace) THEN least(shard.free, sqlc.arg(max_tasks)::integer)
                   ELSE 0 END
        FOR NO KEY UPDATE OF t SKIP LOCKED
    ) c
),
claimed AS (
    UPDATE tasks t
    SET status = 'running',
        started_at = coalesce(sqlc.narg('now')::timestamptz, now()),
        claimed_by = sqlc.arg(worker_id)::text,
        attempt = t.attempt + 1,
        lease_expires_at = coalesce(sqlc.narg('now')::timestamptz, now())
                           + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
    -- An array, not a join, so tasks cannot be put on the outer side.
    WHERE t.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING t.id, t.job_id, t.page_id, t.path, t.priority_score, t.retry_count, t.attempt,
              t.created_at, t.started_at, t.lease_expires_at, t.source_type, t.source_url
),
-- The domain's next start: from the end of this statement (clock_timestamp,
-- not the transaction's start), so the gap a site sees between two requests
-- is the interval even counting this statement's own time. The row is ours
-- (pace) whenever a paced shard's task was claimed.
paced AS (
    UPDATE domain_paces p
    -- Plus pace_slack_ms, how much later than the stamp the claimer's
    -- request may go out (its claims' round trip), so that the next start
    -- leaves the interval after that request, not after the stamp.
    SET next_allowed_at = coalesce(sqlc.narg('now')::timestamptz, clock_timestamp())
                          + (p.interval_ms + sqlc.arg(pace_slack_ms)::bigint) * interval '1 millisecond'
    FROM shard
    WHERE p.domain_id = shard.paced_domain_id
      AND EXISTS (SELECT 1 FROM claimed)
    -- paced_after_us: how long after this statement reached the server its
    -- pace was stamped (a duration on the server's clock), so the worker
    -- can bound when the pace's reference time was on its own clock.
    RETURNING p.domain_id, p.next_allowed_at,
              (extract(epoch FROM p.next_allowed_at
                                  - (p.interval_ms + sqlc.arg(pace_slack_ms)::bigint) * interval '1 millisecond'
                                  - statement_timestamp()) * 1000000)::bigint AS paced_after_us
),
-- The shard keeps the next start it set (paced_until), in the same HOT
-- update as its claims count.
occupied AS (
    UPDATE job_shards s
    SET claims = s.claims + (SELECT count(*) FROM claimed),
        paced_until = coalesce((SELECT paced.next_allowed_at FROM paced), s.paced_until)
    FROM shard
    WHERE s.job_id = shard.job_id AND s.shard = shard.shard
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
    claimed.lease_expires_at::timestamptz AS lease_expires_at,
    claimed.source_type,
    claimed.source_url,
    -- 0: not a paced domain's task.
    coalesce((SELECT paced.domain_id FROM paced), 0)::integer AS paced_domain_id,
    coalesce((SELECT paced.paced_after_us FROM paced), 0)::bigint AS paced_after_us
FROM claimed
ORDER BY claimed.priority_score DESC, claimed.created_at;

-- name: TaskClaimableExists :one
-- Whether a claim could find work right now: used when a claim returned
-- nothing only because every free shard was locked by another claimer at that
-- instant; job_id as in TaskClaim. Reads the shards as TaskClaim does
-- (idx_job_shards_claim_order, so paced shards not due are never read), then
-- jobs_pkey, domain_paces_pkey for paced shards, idx_tasks_claim and
-- job_tallies_pkey; locks nothing.
SELECT EXISTS (
    SELECT 1
    FROM job_shards s
    WHERE (sqlc.narg('job_id')::text IS NULL OR s.job_id = sqlc.narg('job_id')::text)
      AND (s.paced_domain_id IS NULL) = ANY ('{false,true}'::boolean[])
      AND coalesce(s.paced_until, '-infinity') <= coalesce(sqlc.narg('now')::timestamptz, now())
      AND (SELECT j.status FROM jobs j WHERE j.id = s.job_id) = 'running'
      -- In order, as in TaskClaim: a paced domain not due costs no probe.
      AND CASE WHEN s.paced_domain_id IS NULL
                    OR (SELECT p.next_allowed_at <= coalesce(sqlc.narg('now')::timestamptz, now())
                        FROM domain_paces p WHERE p.domain_id = s.paced_domain_id)
               THEN coalesce((
                   SELECT true
                   FROM tasks t
                   WHERE t.job_id = s.job_id COLLATE "C"
                     AND t.shard = s.shard
                     AND t.status = 'pending'
                     AND t.run_after <= coalesce(sqlc.narg('now')::timestamptz, now())
                   ORDER BY t.priority_score DESC, t.created_at
                   LIMIT 1
               ), false)
               AND s.claims - (
                   SELECT r.releases FROM job_tallies r WHERE r.job_id = s.job_id AND r.shard = s.shard
               ) < s.capacity
               ELSE false END
) AS claimable;

-- name: TaskPacedNext :one
-- How long until the next task of a paced domain may start (milliseconds,
-- rounded up), of the domains whose jobs have a claimable task waiting for
-- their pace; -1 when none does. The worker pool sleeps that long (or until
-- a notification) when a claim found nothing, instead of polling. A
-- duration, not a time, so that the worker's clock does not matter. job_id
-- as in TaskClaim. Reads job_shards, domain_paces_pkey and idx_tasks_claim,
-- as TaskClaimableExists; locks nothing.
SELECT coalesce(ceil(extract(epoch FROM min(p.next_allowed_at)
                             - coalesce(sqlc.narg('now')::timestamptz, now())) * 1000), -1)::bigint AS wait_ms
FROM job_shards s
JOIN job_tallies r ON r.job_id = s.job_id AND r.shard = s.shard
CROSS JOIN LATERAL (
    SELECT p.next_allowed_at FROM domain_paces p WHERE p.domain_id = s.paced_domain_id
) p
WHERE (sqlc.narg('job_id')::text IS NULL OR s.job_id = sqlc.narg('job_id')::text)
  AND s.paced_domain_id IS NOT NULL
  AND p.next_allowed_at > coalesce(sqlc.narg('now')::timestamptz, now())
  AND s.claims - r.releases < s.capacity
  AND (SELECT j.status FROM jobs j WHERE j.id = s.job_id) = 'running'
  AND (
      SELECT true
      FROM tasks t
      WHERE t.job_id = s.job_id COLLATE "C"
        AND t.shard = s.shard
        AND t.status = 'pending'
        AND t.run_after <= p.next_allowed_at
      ORDER BY t.priority_score DESC, t.created_at
      LIMIT 1
  );

-- name: TaskFinishMany :many
-- Records the outcome of many claimed tasks, of any workers, in one
-- statement. Only rows still held by the same claim (running, same worker,
-- same attempt) change, so a task that was rescued and claimed again
-- elsewhere is not overwritten. Each input row comes back with its outcome
-- (completed, skipped, pending when it will be retried, failed) if it was written,
-- or 'busy' if another transaction had it locked (try again); rows that do
-- not come back were no longer held. A failure is retried after a backoff
-- until the job's max_retries, then it is final. Relies on tasks_pkey for the
-- tasks; job_tallies_release updates the tallies by job_tallies_pkey, in key
-- order so that two finishing workers cannot deadlock. Claims never lock
-- tallies.
WITH input AS (
    -- Set-returning functions in one select list advance in lockstep.
    SELECT
        unnest(sqlc.arg(ids)::text[]) AS id,
        unnest(sqlc.arg(worker_ids)::text[]) AS worker_id,
        unnest(sqlc.arg(attempts)::integer[]) AS attempt,
        unnest(sqlc.arg(failed)::boolean[]) AS failed,
        unnest(sqlc.arg(retryable)::boolean[]) AS retryable,
        -- Finished without being fetched (the application's 'skipped').
        unnest(sqlc.arg(skipped)::boolean[]) AS skipped,
        unnest(sqlc.arg(status_codes)::integer[]) AS status_code,
        unnest(sqlc.arg(response_times)::integer[]) AS response_time,
        unnest(sqlc.arg(cache_statuses)::text[]) AS cache_status,
        unnest(sqlc.arg(content_types)::text[]) AS content_type,
        unnest(sqlc.arg(content_lengths)::bigint[]) AS content_length,
        unnest(sqlc.arg(headers)::jsonb[]) AS headers,
        unnest(sqlc.arg(errors)::text[]) AS error,
        -- What a cache-warming fetch adds: the first request's redirect and
        -- timing breakdown, the second request (made after a cache miss),
        -- and the cache checks between them.
        unnest(sqlc.arg(redirect_urls)::text[]) AS redirect_url,
        unnest(sqlc.arg(dns_lookup_times)::integer[]) AS dns_lookup_time,
        unnest(sqlc.arg(tcp_connection_times)::integer[]) AS tcp_connection_time,
        unnest(sqlc.arg(tls_handshake_times)::integer[]) AS tls_handshake_time,
        unnest(sqlc.arg(ttfbs)::integer[]) AS ttfb,
        unnest(sqlc.arg(content_transfer_times)::integer[]) AS content_transfer_time,
        unnest(sqlc.arg(second_response_times)::bigint[]) AS second_response_time,
        unnest(sqlc.arg(second_cache_statuses)::text[]) AS second_cache_status,
        unnest(sqlc.arg(second_content_lengths)::bigint[]) AS second_content_length,
        unnest(sqlc.arg(second_headers)::jsonb[]) AS second_headers,
        unnest(sqlc.arg(second_dns_lookup_times)::integer[]) AS second_dns_lookup_time,
        unnest(sqlc.arg(second_tcp_connection_times)::integer[]) AS second_tcp_connection_time,
        unnest(sqlc.arg(second_tls_handshake_times)::integer[]) AS second_tls_handshake_time,
        unnest(sqlc.arg(second_ttfbs)::integer[]) AS second_ttfb,
        unnest(sqlc.arg(second_content_transfer_times)::integer[]) AS second_content_transfer_time,
        unnest(sqlc.arg(cache_check_attempts)::jsonb[]) AS cache_check_attempts
),
-- The tasks still held by the same claim, locked. SKIP LOCKED: a row another
-- transaction has locked is left for a later attempt rather than waited for
-- (a claimer passing over a shard briefly locks the tasks another claim took).
-- One tasks_pkey probe per input row whatever the statistics say (DATABASE.md,
-- "Plans that do not wait for ANALYZE"): a lateral locking subquery is never
-- flattened into a join the planner could turn around, and status compared
-- as text keeps idx_tasks_job_id_status out. The input's columns come along,
-- so that the update below joins held alone, not the input again.
held AS (
    SELECT i.*
    FROM input i
    CROSS JOIN LATERAL (
        SELECT 1
        FROM tasks t
        WHERE t.id = i.id
          AND t.status::text = 'running'
          AND t.claimed_by = i.worker_id
          AND t.attempt = i.attempt
        FOR NO KEY UPDATE OF t SKIP LOCKED
    ) t
),
finished AS (
    UPDATE tasks t
    SET status = CASE WHEN i.skipped THEN 'skipped'::task_status
                      WHEN NOT i.failed THEN 'completed'::task_status
                      WHEN task_should_retry(i.retryable, t.retry_count, j.max_retries, j.status)
                      THEN 'pending'::task_status
                      ELSE 'failed'::task_status END,
        retry_count = t.retry_count
                      + (i.failed AND task_should_retry(i.retryable, t.retry_count, j.max_retries, j.status))::integer,
        run_after = CASE WHEN i.failed AND task_should_retry(i.retryable, t.retry_count, j.max_retries, j.status)
                         -- The exponent is capped first, so that a job with
                         -- many retries cannot overflow bigint before least().
                         THEN coalesce(sqlc.narg('now')::timestamptz, now()) + least(
                                  sqlc.arg(backoff_max_ms)::bigint,
                                  sqlc.arg(backoff_base_ms)::bigint * (2 ^ least(t.retry_count, 30))::bigint
                              ) * interval '1 millisecond'
                         ELSE t.run_after END,
        completed_at = CASE WHEN i.failed AND task_should_retry(i.retryable, t.retry_count, j.max_retries, j.status)
                            THEN NULL ELSE coalesce(sqlc.narg('now')::timestamptz, now()) END,
        lease_expires_at = NULL,
        status_code = nullif(i.status_code, 0),
        response_time = nullif(i.response_time, -1),
        cache_status = nullif(i.cache_status, ''),
        content_type = nullif(i.content_type, ''),
        content_length = nullif(i.content_length, -1),
        headers = i.headers,
        error = nullif(i.error, ''),
        redirect_url = nullif(i.redirect_url, ''),
        dns_lookup_time = nullif(i.dns_lookup_time, -1),
        tcp_connection_time = nullif(i.tcp_connection_time, -1),
        tls_handshake_time = nullif(i.tls_handshake_time, -1),
        ttfb = nullif(i.ttfb, -1),
        content_transfer_time = nullif(i.content_transfer_time, -1),
        second_response_time = nullif(i.second_response_time, -1),
        second_cache_status = nullif(i.second_cache_status, ''),
        second_content_length = nullif(i.second_content_length, -1),
        second_headers = i.second_headers,
        second_dns_lookup_time = nullif(i.second_dns_lookup_time, -1),
        second_tcp_connection_time = nullif(i.second_tcp_connection_time, -1),
        second_tls_handshake_time = nullif(i.second_tls_handshake_time, -1),
        second_ttfb = nullif(i.second_ttfb, -1),
        second_content_transfer_time = nullif(i.second_content_transfer_time, -1),
        cache_check_attempts = i.cache_check_attempts
    FROM held i, jobs j
    WHERE t.id = i.id
      -- Reads held's rows even with tasks on the outer side of the join.
      AND t.id = ANY (ARRAY(SELECT id FROM held))
      AND j.id = t.job_id
    RETURNING t.id, t.job_id, t.shard, t.status
),
-- The released tasks counted into their shards' tallies (DATABASE.md, "The
-- job_shards / job_tallies design"); the one-time filter below reads it, so
-- that it runs, once, after finished.
counted AS (
    SELECT job_tallies_release(array_agg(job_id), array_agg(shard), array_agg(status)) AS tasks
    FROM finished
)
SELECT finished.id, finished.job_id, finished.status::text AS outcome
FROM finished
WHERE (SELECT tasks FROM counted) >= 0
UNION ALL
-- Held by the same claim in this statement's snapshot but locked by another
-- transaction: not written now; the caller tries again. Looked for only when
-- held is short of the input (a one-time filter): usually it is not, and the
-- anti-join, which a custom plan may run as a nested loop, is skipped.
SELECT i.id, t.job_id, 'busy'
FROM input i
JOIN tasks t ON t.id = i.id
WHERE (SELECT count(*) FROM held) < cardinality(sqlc.arg(ids)::text[])
  AND t.id = ANY (sqlc.arg(ids)::text[])
  AND t.status::text = 'running'
  AND t.claimed_by = i.worker_id
  AND t.attempt = i.attempt
  AND NOT EXISTS (SELECT 1 FROM held h WHERE h.id = i.id);

-- name: TaskExtendLease :many
-- Extends the leases of tasks their workers still hold; returns the ids
-- extended. Relies on tasks_pkey (see TaskFinishMany for the status::text).
UPDATE tasks t
SET lease_expires_at = coalesce(sqlc.narg('now')::timestamptz, now())
                       + sqlc.arg(lease_ms)::bigint * interval '1 millisecond'
FROM (
    SELECT
        unnest(sqlc.arg(ids)::text[]) AS id,
        unnest(sqlc.arg(worker_ids)::text[]) AS worker_id,
        unnest(sqlc.arg(attempts)::integer[]) AS attempt
) i
WHERE t.id = i.id
  AND t.status::text = 'running'
  AND t.claimed_by = i.worker_id
  AND t.attempt = i.attempt
RETURNING t.id, t.lease_expires_at::timestamptz AS lease_expires_at;

-- name: TaskRescueExpired :many
-- Returns running tasks whose lease has expired (their worker died or hung)
-- to 'pending', counting a retry against max_retries; past it they fail.
-- Relies on idx_tasks_job_id_status, reached through the jobs that have
-- shards (every job that can have running tasks), so no extra index is
-- written on the claim path. SKIP LOCKED: a worker finishing one of these
-- tasks right now wins, and the next rescue pass looks again.
WITH expired AS (
    SELECT
        t.id,
        t.job_id,
        t.shard,
        t.claimed_by,
        -- An expired lease is a retryable failure.
        task_should_retry(true, t.retry_count, j.max_retries, j.status) AS retry
    FROM job_shards s
    JOIN jobs j ON j.id = s.job_id
    CROSS JOIN LATERAL (
        SELECT t.id, t.job_id, t.shard, t.claimed_by, t.retry_count
        FROM tasks t
        WHERE t.job_id = s.job_id
          AND t.status = 'running'
          AND t.lease_expires_at < coalesce(sqlc.narg('now')::timestamptz, now())
        LIMIT sqlc.arg(max_tasks)::integer
        FOR NO KEY UPDATE OF t SKIP LOCKED
    ) t
    WHERE s.shard = 0
    LIMIT sqlc.arg(max_tasks)::integer
),
rescued AS (
    UPDATE tasks t
    SET status = CASE WHEN e.retry THEN 'pending'::task_status ELSE 'failed'::task_status END,
        -- As in TaskFinishMany: a failure counts as a retry only if it is retried.
        retry_count = t.retry_count + e.retry::integer,
        run_after = coalesce(sqlc.narg('now')::timestamptz, now()),
        completed_at = CASE WHEN e.retry THEN NULL ELSE coalesce(sqlc.narg('now')::timestamptz, now()) END,
        lease_expires_at = NULL,
        error = 'lease expired: worker ' || coalesce(e.claimed_by, 'unknown') || ' stopped renewing it'
    FROM expired e
    WHERE t.id = e.id
      -- As in TaskFinishMany's finished.
      AND t.id = ANY (ARRAY(SELECT id FROM expired))
    RETURNING t.id, e.job_id, e.shard, t.status, e.claimed_by
),
-- As in TaskFinishMany.
counted AS (
    SELECT job_tallies_release(array_agg(job_id), array_agg(shard), array_agg(status)) AS tasks
    FROM rescued
)
SELECT rescued.id, rescued.job_id, rescued.status, rescued.claimed_by::text AS claimed_by
FROM rescued
WHERE (SELECT tasks FROM counted) >= 0;

-- name: TaskGet :one
-- One task by id. Relies on tasks_pkey.
SELECT * FROM tasks WHERE id = sqlc.arg(id)::text;

-- name: TaskListByJob :many
-- A job's tasks in claim order, for inspection and tests. Relies on the
-- unique index on (job_id, page_id) to find the job's rows.
SELECT * FROM tasks
WHERE job_id = sqlc.arg(job_id)::text
ORDER BY priority_score DESC, created_at, id;

-- name: TaskReleaseMany :many
-- Hands claimed tasks back unfinished (their worker is shutting down): they
-- are pending again at once and the claim does not count as a failure. Only
-- tasks still held by the same claim change; the ids returned are those that
-- did. A task handed back into a job cancelled meanwhile is swept into
-- 'skipped' by JobSweepCancelled. Relies on tasks_pkey; the tallies as in
-- TaskFinishMany.
WITH input AS (
    SELECT
        unnest(sqlc.arg(ids)::text[]) AS id,
        unnest(sqlc.arg(worker_ids)::text[]) AS worker_id,
        unnest(sqlc.arg(attempts)::integer[]) AS attempt
),
released AS (
    UPDATE tasks t
    SET status = 'pending',
        lease_expires_at = NULL,
        run_after = coalesce(sqlc.narg('now')::timestamptz, now())
    FROM input i
    WHERE t.id = i.id
      AND t.status::text = 'running'
      AND t.claimed_by = i.worker_id
      AND t.attempt = i.attempt
    RETURNING t.id, t.job_id, t.shard, t.status
),
-- As in TaskFinishMany.
counted AS (
    SELECT job_tallies_release(array_agg(job_id), array_agg(shard), array_agg(status)) AS tasks
    FROM released
)
SELECT released.id FROM released
WHERE (SELECT tasks FROM counted) >= 0;
