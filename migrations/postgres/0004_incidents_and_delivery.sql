-- Alert delivery and incidents: one outbox row per alert and channel (retried with backoff,
-- dead-lettered after a limit, leased so one console sends it), and the incident each
-- emergency reset opens, with its second-person acknowledgment.

ALTER TABLE alerts ADD COLUMN audience TEXT NOT NULL DEFAULT 'security';

CREATE TABLE alert_deliveries (
    alert_id            TEXT    NOT NULL REFERENCES alerts (alert_id),
    channel             TEXT    NOT NULL,
    recipient           TEXT    NOT NULL,
    state               TEXT    NOT NULL,
    attempts            BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT  NOT NULL,
    lease_until_ms      BIGINT,
    last_error          TEXT,
    delivered_at_ms     BIGINT,
    created_at_ms       BIGINT  NOT NULL,
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (state, next_attempt_at_ms);

CREATE TABLE incidents (
    incident_id          TEXT    PRIMARY KEY,
    reference            TEXT    NOT NULL,
    tenant_id            TEXT    NOT NULL,
    reason               TEXT    NOT NULL,
    opened_by            TEXT    NOT NULL,
    opened_by_admin      TEXT,
    opened_at_ms         BIGINT  NOT NULL,
    state                TEXT    NOT NULL,
    outcome              TEXT    NOT NULL,
    new_version          BIGINT,
    grants_revoked       BIGINT  NOT NULL,
    finished_at_ms       BIGINT,
    acknowledged_by      TEXT,
    acknowledged_at_ms   BIGINT,
    ack_note             TEXT,
    overdue_alerted      BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX incidents_opened ON incidents (opened_at_ms);
CREATE INDEX incidents_state ON incidents (state, opened_at_ms);
