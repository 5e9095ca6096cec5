-- name: LegacyJobCreate :one
-- Legacy* queries are the data access the application used before round 2,
-- kept only so the load test can measure "before" beside "after"; they run on
-- the base schema. Creates a job as the application did (no shards).
INSERT INTO jobs (id, domain_id, organisation_id, user_id, concurrency, max_pages)
VALUES (
    gen_random_uuid()::text,
    sqlc.arg(domain_id)::integer,
    sqlc.narg('organisation_id')::uuid,
    sqlc.narg('user_id')::uuid,
    sqlc.arg(concurrency)::integer,
    sqlc.arg(max_pages)::integer
)
RETURNING id;

-- name: LegacyTaskInsertMany :execrows
-- Inserts a job's tasks; the base schema's trigger then updates the job's
-- counters once per row.
INSERT INTO tasks (job_id, page_id, path, priority_score)
SELECT sqlc.arg(job_id)::text, p.id, p.path, u.priority
FROM (
    SELECT unnest(sqlc.arg(paths)::text[]) AS path, unnest(sqlc.arg(priorities)::double precision[]) AS priority
) u
JOIN pages p ON p.path = u.path
JOIN jobs j ON j.id = sqlc.arg(job_id)::text AND p.domain_id = j.domain_id
ON CONFLICT (job_id, page_id) DO NOTHING;

-- name: LegacyJobStart :exec
UPDATE jobs SET status = 'running', started_at = now() WHERE id = sqlc.arg(id)::text;

-- name: LegacyTaskNextPending :one
-- @sqlc-vet-disable no-seq-scan-on-large-tables
-- The old claim, step 1: find the best pending task without locking it. The
-- base schema has no index for this order, so every call sorts the pending
-- tasks, and concurrent workers all find the same task. Exempt from the
-- sequential-scan rule because that scan is what the load test's "before"
-- measures.
SELECT id, job_id, path
FROM tasks
WHERE status = 'pending'
ORDER BY priority_score DESC, created_at
LIMIT 1;

-- name: LegacyTaskStart :execrows
-- The old claim, step 2 (the plan's "Current behaviour"): mark it running by
-- id. Workers that found the same task queue on its row lock, then each
-- "claims" it again.
UPDATE tasks SET status = 'running', started_at = now() WHERE id = sqlc.arg(id)::text;

-- name: LegacyTaskComplete :execrows
-- The old completion, one task by id, writing the row production wrote: the
-- load test's "before" database has the fetch-result columns of migration
-- 20251024000018 on top of the base schema.
UPDATE tasks
SET status = 'completed',
    completed_at = now(),
    status_code = sqlc.narg('status_code')::integer,
    response_time = sqlc.narg('response_time')::integer,
    cache_status = sqlc.narg('cache_status')::text,
    content_type = sqlc.narg('content_type')::text,
    content_length = sqlc.narg('content_length')::bigint,
    headers = sqlc.narg('headers')::jsonb,
    redirect_url = sqlc.narg('redirect_url')::text,
    dns_lookup_time = sqlc.narg('dns_lookup_time')::integer,
    tcp_connection_time = sqlc.narg('tcp_connection_time')::integer,
    tls_handshake_time = sqlc.narg('tls_handshake_time')::integer,
    ttfb = sqlc.narg('ttfb')::integer,
    content_transfer_time = sqlc.narg('content_transfer_time')::integer,
    second_response_time = sqlc.narg('second_response_time')::bigint,
    second_cache_status = sqlc.narg('second_cache_status')::text,
    second_content_length = sqlc.narg('second_content_length')::bigint,
    second_headers = sqlc.narg('second_headers')::jsonb,
    second_dns_lookup_time = sqlc.narg('second_dns_lookup_time')::integer,
    second_tcp_connection_time = sqlc.narg('second_tcp_connection_time')::integer,
    second_tls_handshake_time = sqlc.narg('second_tls_handshake_time')::integer,
    second_ttfb = sqlc.narg('second_ttfb')::integer,
    second_content_transfer_time = sqlc.narg('second_content_transfer_time')::integer,
    cache_check_attempts = sqlc.narg('cache_check_attempts')::jsonb
WHERE id = sqlc.arg(id)::text;

-- name: LegacyTaskFail :execrows
UPDATE tasks
SET status = 'failed', completed_at = now(), error = sqlc.arg(error)::text
WHERE id = sqlc.arg(id)::text;

-- name: LegacyTaskCountByJob :one
-- The old enqueue, step 1: count the job's tasks to check max_pages, once per
-- call, a scan of the job's tasks.
SELECT count(*)::integer FROM tasks WHERE job_id = sqlc.arg(job_id)::text;

-- name: LegacyJobIDsRunning :many
-- The jobs a before-app worker claims from, as the application's worker
-- pool kept its active jobs: it tried each in turn.
SELECT id FROM jobs WHERE status = 'running' ORDER BY id;

-- name: LegacyTaskAnyPending :one
-- @sqlc-vet-disable no-seq-scan-on-large-tables
-- Whether any task is still pending: before-app's workers stop only when
-- none is, since its claim also returns nothing while another transaction
-- holds the job's row. Asked only when every worker found nothing, mostly
-- at the end of a run; a scan that stops at the first pending row is a
-- fair plan for it.
SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'pending');

