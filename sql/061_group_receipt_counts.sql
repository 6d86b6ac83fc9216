-- Group receipts counted per message: participants with a receipt, and how many of them
-- have each one (delivered_to counts read and played too; read_by counts played). The
-- message's state stays the furthest any participant got. Wraps create_read_models() as
-- 060 does (docs/design.md), and fills the counts of rm from rm.receipts, which is what
-- the fold would count.

ALTER FUNCTION create_read_models(text) RENAME TO create_read_models_before_061;

CREATE FUNCTION read_models_061(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format($$ALTER TABLE %I.messages
        ADD COLUMN participants integer NOT NULL DEFAULT 0,
        ADD COLUMN delivered_to integer NOT NULL DEFAULT 0,
        ADD COLUMN read_by      integer NOT NULL DEFAULT 0,
        ADD COLUMN played_by    integer NOT NULL DEFAULT 0$$, s);
END
$fn$;

CREATE FUNCTION create_read_models(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM create_read_models_before_061(s);
    PERFORM read_models_061(s);
END
$fn$;

SELECT read_models_061('rm');

UPDATE rm.messages m
   SET participants = c.participants, delivered_to = c.delivered_to,
       read_by = c.read_by, played_by = c.played_by
  FROM (SELECT channel, key, count(*) AS participants,
               count(*) FILTER (WHERE state IN ('delivered', 'read', 'played')) AS delivered_to,
               count(*) FILTER (WHERE state IN ('read', 'played')) AS read_by,
               count(*) FILTER (WHERE state = 'played') AS played_by
          FROM rm.receipts GROUP BY channel, key) c
 WHERE m.channel = c.channel AND m.key = c.key;
