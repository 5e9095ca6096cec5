-- Plan, medium priority: tasks.page_id is a foreign key with no index; deleting or looking up a page scans tasks.
--
-- Built CONCURRENTLY so writes to tasks continue while it builds. PostgreSQL
-- refuses CONCURRENTLY inside a transaction, and dbmate sends a whole section
-- as one statement batch, so this file holds exactly one statement per section.
-- No IF NOT EXISTS: a failed concurrent build leaves an INVALID index behind,
-- and IF NOT EXISTS would skip it silently. The migration runner and
-- scripts/deploy drop invalid indexes before they migrate (the query
-- IndexInvalidDropStatements in sql/queries/schema_maintenance.sql), so a
-- retry rebuilds the index; plain dbmate fails loudly instead of skipping.
--
-- Rollback: DROP INDEX CONCURRENTLY, also without blocking writes.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY idx_tasks_page_id ON tasks (page_id);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_page_id;
