-- Console sign-ins kept on the server (issue 26): a cookie is honoured only while its row is
-- here, so "Sign out" ends the session everywhere, not just in the browser that clicked it.
-- Only a hash of the session token is stored: a copy of this table signs nobody in.
CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
