-- A new partition is made ahead of need (sql/084), so it is empty when ingest's sessions
-- plan the dedup lookup of append_events (a generic plan, kept for the session). For an
-- empty partition both of its indexes on channel look alike, and the planner may take
-- (channel, position) and filter on dedup_key: a lookup then reads every row of the channel
-- in that partition, and ingest slowed with each row it added (bench: 11,600 webhooks/s fell
-- to 500/s within 60,000 events of a new partition, and stayed there until autovacuum
-- analyzed it, up to a minute later). So the append that takes a partition past its first
-- 1,000 positions analyzes it, in its own transaction (milliseconds, once per partition):
-- the statistics then show the partition's rows, the sessions' plans are invalidated, and
-- they take the (channel, dedup_key) index.

CREATE OR REPLACE FUNCTION append_events(p_events event_row[])
RETURNS TABLE (event_position bigint, event_duplicate_of bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_last bigint;
    v_head text;
    v_low bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7312004711);
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
           + coalesce(cardinality(p_events), 0)
      INTO v_last FROM events_position_seq;
    IF v_last >= coalesce((SELECT max(high) FROM events_partitions), v_last) THEN
        PERFORM events_ensure_partitions(v_last);
    END IF;
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
    -- the partition this batch ends in, analyzed by the batch that takes it past its first
    -- 1,000 positions (the rows just inserted count: ANALYZE sees its own transaction's)
    SELECT p.name, coalesce(p.low, 1) INTO v_head, v_low FROM events_partitions p
     WHERE p.high > v_last ORDER BY p.high LIMIT 1;
    IF v_low + 1000 BETWEEN v_last - coalesce(cardinality(p_events), 0) + 1 AND v_last THEN
        EXECUTE format('ANALYZE %I', v_head);
    END IF;
    PERFORM pg_notify('acklog_events', '');
END
$$;
