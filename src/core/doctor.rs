//! `smtp-vault doctor`: the preflight an operator runs before the first start (and systemd before
//! every start): the configuration, the keyring's and backup key's modes and places, the
//! database reachable and migrated, Vault reachable and unsealed, the console's token able to do
//! exactly what its policy says, the public URL usable as a WebAuthn origin, the alert channels
//! reachable and the clock sane. One line per check; any failure makes the exit status non-zero.
//! It changes nothing: no migration, no Vault write, no alert sent.

use crate::core::access::passkeys::RelyingParty;
use crate::core::backup::{BackupTarget, load_backup_key};
use crate::core::config::Config;
use crate::core::crypto::Keyring;
use crate::core::db::Db;
use crate::core::outbound::OutboundPolicy;
use crate::core::vault::Vault;
use secrecy::ExposeSecret;
use std::path::Path;
use std::time::Duration;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Passed, failed, or not applicable (nothing configured to check).
    pub outcome: Outcome,
    /// What was found, or what to do (no secret ever).
    pub detail: String,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fine.
    Pass,
    /// Must be fixed before the console runs as intended.
    Fail,
    /// Nothing to check (a channel not configured, say).
    Skip,
    /// Worth knowing, but the console starts (with `--preflight`: what `serve` fixes itself, such
    /// as migrations, or what it retries, such as an alert channel).
    Warn,
}

fn check(name: &'static str, result: std::result::Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check { name, outcome: Outcome::Pass, detail },
        Err(detail) => Check { name, outcome: Outcome::Fail, detail },
    }
}

fn skip(name: &'static str, detail: &str) -> Check {
    Check { name, outcome: Outcome::Skip, detail: detail.to_owned() }
}

/// A key file: present, a regular file, readable only by its owner (0600 or stricter), and
/// owned by the user the console runs as.
fn private_file(path: &Path) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!("{}: {e} (create it with `smtp-vault keys generate`, `--backup` for the backup key)", path.display())
    })?;
    if !meta.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!("{} has mode {mode:o}: run `chmod 600 {}`", path.display(), path.display()));
        }
        // The owner must be whoever runs this (the console's user): /proc/self is owned by the
        // process's effective uid.
        let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(meta.uid());
        if meta.uid() != me {
            return Err(format!("{} belongs to uid {}, not to the console's user ({me})", path.display(), meta.uid()));
        }
    }
    Ok(())
}

/// Runs every check against `config`. With `preflight` (systemd's `ExecStartPre`), what `serve`
/// will fix or retry by itself — migrations not applied, no SQLite file yet, an alert channel
/// that does not answer — is a warning, so an upgrade or a mail outage never keeps the console
/// from starting.
pub async fn run(config: &Config, preflight: bool) -> Vec<Check> {
    let mut checks = every_check(config).await;
    if preflight {
        for c in &mut checks {
            let recoverable = matches!(c.name, "database" | "alert email" | "alert Slack")
                && (c.name != "database" || c.detail.contains("smtp-vault migrate"));
            if c.outcome == Outcome::Fail && recoverable {
                c.outcome = Outcome::Warn;
            }
        }
    }
    checks
}

