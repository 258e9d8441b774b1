-- Disaster recovery: the address a tenant's mail server was recovered onto, and the history
-- of disaster-recovery drills.

ALTER TABLE tenants ADD COLUMN server_ip TEXT;

CREATE TABLE dr_drills (
    drill_id        TEXT    PRIMARY KEY,
    started_at_ms   INTEGER NOT NULL,
    backup_id       TEXT,
    ok              INTEGER NOT NULL,
    tenants         INTEGER NOT NULL,
    verified        INTEGER NOT NULL,
    rto_ms          INTEGER NOT NULL,
    rpo_ms          INTEGER,
    lost_changes    INTEGER NOT NULL,
    report          TEXT    NOT NULL
);
CREATE INDEX dr_drills_started ON dr_drills (started_at_ms);
