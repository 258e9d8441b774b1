-- Foundation: audit chain, tenants' credential metadata, service tokens.
-- Times are Unix epoch milliseconds (UTC) in both dialects, so queries are portable.

CREATE TABLE audit_events (
    seq             BIGINT  PRIMARY KEY,
    occurred_at_ms  BIGINT  NOT NULL,
    event_type      TEXT    NOT NULL,
    severity        TEXT    NOT NULL,
    actor_kind      TEXT    NOT NULL,
    actor_id        TEXT    NOT NULL,
    tenant_id       TEXT,
    client_ip       TEXT,
    request_id      TEXT,
    details         TEXT    NOT NULL,
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (occurred_at_ms);
CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, occurred_at_ms);

-- The chain head: one row, updated in the same transaction as each append. Updating it first
-- takes the write lock, so concurrent appenders serialise instead of forking the chain.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT  NOT NULL,
    hash  TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE tenants (
    tenant_id            TEXT    PRIMARY KEY,
    state                TEXT    NOT NULL,
    version              BIGINT  NOT NULL,
    username             TEXT    NOT NULL,
    smtp_host            TEXT    NOT NULL,
    smtp_port            BIGINT  NOT NULL,
    webmail_url          TEXT    NOT NULL,
    mailu_api_url        TEXT    NOT NULL,
    stored_at_ms         BIGINT  NOT NULL,
    rotated_at_ms        BIGINT ,
    next_rotation_at_ms  BIGINT ,
    created_at_ms        BIGINT  NOT NULL,
    updated_at_ms        BIGINT  NOT NULL
);

CREATE TABLE service_tokens (
    token_id         TEXT    PRIMARY KEY,
    name             TEXT    NOT NULL,
    secret_hash      TEXT    NOT NULL,
    scopes           TEXT    NOT NULL,
    created_by       TEXT    NOT NULL,
    created_at_ms    BIGINT  NOT NULL,
    expires_at_ms    BIGINT ,
    revoked_at_ms    BIGINT ,
    last_used_at_ms  BIGINT 
);