async fn every_check(config: &Config) -> Vec<Check> {
    let mut checks = vec![check("configuration", Ok("every setting parsed and in range".into()))];
    let policy = OutboundPolicy::new(config.outbound_allow_plaintext, config.outbound_allow_networks.clone());

    // Keys: modes, places, and that they load.
    checks.push(check(
        "keyring",
        private_file(&config.keyring_path).and_then(|()| {
            let ring = Keyring::load(&config.keyring_path).map_err(|e| e.to_string())?;
            Ok(format!("{} (mode 600), {} keys", config.keyring_path.display(), ring.key_ids().count()))
        }),
    ));
    // Opening a local target creates its directory: the doctor changes nothing, so a missing
    // one is reported (the first backup creates it) and the key's place is checked by path.
    let missing_dir = match &config.backup_target {
        crate::core::backup::BackupLocation::Dir(dir) if !dir.is_dir() => Some(dir.clone()),
        _ => None,
    };
    let target = match &missing_dir {
        Some(dir) => Err(dir.clone()),
        None => Ok(BackupTarget::open(&config.backup_target)),
    };
    checks.push(check(
        "backup key",
        private_file(&config.backup_key_path).and_then(|()| {
            if std::fs::canonicalize(&config.backup_key_path).ok() == std::fs::canonicalize(&config.keyring_path).ok() {
                return Err("the backup key is the keyring file: keep a key of its own".into());
            }
            match &target {
                Ok(Ok(target)) => target.check_key_apart(&config.backup_key_path).map_err(|e| e.to_string())?,
                Ok(Err(_)) => {}
                Err(dir) => {
                    let absolute =
                        |p: &Path| std::env::current_dir().map(|cwd| cwd.join(p)).unwrap_or_else(|_| p.to_owned());
                    if absolute(&config.backup_key_path).starts_with(absolute(dir)) {
                        return Err("the backup key lies inside the backup target: keep it apart".into());
                    }
                }
            }
            load_backup_key(&config.backup_key_path).map_err(|e| e.to_string())?;
            Ok(format!("{} (mode 600), apart from the backup target", config.backup_key_path.display()))
        }),
    ));
    checks.push(check(
        "backup target",
        match target {
            Ok(Ok(t)) => Ok(t.description.clone()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(dir) => Ok(format!("{} (does not exist yet: the first backup creates it)", dir.display())),
        },
    ));

    // The database: reachable, migrated, and its clock. Connecting creates a missing SQLite
    // file, so a missing one is reported instead.
    let sqlite_file = config
        .database_url
        .strip_prefix("sqlite://")
        .or_else(|| config.database_url.strip_prefix("sqlite:"))
        .map(|rest| std::path::PathBuf::from(rest.split('?').next().unwrap_or_default()));
    let db = match sqlite_file.filter(|f| !f.exists()) {
        Some(file) => Err(crate::core::error::Error::InvalidInput(format!(
            "no database at {} yet: run `smtp-vault migrate` (or start serve) to create it",
            file.display()
        ))),
        None => Db::connect(&config.database_url).await,
    };
    checks.push(check(
        "database",
        match &db {
            Ok(db) => match db.pending_migrations().await {
                Ok(pending) if pending.is_empty() => Ok(format!("{:?}, every migration applied", db.backend())),
                Ok(pending) => Err(format!(
                    "{} migrations not applied (from {}): run `smtp-vault migrate` (serve applies them too)",
                    pending.len(),
                    pending.first().copied().unwrap_or_default()
                )),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        },
    ));

    // Vault: reachable, unsealed, the console's login, and exactly its policy's capabilities.
    match crate::core::vault_settings(config) {
        Err(e) => checks.push(check("vault", Err(e.to_string()))),
        Ok(settings) => match Vault::connect(settings).await {
            Err(e) => checks.push(check("vault", Err(e.to_string()))),
            Ok(vault) => {
                let health = vault.health().await;
                checks.push(check(
                    "vault",
                    if matches!(
                        health,
                        crate::core::vault::VaultHealth::Active | crate::core::vault::VaultHealth::Standby
                    ) {
                        Ok(format!("{}: {} and logged in", config.vault_addr_text(), health.as_str()))
                    } else {
                        Err(format!("{}: {}", config.vault_addr_text(), health.as_str()))
                    },
                ));
                checks.push(check("vault token", token_capabilities(&vault, &config.vault_mount).await));
                // The AppRole login made a token only for these checks: it goes (a token given
                // in VAULT_TOKEN is the operator's and stays).
                if config.vault_token.is_none()
                    && let Err(e) = vault.revoke_own_token().await
                {
                    tracing::warn!(error = %e, "could not revoke the doctor's Vault token (it expires with its TTL)");
                }
            }
        },
    }

    // WebAuthn: the public URL must be an origin browsers accept for passkeys.
    checks.push(check("public URL", {
        let url = &config.public_url;
        let secure = url.scheme() == "https" || url.host_str() == Some("localhost");
        if !secure {
            Err(format!("{url}: passkeys need https (or http://localhost)"))
        } else if url.path() != "/" || url.query().is_some() {
            Err(format!("{url}: must be an origin (no path or query)"))
        } else {
            RelyingParty::new(url, chrono::Duration::minutes(2))
                .map(|_| format!("{url} (WebAuthn relying party {})", url.host_str().unwrap_or_default()))
                .map_err(|e| e.to_string())
        }
    }));

    // The SIEM sinks as `serve` will build them (a bad secret or a plaintext URL stops it).
    checks.push(if config.siem_syslog_url.is_none() && config.siem_webhook_url.is_none() {
        skip("SIEM export", "no SIEM sink configured")
    } else {
        check(
            "SIEM export",
            crate::core::siem::Sinks::from_config(config, &policy)
                .map(|_| "sinks configured correctly (`smtp-vault siem status` shows their progress)".to_owned())
                .map_err(|e| e.to_string()),
        )
    });

    // Alert channels: the SMTP server answers; Slack's host resolves to an allowed address.
    checks.push(match &config.alert_smtp_url {
        None => skip("alert email", "SMTP_VAULT_ALERT_SMTP_URL not set: security alerts go nowhere by email"),
        Some(url) => check("alert email", smtp_reachable(url.expose_secret(), &policy).await),
    });
    checks.push(match &config.slack_webhook_url {
        None => skip("alert Slack", "SMTP_VAULT_SLACK_WEBHOOK_URL not set"),
        Some(url) => check("alert Slack", host_reachable(url.expose_secret(), &policy).await),
    });

    // The clock: rotations, reveal windows and audit times rely on it; the database's is the
    // shared reference.
    checks.push(match &db {
        Ok(db) => check("clock", clock_skew(db).await),
        Err(_) => skip("clock", "no database to compare with"),
    });
    checks
}

async fn token_capabilities(vault: &Vault, mount: &str) -> std::result::Result<String, String> {
    let expected = Vault::console_policy(mount);
    // Each path of the policy (its wildcard made concrete), and paths it must not reach.
    let probe = |p: &str| p.replace('*', "doctor-probe/admin");
    let mut paths: Vec<String> = expected.iter().map(|(p, _)| probe(p)).collect();
    // Paths a console never needs and an over-privileged token would have: other mounts,
    // policies, tokens and AppRole secret ids (minting its own credentials), raft snapshots,
    // identities, audit devices.
    let forbidden = [
        format!("{mount}-elsewhere/data/doctor-probe"),
        "sys/policies/acl/smtp-vault-console".into(),
        "sys/mounts".into(),
        "sys/audit".into(),
        "auth/token/create".into(),
        "auth/approle/role/smtp-vault/secret-id".into(),
        "sys/storage/raft/snapshot".into(),
        "identity/entity".into(),
    ];
    paths.extend(forbidden.iter().cloned());
    let granted = vault.capabilities_self(&paths).await.map_err(|e| e.to_string())?;
    let mut wrong = Vec::new();
    for (pattern, caps) in &expected {
        let mut want = caps.clone();
        want.sort();
        let mut got = granted.get(&probe(pattern)).cloned().unwrap_or_default();
        got.sort();
        if got != want {
            wrong.push(format!("{pattern}: {got:?}, the policy says {want:?}"));
        }
    }
    for path in &forbidden {
        let got = granted.get(path).cloned().unwrap_or_default();
        if got != ["deny"] {
            wrong.push(format!("{path}: {got:?}, should be denied"));
        }
    }
    if wrong.is_empty() {
        Ok(format!("exactly the smtp-vault-console policy on `{mount}` ({} paths checked)", paths.len()))
    } else {
        Err(format!("the console's token does not match its policy (a root or admin token?): {}", wrong.join("; ")))
    }
}

async fn smtp_reachable(url: &str, policy: &OutboundPolicy) -> std::result::Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|_| "SMTP_VAULT_ALERT_SMTP_URL is not a URL".to_owned())?;
    let host = parsed.host_str().ok_or("SMTP_VAULT_ALERT_SMTP_URL has no host")?.to_owned();
    let port = parsed.port().unwrap_or(if parsed.scheme() == "smtps" { 465 } else { 587 });
    connect(&host, port, policy).await.map(|()| format!("{host}:{port} answers"))
}

