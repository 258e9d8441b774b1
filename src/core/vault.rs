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

use crate::core::error::{Error, Result};
use crate::model::{SmtpTls, TenantId};
use rustify::errors::ClientError as RestError;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// Name of the console's policy and AppRole role.
pub const CONSOLE_ROLE: &str = "smtp-vault-console";
/// The shipped policies: (name, HCL template with `{{mount}}`).
pub const POLICIES: [(&str, &str); 3] = [
    ("smtp-vault-console", include_str!("../../vault/policies/smtp-vault-console.hcl")),
    ("smtp-vault-backup", include_str!("../../vault/policies/smtp-vault-backup.hcl")),
    ("smtp-vault-reviewer", include_str!("../../vault/policies/smtp-vault-reviewer.hcl")),
];

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

/// The Vault document for one tenant (the contract's field names). Secret fields hold
/// `v1.` envelopes.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialDocument {
    /// SMTP login.
    pub username: String,
    /// Envelope of the password.
    pub password: String,
    /// SMTP host.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// TLS mode on that port; absent in documents stored before modes were recorded (see
    /// [`CredentialDocument::tls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_tls: Option<SmtpTls>,
    /// Webmail URL.
    pub webmail_url: String,
    /// Mailu API URL.
    pub mailu_api_url: String,
    /// Envelope of the Mailu API token.
    pub mailu_api_token: String,
}

impl CredentialDocument {
    /// The TLS mode to speak: the stored one, or for an older document what the console did
    /// when it was stored.
    #[must_use]
    pub fn tls(&self) -> SmtpTls {
        self.smtp_tls.unwrap_or(SmtpTls::default_for_port(self.smtp_port))
    }
}

impl std::fmt::Debug for CredentialDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialDocument").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Where an in-flight rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingPhase {
    /// Stored in Vault; the mail server may or may not have it yet.
    Staged,
    /// The mail server confirmed the change; not yet promoted to current.
    Applied,
}

/// The in-flight rotation at `{mount}/{tenant}/pending`: the new password is here (sealed)
/// before the mail server is touched, so it can never be lost.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingDocument {
    /// Identifies this rotation in audit events and alerts.
    pub rotation_id: String,
    /// Envelope of the new password.
    pub password: String,
    /// Where it stands.
    pub phase: PendingPhase,
    /// Failed attempts so far.
    pub attempts: u32,
    /// What started it (`scheduled`, `manual`, `reveal`, `emergency`).
    pub trigger: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

impl std::fmt::Debug for PendingDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDocument")
            .field("rotation_id", &self.rotation_id)
            .field("phase", &self.phase)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A document with the KV v2 version it was read at.
#[derive(Debug, Clone)]
pub struct VersionedDocument {
    /// The data.
    pub document: CredentialDocument,
    /// KV v2 version.
    pub version: u64,
}

/// What `sys/health` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultHealth {
    /// Active node, unsealed.
    Active,
    /// Standby node (can forward).
    Standby,
    /// Several nodes configured, some standby, none active: an election is under way, or the
    /// cluster lost its quorum (a lone survivor answers standby for ever).
    Leaderless,
    /// Sealed.
    Sealed,
    /// Not initialised.
    Uninitialized,
    /// No answer or an unexpected one.
    Unreachable,
}

impl VaultHealth {
    /// Stable name for health output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            VaultHealth::Active => "active",
            VaultHealth::Standby => "standby",
            VaultHealth::Leaderless => "leaderless",
            VaultHealth::Sealed => "sealed",
            VaultHealth::Uninitialized => "uninitialized",
            VaultHealth::Unreachable => "unreachable",
        }
    }
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

/// Whether a failed call says "this node cannot serve" (another node may) rather than "the
/// request is wrong" (every node would refuse it).
trait NodeFailure {
    fn node_failed(&self) -> bool;
}

impl NodeFailure for ClientError {
    fn node_failed(&self) -> bool {
        match self {
            ClientError::APIError { code, .. } => *code >= 500,
            ClientError::RestClientError { source } => match source {
                RestError::ServerResponseError { code, .. } => *code >= 500,
                RestError::RequestError { .. } | RestError::ResponseError { .. } => true,
                _ => false,
            },
            _ => false,
        }
    }
}

