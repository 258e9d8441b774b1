-- Rotation: per-tenant settings and state, and the alert outbox (delivery comes later).

ALTER TABLE tenants ADD COLUMN rotation_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN last_error TEXT;
ALTER TABLE tenants ADD COLUMN heartbeat_at_ms INTEGER;
ALTER TABLE tenants ADD COLUMN heartbeat_ok INTEGER;
ALTER TABLE tenants ADD COLUMN rotation_period_days INTEGER;
ALTER TABLE tenants ADD COLUMN contact_email TEXT;
ALTER TABLE tenants ADD COLUMN rotate_after_reveal INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN deferred_until_ms INTEGER;
ALTER TABLE tenants ADD COLUMN notice_for_ms INTEGER;

CREATE TABLE alerts (
    alert_id       TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL,
    severity       TEXT    NOT NULL,
    tenant_id      TEXT,
    dedupe_key     TEXT    NOT NULL UNIQUE,
    message        TEXT    NOT NULL,
    details        TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    state          TEXT    NOT NULL
);
CREATE INDEX alerts_created ON alerts (created_at_ms);

-- Single-flight for scheduled jobs across console instances: a lease row per job.
CREATE TABLE job_leases (
    job            TEXT    PRIMARY KEY,
    holder         TEXT    NOT NULL,
    expires_at_ms  INTEGER NOT NULL
);
