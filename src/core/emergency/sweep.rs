//! Exposure sweeps ("rotate what they saw"): the tenants whose *current* password one admin
//! could see (a reveal window open after the password was stored) or one service token read
//! (a `credential_secret_read` after it was stored) are rotated, a few at a time, under one
//! incident that security is alerted to and a second admin acknowledges. Containment comes
//! first and in one transaction — incident, one row per tenant, the subject's open windows
//! closed, the critical audit event and the security alert — so a sweep that dies half-way is
//! still on record and flagged (`exposure_sweep_interrupted`); running it again finds exactly
//! the tenants still exposed, since a rotated tenant's password is newer than the exposure.
//!
//! Sweeps start on demand (UI with a passkey step-up, API scope `credentials:reset`, CLI) and
//! by themselves when an admin is disabled, demoted from platform admin, or removes a passkey
//! as lost: then inside that change's own transaction.

use crate::core::Core;
use crate::core::access::passkeys::{Purpose, SessionBinding};
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo, authorize, authorize_ceremony};
use crate::core::alerting::{self, Alert, AlertKind, Audience};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::credentials::reveal::OpenGrants;
use crate::core::crypto::random_bytes;
use crate::core::db::WriteTx;
use crate::core::error::{Error, Result};
use crate::model::{Permission, SweepRequest, SweepSubject, SweepTenantView, SweepView, TenantId};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::json;

/// Tenants rotated at once: enough to finish a large sweep soon, few enough not to crowd out
/// the daily batch or hit a tenant's mail server rate limit (each tenant is its own server).
const SWEEP_CONCURRENCY: usize = 4;

/// A `sweep_tenants` row: tenant, exposed at, outcome, new version, error.
type SweptRow = (String, i64, String, Option<i64>, Option<String>);

/// Tenants named in the audit event itself; all of them are in `sweep_tenants`.
const LISTED_IN_EVENT: usize = 200;

/// Called with (done, total) as each tenant of a sweep ends.
pub type SweepProgress = std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>;

/// A subject found on record.
#[derive(Debug, Clone)]
pub(crate) enum Subject {
    /// An admin, by id.
    Admin { admin_id: String, label: String },
    /// A service token, by the identity its audit events carry.
    Token { actor_id: String, label: String, live: bool },
}

impl Subject {
    fn label(&self) -> &str {
        match self {
            Subject::Admin { label, .. } | Subject::Token { label, .. } => label,
        }
    }
}

/// Why a sweep starts by itself.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SweepCause {
    /// The admin was disabled.
    Disabled,
    /// The admin lost the platform-admin role.
    Demoted,
    /// The admin removed a passkey as lost or compromised.
    PasskeyLost,
}

