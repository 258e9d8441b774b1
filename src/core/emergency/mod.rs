//! Emergency reset and incidents (compromise response). A reset first contains: in one
//! transaction it opens an incident, revokes every reveal window for the tenant, writes the
//! one critical audit event and queues the security alert, so the alert leaves even if what
//! follows fails. Then it rotates with the staged protocol (never losing a credential) and
//! queues the tenant's notification. Every reset must be acknowledged by a second admin; one
//! left open past the limit raises an alert. Callers: the API (scope `credentials:reset`), the
//! CLI (operator, break-glass) and the UI (platform admins and incident responders, after a
//! WebAuthn step-up that binds the incident id and reason).

pub mod sweep;

use crate::core::Core;
use crate::core::access::passkeys::{Purpose, SessionBinding};
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize, authorize_ceremony};
use crate::core::alerting::AlertKind;
use crate::core::alerting::{self, Alert, Audience};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::credentials::reveal::OpenGrants;
use crate::core::crypto::random_bytes;
use crate::core::error::{Error, Result};
use crate::core::rotation::RotationResult;
use crate::model::{
    DeliveryView, EmergencyResetReceipt, EmergencyResetRequest, IncidentEventView, IncidentView, Permission,
    ResetTimings, TenantId,
};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::time::{Duration, Instant};

/// How long a reset waits for a rotation of the same tenant that is already running.
const ROTATION_WAIT: Duration = Duration::from_secs(60);

#[derive(sqlx::FromRow)]
struct IncidentRow {
    incident_id: String,
    reference: String,
    tenant_id: String,
    reason: String,
    opened_by: String,
    opened_by_admin: Option<String>,
    opened_at_ms: i64,
    state: String,
    outcome: String,
    new_version: Option<i64>,
    grants_revoked: i64,
    finished_at_ms: Option<i64>,
    acknowledged_by: Option<String>,
    acknowledged_at_ms: Option<i64>,
    ack_note: Option<String>,
    overdue_alerted: i64,
    kind: String,
    subject: Option<String>,
}

const INCIDENT_COLUMNS: &str = "incident_id, reference, tenant_id, reason, opened_by, opened_by_admin, opened_at_ms, state, \
     outcome, new_version, grants_revoked, finished_at_ms, acknowledged_by, acknowledged_at_ms, ack_note, overdue_alerted, \
     kind, subject";

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn admin_id(actor: &Actor) -> Option<&str> {
    match actor {
        Actor::Admin { admin_id, .. } => Some(admin_id),
        _ => None,
    }
}

impl Core {
    /// Emergency reset for API and CLI callers.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `credentials:reset`; [`Error::NotFound`] for an unknown
    /// tenant; [`Error::MailServer`] when the rotation failed (grants are revoked and the
    /// security alert is queued all the same); Vault and database errors.
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn emergency_reset(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: &EmergencyResetRequest,
    ) -> Result<EmergencyResetReceipt> {
        authorize(actor, Permission::EmergencyReset)?;
        self.run_detached(actor, client, tenant, request, None).await
    }

    /// Runs the reset in its own task: a caller that goes away (request timeout, closed
    /// connection) must not cut a reset short between containment and notification.
    async fn run_detached(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: &EmergencyResetRequest,
        passkey_id: Option<String>,
    ) -> Result<EmergencyResetReceipt> {
        let (core, actor, client, tenant, request) =
            (self.clone(), actor.clone(), client.clone(), tenant.clone(), request.clone());
        tokio::spawn(async move {
            core.run_emergency_reset(&actor, &client, &tenant, &request, passkey_id.as_deref()).await
        })
        .await
        .map_err(|e| Error::Internal(format!("emergency reset task: {e}")))?
    }

