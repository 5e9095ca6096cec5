-- Plan, high priority: jobs.user_id is a foreign key with no index; listing a user's jobs scans jobs.
--
-- Built CONCURRENTLY so writes to jobs continue while it builds. PostgreSQL
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
CREATE INDEX CONCURRENTLY idx_jobs_user_id ON jobs (user_id);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_jobs_user_id;
