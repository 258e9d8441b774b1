//! Credential wire types: the store request (validated field by field, never echoing values),
//! metadata views and the one view that carries a plaintext password.

use super::TenantId;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// Where a tenant's credential stands in its life cycle.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    /// Stored and believed to work.
    Active,
    /// A rotation is in flight (a pending password exists).
    Rotating,
    /// Rotation gave up after its retries; a person must look.
    NeedsReconcile,
    /// The heartbeat found the stored password refused by the mail server.
    Drifted,
}

impl CredentialState {
    /// The snake_case name used on the wire and in the database.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialState::Active => "active",
            CredentialState::Rotating => "rotating",
            CredentialState::NeedsReconcile => "needs_reconcile",
            CredentialState::Drifted => "drifted",
        }
    }

    /// Parses the database/wire name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Active, Self::Rotating, Self::NeedsReconcile, Self::Drifted].into_iter().find(|s| s.as_str() == name)
    }
}

/// How the console speaks TLS to a tenant's SMTP submission port: stored with the credential,
/// never guessed at connection time (Mailu 2024.06 ships 465 with implicit TLS and 587 closed;
/// a server may put either mode on any port).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// TLS from the first byte (SMTPS, RFC 8314), as on Mailu's port 465.
    Implicit,
    /// Plain connection upgraded with STARTTLS, which must succeed (never plaintext AUTH).
    Starttls,
}

impl SmtpTls {
    /// The wire and database name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SmtpTls::Implicit => "implicit",
            SmtpTls::Starttls => "starttls",
        }
    }

    /// Parses the wire and database name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Implicit, Self::Starttls].into_iter().find(|m| m.as_str() == name)
    }

    /// The mode a request that names none gets, and a credential stored before modes were
    /// recorded had: implicit TLS on 465, STARTTLS elsewhere (what the console always did, so
    /// existing callers keep working; the result is stored, not re-derived).
    #[must_use]
    pub const fn default_for_port(port: u16) -> Self {
        if port == 465 { SmtpTls::Implicit } else { SmtpTls::Starttls }
    }

    /// How it reads in the UI.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            SmtpTls::Implicit => "implicit TLS",
            SmtpTls::Starttls => "STARTTLS",
        }
    }
}

/// A field of a request body that is missing, of the wrong type, or out of range.
///
/// SECURITY: the message names the field and the rule, never the value sent, because the value
/// may be a password put in the wrong place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct FieldError {
    /// The field's name (or a placeholder for an unknown field with an unprintable name).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FieldError {
    pub(crate) fn new(field: &str, problem: impl Into<String>) -> Self {
        Self { field: field.to_owned(), problem: problem.into() }
    }
}

/// `PUT /tenants/{id}/smtp-credentials`: a credential handed over during Mailu setup.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct StoreCredentialRequest {
    /// SMTP login, usually the admin's mail address.
    #[cfg_attr(feature = "ssr", schema(min_length = 1, max_length = 320))]
    pub username: String,
    /// The admin password, plaintext until the core encrypts it.
    #[cfg_attr(feature = "ssr", schema(value_type = String, write_only, min_length = 1, max_length = 1024))]
    pub password: SecretString,
    /// SMTP submission host.
    #[cfg_attr(feature = "ssr", schema(pattern = r"^[A-Za-z0-9.:-]+$", min_length = 1, max_length = 253))]
    pub smtp_host: String,
    /// SMTP submission port.
    #[cfg_attr(feature = "ssr", schema(minimum = 1))]
    pub smtp_port: u16,
    /// TLS mode on that port.
    #[cfg_attr(feature = "ssr", schema(required = false))]
    pub smtp_tls: SmtpTls,
    /// Webmail address shown to admins.
    #[cfg_attr(feature = "ssr", schema(pattern = r"^https?://[^\s/?#]+\S*$", min_length = 8, max_length = 2048))]
    pub webmail_url: String,
    /// Base URL of the Mailu admin API.
    #[cfg_attr(feature = "ssr", schema(pattern = r"^https?://[^\s/?#]+\S*$", min_length = 8, max_length = 2048))]
    pub mailu_api_url: String,
    /// Bearer token for the Mailu admin API.
    #[cfg_attr(feature = "ssr", schema(value_type = String, write_only, min_length = 1, max_length = 1024))]
    pub mailu_api_token: SecretString,
}

