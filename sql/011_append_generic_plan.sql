-- append_events without planning per batch (issue 11). 010 forced a custom plan for every
-- batch so a session could never keep a plan that scans the whole log; planning that
-- statement cost about a third of PostgreSQL's CPU per event at 16 events per batch
-- (bench/append.py on a 1M-row log). Here the plan is built once per session (generic) and
-- cannot scan the log whatever the statistics said when it was built:
--   * the dedup lookup is a correlated subquery on (channel, dedup_key), so the only choice
--     the planner has is how to scan events for it, and enable_seqscan = off leaves the
--     partial unique index events_dedup_first (no join whose method could flip);
--   * the first of a key within the batch is a window over the batch (min position per key),
--     instead of DISTINCT ON and a join back.
--   * the batch is one array of event_row, not seven arrays: asyncpg checks every element
--     of an array parameter for nesting (collections.abc isinstance checks), so seven arrays
--     cost seven checks per event; one array of rows costs one (about 12% of the ingest
--     server's instructions per webhook went to encoding the seven, by callgrind).
-- Positions are drawn in input order after the append lock (invariant 3), as in 001.
CREATE TYPE event_row AS (
    received_at  timestamptz,
    channel      text,
    provider     text,
    content_type text,
    headers      text,  -- JSON text: asyncpg encodes a composite only in binary, jsonb's
                        -- codec is text; the cast to jsonb parses it as a jsonb parameter did
    body         bytea,
    dedup_key    text
);

DROP FUNCTION append_events(timestamptz[], text[], text[], text[], jsonb[], bytea[], text[]);

CREATE FUNCTION append_events(p_events event_row[])
RETURNS TABLE (event_position bigint, event_duplicate_of bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7312004711);
    RETURN QUERY
    WITH input AS MATERIALIZED (
        SELECT t.*, nextval('events_position_seq') AS pos
        FROM unnest(p_events) AS t
    ), ins AS (
        INSERT INTO events (position, received_at, channel, provider, content_type, headers,
                            body, dedup_key, duplicate_of)
        SELECT i.pos, i.received_at, i.channel, i.provider, i.content_type, i.headers::jsonb, i.body,
               i.dedup_key,
               nullif(coalesce((SELECT e.position FROM events e
                                WHERE e.channel = i.channel AND e.dedup_key = i.dedup_key
                                  AND e.duplicate_of IS NULL),
                               min(i.pos) OVER (PARTITION BY i.channel, i.dedup_key)), i.pos)
        FROM input i
        RETURNING events.position, events.duplicate_of
    )
    SELECT ins.position, ins.duplicate_of FROM ins ORDER BY ins.position;
    PERFORM pg_notify('acklog_events', '');
END
$$;