    /// Starts an emergency reset from the UI: checks the role and the input, and returns the
    /// WebAuthn step-up challenge, which carries the incident id and reason (so what the admin
    /// confirmed is what is recorded).
    ///
    /// # Errors
    /// [`Error::Forbidden`] for other roles, [`Error::InvalidField`], [`Error::NotFound`], rate
    /// limits.
    pub async fn begin_emergency_reset(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        tenant: &TenantId,
        incident_id: &str,
        reason: &str,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::EmergencyReset)?;
        let request = EmergencyResetRequest::new(incident_id, reason)?;
        self.tenant_contact(tenant).await?;
        let intent = Intent::EmergencyReset { incident_id: request.incident_id, reason: request.reason };
        self.begin_step_up(actor, session, Some(tenant), &intent).await
    }

    /// Finishes the step-up and resets.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `reauth_failed`), and those of
    /// [`Core::emergency_reset`].
    pub async fn finish_emergency_reset(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        credential_json: &str,
    ) -> Result<EmergencyResetReceipt> {
        authorize_ceremony(actor, Permission::EmergencyReset)?;
        let (passkey_id, intent) =
            self.finish_step_up(actor, session, client, Purpose::EmergencyReset, Some(tenant), credential_json).await?;
        let Intent::EmergencyReset { incident_id, reason } = intent else {
            return Err(Error::Unauthenticated);
        };
        let request = EmergencyResetRequest::new(&incident_id, &reason)?;
        self.run_detached(actor, client, tenant, &request, Some(passkey_id)).await
    }

    async fn tenant_contact(&self, tenant: &TenantId) -> Result<(Option<String>, String)> {
        let row: Option<(Option<String>, String)> =
            sqlx::query_as("SELECT contact_email, username FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?;
        row.ok_or(Error::NotFound("credential"))
    }

    async fn run_emergency_reset(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: &EmergencyResetRequest,
        passkey_id: Option<&str>,
    ) -> Result<EmergencyResetReceipt> {
        let clock = Instant::now();
        let started = self.now();
        let (contact, username) = self.tenant_contact(tenant).await?;
        let incident = hex::encode(random_bytes::<8>()?.as_ref());
        let by = actor.audit_identity().1;

        // Contain first, in one transaction: whatever happens next, the windows are closed,
        // the incident exists and the security alert is on its way.
        let mut tx = self.db.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO incidents ({INCIDENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', 'rotating', NULL, 0, \
             NULL, NULL, NULL, NULL, 0, 'emergency_reset', NULL)"
        ))
        .bind(&incident)
        .bind(&request.incident_id)
        .bind(tenant.as_str())
        .bind(&request.reason)
        .bind(&by)
        .bind(admin_id(actor))
        .bind(started.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        let revoked = self
            .revoke_open_grants(&mut tx, actor, client, OpenGrants::OfTenant(tenant), "emergency_reset", started)
            .await?;
        sqlx::query("UPDATE incidents SET grants_revoked = $1 WHERE incident_id = $2")
            .bind(i64::try_from(revoked).unwrap_or(i64::MAX))
            .bind(&incident)
            .execute(&mut *tx)
            .await?;
        let details = json!({
            "incident": incident, "incident_id": request.incident_id, "reason": request.reason,
            "grants_revoked": revoked, "passkey_id": passkey_id,
        });
        let event =
            NewEvent::info(EventType::EmergencyReset, Some(tenant), details.clone()).with_severity(Severity::Critical);
        audit::append(&mut tx, actor, client, event, started).await?;
        let security_alert = Alert {
            kind: AlertKind::EmergencyReset,
            severity: Severity::Critical,
            tenant: Some(tenant),
            dedupe_key: format!("emergency_reset:{incident}"),
            message: format!("emergency reset of {tenant} by {by} (incident {})", request.incident_id),
            details: json!({
                "incident": incident, "incident_id": request.incident_id, "reason": request.reason,
                "grants_revoked": revoked, "requested_by": by,
            }),
            audience: Audience::Security,
        };
        let security_alert_id = alerting::raise_in(&mut tx, &self.channels, security_alert, started).await?;
        tx.commit().await?;
        self.wake_outbox();
        let contain = clock.elapsed();
        tracing::warn!(incident = %incident, grants_revoked = revoked, "emergency reset: contained, rotating");

        let rotation = self.forced_rotation(actor, client, tenant, "emergency").await;
        let rotation_time = clock.elapsed() - contain;
        let finished = self.now();
        let timings = ResetTimings {
            contain_ms: millis(contain),
            rotation_ms: millis(rotation_time),
            total_ms: millis(clock.elapsed()),
        };
        let mut tx = self.db.begin_write().await?;
        let outcome = match &rotation {
            Ok(version) => {
                sqlx::query(
                    "UPDATE incidents SET outcome = 'rotated', new_version = $1, finished_at_ms = $2 WHERE incident_id = $3",
                )
                .bind(i64::try_from(*version).unwrap_or(i64::MAX))
                .bind(finished.timestamp_millis())
                .bind(&incident)
                .execute(&mut *tx)
                .await?;
                let details =
                    json!({"incident": incident, "outcome": "rotated", "version": version, "timings": timings});
                let event = NewEvent::info(EventType::EmergencyResetFinished, Some(tenant), details);
                audit::append(&mut tx, actor, client, event, finished).await?;
                let when = finished.format("%Y-%m-%d %H:%M UTC");
                let letter = Alert {
                    kind: AlertKind::TenantCredentialReset,
                    severity: Severity::Warning,
                    tenant: Some(tenant),
                    dedupe_key: format!("tenant_credential_reset:{incident}"),
                    message: format!("The admin password of your mail server ({tenant}) was reset"),
                    details: json!({"incident": incident, "body": format!(
                        "Hello,\n\nthe admin SMTP password of your mail server ({tenant}, login {username}) was reset on \
                         {when} as a security precaution (reference {}). The previous password no longer works.\n\n\
                         Services that read it from smtp-vault already use the new one; anything configured with it \
                         by hand must be updated. Questions: reply to your platform contact quoting the reference.\n\n\
                         -- smtp-vault\n",
                        request.incident_id
                    )}),
                    audience: Audience::Tenant { contact: contact.clone() },
                };
                alerting::raise_in(&mut tx, &self.channels, letter, finished).await?
            }
            Err(error) => {
                sqlx::query(
                    "UPDATE incidents SET outcome = 'rotation_failed', finished_at_ms = $1 WHERE incident_id = $2",
                )
                .bind(finished.timestamp_millis())
                .bind(&incident)
                .execute(&mut *tx)
                .await?;
                let details = json!({"incident": incident, "outcome": "rotation_failed", "error": error.to_string()});
                let event = NewEvent::info(EventType::EmergencyResetFinished, Some(tenant), details)
                    .with_severity(Severity::Warning);
                audit::append(&mut tx, actor, client, event, finished).await?;
                let alert = Alert {
                    kind: AlertKind::EmergencyResetFailed,
                    severity: Severity::Critical,
                    tenant: Some(tenant),
                    dedupe_key: format!("emergency_reset_failed:{incident}"),
                    message: format!(
                        "emergency reset of {tenant} (incident {}) could not rotate: the compromised password may still work",
                        request.incident_id
                    ),
                    details: json!({"incident": incident, "error": error.to_string()}),
                    audience: Audience::Security,
                };
                alerting::raise_in(&mut tx, &self.channels, alert, finished).await?;
                None
            }
        };
        tx.commit().await?;
        self.wake_outbox();
        let version = match rotation {
            Ok(version) => version,
            Err(Error::MailServer(why)) => {
                return Err(Error::MailServer(format!(
                    "incident {incident}: reveal windows revoked and security alerted, but the rotation failed: {why}"
                )));
            }
            Err(other) => return Err(other),
        };
        let mut notified = Vec::new();
        for alert_id in [security_alert_id.as_deref(), outcome.as_deref()].into_iter().flatten() {
            notified.extend(self.deliveries_of(alert_id).await?);
        }
        if outcome.is_none() || contact.is_none() {
            notified.push(DeliveryView {
                channel: "email".into(),
                recipient: "tenant contact (none on record: set one in the tenant's settings)".into(),
                state: "no_recipient".into(),
                attempts: 0,
                last_error: None,
                delivered_at: None,
                next_attempt_at: None,
            });
        }
        Ok(EmergencyResetReceipt {
            incident,
            incident_id: request.incident_id.clone(),
            tenant_id: tenant.clone(),
            result: "rotated".into(),
            new_version: version,
            grants_revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
            started_at: started,
            finished_at: finished,
            timings,
            notified,
        })
    }

    /// Rotates now, waiting for a rotation already running. A rotation that was in flight is
    /// settled first and then a fresh password is set: its pending password existed before the
    /// compromise was known and may have been handed out.
    pub(crate) async fn forced_rotation(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        trigger: &str,
    ) -> Result<u64> {
        let Some(_guard) = self.rotation_locks.lock_within(tenant, ROTATION_WAIT).await else {
            return Err(Error::RotationBusy);
        };
        let had_pending = self.vault()?.read_pending(tenant).await?.is_some();
        let mut result = self.run_rotation(actor, client, tenant, trigger).await?;
        if had_pending && matches!(result, RotationResult::Rotated { .. }) {
            result = self.run_rotation(actor, client, tenant, trigger).await?;
        }
        match result {
            RotationResult::Rotated { version } => Ok(version),
            RotationResult::NeedsReconcile { reason } => Err(Error::MailServer(format!("rotation gave up: {reason}"))),
            RotationResult::Busy => Err(Error::RotationBusy),
        }
    }

    /// A second admin acknowledges an incident with a note. The admin who reset may not.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (audited when it is the resetting admin), [`Error::InvalidInput`]
    /// for a missing note or an incident already acknowledged, [`Error::NotFound`].
    pub async fn acknowledge_incident(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        incident: &str,
        note: &str,
    ) -> Result<IncidentView> {
        authorize(actor, Permission::AcknowledgeAlerts)?;
        let Some(me) = admin_id(actor) else {
            return Err(Error::Unauthenticated);
        };
        let note = note.trim();
        if !(3..=1000).contains(&note.chars().count()) || note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Error::InvalidInput("write a note of 3 to 1000 characters".into()));
        }
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let row: Option<(String, Option<String>, String, Option<String>)> = sqlx::query_as(
            "SELECT tenant_id, opened_by_admin, state, subject_admin FROM incidents WHERE incident_id = $1",
        )
        .bind(incident)
        .fetch_optional(&mut *tx)
        .await?;
        let (tenant_id, opener, state, subject) = row.ok_or(Error::NotFound("incident"))?;
        let tenant = TenantId::parse(&tenant_id).ok();
        // SECURITY: a second person reviews every reset; the one who pressed it cannot, nor
        // the admin a sweep is about.
        if opener.as_deref() == Some(me) || subject.as_deref() == Some(me) {
            let event = NewEvent::info(EventType::IncidentAckRefused, tenant.as_ref(), json!({"incident": incident}))
                .with_severity(Severity::Warning);
            audit::append(&mut tx, actor, client, event, now).await?;
            tx.commit().await?;
            return Err(Error::Forbidden(
                "the admin who reset (or whose exposure was swept) cannot acknowledge it; another admin must review it",
            ));
        }
        if state != "open" {
            return Err(Error::InvalidInput("this incident is already acknowledged".into()));
        }
        sqlx::query(
            "UPDATE incidents SET state = 'acknowledged', acknowledged_by = $1, acknowledged_at_ms = $2, ack_note = $3 \
             WHERE incident_id = $4",
        )
        .bind(actor.audit_identity().1)
        .bind(now.timestamp_millis())
        .bind(note)
        .bind(incident)
        .execute(&mut *tx)
        .await?;
        let event = NewEvent::info(
            EventType::IncidentAcknowledged,
            tenant.as_ref(),
            json!({"incident": incident, "note": note}),
        );
        audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        self.list_incidents(actor, 500)
            .await?
            .into_iter()
            .find(|i| i.incident == incident)
            .ok_or(Error::NotFound("incident"))
    }

    /// The newest incidents with their review and history (any admin, the operator).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] / `Forbidden` for others, database errors.
    pub async fn list_incidents(&self, actor: &Actor, limit: i64) -> Result<Vec<IncidentView>> {
        authorize(actor, Permission::ViewOperations)?;
        let rows: Vec<IncidentRow> = sqlx::query_as(&format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY opened_at_ms DESC, incident_id LIMIT $1"
        ))
        .bind(limit.clamp(1, 500))
        .fetch_all(self.db.pool())
        .await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.incident_view(actor, row).await?);
        }
        Ok(views)
    }

    /// One incident as shown, with its history from the audit trail.
    async fn incident_view(&self, actor: &Actor, row: IncidentRow) -> Result<IncidentView> {
        // Incident ids are random hex, so the pattern matches exactly their own events. A
        // sweep's events name no tenant: they are found from the time it opened.
        let pattern = format!("%\"incident\":\"{}\"%", row.incident_id);
        let history: Vec<(i64, String, String, String)> = if row.kind == "exposure_sweep" {
            sqlx::query_as(
                "SELECT occurred_at_ms, event_type, actor_id, severity FROM audit_events WHERE occurred_at_ms >= $1 \
                 AND tenant_id IS NULL AND event_type IN ('exposure_sweep', 'exposure_sweep_finished', \
                 'incident_acknowledged', 'incident_ack_refused', 'incident_overdue', 'emergency_reset_finished') \
                 AND details LIKE $2 ORDER BY seq",
            )
            .bind(row.opened_at_ms)
            .bind(&pattern)
            .fetch_all(self.db.pool())
            .await?
        } else {
            sqlx::query_as(
                "SELECT occurred_at_ms, event_type, actor_id, severity FROM audit_events WHERE tenant_id = $1 \
                 AND event_type IN ('emergency_reset', 'emergency_reset_finished', 'incident_acknowledged', \
                 'incident_ack_refused', 'incident_overdue') AND details LIKE $2 ORDER BY seq",
            )
            .bind(&row.tenant_id)
            .bind(&pattern)
            .fetch_all(self.db.pool())
            .await?
        };
        let sweep =
            if row.kind == "exposure_sweep" { self.sweep_tenants(&row.incident_id, 500).await? } else { Vec::new() };
        let overdue_before = (self.now() - self.settings.incident_ack_after).timestamp_millis();
        Ok(IncidentView {
            overdue: row.state == "open" && (row.overdue_alerted != 0 || row.opened_at_ms <= overdue_before),
            opened_by_caller: row.opened_by_admin.is_some() && row.opened_by_admin.as_deref() == admin_id(actor),
            incident: row.incident_id,
            incident_id: row.reference,
            tenant_id: row.tenant_id,
            reason: row.reason,
            opened_by: row.opened_by,
            opened_at: at(row.opened_at_ms),
            state: row.state,
            outcome: row.outcome,
            new_version: row.new_version,
            grants_revoked: row.grants_revoked,
            finished_at: row.finished_at_ms.map(at),
            acknowledged_by: row.acknowledged_by,
            acknowledged_at: row.acknowledged_at_ms.map(at),
            ack_note: row.ack_note,
            history: history
                .into_iter()
                .map(|(ms, event, actor, severity)| IncidentEventView { at: at(ms), event, actor, severity })
                .collect(),
            kind: row.kind,
            subject: row.subject,
            sweep,
        })
    }

    /// Marks resets that stopped between containment and the end (the process died) as
    /// `interrupted` and raises a critical alert for each: the credential itself is repaired by
    /// the rotation's own recovery, but a person must check and reset again if needed. A reset
    /// is considered dead after `after` (longer than any rotation with its retries).
    ///
    /// # Errors
    /// Database errors.
    pub async fn settle_interrupted_resets(&self, after: chrono::Duration) -> Result<usize> {
        let now = self.now();
        // A sweep is dead when it stopped moving, however long it has run.
        let stuck: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT incident_id, reference, tenant_id, kind, subject FROM incidents WHERE outcome = 'rotating' \
             AND COALESCE(progress_at_ms, opened_at_ms) <= $1",
        )
        .bind((now - after).timestamp_millis())
        .fetch_all(self.db.pool())
        .await?;
        let mut settled = 0;
        for (incident, reference, tenant_id, kind, subject) in stuck {
            if kind == "exposure_sweep" {
                let (left,): (i64,) =
                    sqlx::query_as("SELECT COUNT(*) FROM sweep_tenants WHERE incident_id = $1 AND outcome = 'pending'")
                        .bind(&incident)
                        .fetch_one(self.db.pool())
                        .await?;
                let subject = subject.unwrap_or_default();
                let flag = IncidentFlag {
                    claim: "UPDATE incidents SET outcome = 'interrupted', finished_at_ms = $1 WHERE incident_id = $2 AND outcome = 'rotating'",
                    event: EventType::ExposureSweepFinished,
                    kind: AlertKind::ExposureSweepInterrupted,
                    message: format!(
                        "the exposure sweep of {subject} (incident {reference}) stopped with {left} tenant(s) not rotated; \
                         run it again (smtp-vault sweep): it rotates exactly those still exposed"
                    ),
                    details: json!({"incident": incident, "outcome": "interrupted", "not_rotated": left}),
                };
                settled += usize::from(self.flag_incident(&incident, &tenant_id, flag, now).await?);
                continue;
            }
            let flag = IncidentFlag {
                claim: "UPDATE incidents SET outcome = 'interrupted', finished_at_ms = $1 WHERE incident_id = $2 AND outcome = 'rotating'",
                event: EventType::EmergencyResetFinished,
                kind: AlertKind::EmergencyResetInterrupted,
                message: format!(
                    "the emergency reset of {tenant_id} (incident {reference}) was interrupted; check the tenant and reset again"
                ),
                details: json!({"incident": incident, "outcome": "interrupted"}),
            };
            settled += usize::from(self.flag_incident(&incident, &tenant_id, flag, now).await?);
        }
        Ok(settled)
    }

    /// Raises one alert per incident left unacknowledged past the limit; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alert_unacknowledged_incidents(&self) -> Result<usize> {
        let now = self.now();
        let cutoff = (now - self.settings.incident_ack_after).timestamp_millis();
        let late: Vec<(String, String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT incident_id, reference, tenant_id, opened_at_ms, subject FROM incidents \
             WHERE state = 'open' AND overdue_alerted = 0 AND opened_at_ms <= $1",
        )
        .bind(cutoff)
        .fetch_all(self.db.pool())
        .await?;
        let mut raised = 0;
        for (incident, reference, tenant_id, opened_ms, subject) in late {
            let hours = (now - at(opened_ms)).num_hours();
            let what = subject.map_or_else(
                || format!("the emergency reset of {tenant_id}"),
                |subject| format!("the exposure sweep of {subject}"),
            );
            let flag = IncidentFlag {
                claim: "UPDATE incidents SET overdue_alerted = 1 WHERE opened_at_ms <= $1 AND incident_id = $2 AND overdue_alerted = 0",
                event: EventType::IncidentOverdue,
                kind: AlertKind::IncidentUnacknowledged,
                message: format!("{what} (incident {reference}) is unacknowledged after {hours} h"),
                details: json!({"incident": incident, "incident_id": reference, "open_hours": hours}),
            };
            raised += usize::from(self.flag_incident(&incident, &tenant_id, flag, now).await?);
        }
        Ok(raised)
    }

    /// Sets a flag on an incident once: `claim` (an UPDATE of `$1` = now, `$2` = incident that
    /// matches only while the flag is unset) decides which checker wins, so concurrent
    /// consoles raise it once; the winner records a warning event and raises a critical
    /// security alert in the same transaction.
    async fn flag_incident(
        &self,
        incident: &str,
        tenant_id: &str,
        flag: IncidentFlag,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let tenant = TenantId::parse(tenant_id).ok();
        let mut tx = self.db.begin_write().await?;
        let claimed = sqlx::query(flag.claim).bind(now.timestamp_millis()).bind(incident).execute(&mut *tx).await?;
        if claimed.rows_affected() != 1 {
            return Ok(false);
        }
        let event = NewEvent::info(flag.event, tenant.as_ref(), flag.details.clone()).with_severity(Severity::Warning);
        audit::append(&mut tx, &Actor::System { job: "incident-review" }, &ClientInfo::local(), event, now).await?;
        let alert = Alert {
            kind: flag.kind,
            severity: Severity::Critical,
            tenant: tenant.as_ref(),
            dedupe_key: format!("{}:{incident}", flag.kind),
            message: flag.message,
            details: flag.details,
            audience: Audience::Security,
        };
        alerting::raise_in(&mut tx, &self.channels, alert, now).await?;
        tx.commit().await?;
        self.wake_outbox();
        Ok(true)
    }
}

/// A once-only mark on an incident and the alert it raises.
struct IncidentFlag {
    claim: &'static str,
    event: EventType,
    kind: AlertKind,
    message: String,
    details: serde_json::Value,
}