impl fmt::Debug for StoreCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCredentialRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_tls", &self.smtp_tls)
            .field("webmail_url", &self.webmail_url)
            .field("mailu_api_url", &self.mailu_api_url)
            .field("mailu_api_token", &"[redacted]")
            .finish()
    }
}

const STORE_FIELDS: [&str; 8] =
    ["username", "password", "smtp_host", "smtp_port", "smtp_tls", "webmail_url", "mailu_api_url", "mailu_api_token"];

impl StoreCredentialRequest {
    /// Longest accepted password or API token, in bytes.
    pub const MAX_SECRET_LEN: usize = 1024;

    /// Validates a parsed JSON body field by field.
    ///
    /// # Errors
    /// The first [`FieldError`] found, in contract field order: unknown fields first, then
    /// missing, wrong-typed or out-of-range ones.
    pub fn from_json(body: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new("(body)", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !STORE_FIELDS.contains(&k.as_str())) {
            return Err(FieldError::new(&printable_field_name(unknown), "is not a known field"));
        }
        let password = take_string(&mut obj, "password", Self::MAX_SECRET_LEN, true)?;
        let mailu_api_token = take_string(&mut obj, "mailu_api_token", Self::MAX_SECRET_LEN, true)?;
        let username = take_string(&mut obj, "username", 320, false)?;
        let smtp_host = take_host(&mut obj, "smtp_host")?;
        let smtp_port = take_port(&mut obj, "smtp_port")?;
        let request = Self {
            username,
            password: SecretString::from(password),
            smtp_host,
            smtp_port,
            smtp_tls: take_tls(&mut obj, smtp_port)?,
            webmail_url: take_url(&mut obj, "webmail_url")?,
            mailu_api_url: take_url(&mut obj, "mailu_api_url")?,
            mailu_api_token: SecretString::from(mailu_api_token),
        };
        Ok(request)
    }
}

fn printable_field_name(name: &str) -> String {
    let printable = name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic());
    if printable { name.to_owned() } else { "(unprintable)".to_owned() }
}

fn take_string(obj: &mut Map<String, Value>, field: &str, max_len: usize, secret: bool) -> Result<String, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(Value::String(s)) if s.is_empty() => Err(FieldError::new(field, "must not be empty")),
        Some(Value::String(s)) if s.len() > max_len => {
            Err(FieldError::new(field, format!("must be at most {max_len} bytes")))
        }
        // Control characters in a login or secret are almost always a copy/paste accident.
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            Err(FieldError::new(field, "must not contain control characters"))
        }
        Some(Value::String(s)) if !secret && s.trim() != s => {
            Err(FieldError::new(field, "must not start or end with white space"))
        }
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FieldError::new(field, "must be a string")),
    }
}

fn take_host(obj: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    let host = take_string(obj, field, 253, false)?;
    let ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    }) || host.parse::<std::net::IpAddr>().is_ok();
    if ok { Ok(host) } else { Err(FieldError::new(field, "must be a host name or IP address")) }
}

fn take_port(obj: &mut Map<String, Value>, field: &str) -> Result<u16, FieldError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n != 0)
            .ok_or_else(|| FieldError::new(field, "must be an integer from 1 to 65535")),
        Some(_) => Err(FieldError::new(field, "must be an integer from 1 to 65535")),
    }
}

/// `smtp_tls`: `implicit` or `starttls`; when absent, [`SmtpTls::default_for_port`].
fn take_tls(obj: &mut Map<String, Value>, port: u16) -> Result<SmtpTls, FieldError> {
    match obj.remove("smtp_tls") {
        None | Some(Value::Null) => Ok(SmtpTls::default_for_port(port)),
        Some(Value::String(name)) => {
            SmtpTls::from_name(&name).ok_or_else(|| FieldError::new("smtp_tls", "must be \"implicit\" or \"starttls\""))
        }
        Some(_) => Err(FieldError::new("smtp_tls", "must be \"implicit\" or \"starttls\"")),
    }
}

