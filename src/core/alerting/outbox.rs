//! The alert outbox: every delivery (email, Slack) is a row, leased, sent, retried with backoff
//! and dead-lettered after its attempts; a worker drains it and the CLI flushes it.

use super::{LEASE_MS, MAX_BACKOFF_MS, refresh_alert_state};
use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::channels::{Notice, mailbox};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::error::Result;
use crate::model::{DeliveryView, TenantId};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// What one delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Deliveries that reached their channel.
    pub delivered: usize,
    /// Attempts that failed and will be retried.
    pub retrying: usize,
    /// Deliveries that gave up (dead letter).
    pub dead: usize,
}

#[derive(sqlx::FromRow)]
pub(super) struct DueRow {
    alert_id: String,
    channel: String,
    recipient: String,
    attempts: i64,
    kind: String,
    severity: String,
    tenant_id: Option<String>,
    message: String,
    details: String,
    created_at_ms: i64,
    audience: String,
}

pub(super) type DeliveryRow = (String, String, String, String, i64, Option<String>, Option<i64>, i64);

pub(super) const DELIVERY_COLUMNS: &str =
    "alert_id, channel, recipient, state, attempts, last_error, delivered_at_ms, next_attempt_at_ms";

pub(super) fn delivery_view(
    (_, channel, recipient, state, attempts, last_error, delivered, next): DeliveryRow,
) -> DeliveryView {
    DeliveryView {
        recipient: if channel == "slack" { "Slack".into() } else { recipient },
        channel,
        next_attempt_at: (state == "pending").then(|| when(next)),
        state,
        attempts,
        last_error,
        delivered_at: delivered.map(when),
    }
}

