-- API keys for machine clients: only an HMAC-SHA256 of each key under a server pepper, never
-- the key. A key belongs to an account or to a named service. Every change (revocation,
-- rotation, an owner locked) moves changed_at, which each gateway polls to drop its cached copy.
CREATE TABLE api_keys (
    id           TEXT    PRIMARY KEY,
    key_hash     TEXT    NOT NULL UNIQUE,
    hint         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    account_id   TEXT    REFERENCES accounts (id) ON DELETE CASCADE,
    service      TEXT,
    scopes       TEXT    NOT NULL,
    networks     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    rotated_to   TEXT,
    changed_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    last_used_ip TEXT
);
CREATE INDEX api_keys_changed ON api_keys (changed_at);
CREATE INDEX api_keys_account ON api_keys (account_id);
