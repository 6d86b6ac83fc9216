-- The canonical feed (projections/feed owns every feed.* statement): the outbox projector's
-- own per-message and per-instance state, the feed of canonical events it derives from the
-- log (written in the transaction that advances its checkpoint 'feed'), subscriptions with
-- their signing secrets and cursors, delivery attempts, dead letters and replays.
CREATE SCHEMA feed;

-- The outbox projector's view of each message: the fold's MessageState (msgspec JSON) and
-- its deadline bookkeeping, so it knows the previous state of every change it derives.
CREATE TABLE feed.messages (
    channel          text        NOT NULL,
    key              text        NOT NULL,
    state            text        NOT NULL,
    doc              bytea       NOT NULL,
    sent_due_at      timestamptz,
    sent_by          timestamptz,
    missed_sent      boolean     NOT NULL DEFAULT false,
    delivered_due_at timestamptz,
    delivered_by     timestamptz,
    missed_delivered boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (channel, key)
);
-- the sweep looks for messages still waiting past a deadline
CREATE INDEX feed_messages_sent_due ON feed.messages (sent_due_at)
    WHERE state = 'sending' AND NOT missed_sent;
CREATE INDEX feed_messages_delivered_due ON feed.messages (delivered_due_at)
    WHERE state = 'sent' AND NOT missed_delivered;

CREATE TABLE feed.instances (
    channel  text   PRIMARY KEY,
    status   text   NOT NULL,
    raw      text   NOT NULL,
    position bigint NOT NULL
);

-- One row per canonical event. seq is the feed's order (drawn by the one leader, under its
-- lock, so commit order is seq order); id is stable: derived from the log position and the
-- event's index there (or from the message and stage for a missed ack), so a replay after a
-- crash or a rebuild of the feed yields the same id.
CREATE TABLE feed.events (
    seq        bigint      PRIMARY KEY,
    id         uuid        NOT NULL UNIQUE,
    type       text        NOT NULL,
    channel    text        NOT NULL,
    position   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    body       bytea       NOT NULL
);
CREATE INDEX feed_events_position ON feed.events (position);
CREATE INDEX feed_events_created_at ON feed.events (created_at);

CREATE TABLE feed.subscriptions (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    url           text        NOT NULL,
    channels      text[]      NOT NULL DEFAULT '{}',
    events        text[]      NOT NULL DEFAULT '{}',
    status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    paused_reason text,
    cursor        bigint      NOT NULL DEFAULT 0,
    failures      integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Signing secrets (Standard Webhooks 'whsec_…'); kept because signing needs them. A rotated
-- secret gets expires_at and still signs until then (several signatures per request).
CREATE TABLE feed.secrets (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint      NOT NULL REFERENCES feed.subscriptions ON DELETE CASCADE,
    secret          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz
);

-- Every delivery attempt's outcome (the console's recent deliveries, the latency figures).
CREATE TABLE feed.attempts (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint      NOT NULL REFERENCES feed.subscriptions ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    attempt         integer     NOT NULL,
    outcome         text        NOT NULL,
    status_code     integer,
    error           text,
    seconds         double precision NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feed_attempts_recent ON feed.attempts (subscription_id, id DESC);

CREATE TABLE feed.dead_letters (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id bigint      NOT NULL REFERENCES feed.subscriptions ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    attempts        integer     NOT NULL,
    error           text        NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz
);
CREATE INDEX feed_dead_letters_sub ON feed.dead_letters (subscription_id, id);

-- Events to send again to one subscription (a replayed dead letter, a replayed range),
-- sent before the subscription's backlog.
CREATE TABLE feed.replays (
    subscription_id bigint      NOT NULL REFERENCES feed.subscriptions ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, seq)
);
