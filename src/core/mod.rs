//! The service core: every operation the console offers, behind one [`Core`]. The UI, the API,
//! the CLI and the scheduler all call it with an [`Actor`]; authorization, auditing and the
//! invariants of ARCHITECTURE §4 live here. It must not import leptos, axum, tower or http.
#![warn(missing_docs)]

pub mod access;
pub mod admins;
pub mod alerting;
pub mod audit;
pub mod backup;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod db;
pub mod doctor;
pub mod emergency;
pub mod error;
pub mod fleet;
pub mod mail;
pub mod monitor;
pub mod outbound;
pub mod recovery;
pub mod rotation;
pub mod siem;
pub mod vault;

pub use access::{Actor, ClientInfo, CreatedToken};
pub use emergency::sweep::SweepProgress;
pub use error::{Error, ErrorKind, Result};

use crate::model::{Scope, ServiceTokenSummary};
use access::passkeys::RelyingParty;
use access::ratelimit::Limits;
use audit::{ChainReport, EventType, NewEvent};
use chrono::{DateTime, Utc};
use clock::{SharedClock, SystemClock};
use config::Config;
use crypto::{Keyring, KeyringError};
use db::Db;
use mail::{MailServer, Mailu};
use rotation::{FaultInjector, RotationLocks};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vault::{RoleSettings, SetupReport, Vault, VaultAuth, VaultHealth, VaultSettings};

/// What a command needs besides the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// A logged-in Vault client.
    pub vault: bool,
    /// The keyring.
    pub keyring: bool,
}

impl Needs {
    /// Everything (the server).
    pub const ALL: Needs = Needs { vault: true, keyring: true };
    /// Database only (tokens, audit).
    pub const DB: Needs = Needs { vault: false, keyring: false };
}

/// Settings the core reads at run time.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Time between automatic rotations.
    pub rotation_period: chrono::Duration,
    /// Length of a reveal window.
    pub reveal_window: chrono::Duration,
    /// A session ends this long after login, active or not.
    pub session_absolute: chrono::Duration,
    /// Public URL (enrollment links, WebAuthn origin).
    pub public_url: String,
    /// Failed attempts before a rotation gives up.
    pub rotation_max_attempts: u32,
    /// First retry delay; doubles each attempt.
    pub rotation_retry_base: std::time::Duration,
    /// Attempts per alert delivery before it is dead-lettered.
    pub alert_max_attempts: u32,
    /// First delay between alert delivery attempts; doubles each attempt.
    pub alert_retry_base: std::time::Duration,
    /// How long an incident may stay unacknowledged.
    pub incident_ack_after: chrono::Duration,
    /// Disaster-recovery hooks and drill settings.
    pub recovery: recovery::RecoverySettings,
    /// Thresholds of the suspicious-activity rules.
    pub rules: monitor::RuleSettings,
    /// Where the console may send things.
    pub outbound: outbound::OutboundPolicy,
    /// Whose `X-Forwarded-For` is believed.
    pub trusted_proxies: access::ratelimit::TrustedProxies,
    /// How often the monitor anchors the audit chain on the backup target.
    pub audit_anchor_every: Duration,
    /// How long after a first refused heartbeat login the second one decides on drift.
    pub heartbeat_recheck_after: Duration,
}

/// The service core. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    db: Db,
    vault: Option<Arc<Vault>>,
    keyring: Option<Arc<Keyring>>,
    rp: Option<Arc<RelyingParty>>,
    limits: Arc<Limits>,
    mail: Option<Arc<dyn MailServer>>,
    fault: Option<FaultInjector>,
    rotation_locks: RotationLocks,
    channels: Arc<alerting::channels::Channels>,
    backup_target: Option<Arc<backup::BackupTarget>>,
    backup_key: Option<Arc<Keyring>>,
    restore_status: Arc<std::sync::Mutex<Option<crate::model::RestoreStatusView>>>,
    probes: Arc<SharedProbes>,
    outbox_wake: Arc<tokio::sync::Notify>,
    siem: Arc<siem::Sinks>,
    /// This process among the consoles on one database (who holds the syslog stream).
    instance_id: String,
    clock: SharedClock,
    settings: CoreSettings,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("db", &self.db.backend()).field("vault", &self.vault).finish_non_exhaustive()
    }
}