-- name: LegacyAppTaskClaim :one
-- @sqlc-vet-disable
-- before-app's claim: the application's GetNextTask (blue-banded-bee,
-- internal/db/queue.go, 2025-10-25 to 2025-10-28), with the base schema's
-- columns. SKIP LOCKED on the task, but FOR UPDATE OF t, j locks the job's
-- row too, so one claim per job runs at a time: a claimer that finds the row
-- held skips every pending task of the job, one index entry at a time. Then
-- running_tasks + 1 on the same row. jobs.running_tasks is not in this
-- project's schema: the load test adds it to before-app's database
-- (internal/loadtest/before_app.sql), and vet, whose database has every
-- migration, cannot prepare the query.
WITH next_task AS (
    SELECT t.id, t.job_id, t.page_id, t.path, t.created_at, t.retry_count, t.priority_score
    FROM tasks t
    INNER JOIN jobs j ON t.job_id = j.id
    WHERE t.status = 'pending'
      AND j.status = 'running'
      AND (j.concurrency IS NULL OR j.concurrency = 0 OR j.running_tasks < j.concurrency)
      AND t.job_id = sqlc.arg(job_id)::text
    ORDER BY t.priority_score DESC, t.created_at ASC
    LIMIT 1
    FOR UPDATE OF t, j SKIP LOCKED
),
task_update AS (
    UPDATE tasks
    SET status = 'running', started_at = now()
    FROM next_task
    WHERE tasks.id = next_task.id
    RETURNING tasks.id, tasks.job_id, tasks.path, tasks.priority_score
)
UPDATE jobs
SET running_tasks = running_tasks + 1
FROM task_update
WHERE jobs.id = task_update.job_id
RETURNING task_update.id, task_update.job_id, task_update.path, task_update.priority_score;

-- name: LegacyAppJobRunningTasksDecrement :exec
-- @sqlc-vet-disable
-- before-app's finish, step 1: the application's DecrementRunningTasks, on
-- its own right after the task ran, to free the job's slot before the
-- outcome is written. Vet cannot prepare it (see LegacyAppTaskClaim).
UPDATE jobs
SET running_tasks = GREATEST(0, running_tasks - 1)
WHERE id = sqlc.arg(id)::text;

