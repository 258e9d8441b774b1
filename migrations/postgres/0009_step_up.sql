-- Step-up windows: a passkey confirmation bound to one browser session (the hash of its
-- ceremony binding) that sensitive account and destination changes require for a few minutes.
-- Reveal windows are bound to the session that earned them; invites can be revoked.

CREATE TABLE step_ups (
    binding_hash   TEXT    PRIMARY KEY,
    admin_id       TEXT    NOT NULL REFERENCES admins (admin_id),
    passkey_id     TEXT    NOT NULL,
    created_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL
);

-- NULL for windows opened before this migration: those no session can use any more, which
-- only ends them early.
ALTER TABLE reveal_grants ADD COLUMN binding_hash TEXT;

ALTER TABLE invites ADD COLUMN revoked_at_ms BIGINT;
