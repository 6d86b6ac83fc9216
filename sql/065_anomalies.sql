-- Anomalies per message (projections/message_state.py: MessageState.anomalies), and how
-- many messages have each one now, per channel and kind.
--
-- How a migration adds to the read models without copying 003's DDL: it keeps the previous
-- create_read_models() under another name and puts a new one in front that calls it and
-- then adds its own part, the same function applied to the live schema right away. Live and
-- rebuilt copies then get the same columns in the same order (verify compares rows by
-- column position), whichever migrations came before or come after in this way.

CREATE FUNCTION read_models_065_anomalies(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    -- ack status → [first, last] log position of the events that reported it
    EXECUTE format($$ALTER TABLE %I.messages
        ADD COLUMN acks      jsonb NOT NULL DEFAULT '{}',
        ADD COLUMN anomalies jsonb NOT NULL DEFAULT '[]'$$, s);
    -- ?anomaly= listings, newest first: only messages that have one are in this index
    EXECUTE format($$CREATE INDEX ON %I.messages (channel, first_position DESC, key)
                     WHERE anomalies <> '[]'::jsonb$$, s);
    EXECUTE format($$CREATE TABLE %I.anomaly_counts (
        channel text   NOT NULL,
        kind    text   NOT NULL,
        n       bigint NOT NULL,
        PRIMARY KEY (channel, kind)
    )$$, s);
END
$fn$;

ALTER FUNCTION create_read_models(text) RENAME TO create_read_models_before_065;
CREATE FUNCTION create_read_models(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM create_read_models_before_065(s);
    PERFORM read_models_065_anomalies(s);
END
$fn$;

SELECT read_models_065_anomalies('rm');