/// Probes anyone may trigger (`/readyz`, `/metrics`, the status badge): one run serves every
/// caller for [`PROBE_FRESH`], so a flood of anonymous requests is not a flood of database
/// queries and Vault calls. Callers queue on the lock while one probe runs.
#[derive(Default)]
struct SharedProbes {
    readiness: tokio::sync::Mutex<Option<(std::time::Instant, Readiness)>>,
    gauges: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a shared probe's answer stands.
const PROBE_FRESH: Duration = Duration::from_secs(2);

/// Readiness of the dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The database answers.
    pub database: bool,
    /// Vault's health.
    pub vault: VaultHealth,
}

impl Readiness {
    /// Ready to serve credentials.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.database && matches!(self.vault, VaultHealth::Active | VaultHealth::Standby)
    }
}

/// Builds Vault login settings from the configuration (`VAULT_ADDR` may list a cluster's nodes,
/// comma-separated).
///
/// # Errors
/// [`Error::Config`] when neither a token nor a full AppRole pair is given, or no address.
pub fn vault_settings(config: &Config) -> Result<VaultSettings> {
    let auth = match (&config.vault_token, &config.vault_role_id, &config.vault_secret_id) {
        (Some(token), _, _) => VaultAuth::Token(token.clone()),
        (None, Some(role_id), Some(secret_id)) => {
            VaultAuth::AppRole { role_id: role_id.clone(), secret_id: secret_id.clone() }
        }
        _ => {
            return Err(Error::Config(
                "no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID".into(),
            ));
        }
    };
    let addrs: Vec<String> = config.vault_addrs.iter().map(|a| a.as_str().trim_end_matches('/').to_owned()).collect();
    if addrs.is_empty() {
        return Err(Error::Config("VAULT_ADDR names no address".into()));
    }
    Ok(VaultSettings {
        addrs,
        mount: config.vault_mount.clone(),
        approle_mount: config.vault_approle_mount.clone(),
        auth,
        timeout: Duration::from_secs(10),
    })
}