fn take_url(obj: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    let url = take_string(obj, field, 2048, false)?;
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host_part = rest.and_then(|r| r.split(['/', '?', '#']).next()).unwrap_or("");
    let ok = !host_part.is_empty() && !url.contains(char::is_whitespace);
    if ok { Ok(url) } else { Err(FieldError::new(field, "must be an http:// or https:// URL")) }
}

/// Which characters a generated password is drawn from.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordAlphabet {
    /// Letters and digits (62): safe in every SMTP client, configuration file, URL and shell,
    /// and in Dovecot's password databases.
    #[default]
    Alphanumeric,
    /// Letters, digits and `-_.~!*+=` (70), for servers whose policy demands a symbol; none
    /// that needs quoting in a URL, a shell or a Dovecot passdb line.
    AlphanumericSymbols,
}

impl PasswordAlphabet {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Alphanumeric => "alphanumeric",
            Self::AlphanumericSymbols => "alphanumeric_symbols",
        }
    }

    /// The alphabet of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Alphanumeric, Self::AlphanumericSymbols].into_iter().find(|a| a.as_str() == name)
    }

    /// Its characters.
    #[must_use]
    pub const fn characters(self) -> &'static [u8] {
        match self {
            Self::Alphanumeric => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Self::AlphanumericSymbols => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~!*+=",
        }
    }
}

/// How a tenant's generated passwords look (provisioning, rotation, emergency reset).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    /// Characters (20 to 128).
    pub length: u16,
    /// Drawn from.
    pub alphabet: PasswordAlphabet,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { length: 32, alphabet: PasswordAlphabet::Alphanumeric }
    }
}

impl PasswordPolicy {
    /// The shortest allowed: 20 letters and digits are 119 bits.
    pub const MIN_LENGTH: u16 = 20;
    /// The longest allowed (some clients cut longer passwords).
    pub const MAX_LENGTH: u16 = 128;

    /// A checked policy.
    ///
    /// # Errors
    /// A message naming the allowed lengths.
    pub fn new(length: u16, alphabet: PasswordAlphabet) -> Result<Self, String> {
        if (Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&length) {
            Ok(Self { length, alphabet })
        } else {
            Err(format!(
                "a generated password must be {} to {} characters long (got {length})",
                Self::MIN_LENGTH,
                Self::MAX_LENGTH
            ))
        }
    }
}

fn take_policy(obj: &mut Map<String, Value>) -> Result<Option<PasswordPolicy>, FieldError> {
    let bad = || {
        FieldError::new(
            "password_policy",
            "must be {\"length\": 20..128, \"alphabet\": \"alphanumeric\" | \"alphanumeric_symbols\"}",
        )
    };
    match obj.remove("password_policy") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(mut policy)) => {
            let length = match policy.remove("length") {
                None | Some(Value::Null) => PasswordPolicy::default().length,
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(bad)?,
                Some(_) => return Err(bad()),
            };
            let alphabet = match policy.remove("alphabet") {
                None | Some(Value::Null) => PasswordAlphabet::default(),
                Some(Value::String(name)) => PasswordAlphabet::from_name(&name).ok_or_else(bad)?,
                Some(_) => return Err(bad()),
            };
            if !policy.is_empty() {
                return Err(bad());
            }
            PasswordPolicy::new(length, alphabet).map(Some).map_err(|m| FieldError::new("password_policy", &m))
        }
        Some(_) => Err(bad()),
    }
}

