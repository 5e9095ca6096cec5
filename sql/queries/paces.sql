-- name: DomainLockForPace :many
-- Locks domains before their pace is created or removed, so that a job's
-- shards being created at the same time (the job_shards_pace trigger takes
-- the row FOR SHARE) either wait and see the pace, or are seen by
-- DomainPaceFlag, which runs after this in the same transaction. Key order,
-- so two callers cannot deadlock. Relies on domains_pkey.
SELECT d.id
FROM domains d
WHERE d.id = ANY (sqlc.arg(domain_ids)::integer[])
ORDER BY d.id
FOR UPDATE;

-- name: DomainPaceSet :one
-- Creates or replaces a domain's pace: its floor and current interval become
-- interval_ms, the learned back-off is forgotten, and a next start already
-- scheduled stays. Relies on domain_paces_pkey.
INSERT INTO domain_paces (domain_id, floor_ms, interval_ms, source, updated_at)
VALUES (sqlc.arg(domain_id)::integer, sqlc.arg(interval_ms)::bigint, sqlc.arg(interval_ms)::bigint,
        sqlc.arg(source)::text, coalesce(sqlc.narg('now')::timestamptz, now()))
ON CONFLICT (domain_id) DO UPDATE
SET floor_ms = excluded.floor_ms,
    interval_ms = excluded.interval_ms,
    successes = 0,
    source = excluded.source,
    updated_at = excluded.updated_at
RETURNING domain_id;

-- name: DomainPaceSetIfAbsent :one
-- A pace from robots.txt: only for a domain that has none, since a pace set
-- by the application or learned from responses takes precedence. Returns
-- whether it was created. Relies on domain_paces_pkey.
WITH created AS (
    INSERT INTO domain_paces (domain_id, floor_ms, interval_ms, source, updated_at)
    VALUES (sqlc.arg(domain_id)::integer, sqlc.arg(interval_ms)::bigint, sqlc.arg(interval_ms)::bigint,
            sqlc.arg(source)::text, coalesce(sqlc.narg('now')::timestamptz, now()))
    ON CONFLICT (domain_id) DO NOTHING
    RETURNING domain_id
)
SELECT EXISTS (SELECT 1 FROM created) AS created;

-- name: DomainPaceBackOffNew :exec
-- The first back-off of a domain without a pace: a learned pace of one step,
-- its next start pushed out by the step or by Retry-After, whichever is
-- later. A domain that has a pace meanwhile is left to DomainPaceLearn.
INSERT INTO domain_paces (domain_id, floor_ms, interval_ms, next_allowed_at, source, updated_at)
SELECT d.domain_id, 0, least(sqlc.arg(max_ms)::bigint, sqlc.arg(step_ms)::bigint),
       coalesce(sqlc.narg('now')::timestamptz, now())
       + greatest(least(sqlc.arg(max_ms)::bigint, sqlc.arg(step_ms)::bigint), d.retry_after_ms) * interval '1 millisecond',
       'learned', coalesce(sqlc.narg('now')::timestamptz, now())
FROM (
    SELECT unnest(sqlc.arg(domain_ids)::integer[]) AS domain_id,
           unnest(sqlc.arg(retry_after_ms)::bigint[]) AS retry_after_ms
) d
ON CONFLICT (domain_id) DO NOTHING;

-- name: DomainPaceDelete :one
-- Removes a domain's pace; returns whether it had one. Relies on
-- domain_paces_pkey.
WITH deleted AS (
    DELETE FROM domain_paces WHERE domain_id = sqlc.arg(domain_id)::integer
    RETURNING domain_id
)
SELECT EXISTS (SELECT 1 FROM deleted) AS deleted;

-- name: DomainPaceFlag :exec
-- Marks the shards of every job of the domains as paced (their domain id)
-- or not (NULL), as domain_paces now says; run after DomainLockForPace in
-- the same transaction. A shard no longer paced drops its bound
-- (paced_until back to 'epoch'): the claim reads unpaced shards only up to
-- now. Relies on idx_jobs_domain_id and job_shards_pkey.
UPDATE job_shards s
SET paced_domain_id = CASE WHEN f.paced THEN j.domain_id END,
    paced_until = CASE WHEN f.paced THEN s.paced_until ELSE 'epoch' END
FROM jobs j
CROSS JOIN LATERAL (
    SELECT EXISTS (SELECT 1 FROM domain_paces p WHERE p.domain_id = j.domain_id) AS paced
) f
WHERE j.domain_id = ANY (sqlc.arg(domain_ids)::integer[])
  AND s.job_id = j.id
  AND s.paced_domain_id IS DISTINCT FROM CASE WHEN f.paced THEN j.domain_id END;

