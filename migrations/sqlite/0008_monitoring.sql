-- Suspicious-activity rules: a cursor over the audit chain (each event is judged once, after it
-- commits), what each admin has logged in from before, and open health episodes (Vault down),
-- so an alert is raised when trouble starts rather than on every check.

CREATE TABLE monitor_cursor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
-- Start at the current head: an upgrade must not judge years of history as if it were new.
INSERT INTO monitor_cursor (id, seq) SELECT 1, seq FROM audit_head WHERE id = 1;

CREATE TABLE monitor_seen (
    subject        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    value          TEXT NOT NULL,
    first_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (subject, kind, value)
);

CREATE TABLE monitor_episodes (
    name           TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    started_at_ms  INTEGER NOT NULL
);

-- Rule windows ("this admin's reveals in the last 10 minutes") and the dashboard's per-day
-- chart read by type and time.
CREATE INDEX audit_events_type_actor_time ON audit_events (event_type, actor_id, occurred_at_ms);
