//! Incident-response wire types: the emergency-reset request and its receipt, incidents with
//! their review, and alerts with their delivery state per channel.

use super::{FieldError, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST …/emergency-reset` body: the caller's incident id and why.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyResetRequest {
    /// The incident in the caller's tracker, e.g. `INC-2041`.
    #[cfg_attr(feature = "ssr", schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:/#-]+$"))]
    pub incident_id: String,
    /// Why the credential is considered compromised.
    #[cfg_attr(feature = "ssr", schema(min_length = 3, max_length = 1000))]
    pub reason: String,
}

impl EmergencyResetRequest {
    /// Longest accepted reason, in characters.
    pub const MAX_REASON: usize = 1000;

    /// Validates the fields (trimmed).
    ///
    /// # Errors
    /// The first [`FieldError`]: an incident id of 1–64 characters from `A-Z a-z 0-9 . _ : / # -`,
    /// a reason of 3–1000 characters without control characters other than line breaks.
    pub fn new(incident_id: &str, reason: &str) -> Result<Self, FieldError> {
        let incident_id = incident_id.trim();
        if incident_id.is_empty()
            || incident_id.chars().count() > 64
            || !incident_id.chars().all(|c| c.is_ascii_alphanumeric() || "._:/#-".contains(c))
        {
            return Err(FieldError::new(
                "incident_id",
                "must be 1 to 64 characters of letters, digits and . _ : / # -",
            ));
        }
        let reason = reason.trim();
        let length = reason.chars().count();
        if !(3..=Self::MAX_REASON).contains(&length) || reason.chars().any(|c| c.is_control() && c != '\n') {
            return Err(FieldError::new("reason", "must be 3 to 1000 characters without control characters"));
        }
        Ok(Self { incident_id: incident_id.to_owned(), reason: reason.to_owned() })
    }

    /// Validates a parsed JSON body.
    ///
    /// # Errors
    /// The first [`FieldError`]: unknown fields, missing or wrong-typed ones, then [`Self::new`].
    pub fn from_json(body: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new("(body)", "must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !["incident_id", "reason"].contains(&k.as_str())) {
            let printable = unknown.len() <= 64 && unknown.bytes().all(|b| b.is_ascii_graphic());
            return Err(FieldError::new(if printable { unknown } else { "(unprintable)" }, "is not a known field"));
        }
        let take = |obj: &mut Map<String, Value>, field: &str| match obj.remove(field) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
            Some(_) => Err(FieldError::new(field, "must be a string")),
        };
        let incident_id = take(&mut obj, "incident_id")?;
        let reason = take(&mut obj, "reason")?;
        Self::new(&incident_id, &reason)
    }
}

/// How long each part of a reset took, in milliseconds.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetTimings {
    /// Grants revoked, incident opened, security alert queued (one transaction).
    pub contain_ms: u64,
    /// The staged rotation, including the SMTP login checks.
    pub rotation_ms: u64,
    /// The whole reset.
    pub total_ms: u64,
}

/// What an emergency reset did.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyResetReceipt {
    /// The console's incident record.
    pub incident: String,
    /// The caller's incident id.
    pub incident_id: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// `rotated`.
    pub result: String,
    /// The new KV version of the credential.
    pub new_version: u64,
    /// Reveal windows closed.
    pub grants_revoked: u32,
    /// When the reset began.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Durations.
    pub timings: ResetTimings,
    /// Who is being told, per alert and channel, with the state at the time of the answer.
    pub notified: Vec<DeliveryView>,
}

