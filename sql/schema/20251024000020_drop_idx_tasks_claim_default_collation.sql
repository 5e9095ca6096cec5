-- The claim's index in the default collation, which the claim no longer
-- reads (see 000019).
--
-- Rollback: builds it again.

-- migrate:up transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_claim;

-- migrate:down transaction:false
CREATE INDEX CONCURRENTLY idx_tasks_claim ON tasks (job_id, shard, priority_score DESC, created_at)
WHERE status = 'pending';
