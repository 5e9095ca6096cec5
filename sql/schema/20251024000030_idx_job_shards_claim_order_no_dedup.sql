-- idx_job_shards_claim_order keeps one entry per row version.
--
-- Problem: every unpaced shard has the same key in
-- idx_job_shards_claim_order (its paced_until is 'epoch'). A claim that finds
-- no room for a HOT update on its shard's page leaves a dead version with its
-- own index entry, under that key. When the index page filled, B-tree
-- deduplication merged those entries with the live shards' into posting
-- lists, and a scan can mark a posting list dead only when every row in it
-- is: every claim then read every dead version until a VACUUM. In a
-- discovering load test of 6 jobs (192 shards), claims read 313 index
-- entries each; with this change, 39.
--
-- What this changes: deduplicate_items = off on that index. Each version
-- keeps an entry of its own, which the first scan to find it dead marks, and
-- later scans skip. The index stays a few pages: it holds live jobs' shards
-- only. Posting lists already built stay until the table's next VACUUM.
--
-- Rollback: RESET (deduplicate_items).

-- migrate:up
ALTER INDEX idx_job_shards_claim_order SET (deduplicate_items = off);

-- migrate:down
ALTER INDEX idx_job_shards_claim_order RESET (deduplicate_items);
