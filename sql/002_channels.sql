-- Channels: one provider instance each, with its credentials and ack deadlines.

CREATE TABLE channels (
    name                 text PRIMARY KEY
                         CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    provider             text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    basic_user           text,
    allow_cidrs          cidr[] NOT NULL DEFAULT '{}',
    sent_deadline_s      double precision NOT NULL DEFAULT 60 CHECK (sent_deadline_s > 0),
    delivered_deadline_s double precision NOT NULL DEFAULT 600 CHECK (delivered_deadline_s > 0)
);

-- Tokens are random and stored as SHA-256 only; several may be active for rotation.
CREATE TABLE channel_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel    text NOT NULL REFERENCES channels (name) ON DELETE CASCADE,
    token_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX channel_tokens_channel ON channel_tokens (channel) WHERE revoked_at IS NULL;

-- HMAC signing secrets (Meta app secret, WAHA HMAC key, Twilio auth token). They must be kept
-- in clear to recompute signatures; several may be active for rotation.
CREATE TABLE channel_secrets (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel    text NOT NULL REFERENCES channels (name) ON DELETE CASCADE,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX channel_secrets_channel ON channel_secrets (channel) WHERE revoked_at IS NULL;
