-- The claim's index: a job shard's claimable tasks in exactly the order the
-- claim takes them (priority_score DESC, created_at ASC), so claiming reads
-- the first few entries instead of sorting the job's tasks, and claimers of
-- different shards read different parts of it. Partial on 'pending': only
-- tasks waiting to run are in it, so it stays small while a job drains, and
-- claiming or finishing a task adds nothing to it.
--
-- Built CONCURRENTLY, one statement per file; see idx_jobs_domain_id for why
-- there is no IF NOT EXISTS.
--
-- Rollback: DROP INDEX CONCURRENTLY.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY idx_tasks_claim ON tasks (job_id, shard, priority_score DESC, created_at)
WHERE status = 'pending';

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_claim;
