-- The log becomes a table partitioned by position range (issue 23), step 2 of 2 (see 084).

-- A log still a plain table: validate 084's CHECK (SHARE UPDATE EXCLUSIVE: appends and reads
-- go on while it scans), then swap under the append lock (events_partition_log).
DO $$
DECLARE
    v_bound bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM events_partitions) THEN
        RETURN;  -- 084 converted an empty log already
    END IF;
    ALTER TABLE events VALIDATE CONSTRAINT events_p0_bound;
    SELECT substring(pg_get_constraintdef(oid) FROM '< \(?([0-9]+)')::bigint INTO STRICT v_bound
      FROM pg_constraint
     WHERE conrelid = 'events'::regclass AND conname = 'events_p0_bound';
    PERFORM events_partition_log(v_bound);
END
$$;
DROP FUNCTION events_partition_log(bigint);

-- append_events of 011, and before it draws positions, the partitions they need: made here
-- under the append lock when the ones made ahead (eventstore.partitions.ensure, at start and
-- every minute) have run out, so an append never fails for want of a partition. Two small
-- reads per batch (the sequence, the registry's highest bound).
-- The dedup lookup probes each partition's own index (no partitioned unique index can hold a
-- key without the position); the append lock keeps one first per (channel, dedup_key). Once
-- retention drops a partition, a retry of one of its events' keys is stored as new.
CREATE OR REPLACE FUNCTION append_events(p_events event_row[])
RETURNS TABLE (event_position bigint, event_duplicate_of bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_last bigint;
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
    PERFORM pg_notify('acklog_events', '');
END
$$;

-- The guard: a DROP or DETACH of a log partition (or a DROP of the log) by hand is refused;
-- eventstore.partitions.detach_partition and drop_partition set acklog.retention = 'on' for
-- their transaction and pass. sql_drop sees exactly what a DROP removed (DROP TABLE, DROP
-- SCHEMA ... CASCADE, DROP OWNED); ddl_command_end after an ALTER TABLE sees whether a
-- registered partition has left the log (DETACH PARTITION); ddl_command_start refuses
-- DETACH ... CONCURRENTLY, whose first transaction commits before any end trigger runs.
-- Creating an event trigger needs a superuser: without one this part is skipped with a
-- NOTICE (docs/data.md) and the registry still lists the partitions.
-- Both run with the search path of this migration, so they name the log's schema whatever
-- the session's path (pg_restore runs with an empty one).
CREATE FUNCTION events_guard_drop() RETURNS event_trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    r record;
BEGIN
    IF current_setting('acklog.retention', true) = 'on' THEN
        RETURN;
    END IF;
    FOR r IN SELECT * FROM pg_event_trigger_dropped_objects()
             WHERE object_type IN ('table', 'partitioned table')
               AND schema_name = current_schema() LOOP
        IF r.object_name IN ('events', 'events_partitions') THEN
            RAISE EXCEPTION 'the events log cannot be dropped (% %.%)', r.object_type,
                r.schema_name, r.object_name
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF EXISTS (SELECT 1 FROM events_partitions WHERE name = r.object_name) THEN
            RAISE EXCEPTION 'log partition % is dropped only by retention', r.object_name
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'eventstore.partitions.drop_partition sets acklog.retention';
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION events_guard_detach() RETURNS event_trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    v_name text;
BEGIN
    IF current_setting('acklog.retention', true) = 'on'
       OR to_regclass('events_partitions') IS NULL OR to_regclass('events') IS NULL THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'ddl_command_start' THEN
        IF current_query() ~* 'detach\s+partition.*concurrently' THEN
            RAISE EXCEPTION 'DETACH PARTITION CONCURRENTLY is refused while the log is guarded'
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'eventstore.partitions.detach_partition sets acklog.retention';
        END IF;
        RETURN;
    END IF;
    SELECT p.name INTO v_name FROM events_partitions p
     WHERE p.detached_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM pg_inherits i
                        WHERE i.inhparent = to_regclass('events')
                          AND i.inhrelid = to_regclass(quote_ident(p.name))
                          AND NOT i.inhdetachpending)
     LIMIT 1;
    IF v_name IS NOT NULL THEN
        RAISE EXCEPTION 'log partition % is detached only by retention', v_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'eventstore.partitions.detach_partition sets acklog.retention';
    END IF;
END
$$;

DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE NOTICE 'acklog: not a superuser, so no event trigger guards the log partitions'
                     ' against a DROP or DETACH by hand (docs/data.md)';
        RETURN;
    END IF;
    CREATE EVENT TRIGGER events_guard_drop ON sql_drop
        EXECUTE FUNCTION events_guard_drop();
    CREATE EVENT TRIGGER events_guard_detach ON ddl_command_end
        WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION events_guard_detach();
    CREATE EVENT TRIGGER events_guard_detach_concurrently ON ddl_command_start
        WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION events_guard_detach();
END
$$;
