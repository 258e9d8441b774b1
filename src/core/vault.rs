//! The Vault credential store (ARCHITECTURE §3.1): login (token or AppRole) and renewal, the KV v2
//! documents at `{mount}/{tenant_id}/admin`, health, and `vault-setup`.
//!
//! Only envelopes ever reach Vault: [`CredentialDocument`] holds ciphertext text, never a
//! plaintext. Known vaultrs gaps against OpenBao are handled here (reference/openbao.md): health
//! and the `sys/` setup calls go over plain HTTP, both 404 shapes mean "absent", an empty list is
//! a 404, and writes right after a KV v2 mount retry through the mount upgrade.

use crate::core::error::{Error, Result};
use crate::model::TenantId;
use rustify::errors::ClientError as RestError;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
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
    /// Base address, e.g. `http://127.0.0.1:8200`.
    pub addr: String,
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
    /// Webmail URL.
    pub webmail_url: String,
    /// Mailu API URL.
    pub mailu_api_url: String,
    /// Envelope of the Mailu API token.
    pub mailu_api_token: String,
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

/// A logged-in Vault client for the console's mount.
pub struct Vault {
    settings: VaultSettings,
    client: RwLock<Arc<VaultClient>>,
    token: RwLock<SecretString>,
    lease: RwLock<Lease>,
    refreshes: AtomicU64,
    http: reqwest::Client,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("addr", &self.settings.addr).field("mount", &self.settings.mount).finish()
    }
}

