//! The Vault credential store (ARCHITECTURE §3.1): login (token or AppRole) and renewal, the KV v2
//! documents at `{mount}/{tenant_id}/admin`, health, and `vault-setup`.
//!
//! Only envelopes ever reach Vault: [`CredentialDocument`] holds ciphertext text, never a
//! plaintext. Known vaultrs gaps against OpenBao are handled here (reference/openbao.md): health
//! and the `sys/` setup calls go over plain HTTP, both 404 shapes mean "absent", an empty list is
//! a 404, and writes right after a KV v2 mount retry through the mount upgrade.
//!
//! High availability: `VAULT_ADDR` may name several nodes of one raft cluster. Every call goes
//! through `Vault::on_cluster`, the one place that fails over: when the node in use cannot
//! serve (unreachable, sealed, a standby that lost its leader, any 5xx), it probes every node's
//! health, moves to the active one, rebuilds the client with the current token (raft
//! replicates tokens) and sends the call again, for up to [`FAILOVER_WINDOW`]. Only the active
//! node is a target: since OpenBao 2.5 a standby answers reads from its own replica, which may
//! not have applied the console's last write yet, and the rotation's check-and-set steps need
//! read-after-write. For the same reason the node in use is re-checked every
//! [`ACTIVE_RECHECK`] (a leader that stepped down keeps answering, as a standby). A
//! check-and-set write sent twice is settled by reading back the version it would have made,
//! so a write that landed just before its node died is not mistaken for a conflict. With a
//! single address there is nowhere to go: errors surface at once, as they always did.

mod cluster;
mod documents;
mod kv;
mod setup;

use crate::core::error::{Error, Result};
pub use cluster::VaultHealth;
use cluster::pick_node;
pub use documents::{CredentialDocument, PendingDocument, PendingPhase, VersionedDocument};
use kv::MOUNT_UPGRADING;
use rustify::errors::ClientError as RestError;
use secrecy::{ExposeSecret, SecretString};
pub use setup::{CONSOLE_ROLE, POLICIES, RoleSettings, SetupReport};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// How long one call keeps failing over before it reports Vault unavailable. A raft election
/// with `performance_multiplier = 1` settles in a few seconds; the default multiplier in ~10 s.
pub const FAILOVER_WINDOW: Duration = Duration::from_secs(30);
/// First and longest pause between failover rounds that found no usable node.
const FAILOVER_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// A health probe waits at most this long: a node that slow is no node to fail over to.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often, while calls flow, the node in use is asked whether it is still the active one.
pub const ACTIVE_RECHECK: Duration = Duration::from_secs(5);

/// How the console proves itself to Vault.
pub enum VaultAuth {
    /// A token (`VAULT_TOKEN`).
    Token(SecretString),
    /// AppRole (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`).
    AppRole {
        /// Role id (not secret on its own).
        role_id: String,
        /// Secret id.
        secret_id: SecretString,
    },
}

impl std::fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("VaultAuth::Token([redacted])"),
            VaultAuth::AppRole { role_id, .. } => {
                write!(f, "VaultAuth::AppRole({role_id}, [redacted])")
            }
        }
    }
}

/// Where Vault is and how to log in.
#[derive(Debug)]
pub struct VaultSettings {
    /// Base addresses, e.g. `http://127.0.0.1:8200`: one, or every node of a raft cluster (the
    /// client fails over between them).
    pub addrs: Vec<String>,
    /// KV v2 mount holding the credentials.
    pub mount: String,
    /// AppRole auth mount path.
    pub approle_mount: String,
    /// Credentials.
    pub auth: VaultAuth,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Token lifetime as last seen.
#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: Duration,
    renewable: bool,
}

/// The node calls go to now, with a client logged in there.
#[derive(Clone)]
struct Node {
    /// Index into `settings.addrs`.
    index: usize,
    /// Bumped at each switch, so calls that failed on the old node resend without probing again.
    generation: u64,
    client: Arc<VaultClient>,
}

