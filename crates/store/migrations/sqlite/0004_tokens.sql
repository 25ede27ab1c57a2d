-- Signing keys of access tokens (private keys sealed under the server key), refresh tokens by
-- family (only their SHA-256), and revoked access-token ids until their expiry.
CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    private_key TEXT    NOT NULL,
    public_key  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    family_id  TEXT    NOT NULL,
    account_id TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE revoked_tokens (
    jti        TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
