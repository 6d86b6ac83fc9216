-- Who wrote an incoming message: 'customer', or 'system' for notices no customer wrote
-- (projections/facts.py: origin_of; Meta's request_welcome, changed-number and encryption
-- notices…); null for outgoing messages. Indexed for ?origin= listings. Wraps
-- create_read_models() as 060 does (docs/design.md) and fills rm by the same rule.

ALTER FUNCTION create_read_models(text) RENAME TO create_read_models_before_062;

CREATE FUNCTION read_models_062(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %I.messages ADD COLUMN origin text', s);
    EXECUTE format($$CREATE INDEX messages_origin_idx ON %I.messages
                     (channel, origin, first_position DESC, key) WHERE origin IS NOT NULL$$, s);
END
$fn$;

CREATE FUNCTION create_read_models(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM create_read_models_before_062(s);
    PERFORM read_models_062(s);
END
$fn$;

SELECT read_models_062('rm');

UPDATE rm.messages
   SET origin = CASE WHEN kind IN ('system', 'request_welcome') THEN 'system' ELSE 'customer' END
 WHERE direction = 'incoming';
