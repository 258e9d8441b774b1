-- Exposure sweeps ("rotate what they saw"): an incident of kind 'exposure_sweep' spans the
-- tenants whose current password one admin revealed or one service token read; each such
-- tenant has a row here, pending until its rotation ends. A sweep has no single tenant, so its
-- incident's tenant_id is ''. progress_at_ms moves with each tenant, so a long sweep that still
-- works is told apart from one whose process died. subject_admin: the swept admin, who may not
-- acknowledge their own sweep.
--
-- tenants.secret_since_ms: when the current password first existed (a rotation's start: it can
-- be handed out once the mail server has it, before the rotation is recorded; a revert's: the
-- old password's). Exposure is counted from it. NULL (tenants stored before, or restored from a
-- backup): unknown, so every exposure counts.
ALTER TABLE tenants ADD COLUMN secret_since_ms INTEGER;
ALTER TABLE incidents ADD COLUMN kind TEXT NOT NULL DEFAULT 'emergency_reset';
ALTER TABLE incidents ADD COLUMN subject TEXT;
ALTER TABLE incidents ADD COLUMN subject_admin TEXT;
ALTER TABLE incidents ADD COLUMN progress_at_ms INTEGER;
CREATE TABLE sweep_tenants (
    incident_id     TEXT    NOT NULL REFERENCES incidents (incident_id),
    tenant_id       TEXT    NOT NULL,
    exposed_at_ms   INTEGER  NOT NULL,
    outcome         TEXT    NOT NULL,
    new_version     INTEGER,
    error           TEXT,
    finished_at_ms  INTEGER,
    PRIMARY KEY (incident_id, tenant_id)
);
