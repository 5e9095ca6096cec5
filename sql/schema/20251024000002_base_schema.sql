-- The application's schema as it stood before performance round 2.
--
-- This is the state the 2025-10-24 load test ran against (400-550 tasks/min):
--   * foreign keys without indexes (added by the idx_* migrations that follow);
--   * row-level-security policies that call auth.uid() bare, so it is
--     re-evaluated for every row (replaced by optimise_rls_policies);
--   * a per-task trigger that updates the parent job's counters on every task
--     insert and status change, so every worker serialises on the job row
--     (removed by task_queue).
-- Key types are the application's: jobs and tasks use text ids, domains and
-- pages integers, users and organisations uuids.
--
-- Rollback: drops every object this migration created.

-- migrate:up
CREATE TYPE job_status AS ENUM ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled');
CREATE TYPE task_status AS ENUM ('pending', 'running', 'completed', 'failed', 'skipped');

CREATE TABLE organisations (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- On Supabase, users.id is the id of the auth.users row of the same person.
CREATE TABLE users (
    id              uuid        PRIMARY KEY,
    email           text        NOT NULL UNIQUE,
    full_name       text,
    organisation_id uuid        REFERENCES organisations (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE domains (
    id         serial      PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pages (
    id         serial      PRIMARY KEY,
    domain_id  integer     NOT NULL REFERENCES domains (id),
    path       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain_id, path)
);

CREATE TABLE jobs (
    id              text        PRIMARY KEY DEFAULT gen_random_uuid()::text,
    domain_id       integer     NOT NULL REFERENCES domains (id),
    user_id         uuid        REFERENCES users (id),
    organisation_id uuid        REFERENCES organisations (id),
    status          job_status  NOT NULL DEFAULT 'pending',
    -- Most tasks of this job that may run at the same time.
    concurrency     integer     NOT NULL DEFAULT 5 CHECK (concurrency > 0),
    -- Most pages this job crawls; 0 means no limit.
    max_pages       integer     NOT NULL DEFAULT 0 CHECK (max_pages >= 0),
    total_tasks     integer     NOT NULL DEFAULT 0,
    completed_tasks integer     NOT NULL DEFAULT 0,
    failed_tasks    integer     NOT NULL DEFAULT 0,
    skipped_tasks   integer     NOT NULL DEFAULT 0,
    progress        real        NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    completed_at    timestamptz,
    error_message   text
);

CREATE TABLE tasks (
    id             text        PRIMARY KEY DEFAULT gen_random_uuid()::text,
    job_id         text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    page_id        integer     NOT NULL REFERENCES pages (id),
    path           text        NOT NULL,
    status         task_status NOT NULL DEFAULT 'pending',
    priority_score double precision NOT NULL DEFAULT 0,
    retry_count    integer     NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    completed_at   timestamptz,
    error          text,
    status_code    integer,
    -- Milliseconds from request to last byte.
    response_time  integer,
    cache_status   text,
    content_type   text,
    content_length bigint,
    headers        jsonb,
    -- A page is crawled at most once per job.
    UNIQUE (job_id, page_id)
);

CREATE TABLE job_share_links (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id     text        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    -- 64 hex digits from two version-4 UUIDs: 244 random bits.
    token      text        NOT NULL UNIQUE
        DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
    created_by uuid        NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);

-- The per-task counter trigger production ran: every task insert and status
-- change updates its job's row, so all workers of a job queue on that row.
CREATE FUNCTION update_job_counters() RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE jobs
        SET total_tasks   = total_tasks + 1,
            skipped_tasks = skipped_tasks + (NEW.status = 'skipped')::int
        WHERE id = NEW.job_id;
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        UPDATE jobs
        SET completed_tasks = completed_tasks + (NEW.status = 'completed')::int - (OLD.status = 'completed')::int,
            failed_tasks    = failed_tasks + (NEW.status = 'failed')::int - (OLD.status = 'failed')::int,
            skipped_tasks   = skipped_tasks + (NEW.status = 'skipped')::int - (OLD.status = 'skipped')::int,
            started_at      = coalesce(started_at, CASE WHEN NEW.status = 'running' THEN now() END)
        WHERE id = NEW.job_id;
        UPDATE jobs
        SET progress = CASE WHEN total_tasks = 0 THEN 0
                            ELSE 100.0 * (completed_tasks + failed_tasks + skipped_tasks) / total_tasks END
        WHERE id = NEW.job_id;
    END IF;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER tasks_update_job_counters
AFTER INSERT OR UPDATE OF status ON tasks
FOR EACH ROW EXECUTE FUNCTION update_job_counters();

-- Row-level security as production had it: auth.uid() called bare.
ALTER TABLE organisations ENABLE ROW LEVEL SECURITY;
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE domains ENABLE ROW LEVEL SECURITY;
ALTER TABLE pages ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_share_links ENABLE ROW LEVEL SECURITY;

CREATE POLICY "Users can access own data"
ON users FOR ALL
USING (id = auth.uid());

CREATE POLICY "Users can access own organisation"
ON organisations FOR ALL
USING (id = (SELECT organisation_id FROM users WHERE id = auth.uid()));

CREATE POLICY "Organisation members can access jobs"
ON jobs FOR ALL
USING (organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid()));

CREATE POLICY "Organisation members can access tasks"
ON tasks FOR ALL
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.id = tasks.job_id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);

CREATE POLICY "Organisation members can access domains"
ON domains FOR SELECT
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.domain_id = domains.id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);

CREATE POLICY "Organisation members can access pages"
ON pages FOR SELECT
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.domain_id = pages.domain_id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);

CREATE POLICY "Organisation members can manage share links"
ON job_share_links FOR ALL
USING (
    EXISTS (
        SELECT 1
        FROM jobs
        WHERE jobs.id = job_share_links.job_id
          AND jobs.organisation_id = (SELECT organisation_id FROM users WHERE id = auth.uid())
    )
);

-- Supabase grants every role every table privilege and leaves access control
-- to the policies; do the same here so the policies are what is tested.
GRANT ALL ON organisations, users, domains, pages, jobs, tasks, job_share_links
    TO anon, authenticated, service_role;
GRANT USAGE, SELECT ON SEQUENCE domains_id_seq, pages_id_seq TO anon, authenticated, service_role;

-- migrate:down
-- These policies read tables that are dropped before theirs.
DROP POLICY "Users can access own organisation" ON organisations;
DROP POLICY "Organisation members can access domains" ON domains;
DROP POLICY "Organisation members can access pages" ON pages;
DROP TABLE job_share_links;
DROP TABLE tasks;
DROP FUNCTION update_job_counters();
DROP TABLE jobs;
DROP TABLE pages;
DROP TABLE domains;
DROP TABLE users;
DROP TABLE organisations;
DROP TYPE task_status;
DROP TYPE job_status;