/// `POST /tenants/{id}/smtp-credentials/provision`: everything but the password, which the
/// console generates.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ProvisionCredentialRequest {
    /// SMTP login (the Mailu admin user's email).
    #[cfg_attr(feature = "ssr", schema(min_length = 1, max_length = 320))]
    pub username: String,
    /// SMTP submission host.
    #[cfg_attr(feature = "ssr", schema(pattern = r"^[A-Za-z0-9.:-]+$", min_length = 1, max_length = 253))]
    pub smtp_host: String,
    /// SMTP submission port.
    #[cfg_attr(feature = "ssr", schema(minimum = 1))]
    pub smtp_port: u16,
    /// TLS mode on that port.
    #[cfg_attr(feature = "ssr", schema(required = false))]
    pub smtp_tls: SmtpTls,
    /// Webmail address.
    #[cfg_attr(feature = "ssr", schema(pattern = r"^https?://[^\s/?#]+\S*$", min_length = 8, max_length = 2048))]
    pub webmail_url: String,
    /// Mailu admin API base URL.
    #[cfg_attr(feature = "ssr", schema(pattern = r"^https?://[^\s/?#]+\S*$", min_length = 8, max_length = 2048))]
    pub mailu_api_url: String,
    /// Mailu admin API token.
    #[cfg_attr(feature = "ssr", schema(value_type = String, write_only, min_length = 1, max_length = 1024))]
    pub mailu_api_token: SecretString,
    /// How the generated password looks (default: 32 letters and digits); kept for rotations.
    pub password_policy: Option<PasswordPolicy>,
    /// Who gets the tenant's notices (rotations, resets, reveals).
    pub contact_email: Option<String>,
    /// Whether that contact is told of reveals (default: off).
    pub reveal_notice: Option<RevealNotice>,
}

impl fmt::Debug for ProvisionCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionCredentialRequest").field("username", &self.username).finish_non_exhaustive()
    }
}

const PROVISION_FIELDS: [&str; 10] = [
    "contact_email",
    "reveal_notice",
    "username",
    "smtp_host",
    "smtp_port",
    "smtp_tls",
    "webmail_url",
    "mailu_api_url",
    "mailu_api_token",
    "password_policy",
];

impl ProvisionCredentialRequest {
    /// Validates a parsed JSON body field by field.
    ///
    /// # Errors
    /// The first [`FieldError`].
    pub fn from_json(body: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new("(body)", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !PROVISION_FIELDS.contains(&k.as_str())) {
            return Err(FieldError::new(&printable_field_name(unknown), "is not a known field"));
        }
        let token = take_string(&mut obj, "mailu_api_token", StoreCredentialRequest::MAX_SECRET_LEN, true)?;
        let username = take_string(&mut obj, "username", 320, false)?;
        let smtp_host = take_host(&mut obj, "smtp_host")?;
        let smtp_port = take_port(&mut obj, "smtp_port")?;
        Ok(Self {
            username,
            smtp_host,
            smtp_port,
            smtp_tls: take_tls(&mut obj, smtp_port)?,
            webmail_url: take_url(&mut obj, "webmail_url")?,
            mailu_api_url: take_url(&mut obj, "mailu_api_url")?,
            mailu_api_token: SecretString::from(token),
            password_policy: take_policy(&mut obj)?,
            contact_email: match obj.remove("contact_email") {
                None | Some(Value::Null) => None,
                Some(Value::String(e))
                    if e.trim().contains('@') && e.trim().len() <= 254 && !e.trim().contains(char::is_whitespace) =>
                {
                    Some(e.trim().to_lowercase())
                }
                Some(_) => return Err(FieldError::new("contact_email", "must be an email address")),
            },
            reveal_notice: match obj.remove("reveal_notice") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) => Some(
                    RevealNotice::from_name(&n)
                        .ok_or_else(|| FieldError::new("reveal_notice", "must be off, category or reason"))?,
                ),
                Some(_) => return Err(FieldError::new("reveal_notice", "must be off, category or reason")),
            },
        })
    }
}

/// What a rotation request did.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// `rotated`.
    pub result: String,
    /// The new KV version.
    pub version: u64,
}

/// `POST …/smtp-credentials/revert` body: why the last rotation is undone.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertRequest {
    /// Why (recorded, sent to security).
    #[cfg_attr(feature = "ssr", schema(min_length = 3, max_length = 1000))]
    pub reason: String,
}

impl RevertRequest {
    /// Validates the reason (trimmed).
    ///
    /// # Errors
    /// A [`FieldError`] on `reason`: 3 to 1000 characters without control characters other
    /// than line breaks.
    pub fn new(reason: &str) -> Result<Self, FieldError> {
        let reason = reason.trim();
        if !(3..=1000).contains(&reason.chars().count()) || reason.chars().any(|c| c.is_control() && c != '\n') {
            return Err(FieldError::new("reason", "must be 3 to 1000 characters without control characters"));
        }
        Ok(Self { reason: reason.to_owned() })
    }

