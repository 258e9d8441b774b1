//! Disaster-recovery wire types: the VPS-failure recovery request and its answer.

use super::{FieldError, TenantId};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /tenants/{id}/recover`: where the tenant's mail server lives now.
#[derive(Debug, Clone)]
pub struct RecoverTenantRequest {
    /// The replacement server's address.
    pub new_vps_ip: std::net::IpAddr,
    /// Its Mailu admin API base URL.
    pub mailu_api_url: String,
    /// Its Mailu API token, when it differs from the stored one.
    pub mailu_api_token: Option<SecretString>,
    /// Its SMTP submission port, when it differs from the stored one.
    pub smtp_port: Option<u16>,
}

const FIELDS: [&str; 4] = ["new_vps_ip", "mailu_api_url", "mailu_api_token", "smtp_port"];

impl RecoverTenantRequest {
    /// Validates a parsed JSON body.
    ///
    /// # Errors
    /// The first [`FieldError`].
    pub fn from_json(body: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new("(body)", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let printable = unknown.len() <= 64 && unknown.bytes().all(|b| b.is_ascii_graphic());
            return Err(FieldError::new(if printable { unknown } else { "(unprintable)" }, "is not a known field"));
        }
        let ip = match obj.remove("new_vps_ip") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => return Err(FieldError::new("new_vps_ip", "is required")),
            Some(_) => return Err(FieldError::new("new_vps_ip", "must be a string")),
        };
        let url = match obj.remove("mailu_api_url") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => return Err(FieldError::new("mailu_api_url", "is required")),
            Some(_) => return Err(FieldError::new("mailu_api_url", "must be a string")),
        };
        let token = match obj.remove("mailu_api_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(FieldError::new("mailu_api_token", "must be a string")),
        };
        let port = match obj.remove("smtp_port") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .ok_or_else(|| FieldError::new("smtp_port", "must be 1 to 65535"))?,
            ),
            Some(_) => return Err(FieldError::new("smtp_port", "must be a number")),
        };
        Self::new(&ip, &url, token, port)
    }

    /// Validates the parts (CLI and API alike).
    ///
    /// # Errors
    /// The first [`FieldError`].
    pub fn new(ip: &str, url: &str, token: Option<String>, port: Option<u16>) -> Result<Self, FieldError> {
        let new_vps_ip =
            ip.trim().parse().map_err(|_| FieldError::new("new_vps_ip", "must be an IPv4 or IPv6 address"))?;
        let url = url.trim();
        let valid_url = (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() <= 2048
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid_url {
            return Err(FieldError::new("mailu_api_url", "must be an http(s) URL"));
        }
        let token = match token {
            Some(t) if t.is_empty() || t.len() > 4096 || t.chars().any(char::is_control) => {
                return Err(FieldError::new(
                    "mailu_api_token",
                    "must be 1 to 4096 characters without control characters",
                ));
            }
            other => other.map(SecretString::from),
        };
        if port == Some(0) {
            return Err(FieldError::new("smtp_port", "must be 1 to 65535"));
        }
        Ok(Self { new_vps_ip, mailu_api_url: url.to_owned(), mailu_api_token: token, smtp_port: port })
    }
}

/// What a recovery did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The address on record before, if any.
    pub old_address: Option<String>,
    /// The replacement server.
    pub new_address: String,
    /// Whether the admin user had to be created there.
    pub created_user: bool,
    /// The credential's KV version after recording the new server.
    pub version: u64,
    /// `notified`, `not_configured`, or `failed: …`.
    pub dns_hook: String,
    /// When it finished.
    pub recovered_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
}
