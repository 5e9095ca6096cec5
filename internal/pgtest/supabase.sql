-- A database shaped like a Supabase project's, for tests, written from what
-- Supabase's init scripts do (public repository supabase/postgres,
-- migrations/db/init-scripts and the migration that demotes postgres):
--
--   * the API roles anon and authenticated, and service_role, which bypasses
--     row-level security; authenticator, PostgREST's login, may become each;
--   * an auth schema owned by supabase_admin, not by the migration role, with
--     Supabase's own auth.uid() and auth.role() (defined by the test, see
--     pgtest.SupabaseAuth); the API roles and the migration role get USAGE on
--     it and nothing more: since 2025-04-21 Supabase refuses the postgres
--     role CREATE there;
--   * the migration role, supa_postgres (Supabase's postgres): not a
--     superuser, CREATEROLE CREATEDB REPLICATION BYPASSRLS, a member of the
--     API roles, CREATE on the database and on public;
--   * default privileges that grant every table, sequence and function
--     supa_postgres creates in public to anon, authenticated and
--     service_role, which Supabase's REST API then exposes.
--
-- Roles are cluster-wide and other tests' migrations create anon,
-- authenticated and service_role where missing, so each role is created
-- only where missing, tolerating a concurrent creator. Supabase's
-- supabase_admin is a superuser; here it only owns auth and needs no more.
-- The rest is per database.

DO $roles$
DECLARE
    r text[];
BEGIN
    FOREACH r SLICE 1 IN ARRAY ARRAY[
        ['supabase_admin', 'NOLOGIN'],
        ['supabase_auth_admin', 'NOLOGIN NOINHERIT CREATEROLE'],
        ['anon', 'NOLOGIN NOINHERIT'],
        ['authenticated', 'NOLOGIN NOINHERIT'],
        ['service_role', 'NOLOGIN NOINHERIT BYPASSRLS'],
        ['authenticator', 'NOLOGIN NOINHERIT'],
        ['supa_postgres', 'LOGIN PASSWORD ''supa_postgres'' NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS']
    ] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r[1]) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I %s', r[1], r[2]);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created by a concurrent test since the check
            END;
        END IF;
    END LOOP;
    FOREACH r SLICE 1 IN ARRAY ARRAY[['authenticator'], ['supa_postgres']] LOOP
        BEGIN
            EXECUTE format('GRANT anon, authenticated, service_role TO %I', r[1]);
        EXCEPTION WHEN unique_violation THEN
            NULL; -- granted by a concurrent test
        END;
    END LOOP;
END
$roles$;

DO $database$
BEGIN
    EXECUTE format('GRANT CREATE, CONNECT, TEMPORARY ON DATABASE %I TO supa_postgres', current_database());
END
$database$;

CREATE SCHEMA auth AUTHORIZATION supabase_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, supa_postgres;

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT USAGE, CREATE ON SCHEMA public TO supa_postgres;

ALTER DEFAULT PRIVILEGES FOR ROLE supa_postgres IN SCHEMA public
    GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supa_postgres IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supa_postgres IN SCHEMA public
    GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
