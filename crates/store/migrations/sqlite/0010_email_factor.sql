-- Accounts that chose one-time codes sent to their e-mail address as their second factor
-- (weaker than TOTP and passkeys: whoever holds the mailbox holds the factor). The codes
-- themselves are single-use tokens, stored hashed.
CREATE TABLE email_factors (
    account_id   TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    confirmed_at INTEGER NOT NULL
);