impl SweepCause {
    const fn reason(self) -> &'static str {
        match self {
            SweepCause::Disabled => "the admin was disabled",
            SweepCause::Demoted => "the admin is no longer a platform admin",
            SweepCause::PasskeyLost => "the admin reported a passkey lost or compromised",
        }
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A tenant still waiting in a running sweep is rotated by that one, not twice.
const NOT_BEING_SWEPT: &str = "NOT EXISTS (SELECT 1 FROM sweep_tenants s JOIN incidents i ON i.incident_id = s.incident_id \
     WHERE s.tenant_id = t.tenant_id AND s.outcome = 'pending' AND i.outcome = 'rotating')";

/// Tenants the subject saw the current password of, with the last moment they could: since the
/// password first existed (`secret_since_ms`; unknown counts everything), not since its
/// rotation was recorded, because it is handed out from the moment the mail server has it.
async fn exposures(
    conn: &mut sqlx::AnyConnection,
    subject: &Subject,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<(String, i64)>> {
    let since = since.map_or(i64::MIN, |t| t.timestamp_millis());
    Ok(match subject {
        // A window counts if it was still open once the current password existed: whoever held
        // it could reveal that password, whether they did or not.
        Subject::Admin { admin_id, .. } => {
            sqlx::query_as(
                &format!(
                    "SELECT g.tenant_id, MAX(g.created_at_ms) FROM reveal_grants g JOIN tenants t ON t.tenant_id = g.tenant_id \
                     WHERE g.admin_id = $1 AND COALESCE(g.revoked_at_ms, g.expires_at_ms) > COALESCE(t.secret_since_ms, 0) \
                     AND COALESCE(g.revoked_at_ms, g.expires_at_ms) > $2 AND {NOT_BEING_SWEPT} \
                     GROUP BY g.tenant_id ORDER BY g.tenant_id"
                ),
            )
            .bind(admin_id)
            .bind(since)
            .fetch_all(&mut *conn)
            .await?
        }
        // A token knows what it read, and what it stored itself.
        Subject::Token { actor_id, .. } => {
            sqlx::query_as(
                &format!(
                    "SELECT a.tenant_id, MAX(a.occurred_at_ms) FROM audit_events a JOIN tenants t ON t.tenant_id = a.tenant_id \
                     WHERE a.event_type IN ('credential_secret_read', 'credential_stored') \
                     AND a.actor_kind = 'service_token' AND a.actor_id = $1 \
                     AND a.occurred_at_ms >= COALESCE(t.secret_since_ms, 0) AND a.occurred_at_ms >= $2 AND {NOT_BEING_SWEPT} \
                     GROUP BY a.tenant_id ORDER BY a.tenant_id"
                ),
            )
            .bind(actor_id)
            .bind(since)
            .fetch_all(&mut *conn)
            .await?
        }
    })
}

impl Core {
    /// Finds the subject on record.
    async fn sweep_subject(&self, subject: &SweepSubject) -> Result<Subject> {
        match subject {
            SweepSubject::Admin(email) => {
                let row: Option<(String,)> = sqlx::query_as("SELECT admin_id FROM admins WHERE email = $1")
                    .bind(email)
                    .fetch_optional(self.db.pool())
                    .await?;
                let (admin_id,) = row.ok_or(Error::NotFound("admin"))?;
                Ok(Subject::Admin { admin_id, label: subject.label() })
            }
            SweepSubject::Token(token_id) => {
                let row: Option<(String, Option<i64>, Option<i64>)> =
                    sqlx::query_as("SELECT name, revoked_at_ms, expires_at_ms FROM service_tokens WHERE token_id = $1")
                        .bind(token_id)
                        .fetch_optional(self.db.pool())
                        .await?;
                let (name, revoked, expires) = row.ok_or(Error::NotFound("service token"))?;
                let now = self.now().timestamp_millis();
                Ok(Subject::Token {
                    // The identity `Actor::audit_identity` records for a token.
                    actor_id: format!("{token_id} ({name})"),
                    label: subject.label(),
                    live: revoked.is_none() && expires.is_none_or(|e| e > now),
                })
            }
        }
    }

    /// Lists (dry run) or sweeps, for the API and the CLI. A real sweep runs in its own task,
    /// so a caller that goes away does not cut it short; `progress` hears of each tenant.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `credentials:reset`; [`Error::NotFound`] for an unknown
    /// admin or token; [`Error::InvalidInput`] for a token that still works (revoke it first:
    /// it would read the new passwords too).
    pub async fn exposure_sweep(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        request: &SweepRequest,
        progress: Option<SweepProgress>,
    ) -> Result<SweepView> {
        authorize(actor, Permission::EmergencyReset)?;
        let subject = self.sweep_subject(&request.subject).await?;
        if request.dry_run {
            return self.sweep_plan(actor, client, &subject, request).await;
        }
        let Some(incident) = self.open_sweep(actor, client, &subject, request, None).await? else {
            return Ok(nothing_exposed(&subject, request));
        };
        let (core, actor, client) = (self.clone(), actor.clone(), client.clone());
        tokio::spawn(async move { core.run_sweep(&actor, &client, &incident, progress).await })
            .await
            .map_err(|e| Error::Internal(format!("exposure sweep task: {e}")))?
    }

    /// The tenants a sweep would rotate, for the console's dry run (no step-up: it changes
    /// nothing).
    ///
    /// # Errors
    /// [`Error::Forbidden`] for roles that may not sweep, [`Error::NotFound`].
    pub async fn plan_exposure_sweep(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        request: &SweepRequest,
    ) -> Result<SweepView> {
        authorize(actor, Permission::EmergencyReset)
            .or_else(|_| authorize_ceremony(actor, Permission::EmergencyReset))?;
        let subject = self.sweep_subject(&request.subject).await?;
        self.sweep_plan(actor, client, &subject, &SweepRequest { dry_run: true, ..request.clone() }).await
    }

    /// The dry run. Audited: the list says which passwords someone could see.
    async fn sweep_plan(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        subject: &Subject,
        request: &SweepRequest,
    ) -> Result<SweepView> {
        let mut tx = self.db.begin_write().await?;
        let found = exposures(&mut tx, subject, request.since).await?;
        let details = json!({"subject": subject.label(), "since": request.since, "tenant_count": found.len()});
        audit::append(
            &mut tx,
            actor,
            client,
            NewEvent::info(EventType::ExposureSweepListed, None, details),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(SweepView {
            incident: None,
            subject: subject.label().to_owned(),
            since: request.since,
            dry_run: true,
            tenants: found
                .into_iter()
                .map(|(tenant_id, ms)| SweepTenantView {
                    tenant_id,
                    exposed_at: at(ms),
                    outcome: "exposed".into(),
                    new_version: None,
                    error: None,
                })
                .collect(),
            rotated: 0,
            failed: 0,
        })
    }

    /// Starts a sweep from the console: the passkey step-up confirms the subject, the lower
    /// bound and the reason.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for other roles, [`Error::NotFound`], [`Error::InvalidInput`] for a
    /// live token; rate limits.
    pub async fn begin_exposure_sweep(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        request: &SweepRequest,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::EmergencyReset)?;
        let subject = self.sweep_subject(&request.subject).await?;
        refuse_live_token(&subject)?;
        let intent = Intent::Sweep { request: SweepRequest { dry_run: false, ..request.clone() } };
        self.begin_step_up(actor, session, None, &intent).await
    }

    /// Finishes the step-up and starts the sweep; answers once the incident is open (the
    /// tenants are rotated in the background: the incident shows their progress).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `reauth_failed`), and those of
    /// [`Core::begin_exposure_sweep`].
    pub async fn finish_exposure_sweep(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        credential_json: &str,
    ) -> Result<SweepView> {
        authorize_ceremony(actor, Permission::EmergencyReset)?;
        let (passkey_id, intent) =
            self.finish_step_up(actor, session, client, Purpose::Sweep, None, credential_json).await?;
        let Intent::Sweep { request } = intent else {
            return Err(Error::Unauthenticated);
        };
        let subject = self.sweep_subject(&request.subject).await?;
        let Some(incident) = self.open_sweep(actor, client, &subject, &request, Some(&passkey_id)).await? else {
            return Ok(nothing_exposed(&subject, &request));
        };
        self.spawn_sweep(actor, client, &incident);
        self.sweep_view(&incident).await
    }

    /// Opens the sweep's incident in its own transaction.
    async fn open_sweep(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        subject: &Subject,
        request: &SweepRequest,
        passkey_id: Option<&str>,
    ) -> Result<Option<String>> {
        refuse_live_token(subject)?;
        let mut tx = self.db.begin_write().await?;
        let opened = self
            .open_sweep_in(
                &mut tx,
                actor,
                client,
                subject,
                request.since,
                request.incident_id.as_deref(),
                &request.reason,
                passkey_id,
            )
            .await?;
        tx.commit().await?;
        self.wake_outbox();
        Ok(opened)
    }

    /// Opens a sweep by itself inside a change to an admin (disabled, demoted, passkey lost);
    /// the caller commits, then calls [`Core::spawn_sweep`] with what this returns.
    pub(crate) async fn open_admin_sweep_in(
        &self,
        tx: &mut WriteTx,
        actor: &Actor,
        client: &ClientInfo,
        admin_id: &str,
        cause: SweepCause,
    ) -> Result<Option<String>> {
        let email: Option<(String,)> = sqlx::query_as("SELECT email FROM admins WHERE admin_id = $1")
            .bind(admin_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some((email,)) = email else { return Ok(None) };
        let subject = Subject::Admin { admin_id: admin_id.to_owned(), label: SweepSubject::Admin(email).label() };
        self.open_sweep_in(tx, actor, client, &subject, None, None, cause.reason(), None).await
    }

    /// Containment, in the caller's transaction: nothing exposed opens nothing; otherwise the
    /// incident, its tenants, the subject's open windows closed, the event and the alert.
    #[allow(clippy::too_many_arguments, reason = "one call site each for the console and the admin changes")]
    async fn open_sweep_in(
        &self,
        tx: &mut WriteTx,
        actor: &Actor,
        client: &ClientInfo,
        subject: &Subject,
        since: Option<DateTime<Utc>>,
        reference: Option<&str>,
        reason: &str,
        passkey_id: Option<&str>,
    ) -> Result<Option<String>> {
        let found = exposures(tx, subject, since).await?;
        if found.is_empty() {
            return Ok(None);
        }
        let now = self.now();
        let incident = hex::encode(random_bytes::<8>()?.as_ref());
        let reference = reference.map_or_else(|| format!("sweep-{incident}"), str::to_owned);
        // A window still open would show the new password to the very person it is kept from.
        let revoked = match subject {
            Subject::Admin { admin_id, .. } => {
                self.revoke_open_grants(tx, actor, client, OpenGrants::OfAdmin(admin_id), "exposure_sweep", now).await?
            }
            Subject::Token { .. } => 0,
        };
        let by = actor.audit_identity().1;
        sqlx::query(
            "INSERT INTO incidents (incident_id, reference, tenant_id, reason, opened_by, opened_by_admin, opened_at_ms, \
             state, outcome, new_version, grants_revoked, finished_at_ms, acknowledged_by, acknowledged_at_ms, ack_note, \
             overdue_alerted, kind, subject, progress_at_ms, subject_admin) \
             VALUES ($1, $2, '', $3, $4, $5, $6, 'open', 'rotating', NULL, $7, NULL, NULL, NULL, NULL, 0, 'exposure_sweep', $8, $6, $9)",
        )
        .bind(&incident)
        .bind(&reference)
        .bind(reason)
        .bind(&by)
        .bind(actor.admin_id())
        .bind(now.timestamp_millis())
        .bind(i64::try_from(revoked).unwrap_or(i64::MAX))
        .bind(subject.label())
        .bind(match subject {
            Subject::Admin { admin_id, .. } => Some(admin_id.as_str()),
            Subject::Token { .. } => None,
        })
        .execute(&mut **tx)
        .await?;
        for (tenant_id, exposed_ms) in &found {
            sqlx::query(
                "INSERT INTO sweep_tenants (incident_id, tenant_id, exposed_at_ms, outcome) VALUES ($1, $2, $3, 'pending')",
            )
            .bind(&incident)
            .bind(tenant_id)
            .bind(exposed_ms)
            .execute(&mut **tx)
            .await?;
        }
        let listed: Vec<&str> = found.iter().take(LISTED_IN_EVENT).map(|(t, _)| t.as_str()).collect();
        let details = json!({
            "incident": incident, "incident_id": reference, "subject": subject.label(), "reason": reason,
            "since": since, "tenant_count": found.len(), "tenants": listed, "grants_revoked": revoked,
            "passkey_id": passkey_id,
        });
        let event = NewEvent::info(EventType::ExposureSweep, None, details.clone()).with_severity(Severity::Critical);
        audit::append(tx, actor, client, event, now).await?;
        let alert = Alert {
            kind: AlertKind::ExposureSweep,
            severity: Severity::Critical,
            tenant: None,
            dedupe_key: format!("exposure_sweep:{incident}"),
            message: format!(
                "exposure sweep of {}: {} tenant(s) being rotated ({reason}; incident {reference}, by {by})",
                subject.label(),
                found.len()
            ),
            details,
            audience: Audience::Security,
        };
        alerting::raise_in(tx, &self.channels, alert, now).await?;
        Ok(Some(incident))
    }

    /// Runs an opened sweep in the background (admin changes, the console).
    pub(crate) fn spawn_sweep(&self, actor: &Actor, client: &ClientInfo, incident: &str) {
        let (core, actor, client, incident) = (self.clone(), actor.clone(), client.clone(), incident.to_owned());
        tokio::spawn(async move {
            if let Err(e) = core.run_sweep(&actor, &client, &incident, None).await {
                tracing::error!(incident = %incident, error = %e, "exposure sweep stopped");
            }
        });
    }

    /// Rotates each pending tenant of the sweep, a few at a time, then records the outcome.
    async fn run_sweep(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        incident: &str,
        progress: Option<SweepProgress>,
    ) -> Result<SweepView> {
        let pending: Vec<(String,)> = sqlx::query_as(
            "SELECT tenant_id FROM sweep_tenants WHERE incident_id = $1 AND outcome = 'pending' ORDER BY tenant_id",
        )
        .bind(incident)
        .fetch_all(self.db.pool())
        .await?;
        let total = pending.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let results = futures_util::stream::iter(pending)
            .map(|(tenant_id,)| {
                let (done, progress) = (&done, progress.clone());
                async move {
                    let outcome = match TenantId::parse(&tenant_id) {
                        Ok(tenant) => self.forced_rotation(actor, client, &tenant, "sweep").await,
                        Err(_) => Err(Error::NotFound("credential")),
                    };
                    let recorded = self.record_swept(incident, &tenant_id, &outcome).await;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if let Some(report) = &progress {
                        report(n, total);
                    }
                    recorded
                }
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect::<Vec<Result<()>>>()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.finish_sweep(actor, client, incident).await
    }

    async fn record_swept(&self, incident: &str, tenant_id: &str, outcome: &Result<u64>) -> Result<()> {
        let now = self.now().timestamp_millis();
        let (state, version, error) = match outcome {
            Ok(version) => ("rotated", i64::try_from(*version).ok(), None),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE sweep_tenants SET outcome = $1, new_version = $2, error = $3, finished_at_ms = $4 \
             WHERE incident_id = $5 AND tenant_id = $6",
        )
        .bind(state)
        .bind(version)
        .bind(error)
        .bind(now)
        .bind(incident)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE incidents SET progress_at_ms = $1 WHERE incident_id = $2")
            .bind(now)
            .bind(incident)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_sweep(&self, actor: &Actor, client: &ClientInfo, incident: &str) -> Result<SweepView> {
        let view = self.sweep_view(incident).await?;
        let failed: Vec<&str> =
            view.tenants.iter().filter(|t| t.outcome == "failed").map(|t| t.tenant_id.as_str()).collect();
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        // An incident flagged interrupted meanwhile (no progress for long) still gets its outcome.
        sqlx::query(
            "UPDATE incidents SET outcome = $1, finished_at_ms = $2 WHERE incident_id = $3 \
             AND outcome IN ('rotating', 'interrupted')",
        )
        .bind(if failed.is_empty() { "rotated" } else { "partly_rotated" })
        .bind(now.timestamp_millis())
        .bind(incident)
        .execute(&mut *tx)
        .await?;
        let details = json!({
            "incident": incident, "subject": view.subject, "rotated": view.rotated, "failed": failed.len(),
            "failed_tenants": failed.iter().take(LISTED_IN_EVENT).collect::<Vec<_>>(),
        });
        let severity = if failed.is_empty() { Severity::Info } else { Severity::Warning };
        let event = NewEvent::info(EventType::ExposureSweepFinished, None, details.clone()).with_severity(severity);
        audit::append(&mut tx, actor, client, event, now).await?;
        if !failed.is_empty() {
            let alert = Alert {
                kind: AlertKind::ExposureSweepFailed,
                severity: Severity::Critical,
                tenant: None,
                dedupe_key: format!("exposure_sweep_failed:{incident}"),
                message: format!(
                    "exposure sweep of {} could not rotate {} tenant(s): their exposed passwords may still work",
                    view.subject,
                    failed.len()
                ),
                details,
                audience: Audience::Security,
            };
            alerting::raise_in(&mut tx, &self.channels, alert, now).await?;
        }
        tx.commit().await?;
        self.wake_outbox();
        tracing::warn!(incident = %incident, rotated = view.rotated, failed = failed.len(), "exposure sweep finished");
        self.sweep_view(incident).await
    }

    /// A sweep as it stands.
    pub(crate) async fn sweep_view(&self, incident: &str) -> Result<SweepView> {
        let head: Option<(Option<String>,)> =
            sqlx::query_as("SELECT subject FROM incidents WHERE incident_id = $1 AND kind = 'exposure_sweep'")
                .bind(incident)
                .fetch_optional(self.db.pool())
                .await?;
        let (subject,) = head.ok_or(Error::NotFound("incident"))?;
        let tenants = self.sweep_tenants(incident, i64::MAX).await?;
        Ok(SweepView {
            incident: Some(incident.to_owned()),
            subject: subject.unwrap_or_default(),
            since: None,
            dry_run: false,
            rotated: tenants.iter().filter(|t| t.outcome == "rotated").count(),
            failed: tenants.iter().filter(|t| t.outcome == "failed").count(),
            tenants,
        })
    }

    /// A sweep's tenants, by name, at most `limit`.
    pub(crate) async fn sweep_tenants(&self, incident: &str, limit: i64) -> Result<Vec<SweepTenantView>> {
        let rows: Vec<SweptRow> = sqlx::query_as(
            "SELECT tenant_id, exposed_at_ms, outcome, new_version, error FROM sweep_tenants WHERE incident_id = $1 \
             ORDER BY tenant_id LIMIT $2",
        )
        .bind(incident)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(tenant_id, ms, outcome, new_version, error)| SweepTenantView {
                tenant_id,
                exposed_at: at(ms),
                outcome,
                new_version,
                error,
            })
            .collect())
    }
}

/// The answer of a sweep that found nothing to rotate.
fn nothing_exposed(subject: &Subject, request: &SweepRequest) -> SweepView {
    SweepView {
        incident: None,
        subject: subject.label().to_owned(),
        since: request.since,
        dry_run: false,
        tenants: Vec::new(),
        rotated: 0,
        failed: 0,
    }
}

/// SECURITY: a token that still works would read the new passwords as soon as they exist.
fn refuse_live_token(subject: &Subject) -> Result<()> {
    match subject {
        Subject::Token { live: true, label, .. } => Err(Error::InvalidInput(format!(
            "{label} still works and would read the new passwords: revoke it first (smtp-vault token revoke), then sweep"
        ))),
        _ => Ok(()),
    }
}
