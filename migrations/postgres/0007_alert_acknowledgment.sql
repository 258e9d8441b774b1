-- Alerts page: an alert is acknowledged once, by an admin, and stays listed.

ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
ALTER TABLE alerts ADD COLUMN acknowledged_at_ms BIGINT;
