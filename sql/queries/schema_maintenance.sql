-- name: IndexInvalidDropStatements :many
-- A CREATE INDEX CONCURRENTLY that failed leaves an INVALID index, and a rerun
-- of its migration would fail on the name. This lists a DROP INDEX
-- CONCURRENTLY for each invalid index in public that no session is building
-- right now, so the runner (or psql, piping the output back in) removes it and
-- the pending migration builds it again. Reads pg_index.
SELECT format('DROP INDEX CONCURRENTLY IF EXISTS %s;', i.indexrelid::regclass)::text AS statement
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND n.nspname = 'public'
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid
  )
ORDER BY 1;

-- name: MigrationsTableMoveFromPublic :exec
-- dbmate's record of applied migrations used to live in public, which
-- Supabase's API exposes; it now lives in taskq_meta (migrate.MigrationsTable).
-- This moves an existing public.schema_migrations there, rows and all, when
-- it holds taskq's first migration and taskq_meta has no table yet; a
-- public.schema_migrations of some other tool is left alone. Run under the
-- migration lock, before dbmate reads the table. A DO block cannot be
-- prepared or explained, so sqlc vet skips it.
-- @sqlc-vet-disable sqlc/db-prepare no-seq-scan-on-large-tables
DO $move$
DECLARE
    ours boolean;
BEGIN
    IF to_regclass('taskq_meta.schema_migrations') IS NOT NULL
       OR to_regclass('public.schema_migrations') IS NULL THEN
        RETURN;
    END IF;
    -- Dynamic: a static reference would be planned before the check above.
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM public.schema_migrations WHERE version = ''20251024000001'')' INTO ours;
    IF ours THEN
        CREATE SCHEMA IF NOT EXISTS taskq_meta;
        ALTER TABLE public.schema_migrations SET SCHEMA taskq_meta;
        RAISE NOTICE 'moved public.schema_migrations to taskq_meta.schema_migrations';
    END IF;
END
$move$;

-- name: MigrationsRecord :one
-- Where dbmate's record of applied migrations is: in taskq_meta
-- (migrate.MigrationsTable), still in public (a database migrated before
-- the record moved), or nowhere (never migrated). Read first, because
-- MigrationsApplied fails where the table does not exist.
SELECT
    (to_regclass('taskq_meta.schema_migrations') IS NOT NULL)::boolean AS recorded,
    (to_regclass('public.schema_migrations') IS NOT NULL)::boolean AS in_public;

-- name: MigrationsApplied :many
-- The versions dbmate recorded as applied, oldest first, to compare with the
-- migrations a binary embeds. Reads the whole (small) table.
SELECT version::text AS version
FROM taskq_meta.schema_migrations
ORDER BY version;
