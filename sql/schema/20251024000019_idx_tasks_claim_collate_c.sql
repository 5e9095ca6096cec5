-- The claim's index again, with job_id in the "C" collation, and the claim's
-- probes compare job_id in "C" (COLLATE "C" in sql/queries): an index serves
-- a text comparison only in the comparison's collation, so idx_tasks_claim is
-- then the one index that can serve the claim, whatever the statistics say.
-- Without statistics of the new rows (a crawl's rows are always newer than
-- them) the planner chose idx_tasks_job_id_status instead, whose
-- deduplicated entries make it a tenth of the size, and sorted every pending
-- task of the job on each claim: the load test ran at 0.27x the rate it had
-- after an ANALYZE. Equality is the same in "C" as in any deterministic
-- collation, and job ids are compared byte for byte, faster.
--
-- Three migrations, each one statement, so that each can run CONCURRENTLY
-- (not in a transaction): this one builds the new index, 000020 drops the old
-- one, 000021 gives the new one the old name.
--
-- Rollback: DROP INDEX CONCURRENTLY.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY idx_tasks_claim_c
ON tasks (job_id COLLATE "C", shard, priority_score DESC, created_at)
WHERE status = 'pending';

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_claim_c;