    /// Validates a parsed JSON body (`{"reason": "…"}`, nothing else).
    ///
    /// # Errors
    /// The first [`FieldError`].
    pub fn from_json(body: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new("(body)", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| k.as_str() != "reason") {
            let printable = unknown.len() <= 64 && unknown.bytes().all(|b| b.is_ascii_graphic());
            return Err(FieldError::new(if printable { unknown } else { "(unprintable)" }, "is not a known field"));
        }
        match obj.remove("reason") {
            Some(Value::String(reason)) => Self::new(&reason),
            None | Some(Value::Null) => Err(FieldError::new("reason", "is required")),
            Some(_) => Err(FieldError::new("reason", "must be a string")),
        }
    }
}

/// What a revert did: the previous password is current again, as a new version.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// `reverted`.
    pub result: String,
    /// The new KV version (holding the previous password).
    pub version: u64,
    /// The version whose password it brought back.
    pub reverted_to: u64,
}

/// Answer to a successful store.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredentialView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// KV v2 version written.
    pub version: u64,
    /// When it was stored.
    pub stored_at: DateTime<Utc>,
}

/// Credential metadata: everything but the secrets.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialMetadataView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// SMTP login.
    pub username: String,
    /// SMTP host.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// TLS mode on that port.
    pub smtp_tls: SmtpTls,
    /// Webmail address.
    pub webmail_url: String,
    /// Mailu admin API base URL.
    pub mailu_api_url: String,
    /// Current KV v2 version.
    pub version: u64,
    /// Life-cycle state.
    pub state: CredentialState,
    /// When the current version was stored.
    pub stored_at: DateTime<Utc>,
    /// When the password last changed by rotation, if ever.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When the next rotation is due.
    pub next_rotation_at: Option<DateTime<Utc>>,
}

/// A row of `GET /tenants`.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSummary {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Life-cycle state.
    pub state: CredentialState,
    /// Current KV v2 version.
    pub version: u64,
    /// When the password last changed by rotation, if ever.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When the next rotation is due.
    pub next_rotation_at: Option<DateTime<Utc>>,
}

/// The plaintext credential for a machine consumer. Its `Debug` is redacted; only `Serialize`
/// (the response body itself) exposes the password.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize)]
pub struct CredentialSecretView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// SMTP login.
    pub username: String,
    /// The plaintext password.
    #[serde(serialize_with = "expose")]
    #[cfg_attr(feature = "ssr", schema(value_type = String))]
    pub password: SecretString,
    /// SMTP host.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// TLS mode on that port: how a consumer must connect.
    pub smtp_tls: SmtpTls,
    /// KV v2 version the password came from.
    pub version: u64,
}

