-- Retention (issue 23, part 2): old partitions of the log leave it in restartable steps,
-- archive -> verify -> detach -> drop (projections/retention.py; every statement on these
-- tables lives in eventstore/retention.py).

-- One row per run: `acklog retention run` or the retention role's scheduled run.
CREATE TABLE retention_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    older_than  interval    NOT NULL,
    outcome     text        NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'ok', 'failed', 'nothing')),
    error       text,
    partitions  integer     NOT NULL DEFAULT 0,
    rows        bigint      NOT NULL DEFAULT 0,
    bytes       bigint      NOT NULL DEFAULT 0
);

-- Each partition retention took on, and how far it got: a step is recorded once done, so a
-- run killed at any point is resumed by the next. Kept after the drop: it says which archive
-- holds a position the log no longer has (the API's 410).
CREATE TABLE retention_partitions (
    name        text        PRIMARY KEY,
    first_position bigint   NOT NULL,
    last_position  bigint   NOT NULL,
    run_id      bigint      NOT NULL REFERENCES retention_runs,
    rows        bigint      NOT NULL DEFAULT 0,
    bytes       bigint      NOT NULL DEFAULT 0,
    -- the archive holding it (NULL: the partition was empty) and where it was written
    archive     text,
    archive_url text,
    archived_at timestamptz,
    verified_at timestamptz,
    detached_at timestamptz,
    dropped_at  timestamptz
);
CREATE INDEX retention_partitions_range ON retention_partitions (first_position, last_position);