/// One alert's delivery on one channel.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryView {
    /// `email` or `slack`.
    pub channel: String,
    /// Addresses, or `Slack`.
    pub recipient: String,
    /// pending | delivered | dead.
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it arrived.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// An alert as listed, with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    /// Id.
    pub alert_id: String,
    /// Kind, e.g. `rotation_needs_reconcile`.
    pub kind: String,
    /// info | warning | critical.
    pub severity: String,
    /// Tenant, if any.
    pub tenant_id: Option<String>,
    /// One line for a person.
    pub message: String,
    /// Raised at.
    pub created_at: DateTime<Utc>,
    /// pending | delivered | dead | no_recipient.
    pub state: String,
    /// security | tenant.
    pub audience: String,
    /// Per channel.
    pub deliveries: Vec<DeliveryView>,
    /// Who acknowledged it, if anyone.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// An alert kind and when it fires, as configured (the Alerts page's rule table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRuleView {
    /// Alert kind.
    pub kind: String,
    /// info | warning | critical.
    pub severity: String,
    /// When it fires, with the thresholds in effect.
    pub condition: String,
    /// Who receives it: `security` or `tenant`.
    pub audience: String,
    /// False when switched off (`SMTP_VAULT_RULES_OFF`).
    pub enabled: bool,
}

/// One step in an incident's history (from the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEventView {
    /// When.
    pub at: DateTime<Utc>,
    /// Event type.
    pub event: String,
    /// Who.
    pub actor: String,
    /// info | warning | critical.
    pub severity: String,
}

/// An incident opened by an emergency reset, with its review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentView {
    /// The console's id.
    pub incident: String,
    /// The caller's incident id.
    pub incident_id: String,
    /// The tenant.
    pub tenant_id: String,
    /// Why.
    pub reason: String,
    /// Who reset.
    pub opened_by: String,
    /// When.
    pub opened_at: DateTime<Utc>,
    /// open | acknowledged.
    pub state: String,
    /// rotating | rotated | rotation_failed.
    pub outcome: String,
    /// The new version, once rotated.
    pub new_version: Option<i64>,
    /// Reveal windows closed.
    pub grants_revoked: i64,
    /// When the reset finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Who acknowledged.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Their note.
    pub ack_note: Option<String>,
    /// Unacknowledged past the limit.
    pub overdue: bool,
    /// Whether the caller opened it (and so may not acknowledge it).
    pub opened_by_caller: bool,
    /// Audit events about it, oldest first.
    pub history: Vec<IncidentEventView>,
    /// `emergency_reset`, or `exposure_sweep` (then `tenant_id` is empty and `sweep` lists them).
    pub kind: String,
    /// Whose exposure a sweep rotates (`admin alice@example.com`, `token tok_…`).
    pub subject: Option<String>,
    /// A sweep's tenants and how each ended (empty for a reset).
    pub sweep: Vec<SweepTenantView>,
}

/// Whose exposure a sweep rotates: an admin (by login email) or a service token (by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepSubject {
    /// Every tenant whose password this admin had a reveal window for.
    Admin(String),
    /// Every tenant whose password this token read.
    Token(String),
}

impl SweepSubject {
    /// How it is shown and recorded.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            SweepSubject::Admin(email) => format!("admin {email}"),
            SweepSubject::Token(id) => format!("token {id}"),
        }
    }
}

/// The body of `POST /api/v1/sweeps` as sent: exactly one of `admin_email` and `token_id`
/// ([`SweepRequest::from_json`] reads it; this type only describes it in the OpenAPI document).
#[cfg(feature = "ssr")]
#[derive(utoipa::ToSchema)]
#[expect(dead_code, reason = "a schema: never built, only described")]
pub struct SweepBody {
    /// The admin whose reveal windows count (their login email); or `token_id`.
    #[schema(max_length = 254)]
    admin_email: Option<String>,
    /// The service token whose reads count; or `admin_email`.
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    token_id: Option<String>,
    /// Only exposure at or after this (a date or an RFC 3339 time).
    since: Option<String>,
    /// The caller's incident id.
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9._:/#-]*$")]
    incident_id: Option<String>,
    /// Why (default: names the subject).
    #[schema(max_length = 1000)]
    reason: Option<String>,
    /// List only, rotate nothing (default false).
    dry_run: Option<bool>,
}

/// An exposure sweep as asked for: whose exposure, from when, why, and whether only to list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRequest {
    /// Whose exposure.
    pub subject: SweepSubject,
    /// Only exposure at or after this instant counts (besides the tenant's last rotation).
    pub since: Option<DateTime<Utc>>,
    /// The caller's incident id (a generated one when absent).
    pub incident_id: Option<String>,
    /// Why (recorded with the incident and sent to security).
    pub reason: String,
    /// List the tenants, rotate nothing.
    pub dry_run: bool,
}

