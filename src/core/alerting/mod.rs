//! The alert outbox: alerts raised by the core (rotation gave up, heartbeat drift, emergency
//! resets, unacknowledged incidents, notices) are rows with a dedupe key, written in the
//! caller's transaction together with one delivery row per channel (security email, Slack, or
//! the tenant's contact). A worker sends what is due, retries with exponential backoff,
//! dead-letters after the configured number of attempts and records each outcome; nothing is
//! lost across a restart because the database is the queue. A lease on each delivery keeps two
//! consoles from sending the same one at once. Alert texts never carry a secret.

pub mod channels;
mod kinds;

mod outbox;

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::channels::Channels;
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::random_bytes;
use crate::core::error::{Error, Result};
use crate::model::Permission;
use crate::model::{AlertView, DeliveryView, TenantId};
use chrono::{DateTime, Utc};
pub use kinds::AlertKind;
pub use outbox::DeliveryReport;
use outbox::{DELIVERY_COLUMNS, DeliveryRow, delivery_view, when};
use serde_json::{Value, json};
use sqlx::AnyConnection;

/// Who an alert is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// The security team: email to the configured recipients and Slack.
    Security,
    /// The tenant's contact, by email (nothing is sent when the tenant has none).
    Tenant {
        /// The contact address on record.
        contact: Option<String>,
    },
    /// One admin, by email, about their own account (a passkey added to it).
    Admin {
        /// Their login email.
        email: String,
    },
}

impl Audience {
    fn as_str(&self) -> &'static str {
        match self {
            Audience::Security => "security",
            Audience::Tenant { .. } => "tenant",
            Audience::Admin { .. } => "admin",
        }
    }
}

/// An alert to raise.
#[derive(Debug, Clone)]
pub struct Alert<'a> {
    /// What kind of alert.
    pub kind: AlertKind,
    /// How bad.
    pub severity: Severity,
    /// The tenant, if any.
    pub tenant: Option<&'a TenantId>,
    /// Same key, same alert: raised once.
    pub dedupe_key: String,
    /// One line for a person (the subject).
    pub message: String,
    /// Non-secret details. For the tenant audience, `body` is the whole letter and nothing
    /// else is sent: internal details stay inside.
    pub details: Value,
    /// Who receives it.
    pub audience: Audience,
}

/// How long a claimed delivery stays claimed: longer than a send can take (30 s), so a
/// console that died mid-send leaves it to another after this.
const LEASE_MS: i64 = 120_000;
/// The longest wait between two attempts.
pub(crate) const MAX_BACKOFF_MS: i64 = 3_600_000;

