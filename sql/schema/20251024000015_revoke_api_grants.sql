-- Every privilege the API roles hold on the project's objects, and no other.
--
-- Problem: Supabase's default privileges grant every table, view, sequence and
-- function the migration role creates in public to anon and authenticated
-- (and PostgreSQL grants EXECUTE on every function to PUBLIC). Earlier
-- migrations revoked most of that, but authenticated still held INSERT,
-- UPDATE, DELETE and TRUNCATE on job_shards, job_tallies and job_progress, and
-- both roles could call the queue's functions through the API. Row-level
-- security stopped the writes, but TRUNCATE bypasses it, and safety should
-- not rest on one layer.
--
-- What this does: for each object the migrations created in public, it
-- revokes from PUBLIC, anon and authenticated every privilege not in the list
-- below, and grants what the list holds and is missing:
--   * authenticated reads every table and job_progress (the policies decide
--     which rows) and deletes share links (the policy decides which);
--     its column grants (migration 20251024000011) are left as they are;
--   * anon and authenticated call shared_job(token);
--   * service_role calls the functions the worker's queries use; the trigger
--     function job_shards_sync is called by nobody (a trigger needs no
--     EXECUTE when it fires).
-- On plain PostgreSQL, where nothing was granted by default, it changes only
-- the functions. Each change is recorded in taskq_meta.api_grant_changes.
--
-- Rollback: undoes the recorded changes (grants back what was revoked,
-- revokes what was granted) and drops the record.

-- migrate:up
CREATE TABLE taskq_meta.api_grant_changes (
    kind      text    NOT NULL,
    object    text    NOT NULL,
    grantee   text    NOT NULL,
    privilege text    NOT NULL,
    grantable boolean NOT NULL,
    change    text    NOT NULL CHECK (change IN ('revoked', 'granted')),
    PRIMARY KEY (object, grantee, privilege)
);
COMMENT ON TABLE taskq_meta.api_grant_changes IS
    'Privileges migration 20251024000015 revoked or granted, so that its rollback can undo exactly those.';

DO $grants$
DECLARE
    r record;
BEGIN
    -- Names below are written, compared and printed as seen from public.
    PERFORM pg_catalog.set_config('search_path', 'public', true);
    CREATE TEMPORARY TABLE api_objects (kind text, object text, acl aclitem[]) ON COMMIT DROP;
    INSERT INTO api_objects
    SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text,
           coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))
    FROM pg_catalog.pg_class c
    WHERE c.oid IN ('public.organisations'::regclass, 'public.users'::regclass, 'public.domains'::regclass,
                    'public.pages'::regclass, 'public.jobs'::regclass, 'public.tasks'::regclass,
                    'public.job_share_links'::regclass, 'public.job_shards'::regclass,
                    'public.job_tallies'::regclass, 'public.job_progress'::regclass,
                    'public.domains_id_seq'::regclass, 'public.pages_id_seq'::regclass)
    UNION ALL
    SELECT 'FUNCTION', p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f'::"char", p.proowner))
    FROM pg_catalog.pg_proc p
    WHERE p.oid IN ('public.shared_job(text)'::regprocedure, 'public.job_shard_count(integer)'::regprocedure,
                    'public.job_shard_capacity(integer,integer)'::regprocedure,
                    'public.task_should_retry(boolean,integer,integer,public.job_status)'::regprocedure,
                    'public.job_shards_sync()'::regprocedure);

    CREATE TEMPORARY TABLE api_wanted (object text, grantee text, privilege text) ON COMMIT DROP;
    INSERT INTO api_wanted
    SELECT o.object, 'authenticated', 'SELECT'
    FROM api_objects o WHERE o.kind = 'TABLE'
    UNION ALL SELECT 'job_share_links', 'authenticated', 'DELETE'
    UNION ALL SELECT 'shared_job(text)', 'anon', 'EXECUTE'
    UNION ALL SELECT 'shared_job(text)', 'authenticated', 'EXECUTE'
    UNION ALL SELECT 'job_shard_count(integer)', 'service_role', 'EXECUTE'
    UNION ALL SELECT 'job_shard_capacity(integer,integer)', 'service_role', 'EXECUTE'
    UNION ALL SELECT 'task_should_retry(boolean,integer,integer,job_status)', 'service_role', 'EXECUTE';

    -- Held by PUBLIC or an API role and not wanted: revoke.
    FOR r IN
        SELECT o.kind, o.object, CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee,
               a.privilege_type AS privilege, a.is_grantable AS grantable
        FROM api_objects o, aclexplode(o.acl) a
        WHERE (a.grantee = 0 OR a.grantee IN ('anon'::regrole, 'authenticated'::regrole))
          AND NOT EXISTS (
              SELECT 1 FROM api_wanted w
              WHERE w.object = o.object AND w.grantee::regrole = a.grantee AND w.privilege = a.privilege_type
          )
    LOOP
        EXECUTE format('REVOKE %s ON %s %s FROM %s', r.privilege, r.kind, r.object, r.grantee);
        -- One row per privilege, whichever grantors it had.
        INSERT INTO taskq_meta.api_grant_changes
        VALUES (r.kind, r.object, r.grantee, r.privilege, r.grantable, 'revoked')
        ON CONFLICT DO NOTHING;
    END LOOP;

    -- Wanted and not held: grant.
    FOR r IN
        SELECT o.kind, w.object, w.grantee, w.privilege
        FROM api_wanted w JOIN api_objects o USING (object)
        WHERE NOT EXISTS (
            SELECT 1 FROM aclexplode(o.acl) a
            WHERE a.grantee = w.grantee::regrole AND a.privilege_type = w.privilege
        )
    LOOP
        EXECUTE format('GRANT %s ON %s %s TO %s', r.privilege, r.kind, r.object, r.grantee);
        INSERT INTO taskq_meta.api_grant_changes VALUES (r.kind, r.object, r.grantee, r.privilege, false, 'granted');
    END LOOP;
END
$grants$;

-- migrate:down
DO $grants$
DECLARE
    r record;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'public', true);
    FOR r IN SELECT * FROM taskq_meta.api_grant_changes LOOP
        IF r.change = 'granted' THEN
            EXECUTE format('REVOKE %s ON %s %s FROM %s', r.privilege, r.kind, r.object, r.grantee);
        ELSE
            EXECUTE format('GRANT %s ON %s %s TO %s%s', r.privilege, r.kind, r.object, r.grantee,
                           CASE WHEN r.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END IF;
    END LOOP;
END
$grants$;
DROP TABLE taskq_meta.api_grant_changes;
