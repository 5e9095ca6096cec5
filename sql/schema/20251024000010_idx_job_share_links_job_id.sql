-- Beyond the plan: job_share_links.job_id is a foreign key the plan missed (Supabase's linter and this project's schema check flag it); deleting a job scanned the share links.
--
-- Built CONCURRENTLY so writes to job_share_links continue while it builds. PostgreSQL
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
CREATE INDEX CONCURRENTLY idx_job_share_links_job_id ON job_share_links (job_id);

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_job_share_links_job_id;
