-- The task row the service really writes: what a cache-warming fetch records.
--
-- Problem: the application's tasks carry, beside the status, timing and
-- headers the base schema has, where the page was found (source_type,
-- source_url), where it redirects, the first request's timing breakdown,
-- and a second request's results: a fetch that finds the page not cached (a
-- MISS) checks the cache and requests the page again to confirm it is now
-- warm. The base schema lacked these columns, so every figure measured on it
-- was measured on a row narrower than production's.
--
-- Names and types are the application's (its tasks table, Harvey-AU
-- blue-banded-bee, October 2025): times in whole milliseconds, integer except
-- second_response_time (bigint); headers and the cache checks as jsonb.
-- source_type is NOT NULL in the application; here it stays nullable,
-- because the queue's own enqueue (and every existing row) names no source.
-- No index: nothing looks tasks up by these, and each index on tasks costs a
-- write per claim and finish (DATABASE.md). Nullable columns without a
-- default are a catalog change: nothing is rewritten, and the table's lock is
-- held for an instant.
--
-- Rollback: drops the columns (their values are lost).

-- migrate:up
ALTER TABLE tasks
    ADD COLUMN source_type text,
    ADD COLUMN source_url text,
    ADD COLUMN redirect_url text,
    ADD COLUMN dns_lookup_time integer,
    ADD COLUMN tcp_connection_time integer,
    ADD COLUMN tls_handshake_time integer,
    ADD COLUMN ttfb integer,
    ADD COLUMN content_transfer_time integer,
    ADD COLUMN second_response_time bigint,
    ADD COLUMN second_cache_status text,
    ADD COLUMN second_content_length bigint,
    ADD COLUMN second_headers jsonb,
    ADD COLUMN second_dns_lookup_time integer,
    ADD COLUMN second_tcp_connection_time integer,
    ADD COLUMN second_tls_handshake_time integer,
    ADD COLUMN second_ttfb integer,
    ADD COLUMN second_content_transfer_time integer,
    ADD COLUMN cache_check_attempts jsonb;

COMMENT ON COLUMN tasks.source_type IS 'How the page was found: sitemap, link, manual, ...';
COMMENT ON COLUMN tasks.source_url IS 'The page (or sitemap) the task''s page was found on.';
COMMENT ON COLUMN tasks.redirect_url IS 'Where the page redirected to, when it did.';
COMMENT ON COLUMN tasks.dns_lookup_time IS 'First request: DNS lookup, ms (0 on a reused connection).';
COMMENT ON COLUMN tasks.tcp_connection_time IS 'First request: TCP connect, ms (0 on a reused connection).';
COMMENT ON COLUMN tasks.tls_handshake_time IS 'First request: TLS handshake, ms (0 on a reused connection or without TLS).';
COMMENT ON COLUMN tasks.ttfb IS 'First request: from sending it to the first response byte, ms.';
COMMENT ON COLUMN tasks.content_transfer_time IS 'First request: from the first response byte to the last, ms.';
COMMENT ON COLUMN tasks.second_response_time IS 'The request after a cache miss that confirms the page is cached: total, ms.';
COMMENT ON COLUMN tasks.second_cache_status IS 'The second request''s cache status (HIT once warmed).';
COMMENT ON COLUMN tasks.second_content_length IS 'The second request''s body, bytes.';
COMMENT ON COLUMN tasks.second_headers IS 'The second request''s response headers.';
COMMENT ON COLUMN tasks.cache_check_attempts IS
    'The cache checks between the two requests: [{"attempt", "cache_status", "delay_ms"}], as the application writes them.';

-- migrate:down
ALTER TABLE tasks
    DROP COLUMN source_type,
    DROP COLUMN source_url,
    DROP COLUMN redirect_url,
    DROP COLUMN dns_lookup_time,
    DROP COLUMN tcp_connection_time,
    DROP COLUMN tls_handshake_time,
    DROP COLUMN ttfb,
    DROP COLUMN content_transfer_time,
    DROP COLUMN second_response_time,
    DROP COLUMN second_cache_status,
    DROP COLUMN second_content_length,
    DROP COLUMN second_headers,
    DROP COLUMN second_dns_lookup_time,
    DROP COLUMN second_tcp_connection_time,
    DROP COLUMN second_tls_handshake_time,
    DROP COLUMN second_ttfb,
    DROP COLUMN second_content_transfer_time,
    DROP COLUMN cache_check_attempts;
