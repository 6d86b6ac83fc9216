-- Erasure reaches the archives (docs/erasure.md#archives): each erasure records whether the
-- archive store was scanned and how many archives it rewrote. No personal data: counts only.
--   archives_scanned  NULL: not done (no archive store configured, or it failed: retry);
--                     else how many archives were read and checked
--   archives_rewritten how many held the number and were rewritten with a new manifest
--   archives_pending  true: the store could not be reached or refused, so archives may still
--                     hold the number until an erasure of it is run again
ALTER TABLE erasures
    ADD COLUMN archives_scanned   integer,
    ADD COLUMN archives_rewritten integer NOT NULL DEFAULT 0,
    ADD COLUMN archives_pending   boolean NOT NULL DEFAULT false;
