-- Server-side portal sessions: the cookie holds a random token, the table its SHA-256, so logout (a deleted row)
-- revokes the session everywhere and a leaked table grants nothing.
CREATE TABLE IF NOT EXISTS {s}.sessions (
    token_sha256  text PRIMARY KEY,
    username      text NOT NULL,
    tenant        text NOT NULL,
    credential    text NOT NULL,  -- fingerprint of the user's password hash: a changed password ends the session
    csrf          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_expiry ON {s}.sessions (expires_at);
