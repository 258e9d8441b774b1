//! Alert events: raised by the core (rotation gave up, heartbeat drift, …) into a durable
//! outbox table with a dedupe key, so the same condition is one alert however often it is
//! seen. Delivery (email, Slack) comes with the emergency-reset issue; until then alerts are
//! visible in the UI and the database.

use crate::core::audit::Severity;
use crate::core::crypto::random_bytes;
use crate::core::db::Db;
use crate::core::error::Result;
use crate::model::TenantId;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// An alert to raise.
#[derive(Debug, Clone)]
pub struct Alert<'a> {
    /// Kind, e.g. `rotation_needs_reconcile`.
    pub kind: &'static str,
    /// How bad.
    pub severity: Severity,
    /// The tenant, if any.
    pub tenant: Option<&'a TenantId>,
    /// Same key, same alert: raised once.
    pub dedupe_key: String,
    /// One line for a person.
    pub message: String,
    /// Non-secret details.
    pub details: Value,
}

/// Raises an alert unless one with the same dedupe key exists; true when it was new.
///
/// # Errors
/// Database errors.
pub async fn raise(db: &Db, alert: Alert<'_>, now: DateTime<Utc>) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO alerts (alert_id, kind, severity, tenant_id, dedupe_key, message, details, created_at_ms, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending') ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(hex::encode(random_bytes::<8>()?.as_ref()))
    .bind(alert.kind)
    .bind(alert.severity.as_str())
    .bind(alert.tenant.map(TenantId::as_str))
    .bind(&alert.dedupe_key)
    .bind(&alert.message)
    .bind(alert.details.to_string())
    .bind(now.timestamp_millis())
    .execute(db.pool())
    .await?;
    if inserted.rows_affected() == 1 {
        tracing::warn!(kind = alert.kind, tenant = ?alert.tenant, "alert raised: {}", alert.message);
    }
    Ok(inserted.rows_affected() == 1)
}

impl crate::core::Core {
    /// The newest alerts, for any signed-in admin (and the operator).
    ///
    /// # Errors
    /// [`crate::core::Error::Unauthenticated`] / `Forbidden` for others, database errors.
    pub async fn list_alerts(&self, actor: &crate::core::Actor, limit: i64) -> Result<Vec<crate::model::AlertView>> {
        if !matches!(actor, crate::core::Actor::Admin { .. } | crate::core::Actor::Operator { .. }) {
            return Err(actor.refuse("only admins see alerts"));
        }
        let rows: Vec<(String, String, Option<String>, String, i64, String)> = sqlx::query_as(
            "SELECT kind, severity, tenant_id, message, created_at_ms, state FROM alerts ORDER BY created_at_ms DESC LIMIT $1",
        )
        .bind(limit.clamp(1, 500))
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, severity, tenant_id, message, at, state)| crate::model::AlertView {
                kind,
                severity,
                tenant_id,
                message,
                created_at: DateTime::from_timestamp_millis(at).unwrap_or_default(),
                state,
            })
            .collect())
    }
}
