-- Instance health beyond "connected" (projections/readmodel/health.py): flapping, the
-- debounced status, and silent instances. Settings per channel, defaults here.
ALTER TABLE channels
    -- flapping: more than flap_changes connection changes within flap_window_s
    ADD COLUMN flap_changes     integer          NOT NULL DEFAULT 5
        CHECK (flap_changes > 0),
    ADD COLUMN flap_window_s    double precision NOT NULL DEFAULT 300
        CHECK (flap_window_s > 0),
    -- silent_no_acks: connected, and messages sent since the last ack have waited this long
    ADD COLUMN silent_acks_s    double precision NOT NULL DEFAULT 900
        CHECK (silent_acks_s > 0),
    -- silent_no_traffic: connected, and nothing sent (nor acked) for this long
    ADD COLUMN silent_traffic_s double precision NOT NULL DEFAULT 21600
        CHECK (silent_traffic_s > 0);

-- The read models' part, added the way sql/065_anomalies.sql explains.
CREATE FUNCTION read_models_066_instance_health(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    -- a report whose status differs from the channel's previous one (log order)
    EXECUTE format($$ALTER TABLE %I.instance_history
        ADD COLUMN changed boolean NOT NULL DEFAULT false$$, s);
    EXECUTE format($$CREATE INDEX ON %I.instance_history (channel, received_at)
                     WHERE changed$$, s);
    -- when the current status began, and the last status that held for the debounce time
    EXECUTE format($$ALTER TABLE %I.instance_status
        ADD COLUMN changed_at    timestamptz,
        ADD COLUMN stable_status text$$, s);
    -- the channel's latest outgoing message and latest ack (our clock)
    EXECUTE format($$CREATE TABLE %I.channel_activity (
        channel     text PRIMARY KEY,
        last_out_at timestamptz,
        last_ack_at timestamptz
    )$$, s);
END
$fn$;

ALTER FUNCTION create_read_models(text) RENAME TO create_read_models_before_066;
CREATE FUNCTION create_read_models(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM create_read_models_before_066(s);
    PERFORM read_models_066_instance_health(s);
END
$fn$;

SELECT read_models_066_instance_health('rm');