impl NodeFailure for Error {
    fn node_failed(&self) -> bool {
        matches!(self, Error::VaultUnreachable(_) | Error::VaultSealed)
    }
}

/// What a failover round achieved.
enum Switch {
    /// Calls now go to a node that answered active or standby.
    Moved,
    /// No node can serve yet (an election is under way, nodes are restarting): wait and retry.
    NoneUsable,
    /// Every node is sealed or uninitialised.
    AllSealed,
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

/// Reads a `sys/health` status code.
fn health_from_status(status: Option<u16>) -> VaultHealth {
    match status {
        Some(200) => VaultHealth::Active,
        Some(429 | 472 | 473) => VaultHealth::Standby,
        Some(501) => VaultHealth::Uninitialized,
        Some(503) => VaultHealth::Sealed,
        _ => VaultHealth::Unreachable,
    }
}

/// The cluster's state from its nodes': the best any node offers, since one active node serves
/// every call. Standbys alone serve nothing the console uses: leaderless (a single configured
/// node that is a standby keeps its old meaning, it forwards).
fn cluster_health(nodes: &[VaultHealth]) -> VaultHealth {
    if nodes.len() > 1 && !nodes.contains(&VaultHealth::Active) && nodes.contains(&VaultHealth::Standby) {
        return VaultHealth::Leaderless;
    }
    [VaultHealth::Active, VaultHealth::Standby, VaultHealth::Sealed, VaultHealth::Uninitialized]
        .into_iter()
        .find(|wanted| nodes.contains(wanted))
        .unwrap_or(VaultHealth::Unreachable)
}

/// The node to move to: the active one. `None` while there is none (an election is under way).
fn pick_node(nodes: &[VaultHealth]) -> Option<usize> {
    nodes.iter().position(|h| *h == VaultHealth::Active)
}

/// True for both 404 shapes: a never-written path (`APIError{404}`) and a deleted or destroyed
/// version (a bare `ServerResponseError{404}` with metadata in the body).
fn is_absent(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::APIError { code: 404, .. }
            | ClientError::RestClientError { source: RestError::ServerResponseError { code: 404, .. } }
    )
}

/// Vault's only signal of a mount still upgrading from KV v1 to v2 (openbao.md): its message.
const MOUNT_UPGRADING: &str = "Upgrading from non-versioned to versioned";

/// Vault's answer to a write right after a KV v1→v2 upgrade started (a fresh mount).
fn is_mount_upgrading(e: &ClientError) -> bool {
    // No typed signal exists for this state; Vault's message is the only one (openbao.md).
    matches!(e, ClientError::APIError { code: 400, errors } if errors.iter().any(|m| m.contains(MOUNT_UPGRADING)))
}

