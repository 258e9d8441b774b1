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
CREATE INDEX tenants_rate_limited ON tenants (tenant_id)
    WHERE last_error = 'Mailu rate-limits the console''s address: add it to AUTH_RATELIMIT_EXEMPTION in mailu.env';
CREATE INDEX alerts_unacknowledged ON alerts (created_at_ms) WHERE acknowledged_at_ms IS NULL;
CREATE INDEX incidents_open ON incidents (opened_at_ms) WHERE state = 'open';
-- One row per incremental walk over the tenants: the last tenant id it reached ('' to start).
CREATE TABLE fleet_cursors (
    name           TEXT   PRIMARY KEY,
    position       TEXT   NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
-- A console before this one wrote a rotation's pending record before recording its start, so a
-- crash could leave one only Vault knows of: the first start-up after the upgrade looks through
-- Vault once (a fresh install has nothing to look for).
INSERT INTO fleet_cursors (name, position, updated_at_ms)
    SELECT 'legacy_pending_scan', '', 0 WHERE EXISTS (SELECT 1 FROM tenants);
