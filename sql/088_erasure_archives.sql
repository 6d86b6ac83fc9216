-- Erasure reaches the archives (docs/erasure.md#archives): each erasure records whether the
-- archive store was scanned and how many archives it rewrote. No personal data: counts only.
--   archives_scanned   NULL: no archive store configured; else how many archives were read
--                      whole and checked
--   archives_rewritten how many held the number and were rewritten with a new manifest
--   archives_pending   true: the store could not be reached, refused, or an archive is
--                      corrupt: archives may still hold the number until an erasure of it is
--                      run again (what was rewritten before stays rewritten)
ALTER TABLE erasures
    ADD COLUMN archives_scanned   integer,
    ADD COLUMN archives_rewritten integer NOT NULL DEFAULT 0,
    ADD COLUMN archives_pending   boolean NOT NULL DEFAULT false;
