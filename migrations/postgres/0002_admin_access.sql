-- Admin access: admins, passkeys, one-time invites, WebAuthn ceremonies and reveal grants.

CREATE TABLE admins (
    admin_id        TEXT    PRIMARY KEY,
    email           TEXT    NOT NULL UNIQUE,
    display_name    TEXT    NOT NULL,
    role            TEXT    NOT NULL,
    active          BIGINT  NOT NULL,
    user_handle     TEXT    NOT NULL UNIQUE,
    created_at_ms   BIGINT  NOT NULL,
    disabled_at_ms  BIGINT 
);

CREATE TABLE passkeys (
    passkey_id       TEXT    PRIMARY KEY,
    admin_id         TEXT    NOT NULL REFERENCES admins (admin_id),
    name             TEXT    NOT NULL,
    credential_id    TEXT    NOT NULL UNIQUE,
    passkey          TEXT    NOT NULL,
    created_at_ms    BIGINT  NOT NULL,
    last_used_at_ms  BIGINT 
);
CREATE INDEX passkeys_admin ON passkeys (admin_id);

CREATE TABLE invites (
    invite_id      TEXT    PRIMARY KEY,
    token_hash     TEXT    NOT NULL UNIQUE,
    email          TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    created_by     TEXT    NOT NULL,
    created_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL,
    used_at_ms     BIGINT 
);

-- Server-side WebAuthn ceremony state: single use (deleted when taken), bound to the browser
-- session (hash of a per-session secret), to a purpose and, for reveals, to a tenant.
CREATE TABLE ceremonies (
    ceremony_id    TEXT    PRIMARY KEY,
    binding_hash   TEXT    NOT NULL,
    purpose        TEXT    NOT NULL,
    admin_id       TEXT,
    tenant_id      TEXT,
    context        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    created_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL
);
CREATE INDEX ceremonies_binding ON ceremonies (binding_hash, purpose);

CREATE TABLE reveal_grants (
    grant_id          TEXT    PRIMARY KEY,
    admin_id          TEXT    NOT NULL REFERENCES admins (admin_id),
    tenant_id         TEXT    NOT NULL,
    reason            TEXT    NOT NULL,
    passkey_id        TEXT    NOT NULL,
    created_at_ms     BIGINT  NOT NULL,
    expires_at_ms     BIGINT  NOT NULL,
    revoked_at_ms     BIGINT ,
    revoked_by        TEXT,
    expiry_recorded   BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX reveal_grants_lookup ON reveal_grants (admin_id, tenant_id, expires_at_ms);
