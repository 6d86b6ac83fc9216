-- Read models: pure functions of the log. They live in one schema (rm) so a rebuild can
-- build a fresh copy in another schema and swap the two in one transaction (invariant 9).
-- The DDL is a function of the schema name so live and rebuilt copies can never drift.

CREATE FUNCTION create_read_models(s text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('CREATE SCHEMA %I', s);

    -- Current state of every message: one row per (channel, provider message id).
    EXECUTE format($$CREATE TABLE %I.messages (
        channel        text        NOT NULL,
        key            text        NOT NULL,
        provider       text        NOT NULL,
        direction      text        NOT NULL,
        state          text        NOT NULL,
        rank           smallint    NOT NULL,
        state_at       timestamptz NOT NULL,
        milestones     jsonb       NOT NULL,
        failures       jsonb       NOT NULL,
        observed_in    boolean     NOT NULL,
        observed_out   boolean     NOT NULL,
        chat           text,
        sender         text,
        kind           text,
        text           text,
        media          text,
        quoted         text,
        derived_key    boolean     NOT NULL,
        first_position bigint      NOT NULL,
        last_position  bigint      NOT NULL,
        first_seen_at  timestamptz NOT NULL,
        last_seen_at   timestamptz NOT NULL,
        -- missed acks (our clock): when each wait started's deadline falls due, when the wait
        -- ended (first report at or above the awaited rank), and whether the deadline was missed
        sent_due_at      timestamptz,
        sent_by          timestamptz,
        missed_sent      boolean NOT NULL DEFAULT false,
        delivered_due_at timestamptz,
        delivered_by     timestamptz,
        missed_delivered boolean NOT NULL DEFAULT false,
        PRIMARY KEY (channel, key)
    )$$, s);
    -- listings, newest first by the position that created the message (immutable, so
    -- keyset pagination stays stable while new events arrive)
    EXECUTE format('CREATE INDEX ON %I.messages (channel, first_position DESC, key)', s);
    EXECUTE format('CREATE INDEX ON %I.messages (channel, state, first_position DESC, key)', s);
    EXECUTE format('CREATE INDEX ON %I.messages (channel, first_seen_at)', s);
    -- missed-ack sweep and the overdue list: messages still waiting for sent or delivered
    EXECUTE format($$CREATE INDEX ON %I.messages (sent_due_at)
                     WHERE state = 'sending' AND sent_due_at IS NOT NULL$$, s);
    EXECUTE format($$CREATE INDEX ON %I.messages (delivered_due_at)
                     WHERE state = 'sent' AND delivered_due_at IS NOT NULL$$, s);

    -- Messages that ever missed a deadline, per channel and stage (a monotonic counter).
    EXECUTE format($$CREATE TABLE %I.missed_counts (
        channel text   NOT NULL,
        stage   text   NOT NULL,
        n       bigint NOT NULL,
        PRIMARY KEY (channel, stage)
    )$$, s);

    -- Every status reported about a message, in log order, including those that changed nothing.
    EXECUTE format($$CREATE TABLE %I.timeline (
        channel       text        NOT NULL,
        key           text        NOT NULL,
        position      bigint      NOT NULL,
        seq           integer     NOT NULL,
        received_at   timestamptz NOT NULL,
        provider_time double precision,
        fact          text        NOT NULL,
        status        text        NOT NULL,
        raw           text        NOT NULL,
        participant   text,
        error_code    text,
        error_text    text,
        advanced      boolean     NOT NULL,
        duplicate_of  bigint,
        PRIMARY KEY (channel, key, position, seq)
    )$$, s);

    -- Per-participant receipts of group messages.
    EXECUTE format($$CREATE TABLE %I.receipts (
        channel     text     NOT NULL,
        key         text     NOT NULL,
        participant text     NOT NULL,
        state       text     NOT NULL,
        milestones  jsonb    NOT NULL,
        PRIMARY KEY (channel, key, participant)
    )$$, s);

    -- Connection status per channel: the latest report by log position wins.
    EXECUTE format($$CREATE TABLE %I.instance_status (
        channel       text        PRIMARY KEY,
        provider      text        NOT NULL,
        status        text        NOT NULL,
        raw           text        NOT NULL,
        reason        text,
        position      bigint      NOT NULL,
        received_at   timestamptz NOT NULL,
        provider_time double precision
    )$$, s);
    EXECUTE format($$CREATE TABLE %I.instance_history (
        channel       text        NOT NULL,
        position      bigint      NOT NULL,
        seq           integer     NOT NULL,
        status        text        NOT NULL,
        raw           text        NOT NULL,
        reason        text,
        received_at   timestamptz NOT NULL,
        provider_time double precision,
        PRIMARY KEY (channel, position, seq)
    )$$, s);

    -- Events no decoder could read: kept in the log, listed here, counted, never blocking.
    EXECUTE format($$CREATE TABLE %I.quarantine (
        position    bigint      PRIMARY KEY,
        channel     text        NOT NULL,
        provider    text        NOT NULL,
        reason      text        NOT NULL,
        received_at timestamptz NOT NULL
    )$$, s);
    EXECUTE format('CREATE INDEX ON %I.quarantine (channel, position)', s);
END
$fn$;

SELECT create_read_models('rm');
