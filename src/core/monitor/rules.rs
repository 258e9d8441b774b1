//! The suspicious-activity rules: a pass over the audit events since the last one, each event
//! judged against the thresholds, a finding raised as an alert once.

use super::severity_of;
use crate::core::Core;
use crate::core::access::authorize;
use crate::core::alerting::AlertKind;
use crate::core::alerting::{Alert, Audience, raise_in};
use crate::core::audit::Severity;
use crate::core::error::Result;
use crate::model::Permission;
use crate::model::TenantId;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::AnyConnection;
use std::collections::BTreeSet;

/// What one pass of the event rules did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RulePass {
    /// Audit events judged.
    pub events: usize,
    /// Alerts raised (new dedupe keys only).
    pub alerts: usize,
}

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    seq: i64,
    occurred_at_ms: i64,
    event_type: String,
    actor_kind: String,
    actor_id: String,
    tenant_id: Option<String>,
    client_ip: Option<String>,
    details: String,
}

/// An alert found by a rule, before it is raised.
pub(super) struct Finding {
    kind: AlertKind,
    tenant: Option<String>,
    dedupe_key: String,
    message: String,
    details: Value,
}

/// Events judged per transaction: bounds how long the write lock is held.
pub(super) const BATCH: i64 = 500;

/// Attacker-typed text (a login email) is cut before it reaches an alert.
pub(super) fn clip(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
    if text.chars().count() > 120 {
        out.push('…');
    }
    out
}

