//! `vault-setup` (the KV mount, the shipped policies, the console's AppRole), the raw `sys`
//! calls it and the raft snapshot use.

use super::{MOUNT_UPGRADING, Node, Vault};
use crate::core::error::{Error, Result};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::time::Duration;

/// Name of the console's policy and AppRole role.
pub const CONSOLE_ROLE: &str = "smtp-vault-console";
/// The shipped policies: (name, HCL template with `{{mount}}`).
pub const POLICIES: [(&str, &str); 3] = [
    ("smtp-vault-console", include_str!("../../../vault/policies/smtp-vault-console.hcl")),
    ("smtp-vault-backup", include_str!("../../../vault/policies/smtp-vault-backup.hcl")),
    ("smtp-vault-reviewer", include_str!("../../../vault/policies/smtp-vault-reviewer.hcl")),
];

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

impl Vault {
    pub(super) async fn sys(
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

    pub(super) async fn sys_on(
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

impl Vault {
    /// What this console's own token may do on each of `paths` (`sys/capabilities-self`).
    ///
    /// # Errors
    /// Vault errors.
    pub async fn capabilities_self(&self, paths: &[String]) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
        let answer =
            self.sys(reqwest::Method::POST, "sys/capabilities-self", Some(serde_json::json!({"paths": paths}))).await?;
        let body = answer.get("data").unwrap_or(&answer);
        Ok(paths
            .iter()
            .map(|p| {
                let caps = body[p.as_str()]
                    .as_array()
                    .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                (p.clone(), caps)
            })
            .collect())
    }

    /// Revokes this client's own token (`auth/token/revoke-self`): the doctor's AppRole login.
    ///
    /// # Errors
    /// Vault errors.
    pub async fn revoke_own_token(&self) -> Result<()> {
        self.sys(reqwest::Method::POST, "auth/token/revoke-self", None).await.map(|_| ())
    }

    /// The console policy as shipped, for `mount`: each path pattern with its capabilities.
    #[must_use]
    pub fn console_policy(mount: &str) -> Vec<(String, Vec<String>)> {
        let text = POLICIES
            .iter()
            .find(|(n, _)| *n == "smtp-vault-console")
            .map_or("", |(_, t)| t)
            .replace("{{mount}}", mount);
        let mut out = Vec::new();
        let mut path = None;
        for line in text.lines().map(str::trim) {
            if let Some(p) = line.strip_prefix("path \"").and_then(|r| r.split('"').next()) {
                path = Some(p.to_owned());
            } else if let (Some(p), Some(list)) = (&path, line.strip_prefix("capabilities = [")) {
                let caps =
                    list.trim_end_matches(']').split(',').map(|c| c.trim().trim_matches('"').to_owned()).collect();
                out.push((p.clone(), caps));
                path = None;
            }
        }
        out
    }
}