/// A logged-in Vault client for the console's mount.
pub struct Vault {
    settings: VaultSettings,
    node: RwLock<Node>,
    /// Held while probing and switching nodes (and while installing a new token), so a burst of
    /// calls failing together probes once.
    switching: tokio::sync::Mutex<()>,
    /// When the node in use last answered health as active (`None`: not yet).
    confirmed: std::sync::Mutex<Option<tokio::time::Instant>>,
    failovers: AtomicU64,
    token: RwLock<SecretString>,
    lease: RwLock<Lease>,
    refreshes: AtomicU64,
    http: reqwest::Client,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("addrs", &self.settings.addrs).field("mount", &self.settings.mount).finish()
    }
}

fn vault_error(context: &str, e: ClientError) -> Error {
    match e {
        ClientError::APIError { code: 503, .. } => Error::VaultSealed,
        ClientError::APIError { code: 403, .. } => Error::Vault(format!("{context}: permission denied")),
        ClientError::APIError { code, errors } if code >= 500 => {
            Error::VaultUnreachable(format!("{context}: HTTP {code}: {}", errors.join("; ")))
        }
        ClientError::APIError { code, errors } => {
            Error::Vault(format!("{context}: HTTP {code}: {}", errors.join("; ")))
        }
        ClientError::RestClientError { source: RestError::ServerResponseError { code, .. } } if code >= 500 => {
            Error::VaultUnreachable(format!("{context}: HTTP {code}"))
        }
        ClientError::RestClientError { source: RestError::ServerResponseError { code, .. } } => {
            Error::Vault(format!("{context}: HTTP {code}"))
        }
        ClientError::RestClientError { source: RestError::RequestError { .. } | RestError::ResponseError { .. } } => {
            Error::VaultUnreachable(format!("{context}: Vault is unreachable"))
        }
        ClientError::RestClientError { .. } => Error::Vault(format!("{context}: unexpected answer from Vault")),
        other => Error::Vault(format!("{context}: {other}")),
    }
}

fn build_client(addr: &str, token: &str, timeout: Duration) -> Result<VaultClient> {
    // `address()` panics on a bad URL, so it is checked first.
    url::Url::parse(addr).map_err(|_| Error::Config(format!("VAULT_ADDR `{addr}` is not a URL")))?;
    let settings = VaultClientSettingsBuilder::default()
        .address(addr)
        .token(token)
        .timeout(Some(timeout))
        .build()
        .map_err(|e| Error::Config(format!("vault client settings: {e}")))?;
    VaultClient::new(settings).map_err(|e| vault_error("vault client", e))
}

