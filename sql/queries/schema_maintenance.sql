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