fn is_cas_mismatch(e: &ClientError) -> bool {
    // Vault reports a stale check-and-set only through this message.
    matches!(e, ClientError::APIError { code: 400, errors } if errors.iter().any(|m| m.contains("check-and-set parameter")))
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

    /// Runs one Vault call on the node in use, failing over when that node cannot serve (see
    /// the module docs). Every call goes through here.
    async fn on_cluster<T, E, F, Fut>(&self, call: F) -> std::result::Result<T, E>
    where
        E: NodeFailure,
        F: FnMut(Node) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        self.on_cluster_resending(call).await.0
    }

    /// [`Vault::on_cluster`], also saying whether the call was sent more than once (a write's
    /// first send may have landed before its node went away).
    async fn on_cluster_resending<T, E, F, Fut>(&self, mut call: F) -> (std::result::Result<T, E>, bool)
    where
        E: NodeFailure,
        F: FnMut(Node) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let deadline = tokio::time::Instant::now() + FAILOVER_WINDOW;
        let mut backoff = FAILOVER_BACKOFF.0;
        let mut resent = false;
        if self.settings.addrs.len() > 1 {
            self.confirm_active().await;
        }
        loop {
            let node = self.node();
            let result = call(node.clone()).await;
            let now = tokio::time::Instant::now();
            match result {
                Err(e) if self.settings.addrs.len() > 1 && e.node_failed() && now < deadline => {
                    match self.fail_over(&node).await {
                        Switch::Moved => {}
                        Switch::NoneUsable => {
                            tokio::time::sleep(backoff.min(deadline - now)).await;
                            backoff = (backoff * 2).min(FAILOVER_BACKOFF.1);
                        }
                        // Every node sealed or uninitialised: only an operator can help.
                        Switch::AllSealed => return (Err(e), resent),
                    }
                    resent = true;
                }
                other => return (other, resent),
            }
        }
    }

    /// Makes sure, at most every [`ACTIVE_RECHECK`], that the node in use is still the active
    /// one, and moves off it before sending when it is not.
    async fn confirm_active(&self) {
        let due = self.confirmed.lock().map_or(true, |at| at.is_none_or(|at| at.elapsed() >= ACTIVE_RECHECK));
        if !due {
            return;
        }
        let node = self.node();
        if self.probe(self.node_addr(&node)).await == VaultHealth::Active {
            self.confirm();
        } else {
            // No active node yet: the call goes out anyway and its failure drives the failover.
            let _ = self.fail_over(&node).await;
        }
    }

    /// Notes that the node in use just answered health as active.
    fn confirm(&self) {
        if let Ok(mut at) = self.confirmed.lock() {
            *at = Some(tokio::time::Instant::now());
        }
    }

    /// Moves calls off `failed` to a node that can serve, unless another call already did.
    async fn fail_over(&self, failed: &Node) -> Switch {
        let _switching = self.switching.lock().await;
        if self.node().generation != failed.generation {
            return Switch::Moved;
        }
        let nodes = self.node_health().await;
        let Some(index) = pick_node(&nodes) else {
            if nodes.iter().all(|h| matches!(h, VaultHealth::Sealed | VaultHealth::Uninitialized)) {
                return Switch::AllSealed;
            }
            tracing::debug!(nodes = ?nodes, "no vault node can serve yet");
            return Switch::NoneUsable;
        };
        let addr = &self.settings.addrs[index];
        let Ok(client) = build_client(addr, self.token().expose_secret(), self.settings.timeout) else {
            return Switch::NoneUsable;
        };
        // The same node again (a passing 5xx): resend there, after a pause.
        let moved = index != failed.index;
        if let Ok(mut n) = self.node.write() {
            *n = Node { index, generation: failed.generation + 1, client: Arc::new(client) };
        }
        self.confirm();
        if moved {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("smtp_vault_vault_failovers_total").increment(1);
            tracing::warn!(from = %self.node_addr(failed), to = %addr, health = nodes[index].as_str(), "vault node cannot serve; failed over");
            Switch::Moved
        } else {
            Switch::NoneUsable
        }
    }

    /// Each configured node's `sys/health`, in `VAULT_ADDR` order.
    pub async fn node_health(&self) -> Vec<VaultHealth> {
        futures_util::future::join_all(self.settings.addrs.iter().map(|addr| self.probe(addr))).await
    }

    async fn probe(&self, addr: &str) -> VaultHealth {
        let url = format!("{}/v1/sys/health", addr.trim_end_matches('/'));
        let status = self.http.get(url).timeout(PROBE_TIMEOUT.min(self.settings.timeout)).send().await;
        health_from_status(status.ok().map(|r| r.status().as_u16()))
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

    /// The cluster's health from each node's `GET /v1/sys/health` status code (vaultrs' own call
    /// fails on OpenBao): active when any node is, and so on down (one usable node serves all).
    pub async fn health(&self) -> VaultHealth {
        cluster_health(&self.node_health().await)
    }

    fn path(tenant: &TenantId) -> String {
        format!("{tenant}/admin")
    }

    /// Reads a tenant's current document, or `None` if it has none (never written, deleted or
    /// destroyed).
    ///
    /// # Errors
    /// [`Error::Vault`], [`Error::VaultSealed`], or [`Error::MalformedSecret`] when the data is
    /// not a credential document.
    pub async fn read_credential(&self, tenant: &TenantId) -> Result<Option<VersionedDocument>> {
        Ok(self.read_doc(&Self::path(tenant)).await?.map(|(document, version)| VersionedDocument { document, version }))
    }

    /// Reads the in-flight rotation of a tenant, if any, with its KV version.
    ///
    /// # Errors
    /// Vault errors, [`Error::MalformedSecret`].
    pub async fn read_pending(&self, tenant: &TenantId) -> Result<Option<(PendingDocument, u64)>> {
        self.read_doc(&Self::pending_path(tenant)).await
    }

    /// Writes the in-flight rotation with check-and-set (0 = must not exist); returns the version.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another writer changed it first.
    pub async fn write_pending(&self, tenant: &TenantId, pending: &PendingDocument, cas: u64) -> Result<u64> {
        self.write_doc(&Self::pending_path(tenant), pending, cas).await
    }

    /// Removes the in-flight rotation record entirely (all its versions).
    ///
    /// # Errors
    /// Vault errors (an absent record is fine).
    pub async fn delete_pending(&self, tenant: &TenantId) -> Result<()> {
        let path = Self::pending_path(tenant);
        let mount = self.settings.mount.as_str();
        match self
            .on_cluster(|node| {
                let path = path.as_str();
                async move { vaultrs::kv2::delete_metadata(node.client.as_ref(), mount, path).await }
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(vault_error("dropping pending rotation", e)),
        }
    }

    fn pending_path(tenant: &TenantId) -> String {
        format!("{tenant}/pending")
    }

    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "vault_read", skip_all)]
    async fn read_doc<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<(T, u64)>> {
        let read = self
            .on_cluster(|node| {
                let request =
                    ReadSecretRequest { mount: self.settings.mount.clone(), path: path.to_owned(), version: None };
                async move { vaultrs::api::exec_with_result(node.client.as_ref(), request).await }
            })
            .await;
        match read {
            Ok(response) => {
                let document = serde_json::from_value(response.data).map_err(|_| Error::MalformedSecret {
                    path: format!("{}/{path}", self.settings.mount),
                    problem: "fields missing or of the wrong type",
                })?;
                Ok(Some((document, response.metadata.version)))
            }
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(vault_error("reading secret", e)),
        }
    }

    /// The current KV version from metadata (0 when the path was never written).
    ///
    /// # Errors
    /// Vault errors.
    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "vault_metadata", skip_all)]
    pub async fn metadata_version(&self, tenant: &TenantId) -> Result<u64> {
        let path = Self::path(tenant);
        let mount = self.settings.mount.as_str();
        let read = self
            .on_cluster(|node| {
                let path = path.as_str();
                async move { vaultrs::kv2::read_metadata(node.client.as_ref(), mount, path).await }
            })
            .await;
        match read {
            Ok(meta) => Ok(meta.current_version),
            Err(e) if is_absent(&e) => Ok(0),
            Err(e) => Err(vault_error("reading credential metadata", e)),
        }
    }

    /// Writes a tenant's document with check-and-set: `cas` is the version the caller read
    /// (0 = the path must not exist yet). Returns the new version.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another writer got there first; Vault errors otherwise.
    pub async fn write_credential(&self, tenant: &TenantId, document: &CredentialDocument, cas: u64) -> Result<u64> {
        self.write_doc(&Self::path(tenant), document, cas).await
    }

    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "vault_write", skip_all)]
    async fn write_doc<T: Serialize + Sync>(&self, path: &str, document: &T, cas: u64) -> Result<u64> {
        let cas32 = u32::try_from(cas).map_err(|_| Error::Internal("KV version beyond u32".into()))?;
        let mount = self.settings.mount.as_str();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (written, resent) = self
                .on_cluster_resending(|node| async move {
                    let options = SetSecretRequestOptions { cas: cas32 };
                    vaultrs::kv2::set_with_options(node.client.as_ref(), mount, path, document, options).await
                })
                .await;
            match written {
                Ok(meta) => return Ok(meta.version),
                // A resent write can meet its own first send, which landed before the node went
                // away: that is success, not a conflict.
                Err(e) if is_cas_mismatch(&e) => {
                    return if resent && self.holds_version(path, document, cas + 1).await? {
                        tracing::info!(path, "a resent vault write had landed before the failover");
                        Ok(cas + 1)
                    } else {
                        Err(Error::Conflict)
                    };
                }
                Err(e) if is_mount_upgrading(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(vault_error("writing credential", e)),
            }
        }
    }

    /// Tenant ids with a document under the mount. Entries that are not valid tenant ids are
    /// skipped with a warning (someone wrote there by hand).
    ///
    /// # Errors
    /// Vault errors.
    pub async fn list_tenants(&self) -> Result<Vec<TenantId>> {
        let mount = self.settings.mount.as_str();
        let listed =
            self.on_cluster(|node| async move { vaultrs::kv2::list(node.client.as_ref(), mount, "").await }).await;
        let keys = match listed {
            Ok(keys) => keys,
            Err(e) if is_absent(&e) => Vec::new(),
            Err(e) => return Err(vault_error("listing tenants", e)),
        };
        Ok(keys
            .iter()
            .filter_map(|k| {
                let id = TenantId::parse(k.trim_end_matches('/')).ok();
                if id.is_none() {
                    tracing::warn!(key = %k, "skipping a Vault entry that is not a tenant id");
                }
                id
            })
            .collect())
    }

    /// Whether `version` of `path` holds exactly `document` (envelopes carry random nonces, so
    /// only the same write produces the same data).
    async fn holds_version<T: Serialize + Sync>(&self, path: &str, document: &T, version: u64) -> Result<bool> {
        let expected = serde_json::to_value(document).map_err(|e| Error::Internal(format!("document: {e}")))?;
        let mount = self.settings.mount.as_str();
        let read = self
            .on_cluster(|node| async move {
                vaultrs::kv2::read_version::<serde_json::Value>(node.client.as_ref(), mount, path, version).await
            })
            .await;
        match read {
            Ok(found) => Ok(found == expected),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(vault_error("reading back a resent write", e)),
        }
    }

    async fn sys(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.on_cluster(|node| {
            let (method, body) = (method.clone(), body.clone());
            async move { self.sys_on(&node, method, path, body).await }
        })
        .await
    }

    async fn sys_on(
        &self,
        node: &Node,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}/v1/{path}", self.node_addr(node));
        let mut request = self.http.request(method, url).header("X-Vault-Token", self.token().expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response =
            request.send().await.map_err(|_| Error::VaultUnreachable(format!("{path}: Vault is unreachable")))?;
        let status = response.status();
        let value: serde_json::Value = if status == reqwest::StatusCode::NO_CONTENT {
            serde_json::Value::Null
        } else {
            response.json().await.unwrap_or(serde_json::Value::Null)
        };
        if status.is_success() {
            return Ok(value);
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(Error::VaultSealed);
        }
        let errors =
            value["errors"].as_array().map(|a| a.iter().filter_map(|e| e.as_str()).collect::<Vec<_>>().join("; "));
        let errors = errors.unwrap_or_default();
        if status == reqwest::StatusCode::BAD_REQUEST && errors.contains(MOUNT_UPGRADING) {
            return Err(Error::VaultMountUpgrading);
        }
        let message = format!("{path}: HTTP {}: {errors}", status.as_u16());
        if status.is_server_error() {
            return Err(Error::VaultUnreachable(message));
        }
        Err(Error::Vault(message))
    }

    /// The raft storage snapshot (gzip'd tar), with `token` when given (reading it needs
    /// `sudo`-level rights on `sys/storage/raft/snapshot`, which the console's policy lacks).
    ///
    /// # Errors
    /// [`Error::Vault`] naming the cause (not raft storage, permission denied, unreachable).
    pub async fn raft_snapshot(&self, token: Option<&SecretString>) -> Result<Vec<u8>> {
        let token = token.cloned().unwrap_or_else(|| self.token());
        self.on_cluster(|node| {
            let url = format!("{}/v1/sys/storage/raft/snapshot", self.node_addr(&node));
            let token = token.clone();
            async move {
                let response = self
                    .http
                    .get(url)
                    .header("X-Vault-Token", token.expose_secret())
                    .timeout(Duration::from_secs(300))
                    .send()
                    .await
                    .map_err(|_| Error::VaultUnreachable("raft snapshot: Vault is unreachable".into()))?;
                match response.status().as_u16() {
                    200 => Ok(response
                        .bytes()
                        .await
                        .map_err(|_| Error::VaultUnreachable("raft snapshot: cut short".into()))?
                        .to_vec()),
                    403 => Err(Error::Vault(
                        "raft snapshot: permission denied; give an operator token (VAULT_TOKEN) allowed sys/storage/raft/snapshot".into(),
                    )),
                    503 => Err(Error::VaultSealed),
                    code => Err(Error::Vault(format!("raft snapshot: HTTP {code} (is Vault on raft storage?)"))),
                }
            }
        })
        .await
    }

    /// Configures Vault for the console (idempotent): KV v2 mount, the shipped policies,
    /// AppRole and the console's role, then issues a new secret id for it.
    ///
    /// # Errors
    /// Vault errors, or [`Error::Config`] when the mount exists with another type or version.
    pub async fn setup(&self, role: &RoleSettings) -> Result<SetupReport> {
        let mount = &self.settings.mount;
        let mounts = self.sys(reqwest::Method::GET, "sys/mounts", None).await?;
        let existing = mounts.get("data").unwrap_or(&mounts).get(format!("{mount}/"));
        let mount_created = match existing {
            None => {
                let body =
                    json!({"type": "kv", "description": "smtp-vault tenant credentials", "options": {"version": "2"}});
                self.sys(reqwest::Method::POST, &format!("sys/mounts/{mount}"), Some(body)).await?;
                true
            }
            Some(m) if m["type"] == "kv" && m["options"]["version"] == "2" => false,
            Some(_) => {
                return Err(Error::Config(format!("mount `{mount}/` exists but is not KV version 2")));
            }
        };
        // Keep history for "last known good" and make every write state the version it expects.
        let config = json!({"max_versions": 20, "cas_required": true});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.sys(reqwest::Method::POST, &format!("{mount}/config"), Some(config.clone())).await {
                Ok(_) => break,
                // Same mount-upgrade window as for writes; no typed signal exists.
                Err(Error::VaultMountUpgrading) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let mut policies = Vec::new();
        for (name, template) in POLICIES {
            let text = template.replace("{{mount}}", mount);
            self.sys(reqwest::Method::PUT, &format!("sys/policies/acl/{name}"), Some(json!({"policy": text}))).await?;
            policies.push(name.to_owned());
        }
        let approle = &self.settings.approle_mount;
        let auths = self.sys(reqwest::Method::GET, "sys/auth", None).await?;
        if auths.get("data").unwrap_or(&auths).get(format!("{approle}/")).is_none() {
            self.sys(reqwest::Method::POST, &format!("sys/auth/{approle}"), Some(json!({"type": "approle"}))).await?;
        }
        let role_body = json!({
            "token_policies": [CONSOLE_ROLE],
            "token_ttl": role.token_ttl,
            "token_max_ttl": role.token_max_ttl,
            "secret_id_ttl": role.secret_id_ttl,
            "token_type": "service",
        });
        self.sys(reqwest::Method::POST, &format!("auth/{approle}/role/{CONSOLE_ROLE}"), Some(role_body)).await?;
        let role_id =
            self.sys(reqwest::Method::GET, &format!("auth/{approle}/role/{CONSOLE_ROLE}/role-id"), None).await?;
        let secret = self
            .sys(reqwest::Method::POST, &format!("auth/{approle}/role/{CONSOLE_ROLE}/secret-id"), Some(json!({})))
            .await?;
        let role_id =
            role_id["data"]["role_id"].as_str().ok_or_else(|| Error::Vault("role-id answer has no role_id".into()))?;
        let secret_id = secret["data"]["secret_id"]
            .as_str()
            .ok_or_else(|| Error::Vault("secret-id answer has no secret_id".into()))?;
        Ok(SetupReport {
            mount: mount.clone(),
            mount_created,
            policies,
            role_name: CONSOLE_ROLE.to_owned(),
            role_id: role_id.to_owned(),
            secret_id: SecretString::from(secret_id.to_owned()),
        })
    }
}

