-- Browsers a user chose to remember after a second factor: a login from one skips the second
-- step for 30 days. Only the SHA-256 of the cookie's token is kept; a password change deletes
-- every row of the account.
CREATE TABLE trusted_devices (
    id           TEXT    PRIMARY KEY,
    token_hash   TEXT    NOT NULL UNIQUE,
    account_id   TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    user_agent   TEXT,
    client_ip    TEXT
);
CREATE INDEX trusted_devices_account ON trusted_devices (account_id);