-- name: DomainPaceLearn :many
-- What results say about their domains' paces, one statement per finished
-- batch: a back-off (429, 503, a connection failure) raises the interval by
-- step_ms up to max_ms (never below the floor), pushes next_allowed_at out
-- by the new interval or by Retry-After, whichever is later, and restarts
-- the count of successes; recover_after successes in a row lower it by
-- step_ms toward the floor. Only domains with a pace change; returns those,
-- so the caller can create the paces missing for back-offs
-- (DomainPaceBackOffNew). Relies on jobs_pkey and domain_paces_pkey, and
-- locks pace rows in key order so two finishers cannot deadlock.
WITH input AS (
    SELECT unnest(sqlc.arg(job_ids)::text[]) AS job_id,
           unnest(sqlc.arg(back_off)::boolean[]) AS back_off,
           unnest(sqlc.arg(retry_after_ms)::bigint[]) AS retry_after_ms
),
per_domain AS (
    SELECT j.domain_id,
           bool_or(i.back_off) AS back_off,
           max(i.retry_after_ms) AS retry_after_ms,
           count(*) FILTER (WHERE NOT i.back_off)::integer AS successes
    FROM input i
    CROSS JOIN LATERAL (SELECT j.domain_id FROM jobs j WHERE j.id = i.job_id) j
    GROUP BY j.domain_id
),
-- Successes on a pace at its floor change nothing: those rows are neither
-- locked nor written, so a paced domain crawling politely costs no write
-- per task here.
locked AS (
    SELECT p.domain_id
    FROM domain_paces p
    JOIN per_domain d ON d.domain_id = p.domain_id
    WHERE d.back_off OR p.interval_ms > p.floor_ms
    ORDER BY p.domain_id
    FOR NO KEY UPDATE OF p
),
learned AS (
    SELECT p.domain_id,
           d.back_off,
           CASE WHEN d.back_off
                THEN greatest(p.floor_ms, least(sqlc.arg(max_ms)::bigint, p.interval_ms + sqlc.arg(step_ms)::bigint))
                WHEN p.successes + d.successes >= sqlc.arg(recover_after)::integer
                THEN greatest(p.floor_ms, p.interval_ms - sqlc.arg(step_ms)::bigint)
                ELSE p.interval_ms END AS interval_ms,
           CASE WHEN d.back_off OR p.successes + d.successes >= sqlc.arg(recover_after)::integer THEN 0
                ELSE p.successes + d.successes END AS successes,
           d.retry_after_ms
    FROM domain_paces p
    JOIN per_domain d ON d.domain_id = p.domain_id
    JOIN locked l ON l.domain_id = p.domain_id
),
updated AS (
    UPDATE domain_paces p
    SET interval_ms = l.interval_ms,
        successes = l.successes,
        next_allowed_at = CASE WHEN l.back_off
                               THEN greatest(p.next_allowed_at,
                                             coalesce(sqlc.narg('now')::timestamptz, now())
                                             + greatest(l.interval_ms, l.retry_after_ms) * interval '1 millisecond')
                               ELSE p.next_allowed_at END,
        updated_at = coalesce(sqlc.narg('now')::timestamptz, now())
    FROM learned l
    WHERE p.domain_id = l.domain_id
    RETURNING p.domain_id, p.next_allowed_at
),
-- A pushed-out next start reaches the domain's shards (paced_until), so
-- that claims pass them over for a column test while it lasts
-- (idx_job_shards_paced_domain_id). SKIP LOCKED: a shard a claimer holds
-- keeps its earlier bound.
spread AS (
    UPDATE job_shards s
    SET paced_until = l.next_allowed_at
    FROM (
        SELECT o.job_id, o.shard, u.next_allowed_at
        FROM job_shards o JOIN updated u ON o.paced_domain_id = u.domain_id
        WHERE o.paced_until < u.next_allowed_at
        FOR NO KEY UPDATE OF o SKIP LOCKED
    ) l
    WHERE s.job_id = l.job_id AND s.shard = l.shard
    RETURNING s.job_id
)
SELECT domain_id FROM updated;

-- name: DomainPaceGet :one
-- One domain's pace, by domain name. Relies on domains_name_key and
-- domain_paces_pkey.
SELECT d.id AS domain_id, d.name, p.floor_ms, p.interval_ms, p.next_allowed_at, p.successes, p.source, p.updated_at
FROM domains d
JOIN domain_paces p ON p.domain_id = d.id
WHERE d.name = sqlc.arg(name)::text;

-- name: DomainPaceList :many
-- The paced domains, latest next start first (the ones being paced now
-- lead), for taskq stats; max_rows bounds the answer.
SELECT d.id AS domain_id, d.name, p.floor_ms, p.interval_ms, p.next_allowed_at, p.successes, p.source, p.updated_at
FROM domain_paces p
JOIN domains d ON d.id = p.domain_id
ORDER BY p.next_allowed_at DESC, d.name
LIMIT sqlc.arg(max_rows)::integer;

-- name: DomainPaceCount :one
-- How many domains are paced.
SELECT count(*)::integer AS paced FROM domain_paces;

-- name: DomainIDByName :one
-- A domain's id. Relies on domains_name_key.
SELECT id FROM domains WHERE name = sqlc.arg(name)::text;

-- name: DomainsWithoutPace :many
-- The domains of jobs that have no pace, with those jobs. Relies on
-- jobs_pkey and domain_paces_pkey.
SELECT j.domain_id, array_agg(j.id ORDER BY j.id)::text[] AS job_ids
FROM jobs j
WHERE j.id = ANY (sqlc.arg(job_ids)::text[])
  AND NOT EXISTS (SELECT 1 FROM domain_paces p WHERE p.domain_id = j.domain_id)
GROUP BY j.domain_id
ORDER BY j.domain_id;
