-- The unpaced shards, apart from the paced ones.
--
-- Problem: as for idx_job_shards_paced_until: the claim's scan for an
-- unpaced job's shard met every paced shard too.
--
-- What this adds: idx_job_shards_unpaced, partial on unpaced shards, so
-- that the claim's unpaced part reads only those. Its key and predicate
-- columns do not change on a claim, so claims stay HOT updates.
--
-- Built CONCURRENTLY, one statement per file; see idx_jobs_domain_id for why
-- there is no IF NOT EXISTS.
--
-- Rollback: DROP INDEX CONCURRENTLY.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY idx_job_shards_unpaced ON job_shards (job_id, shard)
WHERE paced_domain_id IS NULL;

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_job_shards_unpaced;
