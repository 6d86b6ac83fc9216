-- Named API keys (issue 24): several valid at once, so a key rotates without a restart and
-- without breaking every client together (keys add, move the clients, keys revoke). Only a
-- SHA-256 of each key is stored: a copy of this table opens nothing. A key is revoked, never
-- deleted, so its name is never reused and a console session opened with it stays dead.
CREATE TABLE api_keys (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    key_hash    bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- The key a console session was signed in with: NULL for the configured (or generated) key,
-- else a named key, whose revocation ends the session.
ALTER TABLE console_sessions ADD COLUMN key_name text REFERENCES api_keys (name);
