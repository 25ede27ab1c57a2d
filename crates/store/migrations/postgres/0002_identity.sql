-- Accounts, their previous password hashes, and server-side sessions. Times are Unix
-- milliseconds; ids are random (UUID v4), never sequential.
CREATE TABLE accounts (
    id             TEXT    PRIMARY KEY,
    email          TEXT    NOT NULL UNIQUE,
    display_name   TEXT    NOT NULL,
    roles          TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    email_verified BIGINT  NOT NULL,
    password_hash  TEXT,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);
CREATE TABLE password_history (
    account_id  TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    hash        TEXT    NOT NULL,
    replaced_at BIGINT  NOT NULL
);
CREATE INDEX password_history_account ON password_history (account_id, replaced_at);
-- Only the SHA-256 of a session token is kept: a read of this table logs nobody in.
CREATE TABLE sessions (
    id           TEXT    PRIMARY KEY,
    token_hash   TEXT    NOT NULL UNIQUE,
    account_id   TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    client_ip    TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_account ON sessions (account_id, created_at);
