-- Second factors: one TOTP credential per account (its secret sealed under the server key;
-- confirmed_at null until the user has entered one code; last_step the newest time step
-- accepted, so no code is accepted twice), single-use backup codes as keyed hashes, and on each
-- session the time of its last second-factor check (for step-up).
CREATE TABLE totp_credentials (
    account_id   TEXT    PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    secret       TEXT    NOT NULL,
    confirmed_at INTEGER,
    last_step    INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE backup_codes (
    account_id TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    code_hash  TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (account_id, code_hash)
);
ALTER TABLE sessions ADD COLUMN second_factor_at INTEGER;