impl SweepRequest {
    /// Validates the fields (trimmed); an empty reason becomes a default naming the subject.
    ///
    /// # Errors
    /// The first [`FieldError`]: an empty subject, or the incident id and reason rules of
    /// [`EmergencyResetRequest::new`].
    pub fn new(
        subject: SweepSubject,
        since: Option<DateTime<Utc>>,
        incident_id: Option<&str>,
        reason: &str,
        dry_run: bool,
    ) -> Result<Self, FieldError> {
        let subject = match subject {
            SweepSubject::Admin(email) if email.trim().contains('@') && email.trim().len() <= 254 => {
                SweepSubject::Admin(email.trim().to_lowercase())
            }
            SweepSubject::Admin(_) => return Err(FieldError::new("admin_email", "must be an admin's login email")),
            SweepSubject::Token(id)
                if !id.trim().is_empty()
                    && id.trim().len() <= 64
                    && id.trim().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                SweepSubject::Token(id.trim().to_owned())
            }
            SweepSubject::Token(_) => return Err(FieldError::new("token_id", "must be a service token's id")),
        };
        let reason = match reason.trim() {
            "" => format!("exposure sweep of {}", subject.label()),
            given => given.to_owned(),
        };
        let reference = incident_id.map(str::trim).filter(|i| !i.is_empty()).unwrap_or("sweep");
        let checked = EmergencyResetRequest::new(reference, &reason)?;
        Ok(Self {
            subject,
            since,
            incident_id: incident_id.map(str::trim).filter(|i| !i.is_empty()).map(|_| checked.incident_id),
            reason: checked.reason,
            dry_run,
        })
    }

    /// Reads a lower bound: an RFC 3339 time or a date (its midnight UTC); empty for none.
    ///
    /// # Errors
    /// A [`FieldError`] on `since`.
    pub fn parse_since(text: &str) -> Result<Option<DateTime<Utc>>, FieldError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| Some(t.and_utc()))
            .ok_or_else(|| {
                FieldError::new("since", "must be a date (2026-12-01) or an RFC 3339 time (2026-12-01T09:00:00Z)")
            })
    }

    /// Validates a parsed JSON body: exactly one of `admin_email` and `token_id`, optional
    /// `since` (RFC 3339), `incident_id`, `reason`, `dry_run`.
    ///
    /// # Errors
    /// The first [`FieldError`].
    pub fn from_json(body: Value) -> Result<Self, FieldError> {
        let Value::Object(mut obj) = body else {
            return Err(FieldError::new("(body)", "must be a JSON object"));
        };
        const KNOWN: [&str; 6] = ["admin_email", "token_id", "since", "incident_id", "reason", "dry_run"];
        if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            let printable = unknown.len() <= 64 && unknown.bytes().all(|b| b.is_ascii_graphic());
            return Err(FieldError::new(if printable { unknown } else { "(unprintable)" }, "is not a known field"));
        }
        let text = |obj: &mut Map<String, Value>, field: &str| match obj.remove(field) {
            Some(Value::String(s)) => Ok(Some(s)),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(FieldError::new(field, "must be a string")),
        };
        let subject = match (text(&mut obj, "admin_email")?, text(&mut obj, "token_id")?) {
            (Some(email), None) => SweepSubject::Admin(email),
            (None, Some(id)) => SweepSubject::Token(id),
            _ => return Err(FieldError::new("admin_email", "give exactly one of admin_email and token_id")),
        };
        let since = match text(&mut obj, "since")? {
            None => None,
            Some(t) => Self::parse_since(&t)?,
        };
        let incident_id = text(&mut obj, "incident_id")?;
        let reason = text(&mut obj, "reason")?.unwrap_or_default();
        let dry_run = match obj.remove("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(FieldError::new("dry_run", "must be true or false")),
        };
        Self::new(subject, since, incident_id.as_deref(), &reason, dry_run)
    }
}

