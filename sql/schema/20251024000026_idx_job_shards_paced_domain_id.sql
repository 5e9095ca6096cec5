-- The shards of a paced domain, found by the domain.
--
-- Problem: job_shards.paced_until, a shard's bound on its domain's next
-- start, is set by the claims of that shard only. A back-off (a 429 with
-- Retry-After, say) pushed the domain's next start out and left every shard
-- of the domain with its old bound: until the domain was due again, every
-- claim passing over them took each shard's advisory lock and probed the
-- pace, instead of one column test, and held those locks to its end. With
-- 1,000 domains backed off so, an unpaced single-task claim ran at 0.46x of
-- its rate alone.
--
-- What this adds: idx_job_shards_paced_domain_id, partial on paced shards,
-- so that DomainPaceLearn moves the bound on every shard of a domain it
-- pushes out with a probe instead of a scan. Only live jobs have shards.
--
-- Built CONCURRENTLY, one statement per file; see idx_jobs_domain_id for why
-- there is no IF NOT EXISTS.
--
-- Rollback: DROP INDEX CONCURRENTLY.

-- migrate:up transaction:false
CREATE INDEX CONCURRENTLY idx_job_shards_paced_domain_id ON job_shards (paced_domain_id)
WHERE paced_domain_id IS NOT NULL;

-- migrate:down transaction:false
DROP INDEX CONCURRENTLY IF EXISTS idx_job_shards_paced_domain_id;
