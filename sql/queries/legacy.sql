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