pub(super) fn when(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeliveryOutcome {
    Delivered,
    Retrying,
    Dead,
}

impl Core {
    pub(super) fn render(&self, row: &DueRow) -> Notice {
        let details: Value = serde_json::from_str(&row.details).unwrap_or(Value::Null);
        let tenant = row.tenant_id.clone().unwrap_or_else(|| "—".into());
        let id = format!("{}.{}", row.alert_id, row.channel);
        if row.audience == "tenant" || row.audience == "admin" {
            // SECURITY: a tenant gets only the letter written for them, never internal details
            // such as the incident's reason.
            let body = details["body"].as_str().unwrap_or(&row.message).to_owned();
            return Notice {
                id,
                subject: row.message.clone(),
                body,
                severity: row.severity.clone(),
                fields: vec![("Tenant".into(), tenant)],
            };
        }
        let pretty = serde_json::to_string_pretty(&details).unwrap_or_default();
        let raised = when(row.created_at_ms).format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let body = format!(
            "{}\n\nKind: {}\nSeverity: {}\nTenant: {tenant}\nRaised: {raised}\nAlert: {}\n\nDetails:\n{pretty}\n\nConsole: {}/alerts\n",
            row.message,
            row.kind,
            row.severity,
            row.alert_id,
            self.settings.public_url.trim_end_matches('/'),
        );
        Notice {
            id,
            subject: format!("[smtp-vault] {}: {}", row.severity.to_uppercase(), row.message),
            body,
            severity: row.severity.clone(),
            fields: vec![
                ("Tenant".into(), tenant),
                ("Kind".into(), row.kind.clone()),
                ("Severity".into(), row.severity.clone()),
                ("Raised".into(), raised),
            ],
        }
    }

    pub(super) async fn send(&self, row: &DueRow) -> std::result::Result<(), String> {
        let notice = self.render(row);
        match row.channel.as_str() {
            "email" => {
                let email = self.channels.email.as_ref().ok_or("email channel is no longer configured")?;
                let to = row
                    .recipient
                    .split(',')
                    .filter(|a| !a.trim().is_empty())
                    .map(|a| mailbox(a).map_err(|e| e.to_string()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                email.send(&to, &notice).await
            }
            "slack" => {
                let slack = self.channels.slack.as_ref().ok_or("Slack channel is no longer configured")?;
                slack.send(&notice).await
            }
            other => Err(format!("unknown channel {other}")),
        }
    }

    /// One delivery pass: sends every due delivery (a few at a time), records each outcome and
    /// schedules retries with exponential backoff; the last failed attempt dead-letters it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn deliver_due_alerts(&self) -> Result<DeliveryReport> {
        let now = self.now().timestamp_millis();
        let due: Vec<DueRow> = sqlx::query_as(
            "SELECT d.alert_id, d.channel, d.recipient, d.attempts, a.kind, a.severity, a.tenant_id, a.message, \
             a.details, a.created_at_ms, a.audience FROM alert_deliveries d JOIN alerts a ON a.alert_id = d.alert_id \
             WHERE d.state = 'pending' AND d.next_attempt_at_ms <= $1 AND (d.lease_until_ms IS NULL OR d.lease_until_ms < $1) \
             ORDER BY d.next_attempt_at_ms LIMIT 100",
        )
        .bind(now)
        .fetch_all(self.db.pool())
        .await?;
        let outcomes = futures_util::stream::iter(due)
            .map(|row| async move { self.deliver_one(row).await })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        let mut report = DeliveryReport::default();
        for outcome in outcomes {
            match outcome? {
                Some(DeliveryOutcome::Delivered) => report.delivered += 1,
                Some(DeliveryOutcome::Retrying) => report.retrying += 1,
                Some(DeliveryOutcome::Dead) => report.dead += 1,
                None => {}
            }
        }
        Ok(report)
    }

    pub(super) async fn deliver_one(&self, row: DueRow) -> Result<Option<DeliveryOutcome>> {
        let now = self.now().timestamp_millis();
        // Claiming first: only one console sends a given delivery at a time.
        let claimed = sqlx::query(
            "UPDATE alert_deliveries SET lease_until_ms = $1 WHERE alert_id = $2 AND channel = $3 AND state = 'pending' \
             AND attempts = $4 AND (lease_until_ms IS NULL OR lease_until_ms < $5)",
        )
        .bind(now + LEASE_MS)
        .bind(&row.alert_id)
        .bind(&row.channel)
        .bind(row.attempts)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        if claimed.rows_affected() != 1 {
            return Ok(None);
        }
        let sent = self.send(&row).await;
        let attempts = row.attempts + 1;
        let now = self.now();
        let system = Actor::System { job: "alert-delivery" };
        let tenant = row.tenant_id.as_deref().and_then(|t| TenantId::parse(t).ok());
        let mut tx = self.db.begin_write().await?;
        let outcome = match &sent {
            Ok(()) => {
                sqlx::query(
                    "UPDATE alert_deliveries SET state = 'delivered', attempts = $1, delivered_at_ms = $2, lease_until_ms = NULL, \
                     last_error = NULL WHERE alert_id = $3 AND channel = $4",
                )
                .bind(attempts)
                .bind(now.timestamp_millis())
                .bind(&row.alert_id)
                .bind(&row.channel)
                .execute(&mut *tx)
                .await?;
                let details =
                    json!({"alert_id": row.alert_id, "kind": row.kind, "channel": row.channel, "attempts": attempts});
                let event = NewEvent::info(EventType::AlertDelivered, tenant.as_ref(), details);
                audit::append(&mut tx, &system, &ClientInfo::local(), event, now).await?;
                DeliveryOutcome::Delivered
            }
            Err(problem) => {
                let dead = attempts >= i64::from(self.settings.alert_max_attempts);
                let base = i64::try_from(self.settings.alert_retry_base.as_millis()).unwrap_or(i64::MAX);
                let backoff = base.saturating_mul(1i64 << (attempts - 1).clamp(0, 30)).min(MAX_BACKOFF_MS);
                sqlx::query(
                    "UPDATE alert_deliveries SET state = $1, attempts = $2, next_attempt_at_ms = $3, lease_until_ms = NULL, \
                     last_error = $4 WHERE alert_id = $5 AND channel = $6",
                )
                .bind(if dead { "dead" } else { "pending" })
                .bind(attempts)
                .bind(now.timestamp_millis().saturating_add(backoff))
                .bind(problem)
                .bind(&row.alert_id)
                .bind(&row.channel)
                .execute(&mut *tx)
                .await?;
                if dead {
                    let details = json!({
                        "alert_id": row.alert_id, "kind": row.kind, "channel": row.channel,
                        "attempts": attempts, "last_error": problem,
                    });
                    let event = NewEvent::info(EventType::AlertDeliveryFailed, tenant.as_ref(), details)
                        .with_severity(Severity::Warning);
                    audit::append(&mut tx, &system, &ClientInfo::local(), event, now).await?;
                    DeliveryOutcome::Dead
                } else {
                    DeliveryOutcome::Retrying
                }
            }
        };
        refresh_alert_state(&mut tx, &row.alert_id).await?;
        tx.commit().await?;
        match (&sent, outcome) {
            (Err(problem), DeliveryOutcome::Dead) => tracing::error!(
                alert_id = %row.alert_id, channel = %row.channel, attempts, error = %problem,
                "alert delivery gave up (dead letter)"
            ),
            (Err(problem), _) => tracing::warn!(
                alert_id = %row.alert_id, channel = %row.channel, attempts, error = %problem, "alert delivery failed; will retry"
            ),
            (Ok(()), _) => {
                tracing::info!(alert_id = %row.alert_id, channel = %row.channel, attempts, "alert delivered")
            }
        }
        Ok(Some(outcome))
    }

    /// Sends alerts until the process ends: a pass whenever an alert is raised in this process,
    /// and at least every `poll` (retries, and alerts raised by another console or the CLI);
    /// once a minute also looks for incidents left unacknowledged.
    pub async fn run_outbox_worker(&self, poll: std::time::Duration) {
        let mut last_overdue_check: Option<std::time::Instant> = None;
        loop {
            if let Err(e) = self.deliver_due_alerts().await {
                tracing::warn!(error = %e, "alert delivery pass failed");
            }
            if last_overdue_check.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                last_overdue_check = Some(std::time::Instant::now());
                if let Err(e) = self.alert_unacknowledged_incidents().await {
                    tracing::warn!(error = %e, "could not check for unacknowledged incidents");
                }
                if let Err(e) = self.settle_interrupted_resets(chrono::Duration::minutes(15)).await {
                    tracing::warn!(error = %e, "could not check for interrupted emergency resets");
                }
            }
            tokio::select! {
                () = self.outbox_wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Delivery passes until nothing is waiting for a retry or `within` has passed (the CLI,
    /// which may be the only process running); returns what the passes did in total.
    ///
    /// # Errors
    /// Database errors.
    pub async fn flush_alerts(&self, within: std::time::Duration) -> Result<DeliveryReport> {
        let deadline = tokio::time::Instant::now() + within;
        let mut total = DeliveryReport::default();
        loop {
            let pass = self.deliver_due_alerts().await?;
            total.delivered += pass.delivered;
            total.dead += pass.dead;
            total.retrying = pass.retrying;
            if pass.retrying == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(total);
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}
