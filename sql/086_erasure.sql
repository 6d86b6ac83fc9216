-- Erasure of one person's data (GDPR art. 17, docs/erasure.md). The log stays append-only
-- (invariant 2) with one audited exception: inside a transaction that has created an
-- `erasures` row and named it in the setting `acklog.erasure`, an UPDATE of an event's body,
-- headers or dedup key is allowed, and the trigger itself records which position it was and
-- the SHA-256 of the body that was there. Every other UPDATE, every DELETE and TRUNCATE is
-- refused as before. No phone number is stored here, in any form.

-- One row per erasure request (the `subject.erased` record): who, when, what it touched.
CREATE TABLE erasures (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    requested_by    text        NOT NULL,
    -- the transaction that may change the log in this erasure's name, and none other
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    events          integer     NOT NULL DEFAULT 0,
    feed_events     integer     NOT NULL DEFAULT 0,
    feed_rows       integer     NOT NULL DEFAULT 0,
    -- when the read models were rebuilt from the redacted log (NULL: nothing to rebuild yet)
    rebuilt_at      timestamptz,
    rebuilt_to      bigint
);

-- Each event an erasure changed: its position and the SHA-256 of the body before.
CREATE TABLE erasure_events (
    erasure_id  bigint NOT NULL REFERENCES erasures,
    position    bigint NOT NULL,
    body_sha256 bytea  NOT NULL,
    PRIMARY KEY (erasure_id, position)
);

CREATE OR REPLACE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    setting text := current_setting('acklog.erasure', true);
    erasure bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND setting ~ '^[0-9]{1,18}$' THEN
        erasure := setting::bigint;
        IF EXISTS (SELECT 1 FROM erasures WHERE id = erasure AND txid = pg_current_xact_id())
           AND (NEW.position, NEW.received_at, NEW.channel, NEW.provider, NEW.content_type,
                NEW.duplicate_of)
               IS NOT DISTINCT FROM
               (OLD.position, OLD.received_at, OLD.channel, OLD.provider, OLD.content_type,
                OLD.duplicate_of)
        THEN
            -- the first change of a position in an erasure keeps the hash of the original
            INSERT INTO erasure_events (erasure_id, position, body_sha256)
            VALUES (erasure, OLD.position, sha256(OLD.body))
            ON CONFLICT DO NOTHING;
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'the events log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The audit itself is kept: its rows are never deleted, and what an erasure changed is
-- never rewritten.
CREATE FUNCTION erasures_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the erasure audit is kept: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER erasures_keep BEFORE DELETE ON erasures
    FOR EACH ROW EXECUTE FUNCTION erasures_reject_change();
CREATE TRIGGER erasures_no_truncate BEFORE TRUNCATE ON erasures
    FOR EACH STATEMENT EXECUTE FUNCTION erasures_reject_change();
CREATE TRIGGER erasure_events_keep BEFORE UPDATE OR DELETE ON erasure_events
    FOR EACH ROW EXECUTE FUNCTION erasures_reject_change();
CREATE TRIGGER erasure_events_no_truncate BEFORE TRUNCATE ON erasure_events
    FOR EACH STATEMENT EXECUTE FUNCTION erasures_reject_change();
