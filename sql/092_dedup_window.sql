-- The dedup window (ACKLOG_DEDUP_WINDOW): append_events looks for an event's first copy only
-- in the partitions that hold an event received within the window, not in every partition
-- the log keeps. Each partition has its own (channel, dedup_key) index (sql/084), so a lookup
-- probed one index per partition, and ingest's cost grew with the partitions retention kept
-- (docs/data.md, "Duplicates"). A provider retries a webhook for hours or days, not months:
-- a copy older than the window is stored as a new event, as one is once retention dropped
-- its first copy's partition.
--
-- events_partitioning.dedup_floor is the lowest position to probe (NULL: every partition).
-- eventstore.partitions.set_dedup_floor stores it, from the ingest role's minute loop,
-- through events_set_dedup_floor below. append_events compares positions with it,
-- and PostgreSQL prunes the partitions below it when the plan starts (initial pruning: the
-- floor is a parameter of the generic plan), so a lookup probes only the partitions left.
-- A floor that is late (ingest down for a while) is lower than it could be: more probes,
-- never fewer than the window needs.

ALTER TABLE events_partitioning ADD COLUMN dedup_floor bigint;

-- Store the floor for a window (NULL: every partition) and return it: the low bound of the
-- oldest partition whose newest event was received at or after now() - p_window (NULL when
-- that is the first partition, from MINVALUE). A partition with no event counts as old; when
-- no partition holds a recent event, the floor is the next position. The walk goes down from
-- the newest partition and stops at the first old one (the log is in order of receipt), so
-- it reads the partitions within the window and one more, however many the log keeps. Under
-- the append lock: every position drawn before is committed and seen, and the floor is never
-- above a position an append draws after it.
CREATE FUNCTION events_set_dedup_floor(p_window interval) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    p record;
    v_newest timestamptz;
    v_floor bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7312004711);
    IF p_window IS NOT NULL THEN
        SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
          INTO v_floor FROM events_position_seq;
        FOR p IN SELECT name, low FROM events_partitions WHERE detached_at IS NULL
                  ORDER BY high DESC LOOP
            -- the partition's last position: one step down its primary key
            EXECUTE format('SELECT received_at FROM %I ORDER BY position DESC LIMIT 1', p.name)
               INTO v_newest;
            CONTINUE WHEN v_newest IS NULL;  -- made ahead, or a restore's range left empty
            EXIT WHEN v_newest < now() - p_window;
            v_floor := p.low;
            EXIT WHEN p.low IS NULL;
        END LOOP;
    END IF;
    UPDATE events_partitioning SET dedup_floor = v_floor
     WHERE dedup_floor IS DISTINCT FROM v_floor;
    RETURN v_floor;
END
$$;

-- append_events as in sql/091, whole (a plpgsql function is replaced entire); what is new:
-- v_floor, read from events_partitioning, and the lookup's `e.position >= v_floor`.
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
    v_floor bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7312004711);
    SELECT coalesce(dedup_floor, -9223372036854775808) INTO v_floor FROM events_partitioning;
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
                                  AND e.duplicate_of IS NULL AND e.position >= v_floor),
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
