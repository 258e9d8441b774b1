//! Scheduled work as core operations: the daily cycle (repair interrupted rotations, a slice
//! of the reconciliation, rotate what is due, queue 7-day notices once), the heartbeat spread
//! over the day (each tenant at its own time: a login and the Mailu admin inventory) and rotation
//! deferral. Single-flight across console instances: a cycle runs only for the instance that
//! claims its key in the database (insert-once row), so two consoles on one PostgreSQL run it
//! once. Every run is audited.

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::AlertKind;
use crate::core::alerting::{self, Alert, Audience};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::error::{Error, Result};
use crate::core::mail::LoginCheck;
use crate::core::rotation::RotationResult;
use crate::core::rotation::state::{self, Transition};
use crate::model::TenantId;
use crate::model::{CredentialState, Permission};
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde_json::json;

/// What one daily cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// False when another instance (or an earlier run) already ran this cycle.
    pub ran: bool,
    /// Interrupted rotations settled.
    pub repaired: Vec<TenantId>,
    /// Tenants rotated.
    pub rotated: Vec<TenantId>,
    /// Tenants whose rotation did not complete.
    pub failed: Vec<TenantId>,
    /// Tenants noticed (due within 7 days).
    pub noticed: Vec<TenantId>,
    /// What today's slice of the Vault-against-database reconciliation found (`tenant: what`).
    pub differences: Vec<String>,
    /// What failed along the way (a tenant's repair or heartbeat, or a whole stage), each with
    /// its error; the rest of the cycle ran regardless.
    pub errors: Vec<String>,
}

/// What a heartbeat pass found.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Tenants logged in with (whatever the answer).
    pub checked: Vec<TenantId>,
    /// Tenants whose stored credential no longer logs in.
    pub drifted: Vec<TenantId>,
    /// Tenants that could not be checked (Vault, crypto or database errors), with the error;
    /// the others were checked regardless.
    pub failed: Vec<(TenantId, String)>,
    /// Mailu global admins the spread pass found unknown (`tenant: email`), each alerted.
    pub unknown_admins: Vec<String>,
}

impl Heartbeat {
    fn note(&mut self, tenant: TenantId, outcome: Result<bool>) {
        match outcome {
            Ok(drifted) => {
                if drifted {
                    self.drifted.push(tenant.clone());
                }
                self.checked.push(tenant);
            }
            Err(e) => {
                tracing::error!(tenant = %tenant, error = %e, "heartbeat could not check the tenant");
                self.failed.push((tenant, e.to_string()));
            }
        }
    }
}

/// One tenant's heartbeat turn: whether its password drifted, and the unknown Mailu admins.
type Turn = (Result<bool>, Vec<String>);

/// Logins the spread heartbeat runs at once against one SMTP host.
pub const HEARTBEAT_PER_SERVER: usize = 2;
/// SMTP hosts the spread heartbeat talks to at once.
const HEARTBEAT_SERVERS_AT_ONCE: usize = 8;
const DAY_MS: i64 = 86_400_000;

/// A tenant's heartbeat time, in milliseconds into the UTC day: stable for the tenant and even
/// over the day (the first 8 bytes of SHA-256 over its id).
#[must_use]
pub fn heartbeat_slot(tenant: &TenantId) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(tenant.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::try_from(u64::from_be_bytes(first) % 86_400_000).unwrap_or(0)
}

/// The tenant's first heartbeat time after `after`.
#[must_use]
pub fn next_heartbeat(tenant: &TenantId, after: DateTime<Utc>) -> DateTime<Utc> {
    let at = after.timestamp_millis();
    let today = at - at.rem_euclid(DAY_MS) + heartbeat_slot(tenant);
    let next = if today > at { today } else { today + DAY_MS };
    DateTime::from_timestamp_millis(next).unwrap_or(after)
}

const SYSTEM: Actor = Actor::System { job: "daily-cycle" };
const SYSTEM_HEARTBEAT: Actor = Actor::System { job: "heartbeat" };
/// The tenants a heartbeat checks and may move (its two transitions leave from the same states).
const HEARTBEAT: Transition = Transition::HeartbeatAccepted;

/// How a tenant's last error starts when the heartbeat could not tell whether its password works.
pub const COULD_NOT_CHECK: &str = "the heartbeat could not check the login: ";