/// Token and secret-id lifetimes for the console's AppRole role (Vault duration strings).
#[derive(Debug, Clone)]
pub struct RoleSettings {
    /// Token TTL, e.g. `1h`.
    pub token_ttl: String,
    /// Token max TTL, e.g. `24h`.
    pub token_max_ttl: String,
    /// Secret id TTL; `0` = never expires.
    pub secret_id_ttl: String,
}

impl Default for RoleSettings {
    fn default() -> Self {
        Self { token_ttl: "1h".into(), token_max_ttl: "24h".into(), secret_id_ttl: "0".into() }
    }
}

/// What `vault-setup` did.
pub struct SetupReport {
    /// KV mount.
    pub mount: String,
    /// Whether the mount was created now.
    pub mount_created: bool,
    /// Policies written.
    pub policies: Vec<String>,
    /// AppRole role name.
    pub role_name: String,
    /// Role id.
    pub role_id: String,
    /// A new secret id (shown once).
    pub secret_id: SecretString,
}

#[cfg(test)]
mod tests {
    use super::*;
    use VaultHealth::{Active, Leaderless, Sealed, Standby, Uninitialized, Unreachable};

    #[test]
    fn a_document_from_before_tls_modes_means_what_the_console_did_then() {
        let stored = |port: u16, tls: Option<&str>| {
            let mut doc = json!({"username": "u", "password": "p", "smtp_host": "h", "smtp_port": port,
                "webmail_url": "w", "mailu_api_url": "a", "mailu_api_token": "t"});
            if let Some(tls) = tls {
                doc["smtp_tls"] = tls.into();
            }
            serde_json::from_value::<CredentialDocument>(doc).map(|d| d.tls()).ok()
        };
        assert_eq!(stored(465, None), Some(SmtpTls::Implicit));
        assert_eq!(stored(587, None), Some(SmtpTls::Starttls));
        assert_eq!(stored(465, Some("starttls")), Some(SmtpTls::Starttls));
        assert_eq!(stored(2465, Some("implicit")), Some(SmtpTls::Implicit));
    }

