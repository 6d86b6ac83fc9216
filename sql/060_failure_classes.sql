-- Failure classes (projections/failures.py): each message's class of its first failure,
-- indexed for ?failure_class= listings, and the failures recorded per channel, provider
-- and class (a monotonic counter, the acklog_message_failures_total metric).
--
-- A read-model migration wraps create_read_models() instead of rewriting it: the function
-- as it was is renamed, and the new one calls it and then adds this migration's part, so a
-- rebuild's fresh copy gets every migration's tables and columns in the same order as rm.

ALTER FUNCTION create_read_models(text) RENAME TO create_read_models_before_060;

CREATE FUNCTION read_models_060(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %I.messages ADD COLUMN failure_class text', s);
    EXECUTE format($$CREATE INDEX messages_failure_class_idx ON %I.messages
                     (channel, failure_class, first_position DESC, key)
                     WHERE failure_class IS NOT NULL$$, s);
    EXECUTE format($$CREATE TABLE %I.failure_counts (
        channel  text   NOT NULL,
        provider text   NOT NULL,
        class    text   NOT NULL,
        n        bigint NOT NULL,
        PRIMARY KEY (channel, provider, class)
    )$$, s);
END
$fn$;

CREATE FUNCTION create_read_models(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM create_read_models_before_060(s);
    PERFORM read_models_060(s);
END
$fn$;

SELECT read_models_060('rm');
