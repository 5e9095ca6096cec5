-- The paced shards whose domain may be due, found by their bound.
--
-- Problem: the claim scanned job_shards and passed over each paced shard
-- whose domain was not due (paced_until in the future) with a column test.
-- With thousands of paced domains waiting, every claim, an unpaced job's
-- too, paid for each of them: one session's claim of an unpaced job took
-- 0.63 ms next to 100 paced domains not due and 1.6 ms next to 4,000.
--
-- What this adds: idx_job_shards_paced_until, partial on paced shards, so
-- that the claim reaches only the paced shards whose bound has come (a
-- range scan, in the order they came due) and never meets the others.
-- Claims change paced_until only on paced shards, so an unpaced shard's
-- claim stays a HOT update.
--
-- Built CONCURRENTLY, one statement per file; see idx_jobs_domain_id for why
-- there is no IF NOT EXISTS.
--
-- Rollback: DROP INDEX CONCURRENTLY.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY idx_job_shards_paced_until ON job_shards (paced_until)
WHERE paced_domain_id IS NOT NULL;

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_job_shards_paced_until;
