-- Rogue Mailu admins: each day the console lists every tenant's Mailu accounts with global
-- admin rights (a rotation does not remove a backdoor account). One row per tenant and account:
-- 'console' for the tenant's own admin login (the account the console keeps), 'known' once a
-- platform admin vouched for it (who, when, why), else 'unknown', alerted once
-- (mailu_unknown_admin). gone_at_ms: no longer listed.
CREATE TABLE mailu_admins (
    tenant_id       TEXT    NOT NULL,
    email           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    enabled         INTEGER  NOT NULL,
    first_seen_ms   INTEGER  NOT NULL,
    last_seen_ms    INTEGER  NOT NULL,
    gone_at_ms      INTEGER,
    alerted         INTEGER  NOT NULL DEFAULT 0,
    marked_by       TEXT,
    marked_at_ms    INTEGER,
    note            TEXT,
    PRIMARY KEY (tenant_id, email)
);