    #[test]
    fn the_cluster_is_as_good_as_its_best_node_and_standbys_alone_are_leaderless() {
        assert_eq!(cluster_health(&[Unreachable, Standby, Active]), Active);
        assert_eq!(cluster_health(&[Unreachable, Standby, Standby]), Leaderless);
        assert_eq!(cluster_health(&[Sealed, Unreachable, Uninitialized]), Sealed);
        assert_eq!(cluster_health(&[Unreachable, Unreachable]), Unreachable);
        // One configured node keeps the single-node meanings.
        assert_eq!(cluster_health(&[Standby]), Standby);
        assert_eq!(cluster_health(&[Sealed]), Sealed);
    }

    #[test]
    fn only_the_active_node_is_a_failover_target() {
        assert_eq!(pick_node(&[Unreachable, Standby, Active]), Some(2));
        assert_eq!(pick_node(&[Unreachable, Standby, Standby]), None);
        assert_eq!(pick_node(&[Sealed, Sealed]), None);
    }

    #[test]
    fn node_failures_are_outages_not_refusals() {
        let api = |code| ClientError::APIError { code, errors: vec![] };
        assert!(api(503).node_failed() && api(500).node_failed() && api(502).node_failed());
        assert!(!api(400).node_failed() && !api(403).node_failed() && !api(404).node_failed());
        let response =
            |code| ClientError::RestClientError { source: RestError::ServerResponseError { code, content: None } };
        assert!(response(500).node_failed());
        assert!(!response(404).node_failed());
        assert!(Error::VaultSealed.node_failed() && Error::VaultUnreachable("x".into()).node_failed());
        assert!(!Error::Vault("permission denied".into()).node_failed() && !Error::Conflict.node_failed());
        // The outage variants are what a batch waits out; a refusal is not.
        assert!(vault_error("t", api(500)).is_vault_outage());
        assert!(vault_error("t", api(503)).is_vault_outage());
        assert!(!vault_error("t", api(403)).is_vault_outage());
        assert!(!vault_error("t", api(400)).is_vault_outage());
    }
}
