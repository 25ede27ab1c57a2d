-- WebAuthn passkeys (the credential as webauthn-rs serialises it: public key, counter, flags;
-- no secret), and the state of ceremonies in flight (a challenge waiting for the browser's
-- answer), single use and short-lived, kept here so that any instance can finish one.
CREATE TABLE passkeys (
    id            TEXT    PRIMARY KEY,
    account_id    TEXT    NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    credential_id TEXT    NOT NULL UNIQUE,
    credential    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX passkeys_account ON passkeys (account_id);
CREATE TABLE webauthn_ceremonies (
    id         TEXT    PRIMARY KEY,
    account_id TEXT,
    kind       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
