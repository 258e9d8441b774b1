-- SIEM export (core/siem): where each sink has got to in the audit trail, which console holds a
-- streaming sink (syslog: one ordered stream), and the webhook outbox, one delivery per event
-- (retried with backoff, dead-lettered after its attempts, leased so one console sends it; a
-- delivered row is deleted, so the table holds only what is still owed).
CREATE TABLE siem_cursors (
    sink           TEXT    PRIMARY KEY,
    seq            BIGINT  NOT NULL,
    holder         TEXT,
    lease_until_ms BIGINT,
    -- Syslog has no acknowledgement: a new connection first resends from replay_seq, the first
    -- event sent in the last minute or two (replay_since_ms: when that window began).
    replay_seq      BIGINT,
    replay_since_ms BIGINT,
    updated_at_ms  BIGINT  NOT NULL
);
INSERT INTO siem_cursors (sink, seq, updated_at_ms) VALUES ('syslog', 0, 0);
INSERT INTO siem_cursors (sink, seq, updated_at_ms) VALUES ('webhook', 0, 0);

CREATE TABLE siem_deliveries (
    sink                TEXT    NOT NULL,
    seq                 BIGINT  NOT NULL,
    state               TEXT    NOT NULL,
    attempts            BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT  NOT NULL,
    lease_until_ms      BIGINT,
    last_error          TEXT,
    created_at_ms       BIGINT  NOT NULL,
    PRIMARY KEY (sink, seq)
);
CREATE INDEX siem_deliveries_due ON siem_deliveries (state, next_attempt_at_ms);
