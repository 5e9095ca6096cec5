-- Politeness: a pace per domain that every claim obeys.
--
-- Problem: a job's only brake was its concurrency. The application paced
-- domains in each worker process's memory, so two worker hosts each sent the
-- full rate, a restart forgot what was learned, and a paced worker held a
-- claimed task while it slept.
--
-- What this adds:
--   * domain_paces: one row per paced domain, shared by all the domain's
--     jobs. interval_ms is the least time between two task starts of the
--     domain (never below floor_ms, the robots.txt Crawl-delay or the
--     application's setting); next_allowed_at is when the next may start.
--     The claim locks the row (FOR NO KEY UPDATE SKIP LOCKED) and moves
--     next_allowed_at in the statement that takes the task; results (429,
--     503, Retry-After, connection failures) push it out and raise
--     interval_ms, a run of successes lowers it again (DATABASE.md,
--     "Politeness").
--   * job_shards.paced_domain_id: the domain of a paced job's shard, NULL
--     for an unpaced one, so that the claim probes domain_paces only for
--     paced shards; job_shards.paced_until, the next start this shard's
--     last claim set (a lower bound), so that a shard whose domain is not
--     due is passed over without a probe. Set by the job_shards_pace trigger when a shard is
--     created, and by whoever creates or removes a pace (DomainPaceFlag).
--     The trigger takes the domain's row FOR SHARE and pace creators take
--     it FOR UPDATE first, so a pace and a job's new shards cannot miss
--     each other.
--
-- Rollback: drops the trigger, its function, the column and the table.

-- migrate:up
CREATE TABLE domain_paces (
    domain_id       integer     PRIMARY KEY REFERENCES domains (id) ON DELETE CASCADE,
    floor_ms        bigint      NOT NULL DEFAULT 0 CHECK (floor_ms >= 0),
    interval_ms     bigint      NOT NULL CHECK (interval_ms >= 0),
    next_allowed_at timestamptz NOT NULL DEFAULT 'epoch',
    successes       integer     NOT NULL DEFAULT 0,
    source          text        NOT NULL CHECK (source IN ('set', 'robots', 'learned')),
    updated_at      timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);

COMMENT ON TABLE domain_paces IS
    'Per-domain pacing: no task of the domain starts before next_allowed_at; each claim moves it interval_ms on.';
COMMENT ON COLUMN domain_paces.floor_ms IS
    'The least interval: robots.txt Crawl-delay or the application''s setting. Learned back-off never goes below it.';
COMMENT ON COLUMN domain_paces.successes IS
    'Successes since the interval last changed; the interval steps down after a run of them.';

ALTER TABLE job_shards ADD COLUMN paced_domain_id integer,
                       ADD COLUMN paced_until timestamptz NOT NULL DEFAULT 'epoch';
COMMENT ON COLUMN job_shards.paced_domain_id IS
    'The job''s domain when it has a row in domain_paces, else NULL: the claim probes the pace only for these shards.';
COMMENT ON COLUMN job_shards.paced_until IS
    'The domain''s next_allowed_at as this shard''s last claim set it: never later than the true one, so a claim passes over a shard whose domain is surely not due for one column test.';

CREATE FUNCTION job_shards_pace() RETURNS trigger
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

CREATE TRIGGER job_shards_pace
BEFORE INSERT ON job_shards
FOR EACH ROW EXECUTE FUNCTION job_shards_pace();

-- Internal: the workers' role only (as 20251024000015 does for the rest).
ALTER TABLE domain_paces ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON domain_paces FROM PUBLIC, anon, authenticated;
GRANT ALL ON domain_paces TO service_role;
REVOKE ALL ON FUNCTION job_shards_pace() FROM PUBLIC, anon, authenticated;

-- migrate:down
DROP TRIGGER job_shards_pace ON job_shards;
DROP FUNCTION job_shards_pace();
ALTER TABLE job_shards DROP COLUMN paced_domain_id, DROP COLUMN paced_until;
DROP TABLE domain_paces;