-- name: LegacyAppTaskCompleteMany :execrows
-- before-app's finish, step 2: the application's batch manager wrote
-- completed tasks up to 100 at a time with one unnest UPDATE of every
-- column its fetch fills (a value in each, never NULL; JSON as text, cast),
-- in a transaction of its own; the counter trigger still updates the job's
-- row once per task. before-app's database has the fetch-result columns of
-- migration 20251024000018, as before's does.
UPDATE tasks
SET status = 'completed',
    completed_at = u.completed_at,
    status_code = u.status_code,
    response_time = u.response_time,
    cache_status = u.cache_status,
    content_type = u.content_type,
    content_length = u.content_length,
    headers = u.headers::jsonb,
    redirect_url = u.redirect_url,
    dns_lookup_time = u.dns_lookup_time,
    tcp_connection_time = u.tcp_connection_time,
    tls_handshake_time = u.tls_handshake_time,
    ttfb = u.ttfb,
    content_transfer_time = u.content_transfer_time,
    second_response_time = u.second_response_time,
    second_cache_status = u.second_cache_status,
    second_content_length = u.second_content_length,
    second_headers = u.second_headers::jsonb,
    second_dns_lookup_time = u.second_dns_lookup_time,
    second_tcp_connection_time = u.second_tcp_connection_time,
    second_tls_handshake_time = u.second_tls_handshake_time,
    second_ttfb = u.second_ttfb,
    second_content_transfer_time = u.second_content_transfer_time,
    cache_check_attempts = u.cache_check_attempts::jsonb
FROM (
    SELECT unnest(sqlc.arg(ids)::text[]) AS id,
           unnest(sqlc.arg(completed_at)::timestamptz[]) AS completed_at,
           unnest(sqlc.arg(status_codes)::integer[]) AS status_code,
           unnest(sqlc.arg(response_times)::integer[]) AS response_time,
           unnest(sqlc.arg(cache_statuses)::text[]) AS cache_status,
           unnest(sqlc.arg(content_types)::text[]) AS content_type,
           unnest(sqlc.arg(content_lengths)::bigint[]) AS content_length,
           unnest(sqlc.arg(headers)::text[]) AS headers,
           unnest(sqlc.arg(redirect_urls)::text[]) AS redirect_url,
           unnest(sqlc.arg(dns_lookup_times)::integer[]) AS dns_lookup_time,
           unnest(sqlc.arg(tcp_connection_times)::integer[]) AS tcp_connection_time,
           unnest(sqlc.arg(tls_handshake_times)::integer[]) AS tls_handshake_time,
           unnest(sqlc.arg(ttfbs)::integer[]) AS ttfb,
           unnest(sqlc.arg(content_transfer_times)::integer[]) AS content_transfer_time,
           unnest(sqlc.arg(second_response_times)::bigint[]) AS second_response_time,
           unnest(sqlc.arg(second_cache_statuses)::text[]) AS second_cache_status,
           unnest(sqlc.arg(second_content_lengths)::bigint[]) AS second_content_length,
           unnest(sqlc.arg(second_headers)::text[]) AS second_headers,
           unnest(sqlc.arg(second_dns_lookup_times)::integer[]) AS second_dns_lookup_time,
           unnest(sqlc.arg(second_tcp_connection_times)::integer[]) AS second_tcp_connection_time,
           unnest(sqlc.arg(second_tls_handshake_times)::integer[]) AS second_tls_handshake_time,
           unnest(sqlc.arg(second_ttfbs)::integer[]) AS second_ttfb,
           unnest(sqlc.arg(second_content_transfer_times)::integer[]) AS second_content_transfer_time,
           unnest(sqlc.arg(cache_check_attempts)::text[]) AS cache_check_attempts
) AS u
WHERE tasks.id = u.id;

-- name: LegacyAppTaskFailMany :execrows
-- The batch manager's failed tasks, likewise.
UPDATE tasks
SET status = 'failed', completed_at = u.completed_at, error = u.error
FROM (
    SELECT unnest(sqlc.arg(ids)::text[]) AS id,
           unnest(sqlc.arg(completed_at)::timestamptz[]) AS completed_at,
           unnest(sqlc.arg(errors)::text[]) AS error
) AS u
WHERE tasks.id = u.id;
