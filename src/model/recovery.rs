//! Disaster-recovery wire types: the VPS-failure recovery request and its answer.

use super::{FieldError, SmtpTls, TenantId};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /tenants/{id}/recover`: where the tenant's mail server lives now.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone)]
pub struct RecoverTenantRequest {
    /// The replacement server's address.
    #[cfg_attr(feature = "ssr", schema(value_type = String, examples("203.0.113.7")))]
    pub new_vps_ip: std::net::IpAddr,
    /// Its Mailu admin API base URL.
    #[cfg_attr(feature = "ssr", schema(pattern = r"^https?://[^\s/?#]+\S*$", min_length = 8, max_length = 2048))]
    pub mailu_api_url: String,
    /// Its Mailu API token, when it differs from the stored one.
    #[cfg_attr(feature = "ssr", schema(value_type = Option<String>, write_only, min_length = 1, max_length = 4096))]
    pub mailu_api_token: Option<SecretString>,
    /// Its SMTP submission port, when it differs from the stored one.
    #[cfg_attr(feature = "ssr", schema(minimum = 1))]
    pub smtp_port: Option<u16>,
    /// Its SMTP TLS mode, when it differs from the stored one.
    pub smtp_tls: Option<SmtpTls>,
}

const FIELDS: [&str; 5] = ["new_vps_ip", "mailu_api_url", "mailu_api_token", "smtp_port", "smtp_tls"];

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
        let tls = match obj.remove("smtp_tls") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(
                SmtpTls::from_name(&name)
                    .ok_or_else(|| FieldError::new("smtp_tls", "must be \"implicit\" or \"starttls\""))?,
            ),
            Some(_) => return Err(FieldError::new("smtp_tls", "must be \"implicit\" or \"starttls\"")),
        };
        Ok(Self::new(&ip, &url, token, port)?.with_tls(tls))
    }

    /// The SMTP TLS mode to use from now on (`None`: keep the stored one).
    #[must_use]
    pub fn with_tls(self, smtp_tls: Option<SmtpTls>) -> Self {
        Self { smtp_tls, ..self }
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
        Ok(Self { new_vps_ip, mailu_api_url: url.to_owned(), mailu_api_token: token, smtp_port: port, smtp_tls: None })
    }
}

/// What a recovery did.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
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

/// A backup as listed (from its plaintext manifest; `None` when that is missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    /// Id (its UTC date).
    pub id: String,
    /// When it was made.
    pub created_at: Option<DateTime<Utc>>,
    /// Tenants in it.
    pub tenants: Option<usize>,
    /// Bytes.
    pub size: Option<u64>,
    /// Backup key id.
    pub key_id: Option<String>,
}

/// What a restore did, tenant by tenant in summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Backup id.
    pub backup_id: String,
    /// When the backup was made.
    pub backup_created_at: Option<DateTime<Utc>>,
    /// Journal records replayed on top.
    pub journal_records: usize,
    /// Time of the newest change restored (backup or journal).
    pub restored_up_to: Option<DateTime<Utc>>,
    /// Tenants in the restored state.
    pub tenants: usize,
    /// Written to the target.
    pub written: usize,
    /// Already identical in the target.
    pub unchanged: usize,
    /// Left alone because the target differs (use force), with the reason.
    pub skipped: Vec<(String, String)>,
    /// Read back and decrypted.
    pub verified: usize,
    /// Failed to write or verify, with the reason.
    pub failed: Vec<(String, String)>,
    /// Nothing was written.
    pub dry_run: bool,
    /// Fetching and opening.
    pub fetch_ms: u64,
    /// Writing and verifying.
    pub write_ms: u64,
    /// In all.
    pub total_ms: u64,
}

/// One drill, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    /// Id.
    pub drill_id: String,
    /// When it began.
    pub started_at: DateTime<Utc>,
    /// The backup restored.
    pub backup_id: Option<String>,
    /// Journal records replayed.
    pub journal_records: usize,
    /// Tenants restored.
    pub tenants: usize,
    /// Tenants read back and decrypted.
    pub verified: usize,
    /// Milliseconds from fetching the backup to every tenant verified.
    pub rto_ms: u64,
    /// Age of the newest lost change: 0 when the restore matches live Vault.
    pub rpo_ms: Option<u64>,
    /// Tenants whose live secret differs from the restored one.
    pub lost_changes: usize,
    /// Passed and met both targets.
    pub ok: bool,
    /// Why not, when not.
    pub problems: Vec<String>,
}

/// A restore started from the console, as its progress view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStatusView {
    /// Still running.
    pub running: bool,
    /// The backup.
    pub backup_id: String,
    /// Who started it.
    pub started_by: String,
    /// When.
    pub started_at: Option<DateTime<Utc>>,
    /// Tenants done.
    pub done: usize,
    /// Tenants in all.
    pub total: usize,
    /// The report, once finished.
    pub report: Option<RestoreReport>,
    /// Why it stopped, if it failed.
    pub error: Option<String>,
}
