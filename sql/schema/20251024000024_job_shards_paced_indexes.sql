-- The claim stops paying for paced shards that are not due (issue 11).
--
-- Problem: TaskClaim walked job_shards and passed over every paced shard
-- whose domain was not due, so its cost grew with the number of paced
-- shards: with 1,000 paced domains waiting an hour, an unpaced job's
-- claim-one rate was 0.41x of alone, and 1,000 domains paced at 1/s kept
-- 64 workers at 296 tasks/s.
--
-- What this adds (DATABASE.md, "Politeness"):
--   * idx_job_shards_unpaced: the unpaced shards in the claim's order
--     (job_id in "C", so that no other index can give it), so the claim's
--     unpaced scan never meets a paced shard.
--   * idx_job_shards_paced_until: the paced shards by paced_until, so the
--     claim reads the due ones (an index range that ends at the first shard
--     not due) and TaskPacedNext the next one to come.
--   * idx_job_shards_paced_domain: a domain's paced shards, so a paced claim
--     moves paced_until of all of them, not only its own: a sibling shard
--     whose domain another claim moved would otherwise stay in the due range
--     and be probed by every claim.
--   * job_shards_pace() sets paced_until from the pace when a shard is
--     created, and the existing shards get their pace's next_allowed_at.
-- Updates of unpaced shards stay HOT (no indexed column changes); a paced
-- claim's paced_until update is not.
--
-- job_shards holds only live jobs' shards, so the indexes are built in the
-- migration's transaction (a brief SHARE lock), not CONCURRENTLY.
--
-- Rollback: drops the indexes and restores job_shards_pace().

-- migrate:up
CREATE INDEX idx_job_shards_unpaced ON job_shards (job_id COLLATE "C", shard)
WHERE paced_domain_id IS NULL;
-- "> 0" (domain ids are serial), not IS NOT NULL: a lookup of one domain's
-- shards (paced_domain_id = $1) does not imply it, so it cannot take this
-- index for idx_job_shards_paced_domain when the statistics tie them.
CREATE INDEX idx_job_shards_paced_until ON job_shards (paced_until)
WHERE paced_domain_id > 0;
CREATE INDEX idx_job_shards_paced_domain ON job_shards (paced_domain_id)
WHERE paced_domain_id IS NOT NULL;

CREATE OR REPLACE FUNCTION job_shards_pace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $fn$
DECLARE
    d integer;
BEGIN
    SELECT j.domain_id INTO d FROM jobs j WHERE j.id = NEW.job_id;
    -- A pace being created waits for this transaction (and then sees its
    -- shards), or this waits for it (and then, in the next statement's
    -- snapshot, sees the pace).
    PERFORM 1 FROM domains WHERE id = d FOR SHARE;
    SELECT p.domain_id, p.next_allowed_at INTO NEW.paced_domain_id, NEW.paced_until
    FROM domain_paces p WHERE p.domain_id = d;
    NEW.paced_until := coalesce(NEW.paced_until, 'epoch');
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION job_shards_pace() FROM PUBLIC, anon, authenticated;

UPDATE job_shards s
SET paced_until = p.next_allowed_at
FROM domain_paces p
WHERE p.domain_id = s.paced_domain_id
  AND s.paced_until < p.next_allowed_at;

-- migrate:down
CREATE OR REPLACE FUNCTION job_shards_pace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
AS $fn$
DECLARE
    d integer;
BEGIN
    SELECT j.domain_id INTO d FROM jobs j WHERE j.id = NEW.job_id;
    -- A pace being created waits for this transaction (and then sees its
    -- shards), or this waits for it (and then, in the next statement's
    -- snapshot, sees the pace).
    PERFORM 1 FROM domains WHERE id = d FOR SHARE;
    SELECT p.domain_id INTO NEW.paced_domain_id FROM domain_paces p WHERE p.domain_id = d;
    RETURN NEW;
END
$fn$;
DROP INDEX idx_job_shards_paced_domain;
DROP INDEX idx_job_shards_paced_until;
DROP INDEX idx_job_shards_unpaced;
