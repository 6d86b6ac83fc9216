-- Retention's horizon asks for the oldest message still waiting inside an ack deadline
-- (projections/readmodel/retention.py: waiting_floor). Without an index of its own that
-- question read every message in 'sending' or 'sent' (missed ones included) on each run and
-- before each partition's detach: measured 0.3-1.3 s of PostgreSQL time on 489k messages, at
-- the database's normal priority, under live ingest. Only messages still waiting are in this
-- index (few: the last minutes' or hours' sends), so the question is one index probe.
-- Added to the read models as sql/065_anomalies.sql explains.

CREATE FUNCTION read_models_089_waiting(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($$CREATE INDEX ON %I.messages (first_position)
                     WHERE (state = 'sending' AND sent_due_at IS NOT NULL AND NOT missed_sent)
                        OR (state = 'sent' AND delivered_due_at IS NOT NULL
                            AND NOT missed_delivered)$$, s);
END
$fn$;

ALTER FUNCTION create_read_models(text) RENAME TO create_read_models_before_089;
CREATE FUNCTION create_read_models(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM create_read_models_before_089(s);
    PERFORM read_models_089_waiting(s);
END
$fn$;

SELECT read_models_089_waiting('rm');