async fn host_reachable(url: &str, policy: &OutboundPolicy) -> std::result::Result<String, String> {
    // SECURITY: the Slack URL is the credential: only its host is ever shown.
    let parsed = policy.check_url(url).map_err(|e| format!("the webhook URL {e}"))?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    connect(&host, port, policy).await.map(|()| format!("{host}:{port} answers (nothing was posted)"))
}

async fn connect(host: &str, port: u16, policy: &OutboundPolicy) -> std::result::Result<(), String> {
    let addresses = policy.resolve(host, port).await.map_err(|e| format!("{host}: {e}"))?;
    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(&addresses[..]))
        .await
        .map_err(|_| format!("{host}:{port}: no answer in 5 s"))?
        .map(|_| ())
        .map_err(|e| format!("{host}:{port}: {e}"))
}

async fn clock_skew(db: &Db) -> std::result::Result<String, String> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let theirs: i64 = match db.backend() {
        crate::core::db::Backend::Postgres => {
            sqlx::query_as::<_, (i64,)>("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
                .fetch_one(db.pool())
                .await
                .map_err(|e| e.to_string())?
                .0
        }
        // SQLite runs in this process: its clock is ours. The system clock is checked against
        // the system's own idea of being synchronised instead, where it says.
        crate::core::db::Backend::Sqlite => now_ms,
    };
    let skew = (theirs - now_ms).abs();
    if skew > 30_000 {
        return Err(format!("this host and the database disagree by {} s: synchronise the clocks (NTP)", skew / 1000));
    }
    let year = chrono::Utc::now().format("%Y").to_string();
    if year.as_str() < "2025" {
        return Err(format!("the clock says {year}: set it (NTP)"));
    }
    Ok(format!("{} UTC, {skew} ms from the database's", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")))
}