impl Vault {
    /// Logs in and returns a ready client. With several addresses it starts on the active node.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad or missing address, [`Error::Vault`]/[`Error::VaultSealed`]/
    /// [`Error::VaultUnreachable`] when Vault refuses the credentials or cannot be reached.
    pub async fn connect(settings: VaultSettings) -> Result<Self> {
        if settings.addrs.is_empty() {
            return Err(Error::Config("VAULT_ADDR names no address".into()));
        }
        for addr in &settings.addrs {
            // `VaultClientSettingsBuilder::address()` panics on a bad URL: check them all now.
            url::Url::parse(addr).map_err(|_| Error::Config(format!("VAULT_ADDR `{addr}` is not a URL")))?;
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        let token = match &settings.auth {
            VaultAuth::Token(token) => token.clone(),
            VaultAuth::AppRole { .. } => SecretString::from(String::new()),
        };
        let mut vault = Self {
            node: RwLock::new(Node {
                index: 0,
                generation: 0,
                client: Arc::new(build_client(&settings.addrs[0], token.expose_secret(), settings.timeout)?),
            }),
            settings,
            switching: tokio::sync::Mutex::new(()),
            confirmed: std::sync::Mutex::new(None),
            failovers: AtomicU64::new(0),
            token: RwLock::new(token),
            lease: RwLock::new(Lease { ttl: Duration::ZERO, renewable: false }),
            refreshes: AtomicU64::new(0),
            http,
        };
        if vault.settings.addrs.len() > 1
            && let Some(index) = pick_node(&vault.node_health().await)
        {
            let client =
                build_client(&vault.settings.addrs[index], vault.token().expose_secret(), vault.settings.timeout)?;
            vault.node = RwLock::new(Node { index, generation: 0, client: Arc::new(client) });
            vault.confirm();
        }
        let (token, lease) = vault.login().await?;
        vault.install_token(token, lease).await?;
        vault.refreshes.store(0, Ordering::Relaxed);
        Ok(vault)
    }

    /// Proves the configured credentials: looks a token up, or logs in with AppRole.
    async fn login(&self) -> Result<(SecretString, Lease)> {
        match &self.settings.auth {
            VaultAuth::Token(token) => {
                let info = self
                    .on_cluster(|node| async move { node.client.lookup().await })
                    .await
                    .map_err(|e| vault_error("VAULT_TOKEN lookup", e))?;
                let lease = Lease { ttl: Duration::from_secs(info.ttl), renewable: info.renewable.unwrap_or(false) };
                Ok((token.clone(), lease))
            }
            VaultAuth::AppRole { role_id, secret_id } => {
                let auth = self
                    .on_cluster(|node| async move {
                        let anonymous = build_client(self.node_addr(&node), "", self.settings.timeout)?;
                        vaultrs::auth::approle::login(
                            &anonymous,
                            &self.settings.approle_mount,
                            role_id,
                            secret_id.expose_secret(),
                        )
                        .await
                        .map_err(|e| vault_error("AppRole login", e))
                    })
                    .await?;
                let lease = Lease { ttl: Duration::from_secs(auth.lease_duration), renewable: auth.renewable };
                Ok((SecretString::from(auth.client_token), lease))
            }
        }
    }

    /// Makes `token` the one every later call carries, on the node in use.
    async fn install_token(&self, token: SecretString, lease: Lease) -> Result<()> {
        let _switching = self.switching.lock().await;
        let mut node = self.node();
        node.client = Arc::new(build_client(self.node_addr(&node), token.expose_secret(), self.settings.timeout)?);
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
        if let Ok(mut n) = self.node.write() {
            *n = node;
        }
        self.set_lease(lease);
        Ok(())
    }

    fn node(&self) -> Node {
        self.node.read().map_or_else(|p| p.into_inner().clone(), |n| n.clone())
    }

    fn node_addr(&self, node: &Node) -> &str {
        self.settings.addrs.get(node.index).map_or("", |a| a.trim_end_matches('/'))
    }

    fn token(&self) -> SecretString {
        self.token.read().map_or_else(|p| p.into_inner().clone(), |t| t.clone())
    }

    /// The KV mount in use.
    #[must_use]
    pub fn mount(&self) -> &str {
        &self.settings.mount
    }

    /// The address of the node calls go to now.
    #[must_use]
    pub fn addr(&self) -> String {
        self.node_addr(&self.node()).to_owned()
    }

    /// How many times calls moved to another node.
    #[must_use]
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Keeps the token alive until the process ends: renews at two thirds of its TTL and logs in
    /// again (AppRole) when renewal is refused or the maximum TTL is reached. Returns at once for
    /// a token that never expires.
    pub async fn maintain_token(self: Arc<Self>) {
        loop {
            let lease = self.lease.read().map_or_else(|p| *p.into_inner(), |l| *l);
            if lease.ttl.is_zero() {
                return;
            }
            tokio::time::sleep((lease.ttl * 2 / 3).max(Duration::from_secs(1))).await;
            if let Err(e) = self.refresh_token(lease).await {
                tracing::error!(error = %e, "vault token could not be renewed; retrying in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }

    async fn refresh_token(&self, lease: Lease) -> Result<()> {
        if lease.renewable {
            match self.on_cluster(|node| async move { node.client.renew(None).await }).await {
                // A renewal that gives less than asked means the max TTL is near: log in anew.
                Ok(auth) if auth.lease_duration >= lease.ttl.as_secs() / 2 => {
                    self.set_lease(Lease { ttl: Duration::from_secs(auth.lease_duration), renewable: auth.renewable });
                    tracing::debug!(ttl_s = auth.lease_duration, "vault token renewed");
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %vault_error("token renew", e), "vault token renewal refused")
                }
            }
        }
        if matches!(self.settings.auth, VaultAuth::Token(_)) {
            return Err(Error::Vault(
                "VAULT_TOKEN cannot be renewed further; provide a new token or use AppRole".into(),
            ));
        }
        let (token, lease) = self.login().await?;
        self.install_token(token, lease).await?;
        tracing::info!("logged in to vault again with AppRole");
        Ok(())
    }

    /// How many times the token was renewed or replaced by a new login.
    #[must_use]
    pub fn token_refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Records a renewed or new token's lease.
    fn set_lease(&self, lease: Lease) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.lease.write() {
            *l = lease;
        }
    }
}
