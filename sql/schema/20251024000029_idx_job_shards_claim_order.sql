-- The shards a claim may take, in the order it takes them.
--
-- Problem: the claim scanned job_shards in heap order and passed over each
-- paced shard whose domain was not due (paced_until in the future) with a
-- column test, and joined every shard it met to job_tallies by a scan of
-- the live jobs' tallies. With thousands of paced domains waiting, every
-- claim, an unpaced job's too, paid for each of them: one session's claim
-- of an unpaced job took 5.1-5.4 ms next to 10,000 paced domains not due.
--
-- What this adds: idx_job_shards_claim_order on (paced_domain_id IS NULL,
-- coalesce(paced_until, '-infinity')). The claim reads two ranges of it in
-- one index scan: the paced shards whose bound has come (oldest bound
-- first), then the unpaced shards (all at -infinity, so always in range).
-- Paced shards not due lie between the two ranges and are never read.
-- Claims change paced_until only on paced shards, so an unpaced shard's
-- claim stays a HOT update.
--
-- Built CONCURRENTLY, one statement per file; see idx_jobs_domain_id for why
-- there is no IF NOT EXISTS.
--
-- Rollback: DROP INDEX CONCURRENTLY.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY idx_job_shards_claim_order
ON job_shards ((paced_domain_id IS NULL), (coalesce(paced_until, '-infinity')));

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_job_shards_claim_order;
