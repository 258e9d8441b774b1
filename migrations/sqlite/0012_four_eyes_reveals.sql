-- Four-eyes reveals: a tenant may require a second platform admin's approval before a reveal
-- window opens. A request holds the requester's reason and step-up (passkey and browser
-- session) until another platform admin approves or denies it with their own step-up, or it
-- expires (30 minutes); approval opens the window for the requester's session.
ALTER TABLE tenants ADD COLUMN reveal_approval INTEGER NOT NULL DEFAULT 0;
CREATE TABLE reveal_requests (
    request_id     TEXT    PRIMARY KEY,
    tenant_id      TEXT    NOT NULL,
    requester_id   TEXT    NOT NULL REFERENCES admins (admin_id),
    reason         TEXT    NOT NULL,
    passkey_id     TEXT    NOT NULL,
    binding_hash   TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    created_at_ms  INTEGER  NOT NULL,
    expires_at_ms  INTEGER  NOT NULL,
    decided_by     TEXT    REFERENCES admins (admin_id),
    decided_at_ms  INTEGER,
    grant_id       TEXT
);
CREATE INDEX reveal_requests_open ON reveal_requests (status, expires_at_ms);
