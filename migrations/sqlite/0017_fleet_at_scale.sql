-- 100,000 tenants. The indexes the paged tenant list and the overview count by (no walk over
-- every tenant), the last heartbeat that logged in (the overview's stalest), when each tenant's
-- next heartbeat is due (its stable slot in the day, so logins are spread over 24 h), and
-- where the incremental Vault-against-database reconciliation stopped (a slice per cycle).
ALTER TABLE tenants ADD COLUMN heartbeat_ok_at_ms BIGINT;
UPDATE tenants SET heartbeat_ok_at_ms = heartbeat_at_ms WHERE heartbeat_ok = 1;
ALTER TABLE tenants ADD COLUMN heartbeat_due_at_ms BIGINT;
CREATE INDEX tenants_state ON tenants (state, tenant_id);
CREATE INDEX tenants_next_rotation ON tenants (next_rotation_at_ms);
CREATE INDEX tenants_heartbeat_ok ON tenants (heartbeat_ok_at_ms);
CREATE INDEX tenants_heartbeat_due ON tenants (heartbeat_due_at_ms);
CREATE INDEX tenants_last_error ON tenants (last_error);
CREATE INDEX alerts_unacknowledged ON alerts (created_at_ms) WHERE acknowledged_at_ms IS NULL;
CREATE INDEX incidents_open ON incidents (opened_at_ms) WHERE state = 'open';
-- One row per incremental walk over the tenants: the last tenant id it reached ('' to start).
CREATE TABLE fleet_cursors (
    name           TEXT   PRIMARY KEY,
    position       TEXT   NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
