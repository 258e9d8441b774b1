//! Incident-response wire types: the emergency-reset request and its receipt, incidents with
//! their review, and alerts with their delivery state per channel.

use super::{FieldError, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST …/emergency-reset` body: the caller's incident id and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyResetRequest {
    /// The incident in the caller's tracker, e.g. `INC-2041`.
    pub incident_id: String,
    /// Why the credential is considered compromised.
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
