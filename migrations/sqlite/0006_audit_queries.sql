-- Audit dashboard and API: keyset pagination newest first (by seq) under each filter, so a
-- page costs an index range scan whatever the table's size.

CREATE INDEX audit_events_tenant_seq ON audit_events (tenant_id, seq);
CREATE INDEX audit_events_type_seq ON audit_events (event_type, seq);
CREATE INDEX audit_events_actor_seq ON audit_events (actor_id, seq);
CREATE INDEX audit_events_severity_seq ON audit_events (severity, seq);