pub(super) fn when(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn email_of(details: &str) -> String {
    serde_json::from_str::<Value>(details).ok().and_then(|d| d["email"].as_str().map(str::to_owned)).unwrap_or_default()
}

pub(super) async fn already_raised(conn: &mut AnyConnection, dedupe_key: &str) -> Result<bool> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE dedupe_key = $1")
        .bind(dedupe_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

impl Core {
    /// Judges every audit event not judged yet, raising what the rules find.
    ///
    /// # Errors
    /// Database errors (the cursor then stays where it was).
    pub async fn evaluate_rules(&self) -> Result<RulePass> {
        let mut pass = RulePass::default();
        // Nothing new (the usual case): one read, no write lock.
        let (cursor, head): (i64, i64) =
            sqlx::query_as("SELECT c.seq, h.seq FROM monitor_cursor c, audit_head h WHERE c.id = 1 AND h.id = 1")
                .fetch_one(self.db.pool())
                .await?;
        if cursor > head {
            // The rules read up to `cursor`, so those events existed: the chain was cut, and
            // the rules would stay silent until it grew past the cursor again.
            self.raise_truncation(cursor, head).await?;
            return Ok(pass);
        }
        if cursor == head {
            return Ok(pass);
        }
        loop {
            let mut tx = self.db.begin_write().await?;
            // Taking the row lock first: two consoles judge a batch one after the other.
            sqlx::query("UPDATE monitor_cursor SET seq = seq WHERE id = 1").execute(&mut *tx).await?;
            let (cursor,): (i64,) =
                sqlx::query_as("SELECT seq FROM monitor_cursor WHERE id = 1").fetch_one(&mut *tx).await?;
            let events: Vec<EventRow> = sqlx::query_as(
                "SELECT seq, occurred_at_ms, event_type, actor_kind, actor_id, tenant_id, client_ip, details \
                 FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(cursor)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                tx.rollback().await?;
                break;
            };
            for event in &events {
                for finding in self.judge(&mut tx, event).await? {
                    let tenant = finding.tenant.as_deref().and_then(|t| TenantId::parse(t).ok());
                    let alert = Alert {
                        kind: finding.kind,
                        severity: severity_of(finding.kind),
                        tenant: tenant.as_ref(),
                        dedupe_key: finding.dedupe_key,
                        message: finding.message,
                        details: finding.details,
                        audience: Audience::Security,
                    };
                    if raise_in(&mut tx, &self.channels, alert, self.now()).await?.is_some() {
                        pass.alerts += 1;
                    }
                }
            }
            sqlx::query("UPDATE monitor_cursor SET seq = $1 WHERE id = 1").bind(last).execute(&mut *tx).await?;
            tx.commit().await?;
            pass.events += events.len();
            if events.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        if pass.alerts > 0 {
            self.wake_outbox();
        }
        Ok(pass)
    }

    pub(super) async fn judge(&self, conn: &mut AnyConnection, event: &EventRow) -> Result<Vec<Finding>> {
        let rules = &self.settings.rules;
        let at = DateTime::from_timestamp_millis(event.occurred_at_ms).unwrap_or_default();
        let mut found = Vec::new();
        match (event.event_type.as_str(), event.actor_kind.as_str()) {
            ("credential_revealed", "admin") => {
                let window = rules.reveal_burst_window.num_milliseconds().max(1);
                let burst_key = format!("reveal_burst:{}:{}", event.actor_id, event.occurred_at_ms / window);
                if rules.on(AlertKind::RevealBurst) && !already_raised(conn, &burst_key).await? {
                    let since = event.occurred_at_ms - rules.reveal_burst_window.num_milliseconds();
                    let tenants: Vec<(Option<String>,)> = sqlx::query_as(
                        "SELECT tenant_id FROM audit_events WHERE event_type = 'credential_revealed' \
                         AND actor_id = $1 AND occurred_at_ms > $2 AND seq <= $3",
                    )
                    .bind(&event.actor_id)
                    .bind(since)
                    .bind(event.seq)
                    .fetch_all(&mut *conn)
                    .await?;
                    let reveals = tenants.len();
                    let distinct: BTreeSet<String> = tenants.into_iter().filter_map(|(t,)| t).collect();
                    let too_many = reveals >= rules.reveal_burst_count as usize;
                    let too_wide = distinct.len() > rules.reveal_burst_tenants as usize;
                    if too_many || too_wide {
                        let minutes = rules.reveal_burst_window.num_minutes();
                        found.push(Finding {
                            kind: AlertKind::RevealBurst,
                            tenant: None,
                            dedupe_key: burst_key,
                            message: format!(
                                "{} revealed {reveals} passwords of {} tenants within {minutes} minutes",
                                event.actor_id,
                                distinct.len()
                            ),
                            details: json!({
                                "admin": event.actor_id, "reveals": reveals,
                                "tenants": distinct, "window_minutes": minutes, "audit_seq": event.seq,
                            }),
                        });
                    }
                }
                if rules.on(AlertKind::RevealOutsideHours)
                    && let Some(hours) = &rules.reveal_hours
                    && !hours.allows(at)
                {
                    let tenant = event.tenant_id.clone().unwrap_or_default();
                    found.push(Finding {
                        kind: AlertKind::RevealOutsideHours,
                        tenant: event.tenant_id.clone(),
                        dedupe_key: format!("reveal_outside_hours:{}:{}", event.actor_id, at.format("%Y-%m-%dT%H")),
                        message: format!(
                            "{} revealed {tenant}'s password at {} UTC, outside the allowed hours",
                            event.actor_id,
                            at.format("%a %H:%M")
                        ),
                        details: json!({"admin": event.actor_id, "at": at.to_rfc3339(), "audit_seq": event.seq}),
                    });
                }
            }
            ("login_failed", _) if rules.on(AlertKind::FailedLogins) => {
                let email = email_of(&event.details);
                let bucket = event.occurred_at_ms / rules.failed_auth_window.num_milliseconds().max(1);
                let email_key = format!("failed_logins:email:{}:{bucket}", clip(&email));
                let ip_key = event.client_ip.as_ref().map(|ip| format!("failed_logins:ip:{ip}:{bucket}"));
                // Under a flood the alerts exist after the first few events: skip the counting.
                let email_open = !email.is_empty() && !already_raised(conn, &email_key).await?;
                let ip_open = match &ip_key {
                    Some(key) => !already_raised(conn, key).await?,
                    None => false,
                };
                if !email_open && !ip_open {
                    return Ok(found);
                }
                let since = event.occurred_at_ms - rules.failed_auth_window.num_milliseconds();
                let rows: Vec<(Option<String>, String)> = sqlx::query_as(
                    "SELECT client_ip, details FROM audit_events WHERE event_type = 'login_failed' \
                     AND actor_id = $1 AND occurred_at_ms > $2 AND seq <= $3",
                )
                .bind(&event.actor_id)
                .bind(since)
                .bind(event.seq)
                .fetch_all(&mut *conn)
                .await?;
                let minutes = rules.failed_auth_window.num_minutes();
                let limit = rules.failed_auth_count as usize;
                let same_email = rows.iter().filter(|(_, d)| email_open && email_of(d) == email).count();
                if same_email >= limit {
                    found.push(Finding {
                        kind: AlertKind::FailedLogins,
                        tenant: None,
                        dedupe_key: email_key,
                        message: format!("{same_email} failed logins for {} within {minutes} minutes", clip(&email)),
                        details: json!({"email": clip(&email), "attempts": same_email, "window_minutes": minutes}),
                    });
                }
                if let (Some(ip), Some(ip_key), true) = (&event.client_ip, ip_key, ip_open) {
                    let same_ip = rows.iter().filter(|(i, _)| i.as_ref() == Some(ip)).count();
                    if same_ip >= limit {
                        found.push(Finding {
                            kind: AlertKind::FailedLogins,
                            tenant: None,
                            dedupe_key: ip_key,
                            message: format!("{same_ip} failed logins from {ip} within {minutes} minutes"),
                            details: json!({"client_ip": ip, "attempts": same_ip, "window_minutes": minutes}),
                        });
                    }
                }
            }
            ("reauth_failed", "admin") if rules.on(AlertKind::FailedReauths) => {
                let bucket = event.occurred_at_ms / rules.failed_auth_window.num_milliseconds().max(1);
                let key = format!("failed_reauths:{}:{bucket}", event.actor_id);
                if already_raised(conn, &key).await? {
                    return Ok(found);
                }
                let since = event.occurred_at_ms - rules.failed_auth_window.num_milliseconds();
                let (failures,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM audit_events WHERE event_type = 'reauth_failed' \
                     AND actor_id = $1 AND occurred_at_ms > $2 AND seq <= $3",
                )
                .bind(&event.actor_id)
                .bind(since)
                .bind(event.seq)
                .fetch_one(&mut *conn)
                .await?;
                if failures >= i64::from(rules.failed_auth_count) {
                    let minutes = rules.failed_auth_window.num_minutes();
                    found.push(Finding {
                        kind: AlertKind::FailedReauths,
                        tenant: event.tenant_id.clone(),
                        dedupe_key: key,
                        message: format!(
                            "{} failed {failures} passkey re-authentications within {minutes} minutes",
                            event.actor_id
                        ),
                        details: json!({"admin": event.actor_id, "failures": failures, "window_minutes": minutes}),
                    });
                }
            }
            ("login_succeeded", "admin") => {
                let details: Value = serde_json::from_str(&event.details).unwrap_or(Value::Null);
                let checks = [
                    ("ip", AlertKind::LoginNewIp, event.client_ip.clone()),
                    ("passkey", AlertKind::LoginNewPasskey, details["passkey_id"].as_str().map(str::to_owned)),
                ];
                for (kind, rule, value) in checks {
                    let Some(value) = value else { continue };
                    let (known,): (i64,) =
                        sqlx::query_as("SELECT COUNT(*) FROM monitor_seen WHERE subject = $1 AND kind = $2")
                            .bind(&event.actor_id)
                            .bind(kind)
                            .fetch_one(&mut *conn)
                            .await?;
                    let inserted = sqlx::query(
                        "INSERT INTO monitor_seen (subject, kind, value, first_seen_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (subject, kind, value) DO NOTHING",
                    )
                    .bind(&event.actor_id)
                    .bind(kind)
                    .bind(&value)
                    .bind(event.occurred_at_ms)
                    .execute(&mut *conn)
                    .await?;
                    // The first login (enrollment) teaches; only a later, unseen one is news.
                    if inserted.rows_affected() == 1 && known > 0 && rules.on(rule) {
                        let what =
                            if kind == "ip" { format!("a new address, {value}") } else { "a new passkey".into() };
                        found.push(Finding {
                            kind: rule,
                            tenant: None,
                            dedupe_key: format!("{rule}:{}", event.seq),
                            message: format!("{} signed in with {what}", event.actor_id),
                            details: json!({"admin": event.actor_id, kind: value, "audit_seq": event.seq}),
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(found)
    }

    /// Every alert kind the console raises and when, with the thresholds in effect (any
    /// signed-in admin, and the operator).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] / `Forbidden` for others.
    pub fn alert_rules(&self, actor: &crate::core::Actor) -> Result<Vec<crate::model::AlertRuleView>> {
        authorize(actor, Permission::ViewOperations)?;
        let r = &self.settings.rules;
        let window = r.reveal_burst_window.num_minutes();
        let failed = r.failed_auth_window.num_minutes();
        let hours = r
            .reveal_hours
            .as_ref()
            .map_or_else(|| "no allowed hours are set (the rule is idle)".to_owned(), |h| format!("outside {h}"));
        let ack_hours = self.settings.incident_ack_after.num_hours();
        let ruled = [
            (
                AlertKind::RevealBurst,
                format!(
                    "one admin reveals {} or more passwords, or more than {} tenants, within {window} minutes",
                    r.reveal_burst_count, r.reveal_burst_tenants
                ),
            ),
            (AlertKind::RevealOutsideHours, hours),
            (
                AlertKind::FailedLogins,
                format!(
                    "{} failed logins for one email or from one address within {failed} minutes",
                    r.failed_auth_count
                ),
            ),
            (
                AlertKind::FailedReauths,
                format!(
                    "{} failed passkey re-authentications by one admin within {failed} minutes",
                    r.failed_auth_count
                ),
            ),
            (AlertKind::LoginNewIp, "an admin signs in from an address they have not used before".to_owned()),
            (
                AlertKind::LoginNewPasskey,
                "an admin signs in with a passkey they have not signed in with before".to_owned(),
            ),
            (
                AlertKind::BackupOverdue,
                format!("no backup for {} hours; repeated daily while it lasts", r.backup_max_age.num_hours()),
            ),
            (AlertKind::AuditChainBroken, "the hourly verification finds a broken link in the audit chain".to_owned()),
            (AlertKind::VaultSealed, "Vault answers sealed (checked every minute); once per episode".to_owned()),
            (AlertKind::VaultUnreachable, "Vault does not answer (checked every minute); once per episode".to_owned()),
        ];
        let mut views: Vec<crate::model::AlertRuleView> = ruled
            .into_iter()
            .map(|(kind, condition)| crate::model::AlertRuleView {
                kind: kind.as_str().to_owned(),
                severity: severity_of(kind).as_str().to_owned(),
                condition,
                audience: "security".into(),
                enabled: r.on(kind),
            })
            .collect();
        let at_source: [(AlertKind, Severity, &str, String); 23] = [
            (
                AlertKind::MailuUnknownAdmin,
                Severity::Critical,
                "security",
                "the daily inventory finds a global admin on a tenant's Mailu that the console did not create and nobody vouched for".into(),
            ),
            (AlertKind::EmergencyReset, Severity::Critical, "security", "an emergency reset starts".into()),
            (
                AlertKind::ExposureSweep,
                Severity::Critical,
                "security",
                "an exposure sweep starts (an admin disabled, demoted or a passkey lost; or on demand)".into(),
            ),
            (
                AlertKind::ExposureSweepFailed,
                Severity::Critical,
                "security",
                "an exposure sweep could not rotate some tenants".into(),
            ),
            (
                AlertKind::ExposureSweepInterrupted,
                Severity::Critical,
                "security",
                "an exposure sweep made no progress for 15 minutes (its process stopped)".into(),
            ),
            (
                AlertKind::CredentialReverted,
                Severity::Warning,
                "security",
                "a credential was reverted to its previous version".into(),
            ),
            (
                AlertKind::EmergencyResetFailed,
                Severity::Critical,
                "security",
                "an emergency reset could not rotate".into(),
            ),
            (
                AlertKind::EmergencyResetInterrupted,
                Severity::Critical,
                "security",
                "an emergency reset was cut short (15 minutes without an outcome)".into(),
            ),
            (
                AlertKind::IncidentUnacknowledged,
                Severity::Critical,
                "security",
                format!("an incident has no second-person acknowledgment after {ack_hours} hours"),
            ),
            (
                AlertKind::RotationNeedsReconcile,
                Severity::Critical,
                "security",
                "a rotation gave up after its attempts (needs_reconcile)".into(),
            ),
            (
                AlertKind::HeartbeatDrift,
                Severity::Critical,
                "security",
                "the daily heartbeat finds the stored password refused".into(),
            ),
            (
                AlertKind::DrDrillFailed,
                Severity::Critical,
                "security",
                "a disaster-recovery drill failed or missed its RTO/RPO".into(),
            ),
            (AlertKind::JobFailed, Severity::Critical, "security", "a scheduled job (backup, drill) failed".into()),
            (
                AlertKind::JournalWriteFailed,
                Severity::Warning,
                "security",
                "a credential change could not be journaled for backups".into(),
            ),
            (AlertKind::DnsHookFailed, Severity::Critical, "security", "the DNS hook failed after a recovery".into()),
            (
                AlertKind::MailuDestinationChanged,
                Severity::Warning,
                "security",
                "a tenant's Mailu API URL (where its passwords go) was changed".into(),
            ),
            (
                AlertKind::MailuDestinationMismatch,
                Severity::Critical,
                "security",
                "the Mailu API URL or SMTP host in Vault is not the one the console recorded (nothing is sent there)"
                    .into(),
            ),
            (
                AlertKind::PasskeyAdded,
                Severity::Warning,
                "security",
                "an admin added a passkey (the admin is mailed too)".into(),
            ),
            (
                AlertKind::MailuRateLimited,
                Severity::Warning,
                "security",
                "a tenant's Mailu rate-limits the console, so its logins prove nothing (once a day)".into(),
            ),
            (
                AlertKind::PasskeyCounterRegressed,
                Severity::Critical,
                "security",
                "a passkey signed with a signature counter at or below the last one seen (copied?)".into(),
            ),
            (
                AlertKind::NewPasskeyStepUp,
                Severity::Warning,
                "security",
                "a passkey added less than 24 h ago passed a step-up".into(),
            ),
            (
                AlertKind::RotationNotice,
                Severity::Info,
                "tenant",
                "a rotation is due within 7 days (to the tenant's contact)".into(),
            ),
            (
                AlertKind::TenantRevealNotice,
                Severity::Info,
                "tenant",
                "a reveal window opened for a tenant that asked to be told (to its contact: when, the role, the reason's category; the reason only if asked)".into(),
            ),
        ];
        views.extend(at_source.into_iter().map(|(kind, severity, audience, condition)| crate::model::AlertRuleView {
            kind: kind.as_str().to_owned(),
            severity: severity.as_str().to_owned(),
            condition,
            audience: audience.to_owned(),
            enabled: true,
        }));
        views.push(crate::model::AlertRuleView {
            kind: AlertKind::TenantCredentialReset.as_str().into(),
            severity: Severity::Warning.as_str().to_owned(),
            condition: "an emergency reset finished (a letter to the tenant's contact)".into(),
            audience: "tenant".into(),
            enabled: true,
        });
        Ok(views)
    }
}
