-- Supabase compatibility for plain PostgreSQL.
--
-- Problem: the application's policies call auth.uid() and grant to the roles
-- anon, authenticated and service_role. Supabase provides all of these; plain
-- PostgreSQL (local development, CI, the load test) has none of them.
--
-- This migration creates each object only where it is missing, so the same
-- migration set applies unchanged on Supabase (where it does nothing) and on
-- a bare server. The definitions match Supabase's own: auth.uid() and
-- auth.role() read the JWT claims PostgREST puts in request.jwt.claim.* or
-- request.jwt.claims, and return NULL when unauthenticated.
--
-- Rollback: drops only what it created, which it records in
-- auth.compat_created (on Supabase that table stays empty).

-- migrate:up
DO $compat$
DECLARE
    r text;
    created_schema boolean := false;
BEGIN
    IF to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        created_schema := true;
    END IF;
    CREATE TABLE IF NOT EXISTS auth.compat_created (
        kind text NOT NULL,
        name text NOT NULL,
        PRIMARY KEY (kind, name)
    );
    IF created_schema THEN
        INSERT INTO auth.compat_created VALUES ('schema', 'auth');
    END IF;

    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
            INSERT INTO auth.compat_created VALUES ('role', r);
        END IF;
    END LOOP;
    -- The workers' role bypasses row-level security, as on Supabase.
    IF EXISTS (SELECT 1 FROM auth.compat_created WHERE kind = 'role' AND name = 'service_role') THEN
        ALTER ROLE service_role BYPASSRLS;
    END IF;

    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
        LANGUAGE sql STABLE
        AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $fn$;
        INSERT INTO auth.compat_created VALUES ('function', 'uid');
    END IF;

    IF to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text
        LANGUAGE sql STABLE
        AS $fn$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $fn$;
        INSERT INTO auth.compat_created VALUES ('function', 'role');
    END IF;
END
$compat$;

DO $compat$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        -- Supabase's roles have these already; PostgreSQL 15 grants USAGE on
        -- public to PUBLIC, so locally only auth needs a grant.
        IF NOT has_schema_privilege(r, 'auth', 'USAGE') THEN
            EXECUTE format('GRANT USAGE ON SCHEMA auth TO %I', r);
            INSERT INTO auth.compat_created VALUES ('grant auth', r);
        END IF;
        IF NOT has_schema_privilege(r, 'public', 'USAGE') THEN
            EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', r);
            INSERT INTO auth.compat_created VALUES ('grant public', r);
        END IF;
    END LOOP;
END
$compat$;

-- migrate:down
DO $compat$
DECLARE
    r record;
    drop_schema boolean;
BEGIN
    FOR r IN SELECT kind, name FROM auth.compat_created WHERE kind = 'function' LOOP
        EXECUTE format('DROP FUNCTION auth.%I()', r.name);
    END LOOP;
    FOR r IN SELECT kind, name FROM auth.compat_created WHERE kind LIKE 'grant %' LOOP
        EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM %I', split_part(r.kind, ' ', 2), r.name);
    END LOOP;
    drop_schema := EXISTS (SELECT 1 FROM auth.compat_created WHERE kind = 'schema');
    DROP TABLE auth.compat_created;
    IF drop_schema THEN
        DROP SCHEMA auth;
    END IF;
    -- Roles are cluster-wide and may hold privileges in other databases of
    -- the same server (every test database shares them), so they stay.
END
$compat$;
