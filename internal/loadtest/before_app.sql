-- What before-app adds to the base schema (migration 20251024000002) so that
-- the application's claim of late October 2025 runs as it did: two of the
-- application's own migrations (public repository Harvey-AU/blue-banded-bee,
-- supabase/migrations/), applied by the load test to before-app's database
-- only. It is no migration of this project: its schema never had these.

-- 20251025015743_add_running_tasks_column.sql: the job's count of claimed,
-- unfinished tasks, which the claim increments and the finish decrements on
-- the job's row. The index on it makes every such update non-HOT.
ALTER TABLE jobs ADD COLUMN running_tasks integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD CONSTRAINT jobs_running_tasks_non_negative CHECK (running_tasks >= 0);
CREATE INDEX idx_jobs_running_tasks ON jobs (running_tasks) WHERE status = 'running';

-- 20251013104047_add_composite_indexes_for_query_optimisation.sql: the index
-- the application's claim read a job's pending tasks through, in its order.
-- Without it each claim would sort the job's pending tasks, which the
-- application did not do.
CREATE INDEX idx_tasks_claim_optimised ON tasks (status, job_id, priority_score DESC, created_at ASC)
WHERE status = 'pending';