/// Writes the alert and its deliveries in the caller's transaction; returns the new alert's
/// id, or `None` when an alert with the same dedupe key exists.
///
/// # Errors
/// Database errors.
pub(crate) async fn raise_in(
    conn: &mut AnyConnection,
    channels: &Channels,
    alert: Alert<'_>,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let alert_id = hex::encode(random_bytes::<8>()?.as_ref());
    let mut routes: Vec<(&str, String)> = Vec::new();
    match &alert.audience {
        Audience::Security => {
            if channels.email.is_some() && !channels.security_recipients.is_empty() {
                // Bare addresses: a display name could hold the comma that separates them here.
                let to: Vec<String> = channels.security_recipients.iter().map(|m| m.email.to_string()).collect();
                routes.push(("email", to.join(", ")));
            }
            if channels.slack.is_some() {
                routes.push(("slack", "webhook".into()));
            }
        }
        Audience::Tenant { contact: Some(contact) } if channels.email.is_some() => {
            routes.push(("email", contact.clone()));
        }
        Audience::Tenant { .. } => {}
        Audience::Admin { email } if channels.email.is_some() => {
            routes.push(("email", email.clone()));
        }
        Audience::Admin { .. } => {}
    }
    let state = if routes.is_empty() { "no_recipient" } else { "pending" };
    let inserted = sqlx::query(
        "INSERT INTO alerts (alert_id, kind, severity, tenant_id, dedupe_key, message, details, created_at_ms, state, audience) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(&alert_id)
    .bind(alert.kind.as_str())
    .bind(alert.severity.as_str())
    .bind(alert.tenant.map(TenantId::as_str))
    .bind(&alert.dedupe_key)
    .bind(&alert.message)
    .bind(alert.details.to_string())
    .bind(now.timestamp_millis())
    .bind(state)
    .bind(alert.audience.as_str())
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() != 1 {
        return Ok(None);
    }
    for (channel, recipient) in routes {
        sqlx::query(
            "INSERT INTO alert_deliveries (alert_id, channel, recipient, state, attempts, next_attempt_at_ms, created_at_ms) \
             VALUES ($1, $2, $3, 'pending', 0, $4, $4)",
        )
        .bind(&alert_id)
        .bind(channel)
        .bind(&recipient)
        .bind(now.timestamp_millis())
        .execute(&mut *conn)
        .await?;
    }
    tracing::warn!(kind = alert.kind.as_str(), tenant = ?alert.tenant, alert_id = %alert_id, "alert raised: {}", alert.message);
    Ok(Some(alert_id))
}

/// Sets an alert's summary state from its deliveries.
async fn refresh_alert_state(conn: &mut AnyConnection, alert_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE alerts SET state = CASE \
           WHEN EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = $1 AND d.state = 'dead') THEN 'dead' \
           WHEN EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = $1 AND d.state = 'pending') THEN 'pending' \
           ELSE 'delivered' END \
         WHERE alert_id = $1 AND EXISTS (SELECT 1 FROM alert_deliveries d WHERE d.alert_id = $1)",
    )
    .bind(alert_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Core {
    /// Raises an alert in its own transaction and wakes the delivery worker; true when new.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn raise_alert(&self, alert: Alert<'_>) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        let raised = raise_in(&mut tx, &self.channels, alert, self.now()).await?;
        tx.commit().await?;
        if raised.is_some() {
            self.wake_outbox();
        }
        Ok(raised.is_some())
    }

    /// Tells the delivery worker there is something to send.
    pub(crate) fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }

    /// The newest alerts with their delivery state per channel, for any signed-in admin (and
    /// the operator).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] / `Forbidden` for others, database errors.
    pub async fn list_alerts(&self, actor: &Actor, limit: i64) -> Result<Vec<AlertView>> {
        authorize(actor, Permission::ViewOperations)?;
        type AlertRow =
            (String, String, String, Option<String>, String, i64, String, String, Option<String>, Option<i64>);
        let rows: Vec<AlertRow> = sqlx::query_as(
            "SELECT alert_id, kind, severity, tenant_id, message, created_at_ms, state, audience, acknowledged_by, \
             acknowledged_at_ms FROM alerts ORDER BY created_at_ms DESC, alert_id LIMIT $1",
        )
        .bind(limit.clamp(1, 500))
        .fetch_all(self.db.pool())
        .await?;
        // All deliveries of the listed alerts in one query, not one query per alert.
        let delivery_rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE alert_id IN \
             (SELECT alert_id FROM alerts ORDER BY created_at_ms DESC, alert_id LIMIT $1) ORDER BY alert_id, channel"
        ))
        .bind(limit.clamp(1, 500))
        .fetch_all(self.db.pool())
        .await?;
        let mut deliveries: std::collections::HashMap<String, Vec<DeliveryView>> = std::collections::HashMap::new();
        for row in delivery_rows {
            deliveries.entry(row.0.clone()).or_default().push(delivery_view(row));
        }
        let mut views = Vec::with_capacity(rows.len());
        for (alert_id, kind, severity, tenant_id, message, at, state, audience, acknowledged_by, acknowledged_at) in
            rows
        {
            let deliveries = deliveries.remove(&alert_id).unwrap_or_default();
            views.push(AlertView {
                alert_id,
                kind,
                severity,
                tenant_id,
                message,
                created_at: when(at),
                state,
                audience,
                deliveries,
                acknowledged_by,
                acknowledged_at: acknowledged_at.map(when),
            });
        }
        Ok(views)
    }

    /// The deliveries of one alert.
    pub(crate) async fn deliveries_of(&self, alert_id: &str) -> Result<Vec<DeliveryView>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries WHERE alert_id = $1 ORDER BY channel"
        ))
        .bind(alert_id)
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.into_iter().map(delivery_view).collect())
    }

    /// Sends a test alert to the security channels (platform admins, the operator).
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::InvalidInput`] when no channel is configured.
    pub async fn send_test_alert(&self, actor: &Actor, client: &ClientInfo) -> Result<AlertView> {
        authorize(actor, Permission::ManageAlerts)?;
        if self.channels.slack.is_none()
            && (self.channels.email.is_none() || self.channels.security_recipients.is_empty())
        {
            return Err(Error::InvalidInput(
                "no alert channel is configured (SMTP_VAULT_ALERT_SMTP_URL + SMTP_VAULT_ALERT_EMAIL_TO, or SMTP_VAULT_SLACK_WEBHOOK_URL)"
                    .into(),
            ));
        }
        let now = self.now();
        let by = actor.audit_identity().1;
        let token = hex::encode(random_bytes::<6>()?.as_ref());
        let alert = Alert {
            kind: AlertKind::TestAlert,
            severity: Severity::Info,
            tenant: None,
            dedupe_key: format!("test_alert:{token}"),
            message: format!("test alert from smtp-vault, sent by {by}"),
            details: json!({"requested_by": by}),
            audience: Audience::Security,
        };
        let mut tx = self.db.begin_write().await?;
        let alert_id = raise_in(&mut tx, &self.channels, alert, now)
            .await?
            .ok_or_else(|| Error::Internal("test alert dedupe key collided".into()))?;
        let event = NewEvent::info(EventType::TestAlertRaised, None, json!({"alert_id": alert_id}));
        audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        self.wake_outbox();
        let view = self.list_alerts(actor, 20).await?.into_iter().find(|a| a.alert_id == alert_id);
        view.ok_or(Error::NotFound("alert"))
    }

    /// Marks an alert as seen and handled (any admin); it stays listed.
    ///
    /// # Errors
    /// Refusals for non-admins, [`Error::NotFound`], [`Error::InvalidInput`] when already
    /// acknowledged.
    pub async fn acknowledge_alert(&self, actor: &Actor, client: &ClientInfo, alert_id: &str) -> Result<()> {
        authorize(actor, Permission::AcknowledgeAlerts)?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let row: Option<(Option<String>, Option<String>, String)> =
            sqlx::query_as("SELECT acknowledged_by, tenant_id, details FROM alerts WHERE alert_id = $1")
                .bind(alert_id)
                .fetch_optional(&mut *tx)
                .await?;
        let (already, tenant, details) = row.ok_or(Error::NotFound("alert"))?;
        if already.is_some() {
            return Err(Error::InvalidInput("this alert is already acknowledged".into()));
        }
        // SECURITY: an alert about an admin (a new login address, a passkey added) is closed by
        // someone else; its subject silencing it would defeat it.
        if let Actor::Admin { admin_id, email, .. } = actor {
            let details: Value = serde_json::from_str(&details).unwrap_or(Value::Null);
            let about = |key: &str, me: &str| details[key].as_str().is_some_and(|v| v.eq_ignore_ascii_case(me));
            // Rule alerts name the admin by audit identity, `{admin_id} ({email})`.
            let by_identity = details["admin"].as_str().and_then(|v| v.split(' ').next()) == Some(admin_id.as_str());
            if about("admin_id", admin_id) || about("email", email) || by_identity {
                return Err(Error::Forbidden("an alert about you is acknowledged by another admin"));
            }
        }
        sqlx::query("UPDATE alerts SET acknowledged_by = $1, acknowledged_at_ms = $2 WHERE alert_id = $3")
            .bind(actor.audit_identity().1)
            .bind(now.timestamp_millis())
            .bind(alert_id)
            .execute(&mut *tx)
            .await?;
        let tenant = tenant.as_deref().and_then(|t| TenantId::parse(t).ok());
        let event = NewEvent::info(EventType::AlertAcknowledged, tenant.as_ref(), json!({"alert_id": alert_id}));
        audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Queues a dead-lettered alert again (every dead channel, attempts from zero).
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::NotFound`] when the alert has no dead delivery.
    pub async fn retry_alert(&self, actor: &Actor, client: &ClientInfo, alert_id: &str) -> Result<()> {
        authorize(actor, Permission::ManageAlerts)?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let retried = sqlx::query(
            "UPDATE alert_deliveries SET state = 'pending', attempts = 0, next_attempt_at_ms = $1, last_error = NULL \
             WHERE alert_id = $2 AND state = 'dead'",
        )
        .bind(now.timestamp_millis())
        .bind(alert_id)
        .execute(&mut *tx)
        .await?;
        if retried.rows_affected() == 0 {
            return Err(Error::NotFound("dead-lettered alert"));
        }
        refresh_alert_state(&mut tx, alert_id).await?;
        let event = NewEvent::info(EventType::AlertRetried, None, json!({"alert_id": alert_id}));
        audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        self.wake_outbox();
        Ok(())
    }
}