impl Core {
    /// Connects to the database (applying migrations) and, as asked, Vault and the keyring.
    ///
    /// # Errors
    /// Configuration, keyring, database or Vault errors, each naming what to fix.
    pub async fn connect(config: &Config, needs: Needs, clock: Option<SharedClock>) -> Result<Self> {
        let keyring = if needs.keyring {
            Some(Arc::new(Keyring::load(&config.keyring_path).map_err(|e| Error::Config(e.to_string()))?))
        } else {
            None
        };
        // Every process that writes audit events seals them, so the chain key is loaded even
        // where the keyring is not otherwise needed; without it, an append says why.
        let chain_key = match &keyring {
            Some(ring) => Ok(audit::ChainKey::from_keyring(ring)),
            None => Keyring::load(&config.keyring_path).map(|ring| audit::ChainKey::from_keyring(&ring)).map_err(|e| {
                format!("audit events are sealed with a key from the keyring, which could not be loaded: {e}")
            }),
        };
        let db = Db::connect(&config.database_url).await?.with_chain_key(chain_key);
        db.migrate().await?;
        let vault = if needs.vault { Some(Arc::new(Vault::connect(vault_settings(config)?).await?)) } else { None };
        let smtp_ca = match &config.smtp_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?),
            None => None,
        };
        let outbound =
            outbound::OutboundPolicy::new(config.outbound_allow_plaintext, config.outbound_allow_networks.clone());
        let channels = alerting::channels::Channels::new(
            config.alert_smtp_url.as_ref(),
            &config.alert_email_from,
            &config.alert_email_to,
            config.slack_webhook_url.as_ref(),
            smtp_ca.as_deref(),
            &outbound,
        )?;
        // Backups and the journal: the target only where Vault is used (no stray directories
        // for database-only commands), the key only when its file exists.
        // Database-only commands open an existing target for the audit anchors, when they can
        // (without it they verify without anchors rather than fail).
        let existing_target = match &config.backup_target {
            backup::BackupLocation::Dir(dir) => dir.is_dir(),
            backup::BackupLocation::S3 { .. } => true,
        };
        let backup_target = if needs.vault {
            Some(Arc::new(backup::BackupTarget::open(&config.backup_target)?))
        } else if existing_target {
            backup::BackupTarget::open(&config.backup_target).ok().map(Arc::new)
        } else {
            None
        };
        let backup_key = if needs.vault && config.backup_key_path.exists() {
            if let Some(target) = &backup_target {
                target.check_key_apart(&config.backup_key_path)?;
            }
            Some(Arc::new(backup::load_backup_key(&config.backup_key_path)?))
        } else {
            None
        };
        let siem = siem::Sinks::from_config(config, &outbound)?;
        let rp = RelyingParty::new(&config.public_url, chrono::Duration::minutes(2))?;
        let reveal_secs =
            i64::try_from(config.reveal_window_secs).map_err(|_| Error::Config("reveal window too long".into()))?;
        Ok(Self {
            db,
            vault,
            keyring,
            rp: Some(Arc::new(rp)),
            limits: Arc::new(Limits::default()),
            mail: Some(Arc::new(
                Mailu::new(Duration::from_secs(10), smtp_ca, outbound.clone()).map_err(Error::Config)?,
            )),
            fault: None,
            rotation_locks: RotationLocks::default(),
            channels: Arc::new(channels),
            backup_target,
            backup_key,
            restore_status: Arc::default(),
            probes: Arc::default(),
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            siem: Arc::new(siem),
            instance_id: hex::encode(crypto::random_bytes::<8>()?.as_ref()),
            clock: clock.unwrap_or_else(|| Arc::new(SystemClock)),
            settings: CoreSettings {
                rotation_period: chrono::Duration::days(i64::from(config.rotation_period_days)),
                reveal_window: chrono::Duration::seconds(reveal_secs),
                session_absolute: chrono::Duration::hours(12),
                public_url: config.public_url.as_str().trim_end_matches('/').to_owned(),
                rotation_max_attempts: config.rotation_max_attempts,
                rotation_retry_base: Duration::from_millis(config.rotation_retry_ms),
                alert_max_attempts: config.alert_max_attempts,
                alert_retry_base: Duration::from_millis(config.alert_retry_ms),
                incident_ack_after: chrono::Duration::hours(i64::from(config.incident_ack_hours)),
                recovery: recovery::RecoverySettings::from_config(config),
                rules: monitor::RuleSettings::from_config(config),
                outbound,
                trusted_proxies: access::ratelimit::TrustedProxies::new(config.trusted_proxies.clone()),
                audit_anchor_every: Duration::from_secs(config.audit_anchor_secs.max(1)),
                heartbeat_recheck_after: Duration::from_secs(config.heartbeat_recheck_secs),
            },
        })
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn vault(&self) -> Result<&Arc<Vault>> {
        self.vault.as_ref().ok_or_else(|| Error::Internal("this command runs without Vault".into()))
    }

    /// The same core with a crash injector for rotation steps (tests of the invariants).
    #[must_use]
    pub fn with_fault_injector(mut self, fault: FaultInjector) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The same core talking to another mail server implementation.
    #[must_use]
    pub fn with_mail_server(mut self, mail: Arc<dyn MailServer>) -> Self {
        self.mail = Some(mail);
        self
    }

    pub(crate) fn mail(&self) -> Result<&Arc<dyn MailServer>> {
        self.mail.as_ref().ok_or_else(|| Error::Internal("no mail adapter".into()))
    }

    pub(crate) fn relying_party(&self) -> Result<&RelyingParty> {
        self.rp.as_deref().ok_or_else(|| Error::Internal("WebAuthn is not configured".into()))
    }

    /// Settings in effect.
    #[must_use]
    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    pub(crate) fn keyring(&self) -> Result<&Keyring> {
        self.keyring.as_deref().ok_or_else(|| Error::Internal("this command runs without the keyring".into()))
    }

    /// The database handle (tests and health).
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Keeps the Vault token alive; run it as a background task in `serve`.
    pub async fn maintain_vault_token(&self) {
        if let Some(vault) = &self.vault {
            Arc::clone(vault).maintain_token().await;
        }
    }

    /// The Vault node calls go to now (it changes when the console fails over), if Vault is in use.
    #[must_use]
    pub fn vault_node(&self) -> Option<String> {
        self.vault.as_ref().map(|v| v.addr())
    }

    /// Readiness as anonymous callers get it: the last probe's answer when it is fresh.
    pub async fn shared_readiness(&self) -> Readiness {
        let mut cached = self.probes.readiness.lock().await;
        if let Some((at, readiness)) = *cached
            && at.elapsed() < PROBE_FRESH
        {
            return readiness;
        }
        let readiness = self.readiness().await;
        *cached = Some((std::time::Instant::now(), readiness));
        readiness
    }

    /// Refreshes the gauges unless another caller did a moment ago.
    ///
    /// # Errors
    /// Database errors.
    pub async fn shared_gauges(&self) -> Result<()> {
        let mut last = self.probes.gauges.lock().await;
        if last.is_some_and(|at| at.elapsed() < PROBE_FRESH) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        self.observe_gauges().await
    }

    /// Database and Vault readiness (Vault: the best state any configured node reports),
    /// probed now.
    pub async fn readiness(&self) -> Readiness {
        metrics::counter!("smtp_vault_readiness_probes_total").increment(1);
        let vault = match &self.vault {
            Some(v) => v.health().await,
            None => VaultHealth::Unreachable,
        };
        Readiness { database: self.db.ping().await, vault }
    }

    /// Resolves a bearer token.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for any bad token; database errors.
    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn authenticate_token(&self, presented: &str) -> Result<Actor> {
        access::authenticate_token(&self.db, presented, self.now()).await
    }

    /// Creates a service token (shown once).
    ///
    /// # Errors
    /// See [`access::create_token`].
    pub async fn create_token(
        &self,
        actor: &Actor,
        name: &str,
        scopes: &[Scope],
        ttl: Option<chrono::Duration>,
    ) -> Result<CreatedToken> {
        access::create_token(&self.db, actor, &ClientInfo::local(), name, scopes, ttl, self.now()).await
    }

    /// Lists service tokens.
    ///
    /// # Errors
    /// See [`access::list_tokens`].
    pub async fn list_tokens(&self, actor: &Actor) -> Result<Vec<ServiceTokenSummary>> {
        access::list_tokens(&self.db, actor).await
    }

    /// Revokes a service token; false if it was already revoked.
    ///
    /// # Errors
    /// See [`access::revoke_token`].
    pub async fn revoke_token(&self, actor: &Actor, token_id: &str) -> Result<bool> {
        access::revoke_token(&self.db, actor, &ClientInfo::local(), token_id, self.now()).await
    }

    /// Verifies the audit chain.
    ///
    /// # Errors
    /// Database errors.
    pub async fn verify_audit_chain(&self) -> Result<ChainReport> {
        // Without a reachable anchor the chain is still checked link by link and MAC by MAC;
        // only a cut tail and a moved boundary need the anchor.
        let anchors = match self.audit_anchors().await {
            Ok(anchors) => anchors,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the audit anchors; verifying without them");
                Vec::new()
            }
        };
        audit::verify(&self.db, &anchors).await
    }

    /// Configures Vault for the console (needs a privileged token) and records it.
    ///
    /// # Errors
    /// Vault and database errors.
    pub async fn setup_vault(&self, actor: &Actor, role: &RoleSettings) -> Result<SetupReport> {
        let report = self.vault()?.setup(role).await?;
        let details = json!({
            "mount": report.mount, "mount_created": report.mount_created,
            "policies": report.policies, "role": report.role_name,
        });
        audit::record(
            &self.db,
            actor,
            &ClientInfo::local(),
            NewEvent::info(EventType::VaultSetupCompleted, None, details),
            self.now(),
        )
        .await?;
        Ok(report)
    }
}

