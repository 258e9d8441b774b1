-- Disaster recovery: the address a tenant's mail server was recovered onto, and the history
-- of disaster-recovery drills.

ALTER TABLE tenants ADD COLUMN server_ip TEXT;

CREATE TABLE dr_drills (
    drill_id        TEXT    PRIMARY KEY,
    started_at_ms   BIGINT  NOT NULL,
    backup_id       TEXT,
    ok              BIGINT  NOT NULL,
    tenants         BIGINT  NOT NULL,
    verified        BIGINT  NOT NULL,
    rto_ms          BIGINT  NOT NULL,
    rpo_ms          BIGINT,
    lost_changes    BIGINT  NOT NULL,
    report          TEXT    NOT NULL
);
CREATE INDEX dr_drills_started ON dr_drills (started_at_ms);
