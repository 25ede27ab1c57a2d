-- The append-only, hash-chained audit log. `hash` is SHA-256 over `prev_hash` and the row's
-- canonical content; `seq` has no gaps, so a deleted row breaks the chain visibly.
CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,
    time       TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    severity   TEXT   NOT NULL,
    request_id TEXT,
    client_ip  TEXT,
    user_id    TEXT,
    key_id     TEXT,
    route      TEXT,
    details    TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE INDEX audit_events_kind ON audit_events (kind);