/// One tenant of a sweep: when the subject last saw its current password, and what the sweep
/// did about it.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepTenantView {
    /// The tenant.
    pub tenant_id: String,
    /// The subject's last exposure to the current password (a window open, a read).
    pub exposed_at: DateTime<Utc>,
    /// exposed (dry run) | pending | rotated | failed.
    pub outcome: String,
    /// The new KV version, once rotated.
    pub new_version: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What a sweep found (a dry run) or did.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepView {
    /// The console's incident record (none for a dry run or when nothing was exposed).
    pub incident: Option<String>,
    /// Whose exposure.
    pub subject: String,
    /// The lower bound asked for.
    pub since: Option<DateTime<Utc>>,
    /// Nothing was rotated: the list is what a sweep would rotate.
    pub dry_run: bool,
    /// The tenants.
    pub tenants: Vec<SweepTenantView>,
    /// How many were rotated.
    pub rotated: usize,
    /// How many could not be (the incident says so and security was alerted).
    pub failed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_requests_name_exactly_one_subject_and_a_valid_time() {
        let ok = SweepRequest::from_json(serde_json::json!({"admin_email": " Bob@Example.com ", "dry_run": true}));
        let ok = ok.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok.subject, SweepSubject::Admin("bob@example.com".into()));
        assert_eq!(ok.reason, "exposure sweep of admin bob@example.com");
        assert!(ok.dry_run && ok.incident_id.is_none());
        let field = |body: Value| SweepRequest::from_json(body).err().map(|e| e.field);
        assert_eq!(field(serde_json::json!({})).as_deref(), Some("admin_email"));
        assert_eq!(field(serde_json::json!({"admin_email": "a@b", "token_id": "t"})).as_deref(), Some("admin_email"));
        assert_eq!(field(serde_json::json!({"admin_email": "nobody"})).as_deref(), Some("admin_email"));
        assert_eq!(field(serde_json::json!({"token_id": "t x"})).as_deref(), Some("token_id"));
        assert_eq!(field(serde_json::json!({"token_id": "t", "since": "yesterday"})).as_deref(), Some("since"));
        assert_eq!(field(serde_json::json!({"token_id": "t", "dry_run": "yes"})).as_deref(), Some("dry_run"));
        assert_eq!(field(serde_json::json!({"token_id": "t", "incident_id": "a b"})).as_deref(), Some("incident_id"));
        assert_eq!(field(serde_json::json!({"token_id": "t", "what": 1})).as_deref(), Some("what"));
    }

    #[test]
    fn reset_requests_are_validated() {
        let ok = EmergencyResetRequest::from_json(serde_json::json!({"incident_id": " INC-1 ", "reason": " leaked "}));
        assert_eq!(ok.map(|r| (r.incident_id, r.reason)), Ok(("INC-1".into(), "leaked".into())));
        let field = |body: Value| EmergencyResetRequest::from_json(body).err().map(|e| e.field);
        assert_eq!(
            field(serde_json::json!({"incident_id": "INC 1", "reason": "leaked"})).as_deref(),
            Some("incident_id")
        );
        assert_eq!(field(serde_json::json!({"incident_id": "", "reason": "leaked"})).as_deref(), Some("incident_id"));
        assert_eq!(field(serde_json::json!({"incident_id": "I", "reason": "no"})).as_deref(), Some("reason"));
        assert_eq!(field(serde_json::json!({"incident_id": "I", "reason": "a\u{7}bc"})).as_deref(), Some("reason"));
        assert_eq!(field(serde_json::json!({"incident_id": "I"})).as_deref(), Some("reason"));
        assert_eq!(field(serde_json::json!({"incident_id": 5, "reason": "abc"})).as_deref(), Some("incident_id"));
        assert_eq!(field(serde_json::json!({"incident_id": "I", "reason": "abc", "x": 1})).as_deref(), Some("x"));
        assert_eq!(field(serde_json::json!([])).as_deref(), Some("(body)"));
    }
}