impl fmt::Debug for CredentialSecretView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSecretView")
            .field("tenant_id", &self.tenant_id)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "username": "admin@acme.example", "password": "s3cret-Pass!", "smtp_host": "mail.acme.example",
            "smtp_port": 587, "webmail_url": "https://mail.acme.example/webmail",
            "mailu_api_url": "https://mail.acme.example/api/v1", "mailu_api_token": "tok"
        })
    }

    #[test]
    fn the_tls_mode_is_taken_as_given_or_defaults_by_port_once() {
        let mode = |tls: Value, port: u16| {
            let mut body = valid();
            body["smtp_port"] = port.into();
            body["smtp_tls"] = tls;
            StoreCredentialRequest::from_json(body).map(|r| r.smtp_tls)
        };
        assert_eq!(mode(json!("implicit"), 4465), Ok(SmtpTls::Implicit));
        assert_eq!(mode(json!("starttls"), 465), Ok(SmtpTls::Starttls));
        assert_eq!(mode(Value::Null, 465), Ok(SmtpTls::Implicit));
        assert_eq!(mode(Value::Null, 587), Ok(SmtpTls::Starttls));
        assert_eq!(mode(json!("ssl"), 465).map_err(|e| e.field), Err("smtp_tls".to_owned()));
        assert_eq!(mode(json!(true), 465).map_err(|e| e.field), Err("smtp_tls".to_owned()));
    }

    #[test]
    fn accepts_a_complete_body() {
        let r = StoreCredentialRequest::from_json(valid());
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn names_the_bad_field_without_echoing_its_value() {
        let cases: [(&str, Value, &str); 8] = [
            ("password", Value::Null, "is required"),
            ("password", json!(12345678), "must be a string"),
            ("password", json!(""), "must not be empty"),
            ("password", json!("x".repeat(1025)), "at most 1024"),
            ("smtp_port", json!("587"), "integer"),
            ("smtp_port", json!(70000), "integer"),
            ("smtp_host", json!("bad host"), "host name"),
            ("mailu_api_url", json!("ftp://x"), "http"),
        ];
        for (field, value, expect) in cases {
            let mut body = valid();
            body[field] = value;
            let err = StoreCredentialRequest::from_json(body).err();
            let err = err.unwrap_or_else(|| panic!("{field} accepted"));
            assert_eq!(err.field, field);
            assert!(err.problem.contains(expect), "{err}");
            assert!(!err.to_string().contains("12345678"));
        }
    }

    #[test]
    fn refuses_unknown_fields_and_non_objects() {
        let mut body = valid();
        body["pasword"] = json!("typo");
        assert_eq!(StoreCredentialRequest::from_json(body).err().map(|e| e.field), Some("pasword".into()));
        assert!(StoreCredentialRequest::from_json(json!([1, 2])).is_err());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let r = StoreCredentialRequest::from_json(valid()).ok();
        let text = format!("{r:?}");
        assert!(!text.contains("s3cret-Pass!") && !text.contains("\"tok\""), "{text}");
    }
}

/// A service token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTokenSummary {
    /// Public id, the part after `svt_` and before the secret.
    pub token_id: String,
    /// Human name.
    pub name: String,
    /// Granted scopes.
    pub scopes: Vec<super::Scope>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last successful use (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One entry of a tenant's rotation history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationEventView {
    /// When.
    pub at: DateTime<Utc>,
    /// Event name (`credential_rotated`, `rotation_failed`, …).
    pub event: String,
    /// Who or what.
    pub actor: String,
    /// Non-secret details (JSON text).
    pub details: String,
}

/// A tenant's rotation state for the UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationStatusView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Life-cycle state.
    pub state: CredentialState,
    /// Failed attempts of the current or last rotation.
    pub attempts: i64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Mailu rate-limits the console for this tenant's server: its logins prove nothing until
    /// the console's address is exempted (the last error says how).
    pub rate_limited: bool,
    /// Last heartbeat.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Whether it logged in (`None`: could not tell).
    pub heartbeat_ok: Option<bool>,
    /// A deferred rotation's new date.
    pub deferred_until: Option<DateTime<Utc>>,
    /// Queued rotation notices (dates).
    pub notices: Vec<String>,
    /// Newest first.
    pub history: Vec<RotationEventView>,
}

/// Whether a tenant's contact is told when its password is revealed, and how much.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevealNotice {
    /// Not told.
    #[default]
    Off,
    /// When, which role, and the reason's category.
    Category,
    /// Also the reason as the admin wrote it (it may name internal tickets or people).
    Reason,
}

impl RevealNotice {
    /// Every choice.
    pub const ALL: [RevealNotice; 3] = [RevealNotice::Off, RevealNotice::Category, RevealNotice::Reason];

    /// Stored and wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RevealNotice::Off => "off",
            RevealNotice::Category => "category",
            RevealNotice::Reason => "reason",
        }
    }

    /// The choice of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

/// Why a password is revealed, in words a tenant may read (the reason itself is free text).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevealCategory {
    /// Helping the tenant (a support request).
    Support,
    /// Investigating an incident.
    Incident,
    /// Moving or rebuilding the tenant's mail server.
    Migration,
    /// Checking configuration or compliance.
    Audit,
    /// Anything else.
    #[default]
    Other,
}