/// Creates a keyring file with one key; never overwrites.
///
/// # Errors
/// [`KeyringError::Exists`] when the file is there, I/O errors.
pub fn generate_keyring(config: &Config) -> std::result::Result<String, KeyringError> {
    let ring = Keyring::generate(Utc::now())?;
    ring.save(&config.keyring_path, false)?;
    Ok(ring.active_key_id().to_owned())
}

/// Creates the backup key file (a keyring of its own); never overwrites.
///
/// # Errors
/// [`KeyringError::Exists`] when the file is there, I/O errors.
pub fn generate_backup_key(config: &Config) -> std::result::Result<String, KeyringError> {
    let ring = Keyring::generate(Utc::now())?;
    ring.save(&config.backup_key_path, false)?;
    Ok(ring.active_key_id().to_owned())
}

/// Adds a new active key to the existing keyring (old keys stay, so old envelopes open).
///
/// # Errors
/// Keyring errors.
pub fn add_keyring_key(config: &Config) -> std::result::Result<String, KeyringError> {
    let mut ring = Keyring::load(&config.keyring_path)?;
    let id = ring.add_key(Utc::now())?;
    ring.save(&config.keyring_path, true)?;
    Ok(id)
}

/// Records a keyring change in the audit log (the file itself is outside the database).
///
/// # Errors
/// Database errors.
pub async fn record_keyring_change(config: &Config, actor: &Actor, key_id: &str, created: bool) -> Result<()> {
    let ring = Keyring::load(&config.keyring_path).map_err(|e| Error::Config(e.to_string()))?;
    let db = Db::connect(&config.database_url).await?.with_chain_key(Ok(audit::ChainKey::from_keyring(&ring)));
    db.migrate().await?;
    let details = json!({"key_id": key_id, "keyring_created": created});
    audit::record(
        &db,
        actor,
        &ClientInfo::local(),
        NewEvent::info(EventType::KeyringKeyAdded, None, details),
        Utc::now(),
    )
    .await?;
    Ok(())
}
