-- The SMTP TLS mode ("implicit" or "starttls") is stored with each credential instead of being
-- guessed from the port at every connection. Credentials stored before get what that guess gave
-- (implicit TLS on 465 only), which is also what their Vault documents, lacking the field, mean.
ALTER TABLE tenants ADD COLUMN smtp_tls TEXT NOT NULL DEFAULT 'starttls';
UPDATE tenants SET smtp_tls = 'implicit' WHERE smtp_port = 465;
-- When the heartbeat's login was first refused (NULL: not refused): a refusal is logged in
-- again after SMTP_VAULT_HEARTBEAT_RECHECK_SECS before the tenant is called drifted.
ALTER TABLE tenants ADD COLUMN heartbeat_refused_at_ms BIGINT;
