-- Signing keys of access tokens (private keys sealed under the server key), refresh tokens by
-- family (only their SHA-256), and revoked access-token ids until their expiry.
CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    private_key TEXT    NOT NULL,
    public_key  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    retired_at  BIGINT 
);
CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    family_id  TEXT    NOT NULL,
    account_id TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT 
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE revoked_tokens (
    jti        TEXT    PRIMARY KEY,
    expires_at BIGINT  NOT NULL
);