/// A tenant's last error while a refused heartbeat waits for its re-check.
pub const REFUSED_ONCE: &str = "the stored password was refused at the last heartbeat; it is logged in again before the drift alarm (a rate limit answers the same 535)";

impl Core {
    /// Claims a job run for `key` (e.g. `daily:2026-11-22`); true for exactly one caller.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_job_run(&self, key: &str, holder: &str) -> Result<bool> {
        let claimed = sqlx::query(
            "INSERT INTO job_leases (job, holder, expires_at_ms) VALUES ($1, $2, $3) ON CONFLICT (job) DO NOTHING",
        )
        .bind(key)
        .bind(holder)
        .bind(self.now().timestamp_millis())
        .execute(self.db.pool())
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Today's backup, once across every console on the database (`None`: already ran).
    ///
    /// # Errors
    /// Those of [`Core::run_backup`].
    pub async fn run_scheduled_backup(&self, holder: &str) -> Result<Option<crate::core::backup::BackupReport>> {
        let key = format!("backup:{}", self.now().format("%Y-%m-%d"));
        if !self.claim_job_run(&key, holder).await? {
            return Ok(None);
        }
        self.run_backup(&Actor::System { job: "daily-backup" }, &mut |_, _| {}).await.map(Some)
    }

    /// This month's DR drill, once across every console on the database.
    ///
    /// # Errors
    /// Those of [`Core::run_dr_drill`].
    pub async fn run_scheduled_drill(&self, holder: &str) -> Result<Option<crate::core::recovery::DrillReport>> {
        let key = format!("drill:{}", self.now().format("%Y-%m"));
        if !self.claim_job_run(&key, holder).await? {
            return Ok(None);
        }
        self.run_dr_drill(&Actor::System { job: "dr-drill" }, None, &mut |_, _| {}).await.map(Some)
    }

    /// Logs a failed scheduled job and raises one critical alert per job and day.
    pub async fn report_job_failure(&self, job: &'static str, error: &Error) {
        tracing::error!(job, error = %error, "scheduled job failed");
        let alert = Alert {
            kind: AlertKind::JobFailed,
            severity: Severity::Critical,
            tenant: None,
            dedupe_key: format!("job_failed:{job}:{}", self.now().format("%Y-%m-%d")),
            message: format!("the scheduled job {job} failed: {error}"),
            details: json!({"job": job}),
            audience: Audience::Security,
        };
        if let Err(e) = self.raise_alert(alert).await {
            tracing::error!(error = %e, "could not raise the job failure alert");
        }
    }

    /// The daily cycle at `now`'s date (the scheduler calls it at 02:00 UTC).
    ///
    /// # Errors
    /// Vault or database errors that stop the whole cycle; per-tenant failures are reported.
    pub async fn run_daily_cycle(&self, holder: &str, concurrency: usize) -> Result<CycleReport> {
        let now = self.now();
        let key = format!("daily:{}", now.format("%Y-%m-%d"));
        if !self.claim_job_run(&key, holder).await? {
            return Ok(CycleReport::default());
        }
        let mut report = CycleReport { ran: true, ..CycleReport::default() };
        let client = ClientInfo::local();
        // Each stage runs whatever the one before it did; what failed is collected, recorded
        // with the cycle, and makes the cycle fail (the scheduler raises `job_failed`).
        match self.tenants_with_pending_rotation().await {
            Ok(tenants) => {
                for tenant in tenants {
                    match self.repair_rotation(&SYSTEM, &client, &tenant).await {
                        Ok(RotationResult::Rotated { .. }) => report.repaired.push(tenant),
                        Ok(_) => {}
                        Err(e) => report.errors.push(format!("repairing {tenant}: {e}")),
                    }
                }
            }
            Err(e) => report.errors.push(format!("looking for interrupted rotations: {e}")),
        }
        match self.reconcile_slice(&SYSTEM).await {
            Ok(slice) => report.differences = slice.differences,
            Err(e) => report.errors.push(format!("reconciling Vault with the database: {e}")),
        }
        match self.rotate_due(&SYSTEM, concurrency).await {
            Ok(outcomes) => {
                for (tenant, outcome) in outcomes {
                    match outcome {
                        Ok(RotationResult::Rotated { .. }) => report.rotated.push(tenant),
                        _ => report.failed.push(tenant),
                    }
                }
            }
            Err(e) => report.errors.push(format!("rotating the due tenants: {e}")),
        }
        match self.queue_rotation_notices(now).await {
            Ok(noticed) => report.noticed = noticed,
            Err(e) => report.errors.push(format!("queueing rotation notices: {e}")),
        }
        let details = json!({
            "cycle": key, "holder": holder, "repaired": report.repaired.len(), "rotated": report.rotated.len(),
            "failed": report.failed.len(), "noticed": report.noticed.len(),
            "differences": report.differences, "errors": report.errors,
        });
        let severity =
            if report.errors.is_empty() && report.differences.is_empty() { Severity::Info } else { Severity::Warning };
        let event = NewEvent::info(EventType::JobRan, None, details).with_severity(severity);
        audit::record(&self.db, &SYSTEM, &client, event, self.now()).await?;
        if let Some(first) = report.errors.first() {
            return Err(Error::Internal(format!(
                "the daily cycle ran with {} error(s); the first: {first}",
                report.errors.len()
            )));
        }
        Ok(report)
    }

