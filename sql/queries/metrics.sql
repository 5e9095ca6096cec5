-- name: TaskThroughputPerMinute :many
-- The plan's throughput query: tasks finished per minute over a recent window.
-- Reaches tasks through idx_tasks_job_id_status, one index scan per job that
-- is still going or finished within the window, instead of scanning every
-- task ever. OFFSET 0 keeps the LATERAL subquery from being pulled up into a
-- join, which a generic plan turned into a sequential scan of tasks.
SELECT
    date_trunc('minute', t.completed_at)::timestamptz AS minute,
    count(*)::bigint AS tasks_completed
FROM jobs j
CROSS JOIN LATERAL (
    SELECT t.completed_at
    FROM tasks t
    WHERE t.job_id = j.id
      AND t.status IN ('completed', 'failed', 'skipped')
      AND t.completed_at > now() - sqlc.arg(window_seconds)::integer * interval '1 second'
    OFFSET 0
) t
WHERE j.completed_at IS NULL
   OR j.completed_at > now() - sqlc.arg(window_seconds)::integer * interval '1 second'
GROUP BY 1
ORDER BY 1 DESC;

-- name: WaitEventCounts :many
-- The plan's lock-wait query: sessions of this database waiting right now,
-- grouped by what they wait for. Reads pg_stat_activity (no index involved).
SELECT
    a.wait_event_type::text AS wait_event_type,
    a.wait_event::text AS wait_event,
    count(*)::bigint AS sessions
FROM pg_catalog.pg_stat_activity a
WHERE a.wait_event IS NOT NULL
  AND a.datname = current_database()
  AND a.pid <> pg_backend_pid()
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2;

-- name: LockWaitsCurrent :many
-- Every lock wait in this database now, with how long it has lasted
-- (pg_locks.waitstart) and which sessions block it. Sampled during load
-- tests to find the longest waits, and by the metrics collector. Reads
-- pg_locks and pg_stat_activity. waitstart is NULL for a moment after a wait
-- begins (PostgreSQL's documentation says so); such a wait is left out until
-- it has a start, where scanning the NULL would fail the whole read.
SELECT
    a.pid::integer AS pid,
    l.locktype::text AS lock_type,
    l.mode::text AS mode,
    coalesce(l.relation::regclass::text, '')::text AS relation,
    l.waitstart::timestamptz AS wait_started,
    (extract(epoch FROM clock_timestamp() - l.waitstart) * 1000)::double precision AS waited_ms,
    pg_blocking_pids(a.pid)::integer[] AS blocked_by,
    left(a.query, 200)::text AS query
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted
  AND l.waitstart IS NOT NULL
  AND a.datname = current_database()
ORDER BY l.waitstart;

-- name: BlockedQueries :many
-- Sessions blocked by others, with their blockers' current queries.
-- Reads pg_stat_activity and pg_blocking_pids.
SELECT
    w.pid::integer AS blocked_pid,
    left(w.query, 200)::text AS blocked_query,
    (extract(epoch FROM clock_timestamp() - w.query_start) * 1000)::double precision AS blocked_query_ms,
    b.pid::integer AS blocking_pid,
    left(b.query, 200)::text AS blocking_query,
    b.state::text AS blocking_state
FROM pg_catalog.pg_stat_activity w
JOIN pg_catalog.pg_stat_activity b ON b.pid = ANY(pg_blocking_pids(w.pid))
WHERE w.datname = current_database()
ORDER BY w.query_start, w.pid, b.pid;

-- name: QueueDepth :many
-- Tasks per job and status for the jobs that still have shards (every job
-- not finished, and finished ones until maintenance retires their shards).
-- Reaches tasks through idx_tasks_job_id_status (an index-only scan once
-- vacuumed).
SELECT t.job_id, t.status, count(*)::bigint AS tasks
FROM tasks t
WHERE t.job_id IN (SELECT s.job_id FROM job_shards s WHERE s.shard = 0)
GROUP BY t.job_id, t.status
ORDER BY t.job_id, t.status;
