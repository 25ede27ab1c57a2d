-- Allow and block decisions on client addresses and networks, by an operator (manual), the
-- intrusion detection (ids) or a honeypot. Expired rows stay for a while: a repeat offender's
-- next ban is longer, and the history says why.
CREATE TABLE ip_decisions (
    id         TEXT    PRIMARY KEY,
    network    TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    origin     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT
);
CREATE INDEX ip_decisions_network ON ip_decisions (network, action);
CREATE INDEX ip_decisions_expiry ON ip_decisions (expires_at);