    /// Queues one notice per tenant and rotation date for rotations due within 7 days.
    async fn queue_rotation_notices(&self, now: DateTime<Utc>) -> Result<Vec<TenantId>> {
        let soon: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "SELECT tenant_id, COALESCE(deferred_until_ms, next_rotation_at_ms), contact_email FROM tenants \
             WHERE COALESCE(deferred_until_ms, next_rotation_at_ms) > $1 AND COALESCE(deferred_until_ms, next_rotation_at_ms) <= $2 \
             AND (notice_for_ms IS NULL OR notice_for_ms <> COALESCE(deferred_until_ms, next_rotation_at_ms))",
        )
        .bind(now.timestamp_millis())
        .bind((now + Duration::days(7)).timestamp_millis())
        .fetch_all(self.db.pool())
        .await?;
        let mut noticed = Vec::new();
        for (tenant_id, due_ms, contact) in soon {
            let Ok(tenant) = TenantId::parse(&tenant_id) else { continue };
            let due = DateTime::from_timestamp_millis(due_ms).unwrap_or(now);
            let when = due.format("%Y-%m-%d %H:%M UTC");
            let alert = Alert {
                kind: AlertKind::RotationNotice,
                severity: Severity::Info,
                tenant: Some(&tenant),
                dedupe_key: format!("rotation_notice:{tenant}:{due_ms}"),
                message: format!("the SMTP admin password of {tenant} will be rotated on {when}"),
                details: json!({
                    "due": due,
                    "body": format!(
                        "Hello,\n\nthe admin SMTP password of your mail server ({tenant}) will be rotated on {when}.\n\
                         Services that read it from smtp-vault pick up the new password by themselves; anything \
                         configured with it by hand must be updated after the rotation.\n\n-- smtp-vault\n"
                    ),
                }),
                audience: Audience::Tenant { contact },
            };
            let mut tx = self.db.begin_write().await?;
            sqlx::query("UPDATE tenants SET notice_for_ms = $1 WHERE tenant_id = $2")
                .bind(due_ms)
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            let event = NewEvent::info(EventType::RotationNoticeQueued, Some(&tenant), json!({"due": due}));
            audit::append(&mut tx, &SYSTEM, &ClientInfo::local(), event, self.now()).await?;
            alerting::raise_in(&mut tx, &self.channels, alert, self.now()).await?;
            tx.commit().await?;
            self.wake_outbox();
            noticed.push(tenant);
        }
        Ok(noticed)
    }

    /// Logs in with every stored credential; a refused one marks the tenant `drifted` and
    /// raises an alert. Returns the drifted tenants (see [`Core::heartbeat_all`] for the ones
    /// that could not be checked).
    ///
    /// # Errors
    /// Database errors listing the tenants.
    pub async fn heartbeat(&self) -> Result<Vec<TenantId>> {
        Ok(self.heartbeat_all().await?.drifted)
    }

    /// A heartbeat pass over every tenant: one tenant's Vault, crypto or database error is
    /// logged and reported, and the others are still checked.
    ///
    /// # Errors
    /// Database errors listing the tenants.
    pub async fn heartbeat_all(&self) -> Result<Heartbeat> {
        let rows: Vec<(String,)> = sqlx::query_as(&format!(
            "SELECT tenant_id FROM tenants WHERE {} ORDER BY tenant_id",
            HEARTBEAT.sources_sql()
        ))
        .fetch_all(self.db.pool())
        .await?;
        let mut beat = Heartbeat::default();
        for (tenant_id,) in rows {
            let Ok(tenant) = TenantId::parse(&tenant_id) else { continue };
            let outcome = self.heartbeat_one(&tenant).await;
            beat.note(tenant, outcome);
        }
        Ok(beat)
    }

    /// The heartbeat spread over the day: every tenant is logged in with once a day at its own
    /// time ([`heartbeat_slot`]), so no mail server sees the whole fleet's logins at once, and
    /// at most [`HEARTBEAT_PER_SERVER`] at a time on one SMTP host. The monitor calls it every
    /// minute; each call takes the tenants whose time has come (at most 500), claiming each with
    /// a conditional update (so two consoles on one database log in once) that also sets its
    /// next time. A tenant without a time yet gets its next one and waits for it (a new tenant,
    /// or every tenant once after the upgrade: no burst then either).
    ///
    /// # Errors
    /// Database errors listing or claiming the tenants; a tenant's own error is in the result.
    pub async fn heartbeat_due(&self) -> Result<Heartbeat> {
        let now = self.now();
        let unslotted: Vec<(String,)> =
            sqlx::query_as("SELECT tenant_id FROM tenants WHERE heartbeat_due_at_ms IS NULL LIMIT 10000")
                .fetch_all(self.db.pool())
                .await?;
        if !unslotted.is_empty() {
            let mut tx = self.db.begin_write().await?;
            for (tenant,) in &unslotted {
                let Ok(tenant) = TenantId::parse(tenant) else { continue };
                sqlx::query(
                    "UPDATE tenants SET heartbeat_due_at_ms = $1 WHERE tenant_id = $2 AND heartbeat_due_at_ms IS NULL",
                )
                .bind(next_heartbeat(&tenant, now).timestamp_millis())
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        let due: Vec<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT tenant_id, smtp_host, heartbeat_due_at_ms FROM tenants WHERE heartbeat_due_at_ms <= $1 AND {} \
             ORDER BY heartbeat_due_at_ms LIMIT 500",
            HEARTBEAT.sources_sql()
        ))
        .bind(now.timestamp_millis())
        .fetch_all(self.db.pool())
        .await?;
        let mut by_server: std::collections::BTreeMap<String, Vec<TenantId>> = std::collections::BTreeMap::new();
        for (tenant, host, was) in due {
            let Ok(tenant) = TenantId::parse(&tenant) else { continue };
            let claimed = sqlx::query(
                "UPDATE tenants SET heartbeat_due_at_ms = $1 WHERE tenant_id = $2 AND heartbeat_due_at_ms = $3",
            )
            .bind(next_heartbeat(&tenant, now).timestamp_millis())
            .bind(tenant.as_str())
            .bind(was)
            .execute(self.db.pool())
            .await?;
            if claimed.rows_affected() == 1 {
                by_server.entry(host.to_lowercase()).or_default().push(tenant);
            }
        }
        let outcomes: Vec<Vec<(TenantId, Turn)>> = futures_util::stream::iter(by_server.into_values())
            .map(|tenants| async move {
                futures_util::stream::iter(tenants)
                .map(|tenant| async move {
                    let outcome = self.heartbeat_one(&tenant).await;
                    // The tenant's Mailu global admins, in the same turn: one more call to
                    // the same server, once a day, instead of the whole fleet's at 02:00. A
                    // Mailu that cannot be asked is no failure of the heartbeat (the login
                    // already speaks for its reachability); it is logged.
                    let inventory = match self.check_mailu_admins(&SYSTEM_HEARTBEAT, Some(&tenant)).await {
                        Ok(found) => found.unknown,
                        Err(e) => {
                            tracing::warn!(tenant = %tenant, error = %e, "could not take the Mailu admin inventory");
                            Vec::new()
                        }
                    };
                    (tenant, (outcome, inventory))
                })
                .buffer_unordered(HEARTBEAT_PER_SERVER)
                .collect()
                .await
            })
            .buffer_unordered(HEARTBEAT_SERVERS_AT_ONCE)
            .collect()
            .await;
        let mut beat = Heartbeat::default();
        for (tenant, (outcome, unknown)) in outcomes.into_iter().flatten() {
            beat.note(tenant, outcome);
            beat.unknown_admins.extend(unknown);
        }
        // A tenant that could not be checked (Vault away, a broken record) is tried again in an
        // hour rather than tomorrow.
        let retry = (now + Duration::hours(1)).timestamp_millis();
        for (tenant, _) in &beat.failed {
            sqlx::query("UPDATE tenants SET heartbeat_due_at_ms = $1 WHERE tenant_id = $2")
                .bind(retry)
                .bind(tenant.as_str())
                .execute(self.db.pool())
                .await?;
        }
        metrics::counter!("smtp_vault_heartbeat_logins_total").increment(beat.checked.len() as u64);
        metrics::counter!("smtp_vault_heartbeat_failures_total").increment(beat.failed.len() as u64);
        Ok(beat)
    }

    /// The spread heartbeat's minute: one pass of [`Core::heartbeat_due`]; tenants it could not
    /// check raise `job_failed` (once a day), as the daily cycle's heartbeat did.
    pub async fn run_heartbeat_pass(&self) {
        match self.heartbeat_due().await {
            Ok(beat) if !beat.failed.is_empty() => {
                let (tenant, first) = &beat.failed[0];
                let error = Error::Internal(format!(
                    "{} tenant(s) could not be checked (retried in an hour); the first, {tenant}: {first}",
                    beat.failed.len()
                ));
                self.report_job_failure("heartbeat", &error).await;
            }
            Ok(_) => {}
            Err(e) => self.report_job_failure("heartbeat", &e).await,
        }
    }

    /// Checks one tenant; true when its stored credential no longer logs in.
    pub(crate) async fn heartbeat_one(&self, tenant: &TenantId) -> Result<bool> {
        let (mut stored, state) = match self.read_to_hand_out(tenant).await {
            Err(Error::NotFound(_)) => return Ok(false),
            read => read?,
        };
        let password = self.effective_password(tenant, &mut stored, state).await?;
        // A tenant Vault re-points behind the console's back is alerted and left alone.
        let target = match self.recorded_mail_target(tenant, &stored.document).await {
            Err(Error::DestinationMismatch) => return Ok(false),
            target => target?,
        };
        let check = self.mail()?.check_login(&target, &password).await;
        let now = self.now();
        let check = if check == LoginCheck::Rejected { self.refusal_holds(tenant, now).await? } else { check };
        let (ok, state) = match &check {
            LoginCheck::Accepted => (Some(1i64), Transition::HeartbeatAccepted.target().as_str()),
            LoginCheck::Rejected => (Some(0), Transition::HeartbeatRefused.target().as_str()),
            LoginCheck::Unknown(_) => (None, ""),
        };
        let mut tx = self.db.begin_write().await?;
        // A rotation that started meanwhile owns the state: the heartbeat never overwrites
        // `rotating` or `needs_reconcile`, and a refusal seen mid-rotation is no drift.
        // A login that worked also ends a rate limit or a refusal that did not hold: neither is
        // the tenant's last word any more (one write with the heartbeat's own).
        let beat = format!(
            "UPDATE tenants SET heartbeat_at_ms = $1, heartbeat_ok = $2, \
             heartbeat_ok_at_ms = CASE WHEN $2 = 1 THEN $1 ELSE heartbeat_ok_at_ms END, \
             state = CASE WHEN $3 = '' OR NOT {} THEN state ELSE $3 END, \
             heartbeat_refused_at_ms = CASE WHEN $2 = 1 THEN NULL ELSE heartbeat_refused_at_ms END, \
             last_error = CASE WHEN $2 = 1 AND (last_error IN ($5, $6) OR last_error LIKE $7) THEN NULL \
             ELSE last_error END \
             WHERE tenant_id = $4 RETURNING state",
            HEARTBEAT.sources_sql()
        );
        let (after,): (String,) = sqlx::query_as(&beat)
            .bind(now.timestamp_millis())
            .bind(ok)
            .bind(state)
            .bind(tenant.as_str())
            .bind(crate::core::mail::RATE_LIMITED)
            .bind(REFUSED_ONCE)
            .bind(format!("{COULD_NOT_CHECK}%"))
            .fetch_one(&mut *tx)
            .await?;
        let check = if check == LoginCheck::Rejected
            && CredentialState::from_name(&after) != Some(Transition::HeartbeatRefused.target())
        {
            LoginCheck::Unknown("rotating".into())
        } else {
            check
        };
        if check == LoginCheck::Rejected {
            let event = NewEvent::info(EventType::HeartbeatDrifted, Some(tenant), json!({"version": stored.version}))
                .with_severity(Severity::Critical);
            audit::append(&mut tx, &SYSTEM, &ClientInfo::local(), event, now).await?;
        }
        tx.commit().await?;
        if check == LoginCheck::Unknown(crate::core::mail::RATE_LIMITED.into()) {
            // Said once a day per tenant, with what to do; the tenant's state is left as it
            // was (the password is not known to be wrong).
            self.record_rate_limited(tenant).await?;
            return Ok(false);
        }
        if let LoginCheck::Unknown(why) = &check
            && why != REFUSED_ONCE
        {
            // What kept the check from telling (a TLS mode the port does not speak, the
            // refusal budget, a time-out) is the tenant's last word until a login succeeds.
            sqlx::query(&format!(
                "UPDATE tenants SET last_error = $1 WHERE tenant_id = $2 AND {}",
                HEARTBEAT.sources_sql()
            ))
            .bind(format!("{COULD_NOT_CHECK}{why}"))
            .bind(tenant.as_str())
            .execute(self.db.pool())
            .await?;
        }
        if check == LoginCheck::Rejected {
            // The check told, after all: an earlier "could not check" is stale.
            sqlx::query("UPDATE tenants SET last_error = NULL WHERE tenant_id = $1 AND last_error LIKE $2")
                .bind(tenant.as_str())
                .bind(format!("{COULD_NOT_CHECK}%"))
                .execute(self.db.pool())
                .await?;
            let alert = Alert {
                kind: AlertKind::HeartbeatDrift,
                severity: Severity::Critical,
                tenant: Some(tenant),
                dedupe_key: format!("heartbeat_drift:{tenant}:{}", stored.version),
                message: format!("the stored SMTP admin password of {tenant} no longer logs in"),
                details: json!({"version": stored.version}),
                audience: Audience::Security,
            };
            self.raise_alert(alert).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether a refused heartbeat login counts as drift: the first refusal is noted and
    /// only a refusal `heartbeat_recheck_after` later or more does (Mailu 2024.06 answers a
    /// rate-limited login with the same 535 as a wrong password, and the console cannot see
    /// every limit: a per-user one leaves its API calls alone). Meanwhile the login is unknown.
    async fn refusal_holds(&self, tenant: &TenantId, now: DateTime<Utc>) -> Result<LoginCheck> {
        let (first,): (Option<i64>,) =
            sqlx::query_as("SELECT heartbeat_refused_at_ms FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?
                .unwrap_or((None,));
        let recheck = chrono::Duration::from_std(self.settings.heartbeat_recheck_after).unwrap_or_default();
        let Some(first) = first.and_then(DateTime::from_timestamp_millis) else {
            sqlx::query(&format!(
                "UPDATE tenants SET heartbeat_refused_at_ms = $1, \
                 last_error = CASE WHEN $3 THEN last_error ELSE $4 END WHERE tenant_id = $2 AND {}",
                HEARTBEAT.sources_sql()
            ))
            .bind(now.timestamp_millis())
            .bind(tenant.as_str())
            .bind(recheck.is_zero())
            .bind(REFUSED_ONCE)
            .execute(self.db.pool())
            .await?;
            return Ok(if recheck.is_zero() { LoginCheck::Rejected } else { LoginCheck::Unknown(REFUSED_ONCE.into()) });
        };
        Ok(if now - first >= recheck { LoginCheck::Rejected } else { LoginCheck::Unknown(REFUSED_ONCE.into()) })
    }

    /// Logs in again for every tenant whose first refused heartbeat is `heartbeat_recheck_after`
    /// old (the monitor calls it every minute), so a drift is alarmed within that time and a
    /// lifted limit clears. Returns how many were re-checked.
    ///
    /// # Errors
    /// Database errors listing the tenants; a tenant's own error is logged.
    pub async fn recheck_refused_heartbeats(&self) -> Result<usize> {
        let due = self.now() - chrono::Duration::from_std(self.settings.heartbeat_recheck_after).unwrap_or_default();
        // A re-check that could not tell waits a whole period again (its heartbeat time moved),
        // so a server that hangs after one refusal is not logged into every minute; a pass
        // takes at most 20, so the monitor's other work is not held up for long.
        let due_sql = format!(
            "SELECT tenant_id FROM tenants WHERE heartbeat_refused_at_ms <= $1 AND heartbeat_at_ms <= $1 \
             AND {} ORDER BY heartbeat_at_ms LIMIT 20",
            state::states_sql(&[CredentialState::Active])
        );
        let rows: Vec<(String,)> =
            sqlx::query_as(&due_sql).bind(due.timestamp_millis()).fetch_all(self.db.pool()).await?;
        for (tenant,) in &rows {
            let Ok(tenant) = TenantId::parse(tenant) else { continue };
            if let Err(e) = self.heartbeat_one(&tenant).await {
                tracing::error!(tenant = %tenant, error = %e, "re-checking a refused heartbeat failed");
            }
        }
        Ok(rows.len())
    }

    /// Marks a tenant Mailu rate-limits the console for (its last error says so) and raises one
    /// warning a day about it.
    pub(crate) async fn record_rate_limited(&self, tenant: &TenantId) -> Result<()> {
        sqlx::query("UPDATE tenants SET last_error = $1 WHERE tenant_id = $2")
            .bind(crate::core::mail::RATE_LIMITED)
            .bind(tenant.as_str())
            .execute(self.db.pool())
            .await?;
        let alert = Alert {
            kind: AlertKind::MailuRateLimited,
            severity: Severity::Warning,
            tenant: Some(tenant),
            dedupe_key: format!("mailu_rate_limited:{tenant}:{}", self.now().format("%Y-%m-%d")),
            message: format!(
                "{tenant}: Mailu rate-limits the console, so its logins prove nothing; add the console's address to AUTH_RATELIMIT_EXEMPTION"
            ),
            details: json!({"what_to_do": crate::core::mail::RATE_LIMITED}),
            audience: Audience::Security,
        };
        self.raise_alert(alert).await?;
        Ok(())
    }

    /// Defers a tenant's next rotation once, by up to 7 days, with a reason.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::InvalidInput`] (bad days, no reason, already deferred),
    /// [`Error::NotFound`].
    pub async fn defer_rotation(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        days: u32,
        reason: &str,
    ) -> Result<DateTime<Utc>> {
        authorize(actor, Permission::ConfigureTenants)?;
        if !(1..=7).contains(&days) || reason.trim().chars().count() < 3 {
            return Err(Error::InvalidInput("defer by 1 to 7 days and give a reason".into()));
        }
        let mut tx = self.db.begin_write().await?;
        let row: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT next_rotation_at_ms, deferred_until_ms FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let (next, deferred) = row.ok_or(Error::NotFound("credential"))?;
        if deferred.is_some() {
            return Err(Error::InvalidInput("this rotation was already deferred once".into()));
        }
        let next = next.and_then(DateTime::from_timestamp_millis).unwrap_or_else(|| self.now());
        let until = next + Duration::days(i64::from(days));
        sqlx::query("UPDATE tenants SET deferred_until_ms = $1 WHERE tenant_id = $2")
            .bind(until.timestamp_millis())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let details = json!({"from": next, "until": until, "reason": reason.trim()});
        audit::append(
            &mut tx,
            actor,
            client,
            NewEvent::info(EventType::RotationDeferred, Some(tenant), details),
            self.now(),
        )
        .await?;
        tx.commit().await?;
        Ok(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_times_are_stable_even_over_the_day_and_always_within_the_next_24_hours() {
        let mut per_hour = [0u32; 24];
        let after = DateTime::from_timestamp_millis(1_796_000_123_456).unwrap_or_default();
        for i in 0..24_000 {
            let Ok(tenant) = TenantId::parse(&format!("tenant-{i}")) else { continue };
            let slot = heartbeat_slot(&tenant);
            assert_eq!(slot, heartbeat_slot(&tenant));
            per_hour[usize::try_from(slot / 3_600_000).unwrap_or(0)] += 1;
            let next = next_heartbeat(&tenant, after);
            assert!(next > after && next - after <= Duration::days(1), "{tenant}");
            assert_eq!(next.timestamp_millis().rem_euclid(DAY_MS), slot);
        }
        // 1,000 an hour on average; a burst would put thousands in one hour.
        assert!(per_hour.iter().all(|n| (850..1150).contains(n)), "{per_hour:?}");
    }
}
