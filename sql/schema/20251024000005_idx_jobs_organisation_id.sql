-- Plan, high priority: jobs.organisation_id is a foreign key with no index, and every row-level-security check on jobs, tasks, domains, pages and share links filters on it.
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
CREATE INDEX CONCURRENTLY idx_jobs_organisation_id ON jobs (organisation_id);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_jobs_organisation_id;