fn vault_error(context: &str, e: ClientError) -> Error {
    match e {
        ClientError::APIError { code: 503, .. } => Error::VaultSealed,
        ClientError::APIError { code: 403, .. } => Error::Vault(format!("{context}: permission denied")),
        ClientError::APIError { code, errors } => {
            Error::Vault(format!("{context}: HTTP {code}: {}", errors.join("; ")))
        }
        ClientError::RestClientError { source: RestError::ServerResponseError { code, .. } } => {
            Error::Vault(format!("{context}: HTTP {code}"))
        }
        ClientError::RestClientError { .. } => Error::Vault(format!("{context}: Vault is unreachable")),
        other => Error::Vault(format!("{context}: {other}")),
    }
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

/// Vault's answer to a write right after a KV v1→v2 upgrade started (a fresh mount).
fn is_mount_upgrading(e: &ClientError) -> bool {
    // No typed signal exists for this state; Vault's message is the only one (openbao.md).
    matches!(e, ClientError::APIError { code: 400, errors } if errors.iter().any(|m| m.contains("Upgrading from non-versioned to versioned")))
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
    /// Logs in and returns a ready client.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad address, [`Error::Vault`]/[`Error::VaultSealed`] when Vault
    /// refuses the credentials or cannot be reached.
    pub async fn connect(settings: VaultSettings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        let (client, token, lease) = Self::login(&settings).await?;
        Ok(Self {
            settings,
            client: RwLock::new(Arc::new(client)),
            token: RwLock::new(token),
            lease: RwLock::new(lease),
            refreshes: AtomicU64::new(0),
            http,
        })
    }

    async fn login(settings: &VaultSettings) -> Result<(VaultClient, SecretString, Lease)> {
        match &settings.auth {
            VaultAuth::Token(token) => {
                let client = build_client(&settings.addr, token.expose_secret(), settings.timeout)?;
                let info = client.lookup().await.map_err(|e| vault_error("VAULT_TOKEN lookup", e))?;
                let lease = Lease { ttl: Duration::from_secs(info.ttl), renewable: info.renewable.unwrap_or(false) };
                Ok((client, token.clone(), lease))
            }
            VaultAuth::AppRole { role_id, secret_id } => {
                let anonymous = build_client(&settings.addr, "", settings.timeout)?;
                let auth = vaultrs::auth::approle::login(
                    &anonymous,
                    &settings.approle_mount,
                    role_id,
                    secret_id.expose_secret(),
                )
                .await
                .map_err(|e| vault_error("AppRole login", e))?;
                let token = SecretString::from(auth.client_token);
                let client = build_client(&settings.addr, token.expose_secret(), settings.timeout)?;
                Ok((client, token, Lease { ttl: Duration::from_secs(auth.lease_duration), renewable: auth.renewable }))
            }
        }
    }

    fn client(&self) -> Arc<VaultClient> {
        self.client.read().map_or_else(|p| Arc::clone(&p.into_inner()), |c| Arc::clone(&c))
    }

    fn token(&self) -> SecretString {
        self.token.read().map_or_else(|p| p.into_inner().clone(), |t| t.clone())
    }

    /// The KV mount in use.
    #[must_use]
    pub fn mount(&self) -> &str {
        &self.settings.mount
    }

    /// The Vault address.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.settings.addr
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
            match self.client().renew(None).await {
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
        let (client, token, lease) = Self::login(&self.settings).await?;
        if let Ok(mut c) = self.client.write() {
            *c = Arc::new(client);
        }
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
        self.set_lease(lease);
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

    /// `GET /v1/sys/health` by status code (vaultrs' own call fails on OpenBao).
    pub async fn health(&self) -> VaultHealth {
        let url = format!("{}/v1/sys/health", self.settings.addr.trim_end_matches('/'));
        match self.http.get(url).send().await.map(|r| r.status().as_u16()) {
            Ok(200) => VaultHealth::Active,
            Ok(429 | 472 | 473) => VaultHealth::Standby,
            Ok(501) => VaultHealth::Uninitialized,
            Ok(503) => VaultHealth::Sealed,
            _ => VaultHealth::Unreachable,
        }
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
        match vaultrs::kv2::delete_metadata(self.client().as_ref(), &self.settings.mount, &Self::pending_path(tenant))
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

    async fn read_doc<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<(T, u64)>> {
        let request = ReadSecretRequest::builder()
            .mount(self.settings.mount.as_str())
            .path(path)
            .build()
            .map_err(|e| Error::Internal(format!("read request: {e}")))?;
        match vaultrs::api::exec_with_result(self.client().as_ref(), request).await {
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
    pub async fn metadata_version(&self, tenant: &TenantId) -> Result<u64> {
        match vaultrs::kv2::read_metadata(self.client().as_ref(), &self.settings.mount, &Self::path(tenant)).await {
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

    async fn write_doc<T: Serialize + Sync>(&self, path: &str, document: &T, cas: u64) -> Result<u64> {
        let cas = u32::try_from(cas).map_err(|_| Error::Internal("KV version beyond u32".into()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let written = vaultrs::kv2::set_with_options(
                self.client().as_ref(),
                &self.settings.mount,
                path,
                document,
                SetSecretRequestOptions { cas },
            )
            .await;
            match written {
                Ok(meta) => return Ok(meta.version),
                Err(e) if is_cas_mismatch(&e) => return Err(Error::Conflict),
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
        let keys = match vaultrs::kv2::list(self.client().as_ref(), &self.settings.mount, "").await {
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

    async fn sys(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let url = format!("{}/v1/{path}", self.settings.addr.trim_end_matches('/'));
        let mut request = self.http.request(method, url).header("X-Vault-Token", self.token().expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|_| Error::Vault(format!("{path}: Vault is unreachable")))?;
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
        Err(Error::Vault(format!("{path}: HTTP {}: {}", status.as_u16(), errors.unwrap_or_default())))
    }

    /// The raft storage snapshot (gzip'd tar), with `token` when given (reading it needs
    /// `sudo`-level rights on `sys/storage/raft/snapshot`, which the console's policy lacks).
    ///
    /// # Errors
    /// [`Error::Vault`] naming the cause (not raft storage, permission denied, unreachable).
    pub async fn raft_snapshot(&self, token: Option<&SecretString>) -> Result<Vec<u8>> {
        let url = format!("{}/v1/sys/storage/raft/snapshot", self.settings.addr.trim_end_matches('/'));
        let token = token.cloned().unwrap_or_else(|| self.token());
        let response = self
            .http
            .get(url)
            .header("X-Vault-Token", token.expose_secret())
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|_| Error::Vault("raft snapshot: Vault is unreachable".into()))?;
        match response.status().as_u16() {
            200 => Ok(response.bytes().await.map_err(|_| Error::Vault("raft snapshot: cut short".into()))?.to_vec()),
            403 => Err(Error::Vault(
                "raft snapshot: permission denied; give an operator token (VAULT_TOKEN) allowed sys/storage/raft/snapshot".into(),
            )),
            code => Err(Error::Vault(format!("raft snapshot: HTTP {code} (is Vault on raft storage?)"))),
        }
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
                Err(Error::Vault(m)) if m.contains("Upgrading") && tokio::time::Instant::now() < deadline => {
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