impl RevealCategory {
    /// Every category.
    pub const ALL: [RevealCategory; 5] = [
        RevealCategory::Support,
        RevealCategory::Incident,
        RevealCategory::Migration,
        RevealCategory::Audit,
        RevealCategory::Other,
    ];

    /// Stored and wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RevealCategory::Support => "support",
            RevealCategory::Incident => "incident",
            RevealCategory::Migration => "migration",
            RevealCategory::Audit => "audit",
            RevealCategory::Other => "other",
        }
    }

    /// What the tenant reads.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            RevealCategory::Support => "support request",
            RevealCategory::Incident => "incident investigation",
            RevealCategory::Migration => "server migration or rebuild",
            RevealCategory::Audit => "configuration or compliance check",
            RevealCategory::Other => "other",
        }
    }

    /// The category of a stored name (unknown names read as `Other`).
    #[must_use]
    pub fn from_name(name: &str) -> Self {
        Self::ALL.into_iter().find(|c| c.as_str() == name).unwrap_or_default()
    }
}

/// An account with global admin rights on a tenant's Mailu, as the daily inventory found it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailuAdminView {
    /// The tenant.
    pub tenant_id: String,
    /// The account's login.
    pub email: String,
    /// `console` (the tenant's own admin login), `known` (vouched for) or `unknown`.
    pub status: String,
    /// Whether it may log in.
    pub enabled: bool,
    /// First listed.
    pub first_seen: DateTime<Utc>,
    /// Last listed.
    pub last_seen: DateTime<Utc>,
    /// No longer listed since.
    pub gone_at: Option<DateTime<Utc>>,
    /// Who vouched for it.
    pub marked_by: Option<String>,
    /// When.
    pub marked_at: Option<DateTime<Utc>>,
    /// Why.
    pub note: Option<String>,
}

/// A tenant's settings as shown (the Mailu token is write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantSettingsView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Days between rotations.
    pub rotation_period_days: u32,
    /// Who gets rotation notices.
    pub contact_email: Option<String>,
    /// Mailu admin API base URL.
    pub mailu_api_url: String,
    /// Rotate as soon as a reveal window for this tenant closes.
    pub rotate_after_reveal: bool,
    /// A reveal needs a second platform admin's approval (four eyes).
    pub reveal_approval: bool,
    /// How generated passwords look.
    pub password_policy: PasswordPolicy,
    /// Whether the contact is told of reveals.
    pub reveal_notice: RevealNotice,
}

/// Changes to a tenant's settings.
#[derive(Deserialize)]
pub struct TenantSettingsInput {
    /// Days between rotations (1-365).
    pub rotation_period_days: u32,
    /// Who gets rotation notices (empty: nobody).
    pub contact_email: Option<String>,
    /// Mailu admin API base URL.
    pub mailu_api_url: String,
    /// A new Mailu API token; empty or absent keeps the current one.
    pub mailu_api_token: Option<SecretString>,
    /// Rotate as soon as a reveal window closes.
    pub rotate_after_reveal: bool,
    /// A reveal needs a second platform admin's approval (four eyes). Absent: unchanged.
    #[serde(default)]
    pub reveal_approval: Option<bool>,
    /// How generated passwords look. Absent: unchanged.
    #[serde(default)]
    pub password_policy: Option<PasswordPolicy>,
    /// Whether the contact is told of reveals. Absent: unchanged.
    #[serde(default)]
    pub reveal_notice: Option<RevealNotice>,
}

impl TenantSettingsView {
    /// The input that leaves every setting as it is (the token untouched), to change one field.
    #[must_use]
    pub fn unchanged(&self) -> TenantSettingsInput {
        TenantSettingsInput {
            rotation_period_days: self.rotation_period_days,
            contact_email: self.contact_email.clone(),
            mailu_api_url: self.mailu_api_url.clone(),
            mailu_api_token: None,
            rotate_after_reveal: self.rotate_after_reveal,
            reveal_approval: None,
            password_policy: None,
            reveal_notice: None,
        }
    }
}

impl fmt::Debug for TenantSettingsInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSettingsInput")
            .field("rotation_period_days", &self.rotation_period_days)
            .field("mailu_api_url", &self.mailu_api_url)
            .field("mailu_api_token", &self.mailu_api_token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}
