-- The reader of job share links: public.shared_job(token).
--
-- Problem: job_share_links holds tokens, but nothing reads a job through one.
-- Row-level security shows a job only to members of its organisation, and a
-- share link is for people outside it (anon, or a user of another
-- organisation), so no policy can serve it without also exposing the tokens.
--
-- What this adds: one SECURITY DEFINER function, the only path from a token
-- to a job. It returns the job's job_progress row (status, counts, times) and
-- nothing that names its organisation or its users, and only while the link
-- is live: not revoked and not past expires_at. It refuses any token that is
-- not 64 lowercase hex digits, the shape the column default generates, so a
-- short or hand-picked token written by a client is never served.
--   * It runs as its owner, the tables' owner, whom row-level security does
--     not filter; an empty search_path and qualified names mean no object a
--     caller creates can stand in for one it uses.
--   * RETURNS SETOF public.job_progress: sqlc types a call as the existing
--     JobProgress model (it cannot see the columns of a RETURNS TABLE).
--   * BEGIN ATOMIC: PostgreSQL records what the body reads, so a later
--     migration cannot drop job_progress or job_share_links under it without
--     failing; one that adds a column to job_progress must recreate this
--     function (internal/rls tests call it).
--   * EXECUTE is revoked from PUBLIC and granted to anon and authenticated.
--
-- Rollback: drops the function, and with it its grants; nothing else changed.

-- migrate:up
CREATE FUNCTION public.shared_job(p_token text)
RETURNS SETOF public.job_progress
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = ''
BEGIN ATOMIC
    SELECT p.*
    FROM public.job_share_links l
    JOIN public.job_progress p ON p.job_id = l.job_id
    WHERE p_token ~ '^[0-9a-f]{64}$'
      AND l.token = p_token
      AND l.revoked_at IS NULL
      AND (l.expires_at IS NULL OR l.expires_at > pg_catalog.now());
END;

COMMENT ON FUNCTION public.shared_job(text) IS
    'The progress of the job a live share link points to, for anyone holding its token; no row for an expired, revoked or unknown token.';

REVOKE ALL ON FUNCTION public.shared_job(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.shared_job(text) TO anon, authenticated;

-- migrate:down
DROP FUNCTION public.shared_job(text);
