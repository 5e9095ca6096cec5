-- Whether a job follows the links of the pages it fetches.
--
-- Problem: the service's normal crawl starts from the homepage and the
-- sitemap and adds the links it finds on every page; the application's jobs
-- say so with find_links. The queue's jobs had no such column, so a worker
-- could not tell a discovering crawl from a fixed list of pages.
--
-- Rollback: drops the column.

-- migrate:up
ALTER TABLE jobs ADD COLUMN find_links boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN jobs.find_links IS
    'Workers add the same-domain links of each fetched page to the job.';

-- migrate:down
ALTER TABLE jobs DROP COLUMN find_links;
