-- The audit chain becomes keyed: events from `keyed_from` on carry an HMAC under a key derived
-- from the keyring instead of a bare SHA-256. Events already written keep their hashes and are
-- pinned by the first keyed event, which links to the last of them.
ALTER TABLE audit_head ADD COLUMN keyed_from BIGINT NOT NULL DEFAULT 1;
UPDATE audit_head SET keyed_from = seq + 1 WHERE id = 1;
