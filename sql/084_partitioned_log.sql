-- The log becomes a table partitioned by position range (issue 23), step 1 of 2.
--
-- The conversion is in place and pauses ingest only briefly (docs/data.md, "The partitioned
-- log"): the old table becomes the first partition, events_p0, FROM (MINVALUE) TO (bound).
-- ATTACH skips its scan when a valid CHECK (position < bound) already holds, and validating
-- that CHECK scans the whole log, so it must run outside the transaction that adds it (adding
-- it locks the table exclusively until COMMIT). Each migration file is one transaction, so:
--   084 (this file): the partition registry and the functions that make partitions; on a
--        non-empty log, the CHECK, NOT VALID (a brief exclusive lock, taken with a 0.5 s
--        lock_timeout and retried, so ingest never queues behind it for long);
--   085: VALIDATE (no lock that stops appends), then the swap under the append lock.
-- An empty log (a new install) is converted here at once.
--
-- The bound leaves room for 1,000,000 more events (rounded up to a whole million), appended
-- between this file's COMMIT and 085's swap (the same `acklog migrate`: the VALIDATE scan).

-- One row: how many positions a new partition spans (ACKLOG_PARTITION_EVENTS, stored by
-- eventstore.partitions.ensure when the ingest role starts; append_events reads it when it has
-- to make a partition itself). A session's acklog.partition_events sizes the first ones.
CREATE TABLE events_partitioning (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    size bigint  NOT NULL CHECK (size > 0)
);
INSERT INTO events_partitioning (size)
VALUES (coalesce(nullif(current_setting('acklog.partition_events', true), '')::bigint, 1000000));

-- Every partition of the log ever made and not yet dropped by retention: the guard (085)
-- refuses a DROP or DETACH of one of these by hand. low NULL: FROM (MINVALUE).
CREATE TABLE events_partitions (
    name        text PRIMARY KEY,
    low         bigint,
    high        bigint      NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    detached_at timestamptz
);

-- The next partition after the highest: [highest bound, + size), or, when there is none,
-- [MINVALUE, next position + size). Only under the append lock (7312004711): appends are
-- serialized, so no row can need the partition before it is attached. CREATE TABLE, then
-- ATTACH, which locks the log SHARE UPDATE EXCLUSIVE: readers (ACCESS SHARE, pg_dump too)
-- neither wait nor are waited for, where CREATE TABLE ... PARTITION OF would lock it ACCESS
-- EXCLUSIVE. The row triggers and the partitioned indexes (primary key, channel+position)
-- come with ATTACH; the statement triggers (a direct INSERT or TRUNCATE on the partition) and
-- the dedup index are the partition's own: a partitioned unique index must hold the partition
-- key, so each partition has its own lookup index and the append lock keeps one first per key.
CREATE FUNCTION events_add_partition() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_size bigint;
    v_low  bigint;
    v_high bigint;
    v_name text;
BEGIN
    SELECT size INTO STRICT v_size FROM events_partitioning;
    SELECT max(high) INTO v_low FROM events_partitions;
    IF v_low IS NULL THEN
        SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END + v_size
          INTO v_high FROM events_position_seq;
        v_name := 'events_p0';
    ELSE
        v_high := v_low + v_size;
        v_name := 'events_p' || v_low;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE events)', v_name);
    EXECUTE format('CREATE INDEX %I ON %I (channel, dedup_key) WHERE duplicate_of IS NULL',
                   v_name || '_dedup_first', v_name);
    EXECUTE format('CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON %I'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change()', v_name);
    EXECUTE format('CREATE TRIGGER events_serialize BEFORE INSERT ON %I'
                   ' FOR EACH STATEMENT EXECUTE FUNCTION events_serialize_appends()', v_name);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                   v_name, coalesce(v_low::text, 'MINVALUE'), v_high);
    INSERT INTO events_partitions (name, low, high) VALUES (v_name, v_low, v_high);
    RETURN v_name;
END
$$;

-- Partitions until every position up to p_upto has one; the caller holds the append lock.
CREATE FUNCTION events_ensure_partitions(p_upto bigint) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    WHILE coalesce((SELECT max(high) FROM events_partitions), p_upto) <= p_upto LOOP
        RETURN NEXT events_add_partition();
    END LOOP;
END
$$;

-- The swap, in the caller's transaction: the append lock and an exclusive lock on the log
-- (retried under a 0.5 s lock_timeout, so appends never queue behind a long reader), the
-- old table renamed events_p0 and attached FROM (MINVALUE) TO (p_bound) (its CHECK
-- events_p0_bound, valid, spares the scan; its indexes are attached, not rebuilt), the
-- position sequence moved to the new parent with its value, the next partition made.
CREATE FUNCTION events_partition_log(p_bound bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_last   bigint;
    v_called boolean;
    v_lock   text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '500ms', true);
    LOOP
        BEGIN
            PERFORM pg_advisory_xact_lock(7312004711);
            LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            -- the subtransaction's locks are gone: appends run while we wait
            PERFORM pg_sleep(0.05);
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock, true);

    SELECT last_value, is_called INTO v_last, v_called FROM events_position_seq;
    ALTER TABLE events RENAME TO events_p0;
    ALTER INDEX events_pkey RENAME TO events_p0_pkey;
    ALTER INDEX events_dedup_first RENAME TO events_p0_dedup_first;
    ALTER INDEX events_channel_position RENAME TO events_p0_channel_position;
    DROP TRIGGER events_no_update ON events_p0;  -- the parent's row trigger is cloned in
    ALTER TABLE events_p0 ALTER COLUMN position DROP IDENTITY;  -- drops events_position_seq

    CREATE TABLE events (
        position     bigint GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME events_position_seq),
        received_at  timestamptz NOT NULL,
        channel      text        NOT NULL,
        provider     text        NOT NULL,
        content_type text,
        headers      jsonb       NOT NULL DEFAULT '{}',
        body         bytea       NOT NULL,
        dedup_key    text        NOT NULL,
        duplicate_of bigint,
        CONSTRAINT events_pkey PRIMARY KEY (position)
    ) PARTITION BY RANGE (position);
    PERFORM setval('events_position_seq', v_last, v_called);
    CREATE INDEX events_channel_position ON events (channel, position);
    CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION events_reject_change();
    CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();
    CREATE TRIGGER events_serialize BEFORE INSERT ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_serialize_appends();

    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_p0'
                   ' FOR VALUES FROM (MINVALUE) TO (%s)', p_bound);
    INSERT INTO events_partitions (name, low, high) VALUES ('events_p0', NULL, p_bound);
    PERFORM events_add_partition();
END
$$;

DO $$
DECLARE
    v_next  bigint;
    v_bound bigint;
    v_lock  text := current_setting('lock_timeout');
BEGIN
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END
      INTO v_next FROM events_position_seq;
    IF NOT EXISTS (SELECT 1 FROM events) THEN
        -- a new log: the first partition is sized like the others
        v_bound := v_next + (SELECT size FROM events_partitioning);
        EXECUTE format('ALTER TABLE events ADD CONSTRAINT events_p0_bound'
                       ' CHECK (position < %s)', v_bound);
        PERFORM events_partition_log(v_bound);
        RETURN;
    END IF;
    v_bound := ((v_next + 1000000) / 1000000 + 1) * 1000000;
    PERFORM set_config('lock_timeout', '500ms', true);
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE events ADD CONSTRAINT events_p0_bound'
                           ' CHECK (position < %s) NOT VALID', v_bound);
            EXIT;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            PERFORM pg_sleep(0.05);
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock, true);
END
$$;
