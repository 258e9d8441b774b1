//! Staged, crash-safe rotation (ARCHITECTURE §4): generate → persist pending in Vault → apply on
//! Mailu (skipped when the pending password already logs in) → verify with a real SMTP AUTH →
//! promote with a check-and-set write → drop pending → record. At every instant Vault holds a
//! password the mail server accepts (current, or pending once applied), so nothing is lost
//! whatever step a crash interrupts; running the rotation again resumes from the pending
//! record. Retries are bounded with backoff; a password the server refuses is replaced; after
//! the limit the tenant is `needs_reconcile` and an alert is raised, with the pending record
//! kept for the reconcile to settle.
//!
//! A batch ([`Core::rotate_due`]) rides out a Vault outage (a raft leader election, a node
//! restart): a tenant stopped by one is resumed from its pending record with backoff, for up to
//! [`VAULT_OUTAGE_BUDGET`] per outage across the whole batch, before it is reported failed.

use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize, authorize_ceremony};
use crate::core::alerting::{self, Alert};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::{SecretField, random_bytes};
use crate::core::error::{Error, Result};
use crate::core::mail::{LoginCheck, MailTarget};
use crate::core::vault::{CredentialDocument, PendingDocument, PendingPhase, VersionedDocument};
use crate::model::{Permission, TenantId};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// How long a batch keeps resuming tenants while Vault cannot serve, counted from the first
/// failure of an outage and shared by the whole batch (so a Vault that stays down costs the
/// batch about this long, not this long per tenant).
pub const VAULT_OUTAGE_BUDGET: Duration = Duration::from_secs(60);
/// First and longest pause before resuming a tenant stopped by a Vault outage.
const OUTAGE_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(4));

/// When the Vault outage a batch is riding out began (`None`: Vault is serving).
#[derive(Debug, Default)]
struct Outage(Mutex<Option<tokio::time::Instant>>);

impl Outage {
    /// Notes a failure; true while the outage is younger than the budget.
    fn note(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.0.lock().is_ok_and(|mut began| now.duration_since(*began.get_or_insert(now)) < VAULT_OUTAGE_BUDGET)
    }

    /// True once the outage has outlasted the budget.
    fn spent(&self) -> bool {
        self.0.lock().is_ok_and(|began| began.is_some_and(|b| b.elapsed() >= VAULT_OUTAGE_BUDGET))
    }

    /// Vault served a whole rotation: the outage is over.
    fn end(&self) {
        if let Ok(mut began) = self.0.lock() {
            *began = None;
        }
    }
}

/// A point in the rotation where a crash can be injected (tests of the invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// The pending password is in Vault; the mail server is untouched.
    PendingStaged,
    /// The mail server took the new password; Vault still says "staged".
    MailApplied,
    /// Vault says "applied".
    PhaseApplied,
    /// The new password is the current version; pending still exists.
    Promoted,
    /// Pending is gone; the database and audit log are not updated yet.
    PendingDropped,
}

impl RotationStep {
    /// Every step, in order.
    pub const ALL: [RotationStep; 5] = [
        RotationStep::PendingStaged,
        RotationStep::MailApplied,
        RotationStep::PhaseApplied,
        RotationStep::Promoted,
        RotationStep::PendingDropped,
    ];
}

/// Decides whether to "crash" after a step (returns true to stop there).
pub type FaultInjector = Arc<dyn Fn(&TenantId, RotationStep) -> bool + Send + Sync>;

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationResult {
    /// The new password is current.
    Rotated {
        /// Its KV version.
        version: u64,
    },
    /// Gave up; a person must look (alert raised).
    NeedsReconcile {
        /// Why.
        reason: String,
    },
    /// Another rotation of this tenant is running.
    Busy,
}

/// Tenants with a rotation running in this process.
#[derive(Debug, Default, Clone)]
pub struct RotationLocks(Arc<Mutex<HashSet<String>>>);

pub(crate) struct TenantGuard {
    locks: RotationLocks,
    tenant: String,
}

impl Drop for TenantGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.locks.0.lock() {
            set.remove(&self.tenant);
        }
    }
}

impl RotationLocks {
    /// Waits up to `wait` for the tenant's rotation lock (a running rotation finishes first).
    pub(crate) async fn lock_within(&self, tenant: &TenantId, wait: std::time::Duration) -> Option<TenantGuard> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(guard) = self.try_lock(tenant) {
                return Some(guard);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn try_lock(&self, tenant: &TenantId) -> Option<TenantGuard> {
        let mut set = self.0.lock().ok()?;
        set.insert(tenant.to_string()).then(|| TenantGuard { locks: self.clone(), tenant: tenant.to_string() })
    }
}

/// A new random password: 32 characters of base64url (192 bits).
///
/// # Errors
/// When the OS random source fails.
pub fn generate_password() -> Result<SecretString> {
    Ok(SecretString::from(URL_SAFE_NO_PAD.encode(random_bytes::<24>()?.as_ref())))
}

fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret().as_bytes().ct_eq(b.expose_secret().as_bytes()).into()
}

impl Core {
    fn checkpoint(&self, tenant: &TenantId, step: RotationStep) -> Result<()> {
        match &self.fault {
            Some(crash) if crash(tenant, step) => Err(Error::Internal(format!("injected crash after {step:?}"))),
            _ => Ok(()),
        }
    }

    /// The mail server of a known tenant: its stored document's, provided it is the destination
    /// the console recorded. Whoever can write Vault but not the database cannot re-point a
    /// tenant (the sealed token and password are bound to tenant and field, not to where they
    /// go): the stored token and every new password would follow the document.
    ///
    /// # Errors
    /// [`Error::DestinationMismatch`] (alerted, once per destination), and those of
    /// [`Core::mail_target`].
    pub(crate) async fn recorded_mail_target(
        &self,
        tenant: &TenantId,
        document: &CredentialDocument,
    ) -> Result<MailTarget> {
        let recorded: Option<(String, String, i64, String)> =
            sqlx::query_as("SELECT mailu_api_url, smtp_host, smtp_port, smtp_tls FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?;
        // The TLS mode too: a flipped mode sends nothing in the clear, but it would silence the
        // heartbeat's drift detection and tell consumers another mode than the page shows.
        let matches = recorded.as_ref().is_some_and(|(url, host, port, tls)| {
            url == &document.mailu_api_url
                && host == &document.smtp_host
                && *port == i64::from(document.smtp_port)
                && tls == document.tls().as_str()
        });
        if !matches {
            let (url, host, port, tls) = recorded.unwrap_or_default();
            let details = serde_json::json!({
                "recorded": {"mailu_api_url": url, "smtp_host": host, "smtp_port": port, "smtp_tls": tls},
                "in_vault": {"mailu_api_url": document.mailu_api_url, "smtp_host": document.smtp_host, "smtp_port": document.smtp_port, "smtp_tls": document.tls().as_str()},
            });
            let alert = crate::core::alerting::Alert {
                kind: "mailu_destination_mismatch",
                severity: crate::core::audit::Severity::Critical,
                tenant: Some(tenant),
                dedupe_key: format!(
                    "mailu_destination_mismatch:{tenant}:{}:{}:{}:{}",
                    document.mailu_api_url,
                    document.smtp_host,
                    document.smtp_port,
                    document.tls().as_str()
                ),
                message: format!(
                    "{tenant}: Vault names another mail server ({}) than the console recorded ({url}); nothing was sent",
                    document.mailu_api_url
                ),
                details,
                audience: crate::core::alerting::Audience::Security,
            };
            if let Err(e) = self.raise_alert(alert).await {
                tracing::error!(error = %e, "could not raise the destination alert");
            }
            return Err(Error::DestinationMismatch);
        }
        self.mail_target(tenant, document)
    }

    /// The mail server a document names (for a document the caller vouches for: one being
    /// provisioned from an authenticated request).
    pub(crate) fn mail_target(&self, tenant: &TenantId, document: &CredentialDocument) -> Result<MailTarget> {
        Ok(MailTarget {
            username: document.username.clone(),
            smtp_host: document.smtp_host.clone(),
            smtp_port: document.smtp_port,
            smtp_tls: document.tls(),
            api_url: document.mailu_api_url.clone(),
            api_token: self.keyring()?.open(&document.mailu_api_token, tenant, SecretField::MailuApiToken)?,
            tls_name: None,
            api_address: None,
        })
    }

    /// The password a consumer should use now: the current one, or the pending one once the mail
    /// server has it (zero downtime: a consumer that fails a login and reads again gets the
    /// password the server accepts).
    ///
    /// `stored` is replaced by a newer document when the rotation finished during the call.
    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn effective_password(
        &self,
        tenant: &TenantId,
        stored: &mut VersionedDocument,
        state: Option<&str>,
    ) -> Result<SecretString> {
        let keyring = self.keyring()?;
        let current = keyring.open(&stored.document.password, tenant, SecretField::Password)?;
        // The mail server is only ever changed after the tenant is marked `rotating` (and a
        // gave-up rotation stays `needs_reconcile`), so other tenants skip the pending read.
        // `state` may have been read before or after `stored`: read before, an `active` state
        // means the server still took `stored`'s password then, or `stored` is already the
        // promoted one, so the answer was right at some moment of the call; read after a
        // rotation recorded its end, `read_to_hand_out` has re-read the older `stored`.
        if state.is_some_and(|s| s != "rotating" && s != "needs_reconcile") {
            return Ok(current);
        }
        let vault = self.vault()?;
        let Some((pending, _)) = vault.read_pending(tenant).await? else {
            // The tenant is marked `rotating` only after its pending record exists, and the
            // record is dropped only after its password was promoted: with none left, the
            // rotation finished during this call and `stored` may predate the promotion, while
            // the mail server already takes the new password.
            if let Some(fresh) = vault.read_credential(tenant).await?
                && fresh.version > stored.version
            {
                *stored = fresh;
                return Ok(keyring.open(&stored.document.password, tenant, SecretField::Password)?);
            }
            return Ok(current);
        };
        let new = keyring.open(&pending.password, tenant, SecretField::Password)?;
        match pending.phase {
            PendingPhase::Applied => Ok(new),
            // The change may be in flight: ask the server which one it takes.
            PendingPhase::Staged => {
                let target = self.recorded_mail_target(tenant, &stored.document).await?;
                if self.mail()?.check_login(&target, &new).await == LoginCheck::Accepted {
                    Ok(new)
                } else {
                    Ok(current)
                }
            }
        }
    }

    /// A tenant's rotation state (`active`, `rotating`, …), `None` for a tenant without a row.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn rotation_state(&self, tenant: &TenantId) -> Result<Option<String>> {
        Ok(self.rotation_record(tenant).await?.map(|(state, _)| state))
    }

    /// A tenant's rotation state and the KV version the database last recorded for it.
    async fn rotation_record(&self, tenant: &TenantId) -> Result<Option<(String, u64)>> {
        let record: Option<(String, i64)> = sqlx::query_as("SELECT state, version FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(record.map(|(state, version)| (state, u64::try_from(version).unwrap_or_default())))
    }

    /// A tenant's current document and rotation state, read at once (the two round trips
    /// overlap).
    ///
    /// # Errors
    /// [`Error::NotFound`] without a stored credential; Vault and database errors.
    pub(crate) async fn read_to_hand_out(&self, tenant: &TenantId) -> Result<(VersionedDocument, Option<String>)> {
        let vault = self.vault()?;
        let (stored, record) =
            futures_util::future::try_join(vault.read_credential(tenant), self.rotation_record(tenant)).await?;
        let mut stored = stored.ok_or(Error::NotFound("credential"))?;
        // Vault may have answered before a rotation promoted its password and the database
        // after it recorded the result (`active` with the new version): the document read is
        // then older than the password the mail server takes. Read it again; it is now at
        // least the recorded version.
        if let Some((_, recorded)) = &record
            && *recorded > stored.version
        {
            stored = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        }
        Ok((stored, record.map(|(state, _)| state)))
    }

    /// Rotates one tenant's password now (or resumes its interrupted rotation).
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::NotFound`]; Vault and database errors stop the run with
    /// the pending record kept, so running it again resumes.
    #[tracing::instrument(skip_all, fields(tenant = %tenant, trigger))]
    pub async fn rotate_credential(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        trigger: &str,
    ) -> Result<RotationResult> {
        authorize(actor, Permission::Rotate)?;
        let Some(_guard) = self.rotation_locks.try_lock(tenant) else {
            return Ok(RotationResult::Busy);
        };
        self.run_rotation(actor, client, tenant, trigger).await
    }

    pub(crate) async fn run_rotation(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        trigger: &str,
    ) -> Result<RotationResult> {
        let result = self.rotation_steps(actor, client, tenant, trigger).await;
        let outcome = match &result {
            Ok(RotationResult::Rotated { .. }) => "rotated",
            Ok(RotationResult::NeedsReconcile { .. }) => "needs_reconcile",
            Ok(RotationResult::Busy) => "busy",
            Err(_) => "error",
        };
        metrics::counter!("smtp_vault_rotations_total", "outcome" => outcome).increment(1);
        result
    }

    async fn rotation_steps(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        trigger: &str,
    ) -> Result<RotationResult> {
        let vault = self.vault()?;
        let keyring = self.keyring()?;
        let mail = self.mail()?;
        loop {
            let current = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
            let target = self.recorded_mail_target(tenant, &current.document).await?;
            let current_password = keyring.open(&current.document.password, tenant, SecretField::Password)?;
            let mut fresh = false;
            let (mut pending, mut pending_version) = match vault.read_pending(tenant).await? {
                Some(found) => {
                    self.record_resumed_start(actor, client, tenant, &found.0).await?;
                    found
                }
                None if self.promoted_unrecorded(tenant, current.version).await? => {
                    // The last run promoted its password and dropped the pending record, then
                    // stopped before recording it (a crash, or Vault lost right after the drop
                    // landed): only the bookkeeping is left, not another rotation.
                    let finished = PendingDocument {
                        rotation_id: "resumed-after-promote".into(),
                        password: String::new(),
                        phase: PendingPhase::Applied,
                        attempts: 0,
                        trigger: trigger.to_owned(),
                        started_at: self.now().to_rfc3339(),
                    };
                    self.record_rotated(actor, client, tenant, &finished, current.version).await?;
                    return Ok(RotationResult::Rotated { version: current.version });
                }
                None => {
                    let now = self.now();
                    let pending = PendingDocument {
                        rotation_id: hex::encode(random_bytes::<8>()?.as_ref()),
                        password: keyring.seal(tenant, SecretField::Password, &generate_password()?)?,
                        phase: PendingPhase::Staged,
                        attempts: 0,
                        trigger: trigger.to_owned(),
                        started_at: now.to_rfc3339(),
                    };
                    let version = match self.write_pending_journaled(tenant, &pending, 0).await {
                        Ok(v) => v,
                        Err(Error::Conflict) => return Ok(RotationResult::Busy),
                        Err(e) => return Err(e),
                    };
                    self.record_rotation_started(actor, client, tenant, &pending).await?;
                    self.checkpoint(tenant, RotationStep::PendingStaged)?;
                    fresh = true;
                    (pending, version)
                }
            };
            let new_password = keyring.open(&pending.password, tenant, SecretField::Password)?;
            // Promoted before a crash, pending not yet dropped: only the bookkeeping is left.
            if same(&current_password, &new_password) {
                vault.delete_pending(tenant).await?;
                self.record_rotated(actor, client, tenant, &pending, current.version).await?;
                return Ok(RotationResult::Rotated { version: current.version });
            }
            if pending.phase == PendingPhase::Staged {
                // Idempotent apply: a change that reached the server before a crash is not sent twice.
                // (A pending created just now cannot be on the server: no check, which would cost
                // a refused login's delay.)
                let applied_before = !fresh && mail.check_login(&target, &new_password).await == LoginCheck::Accepted;
                if !applied_before && let Err(error) = mail.set_password(&target, &new_password).await {
                    // Mailu's limiter answers before it does anything: a password created in
                    // this run never reached the server, so the rotation is handed to the next
                    // cycle (the tenant stays due) instead of retried into the same limit. One
                    // resumed from an earlier run may be on the server already: it is kept.
                    if error == crate::core::mail::MailError::RateLimited && fresh {
                        return self.defer_rate_limited(actor, client, tenant, &pending).await;
                    }
                    // A 400 is invalid input, not a password Mailu dislikes (it has no policy):
                    // another password would fare no better, so a person is asked.
                    if !error.is_transient() {
                        return self.give_up(actor, client, tenant, &pending, &error.to_string()).await;
                    }
                    let reason = error.to_string();
                    if !self.retry_later(tenant, &mut pending, &mut pending_version, false, &reason).await? {
                        return self.give_up(actor, client, tenant, &pending, &reason).await;
                    }
                    continue;
                }
                self.checkpoint(tenant, RotationStep::MailApplied)?;
                pending.phase = PendingPhase::Applied;
                pending_version = self.write_pending_journaled(tenant, &pending, pending_version).await?;
                self.checkpoint(tenant, RotationStep::PhaseApplied)?;
            }
            match mail.check_login(&target, &new_password).await {
                LoginCheck::Accepted => {
                    let mut document = current.document.clone();
                    document.password = pending.password.clone();
                    let version = self.write_credential_journaled(tenant, &document, current.version).await?;
                    self.checkpoint(tenant, RotationStep::Promoted)?;
                    vault.delete_pending(tenant).await?;
                    self.checkpoint(tenant, RotationStep::PendingDropped)?;
                    self.record_rotated(actor, client, tenant, &pending, version).await?;
                    return Ok(RotationResult::Rotated { version });
                }
                LoginCheck::Rejected => {
                    // The server did not keep the change. Only if the current password still logs
                    // in is a fresh attempt safe; otherwise the target changed without a record.
                    // A login that says nothing (a limit, the console's own budget) is no
                    // proof of either: the same password is tried again later.
                    let current = mail.check_login(&target, &current_password).await;
                    let current_works = current == LoginCheck::Accepted;
                    let reason = match current {
                        LoginCheck::Accepted => {
                            "the mail server accepted the change but still refuses the new password".to_owned()
                        }
                        LoginCheck::Rejected => {
                            let reason = "neither the current nor the pending password logs in";
                            return self.give_up(actor, client, tenant, &pending, reason).await;
                        }
                        LoginCheck::Unknown(why) => format!("SMTP login could not be checked: {why}"),
                    };
                    // Only a refusal of the new password while the current one works asks for
                    // another password; a check that said nothing tries the same one again.
                    let new_password = current_works;
                    if !self.retry_later(tenant, &mut pending, &mut pending_version, new_password, &reason).await? {
                        return self.give_up(actor, client, tenant, &pending, &reason).await;
                    }
                }
                LoginCheck::Unknown(why) => {
                    let reason = format!("SMTP login could not be checked: {why}");
                    if !self.retry_later(tenant, &mut pending, &mut pending_version, false, &reason).await? {
                        return self.give_up(actor, client, tenant, &pending, &reason).await;
                    }
                }
            }
        }
    }

    /// Counts a failed attempt in the pending record (with a new password when the old one was
    /// refused, back to "staged") and waits the backoff. False when the attempts are spent
    /// (the caller gives up).
    async fn retry_later(
        &self,
        tenant: &TenantId,
        pending: &mut PendingDocument,
        version: &mut u64,
        new_password: bool,
        reason: &str,
    ) -> Result<bool> {
        pending.attempts += 1;
        if new_password {
            pending.password = self.keyring()?.seal(tenant, SecretField::Password, &generate_password()?)?;
            pending.phase = PendingPhase::Staged;
        }
        *version = self.write_pending_journaled(tenant, pending, *version).await?;
        sqlx::query("UPDATE tenants SET rotation_attempts = $1, last_error = $2 WHERE tenant_id = $3")
            .bind(i64::from(pending.attempts))
            .bind(reason)
            .bind(tenant.as_str())
            .execute(self.db.pool())
            .await?;
        if pending.attempts < self.settings.rotation_max_attempts {
            let backoff = self.settings.rotation_retry_base * 2u32.saturating_pow(pending.attempts.saturating_sub(1));
            tracing::warn!(tenant = %tenant, attempt = pending.attempts, reason, "rotation attempt failed; retrying");
            tokio::time::sleep(backoff).await;
        }
        Ok(pending.attempts < self.settings.rotation_max_attempts)
    }

    /// Drops a rotation Mailu's rate limit stopped before anything was sent, and says so.
    async fn defer_rate_limited(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
    ) -> Result<RotationResult> {
        self.roll_back(actor, client, tenant, pending, "rate_limited").await?;
        self.record_rate_limited(tenant).await?;
        Err(Error::MailServer(crate::core::mail::RATE_LIMITED.into()))
    }

    /// Drops a rotation whose new password the server does not have: pending gone, the tenant
    /// active again with no attempts counted, `rotation_rolled_back` with `outcome`.
    async fn roll_back(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
        outcome: &str,
    ) -> Result<()> {
        self.vault()?.delete_pending(tenant).await?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE tenants SET state = 'active', rotation_attempts = 0, updated_at_ms = $1 WHERE tenant_id = $2",
        )
        .bind(now.timestamp_millis())
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        let details = json!({"rotation_id": pending.rotation_id, "outcome": outcome});
        let event = NewEvent::info(EventType::RotationRolledBack, Some(tenant), details);
        audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn give_up(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
        reason: &str,
    ) -> Result<RotationResult> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE tenants SET state = 'needs_reconcile', last_error = $1, updated_at_ms = $2 WHERE tenant_id = $3",
        )
        .bind(reason)
        .bind(now.timestamp_millis())
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        let details = json!({"rotation_id": pending.rotation_id, "attempts": pending.attempts, "reason": reason});
        let event =
            NewEvent::info(EventType::RotationFailed, Some(tenant), details.clone()).with_severity(Severity::Critical);
        audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        let alert = Alert {
            kind: "rotation_needs_reconcile",
            severity: Severity::Critical,
            tenant: Some(tenant),
            dedupe_key: format!("rotation_needs_reconcile:{tenant}:{}", pending.rotation_id),
            message: format!("rotation of {tenant} gave up: {reason}"),
            details,
            audience: alerting::Audience::Security,
        };
        self.raise_alert(alert).await?;
        Ok(RotationResult::NeedsReconcile { reason: reason.to_owned() })
    }

    async fn record_rotation_started(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE tenants SET state = 'rotating', rotation_attempts = 0, last_error = NULL, updated_at_ms = $1 WHERE tenant_id = $2")
            .bind(now.timestamp_millis())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let details = json!({"rotation_id": pending.rotation_id, "trigger": pending.trigger});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::RotationStarted, Some(tenant), details), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// True when the database says a rotation is under way but Vault already holds a version
    /// it never recorded: that rotation was promoted.
    async fn promoted_unrecorded(&self, tenant: &TenantId, vault_version: u64) -> Result<bool> {
        let row: Option<(String, i64)> = sqlx::query_as("SELECT state, version FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some_and(|(state, recorded)| {
            state == "rotating" && u64::try_from(recorded).ok() != Some(vault_version)
        }))
    }

    /// Marks the tenant `rotating` when its pending record exists but the start was never
    /// recorded (the answer to the pending write was lost to a failover, or a crash came between
    /// the two), so readers consider the pending password from now on.
    async fn record_resumed_start(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
    ) -> Result<()> {
        let state = self.rotation_state(tenant).await?;
        if state.is_none_or(|s| s == "rotating" || s == "needs_reconcile") {
            return Ok(());
        }
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let marked = sqlx::query(
            "UPDATE tenants SET state = 'rotating', updated_at_ms = $1 WHERE tenant_id = $2 \
             AND state NOT IN ('rotating', 'needs_reconcile')",
        )
        .bind(now.timestamp_millis())
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 1 {
            let details = json!({"rotation_id": pending.rotation_id, "trigger": pending.trigger, "resumed": true});
            let event = NewEvent::info(EventType::RotationStarted, Some(tenant), details);
            audit::append(&mut tx, actor, client, event, now).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn record_rotated(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
        version: u64,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let period: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT rotation_period_days FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let period = period.and_then(|(days,)| days).map_or(self.settings.rotation_period, chrono::Duration::days);
        sqlx::query(
            "UPDATE tenants SET state = 'active', version = $1, rotated_at_ms = $2, stored_at_ms = $2, next_rotation_at_ms = $3, \
             rotation_attempts = 0, last_error = NULL, deferred_until_ms = NULL, notice_for_ms = NULL, updated_at_ms = $2, \
             heartbeat_refused_at_ms = NULL WHERE tenant_id = $4",
        )
        .bind(i64::try_from(version).map_err(|_| Error::Internal("version overflow".into()))?)
        .bind(now.timestamp_millis())
        .bind((now + period).timestamp_millis())
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        let details = json!({"rotation_id": pending.rotation_id, "version": version, "trigger": pending.trigger, "attempts": pending.attempts});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::CredentialRotated, Some(tenant), details), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rotates now and answers for an API or CLI caller: the new version, or an error saying
    /// why not (busy, or gave up with the reason).
    ///
    /// # Errors
    /// [`Error::RotationBusy`], [`Error::MailServer`] (gave up; alert raised), and the errors of
    /// [`Core::rotate_credential`].
    pub async fn rotate_now(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<crate::model::RotationView> {
        match self.rotate_credential(actor, client, tenant, "manual").await? {
            RotationResult::Rotated { version } => {
                Ok(crate::model::RotationView { tenant_id: tenant.clone(), result: "rotated".into(), version })
            }
            RotationResult::Busy => Err(Error::RotationBusy),
            RotationResult::NeedsReconcile { reason } => Err(Error::MailServer(format!("rotation gave up: {reason}"))),
        }
    }

    /// Rotates every tenant whose next rotation is due (and not deferred past now), a few at a
    /// time; returns each tenant's outcome.
    ///
    /// # Errors
    /// Database errors listing the due tenants; per-tenant failures are in the outcomes.
    pub async fn rotate_due(
        &self,
        actor: &Actor,
        concurrency: usize,
    ) -> Result<Vec<(TenantId, Result<RotationResult>)>> {
        authorize(actor, Permission::Rotate)?;
        let now = self.now().timestamp_millis();
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT tenant_id FROM tenants WHERE next_rotation_at_ms <= $1 \
             AND (deferred_until_ms IS NULL OR deferred_until_ms <= $1) AND state <> 'needs_reconcile' ORDER BY tenant_id",
        )
        .bind(now)
        .fetch_all(self.db.pool())
        .await?;
        let tenants: Vec<TenantId> = due.iter().filter_map(|(t,)| TenantId::parse(t).ok()).collect();
        let client = ClientInfo::local();
        let outage = Outage::default();
        let outcomes = futures_util::stream::iter(tenants)
            .map(|tenant| {
                let (client, outage) = (client.clone(), &outage);
                async move {
                    let outcome = self.rotate_in_batch(actor, &client, &tenant, outage).await;
                    (tenant, outcome)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        Ok(outcomes)
    }

    /// One tenant of a batch: a run stopped by a Vault outage is resumed (from the pending
    /// record, so nothing is redone or lost) until the batch's outage budget is spent.
    async fn rotate_in_batch(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        outage: &Outage,
    ) -> Result<RotationResult> {
        let mut backoff = OUTAGE_BACKOFF.0;
        loop {
            if outage.spent() {
                // Not started: the tenant stays due for the next batch.
                return Err(Error::VaultUnreachable(format!(
                    "not tried: vault has been unavailable for over {} s",
                    VAULT_OUTAGE_BUDGET.as_secs()
                )));
            }
            match self.rotate_credential(actor, client, tenant, "scheduled").await {
                Err(e) if e.is_vault_outage() && outage.note() => {
                    tracing::warn!(tenant = %tenant, error = %e, retry_ms = backoff.as_millis(), "rotation stopped by a vault outage; resuming");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(OUTAGE_BACKOFF.1);
                }
                outcome => {
                    if matches!(outcome, Ok(RotationResult::Rotated { .. } | RotationResult::NeedsReconcile { .. })) {
                        outage.end();
                    }
                    return outcome;
                }
            }
        }
    }

    /// Settles a tenant whose rotation was interrupted or gave up: resumes it when attempts are
    /// left; otherwise keeps whichever password the server accepts (promoting the pending one,
    /// or dropping it), or leaves `needs_reconcile` when neither logs in.
    ///
    /// # Errors
    /// Vault, mail and database errors.
    pub async fn repair_rotation(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<RotationResult> {
        authorize(actor, Permission::Rotate)?;
        let Some(_guard) = self.rotation_locks.try_lock(tenant) else {
            return Ok(RotationResult::Busy);
        };
        let vault = self.vault()?;
        let Some((pending, _)) = vault.read_pending(tenant).await? else {
            // A crash after the pending record was dropped leaves only the bookkeeping to do.
            let version = vault.metadata_version(tenant).await?;
            let row: Option<(String, i64)> = sqlx::query_as("SELECT state, version FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?;
            if let Some((state, recorded)) = row
                && (state == "rotating" || u64::try_from(recorded).ok() != Some(version))
            {
                let finished = PendingDocument {
                    rotation_id: "recorded-after-restart".into(),
                    password: String::new(),
                    phase: PendingPhase::Applied,
                    attempts: 0,
                    trigger: "repair".into(),
                    started_at: self.now().to_rfc3339(),
                };
                self.record_rotated(actor, client, tenant, &finished, version).await?;
            }
            return Ok(RotationResult::Rotated { version });
        };
        if pending.attempts < self.settings.rotation_max_attempts {
            return self.run_rotation(actor, client, tenant, &pending.trigger).await;
        }
        let current = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        let target = self.recorded_mail_target(tenant, &current.document).await?;
        let keyring = self.keyring()?;
        let new_password = keyring.open(&pending.password, tenant, SecretField::Password)?;
        let current_password = keyring.open(&current.document.password, tenant, SecretField::Password)?;
        if self.mail()?.check_login(&target, &new_password).await == LoginCheck::Accepted {
            let mut document = current.document.clone();
            document.password = pending.password.clone();
            let version = self.write_credential_journaled(tenant, &document, current.version).await?;
            vault.delete_pending(tenant).await?;
            self.record_rotated(actor, client, tenant, &pending, version).await?;
            return Ok(RotationResult::Rotated { version });
        }
        if self.mail()?.check_login(&target, &current_password).await == LoginCheck::Accepted {
            // Rolled back: the server kept the current password; a later rotation starts afresh.
            self.roll_back(actor, client, tenant, &pending, "rolled_back").await?;
            return Ok(RotationResult::Rotated { version: current.version });
        }
        Ok(RotationResult::NeedsReconcile { reason: "neither the current nor the pending password logs in".into() })
    }

    /// Settles every interrupted rotation (run at start-up, so a crash is repaired on restart).
    ///
    /// # Errors
    /// Vault errors listing tenants; per-tenant failures are logged and left for the next cycle.
    pub async fn repair_interrupted_rotations(&self) -> Result<usize> {
        let actor = Actor::System { job: "startup-repair" };
        let mut repaired = 0;
        for tenant in self.tenants_with_pending_rotation().await? {
            match self.repair_rotation(&actor, &ClientInfo::local(), &tenant).await {
                Ok(RotationResult::Rotated { .. }) => repaired += 1,
                Ok(other) => tracing::warn!(tenant = %tenant, outcome = ?other, "interrupted rotation not settled"),
                Err(e) => tracing::error!(tenant = %tenant, error = %e, "repairing an interrupted rotation failed"),
            }
        }
        Ok(repaired)
    }

    /// Tenants with an interrupted rotation (pending record in Vault or `rotating` in the DB).
    ///
    /// # Errors
    /// Vault and database errors.
    pub async fn tenants_with_pending_rotation(&self) -> Result<Vec<TenantId>> {
        // A rotation that finished in Vault just before the process died leaves no pending
        // record, only `rotating` in the database: both sides are looked at.
        let rotating: Vec<(String,)> =
            sqlx::query_as("SELECT tenant_id FROM tenants WHERE state = 'rotating'").fetch_all(self.db.pool()).await?;
        let mut found: std::collections::BTreeSet<String> = rotating.into_iter().map(|(t,)| t).collect();
        for tenant in self.vault()?.list_tenants().await? {
            if self.vault()?.read_pending(&tenant).await?.is_some() {
                found.insert(tenant.to_string());
            }
        }
        Ok(found.iter().filter_map(|t| TenantId::parse(t).ok()).collect())
    }
}

impl Core {
    /// A tenant's rotation state, heartbeat, queued notices and history.
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::NotFound`], database errors.
    pub async fn rotation_status(&self, actor: &Actor, tenant: &TenantId) -> Result<crate::model::RotationStatusView> {
        use crate::model::{CredentialState, RotationEventView, RotationStatusView};
        authorize(actor, Permission::ReadCredentials)?;
        type StatusRow = (String, i64, Option<String>, Option<i64>, Option<i64>, Option<i64>);
        let row: Option<StatusRow> = sqlx::query_as(
            "SELECT state, rotation_attempts, last_error, heartbeat_at_ms, heartbeat_ok, deferred_until_ms FROM tenants WHERE tenant_id = $1",
        )
        .bind(tenant.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        let (state, attempts, last_error, heartbeat_at, heartbeat_ok, deferred) =
            row.ok_or(Error::NotFound("credential"))?;
        let notices: Vec<(String,)> = sqlx::query_as(
            "SELECT message FROM alerts WHERE tenant_id = $1 AND kind = 'rotation_notice' AND state <> 'delivered' ORDER BY created_at_ms DESC",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        let history: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT occurred_at_ms, event_type, actor_id, details FROM audit_events WHERE tenant_id = $1 AND event_type IN \
             ('credential_stored', 'rotation_started', 'credential_rotated', 'rotation_failed', 'rotation_rolled_back', \
              'rotation_deferred', 'heartbeat_drifted') ORDER BY seq DESC LIMIT 50",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        Ok(RotationStatusView {
            tenant_id: tenant.clone(),
            state: CredentialState::from_name(&state).unwrap_or(CredentialState::NeedsReconcile),
            attempts,
            rate_limited: last_error.as_deref() == Some(crate::core::mail::RATE_LIMITED),
            last_error,
            heartbeat_at: heartbeat_at.map(at),
            heartbeat_ok: heartbeat_ok.map(|ok| ok != 0),
            deferred_until: deferred.map(at),
            notices: notices.into_iter().map(|(m,)| m).collect(),
            history: history
                .into_iter()
                .map(|(ms, event, actor, details)| RotationEventView { at: at(ms), event, actor, details })
                .collect(),
        })
    }

    /// Starts "Rotate now" from the UI: a platform admin's WebAuthn step-up for this tenant.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for other roles, [`Error::NotFound`], rate limits.
    pub async fn begin_rotation(
        &self,
        actor: &Actor,
        session: &crate::core::passkeys::SessionBinding,
        tenant: &TenantId,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::Rotate)?;
        self.vault()?.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        self.begin_reauth(actor, session, crate::core::passkeys::Purpose::Rotate, Some(tenant.as_str()), json!({}))
            .await
    }

    /// Finishes "Rotate now": checks the step-up, then rotates.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `reauth_failed`), and those of [`Core::rotate_now`].
    pub async fn finish_rotation(
        &self,
        actor: &Actor,
        session: &crate::core::passkeys::SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        credential_json: &str,
    ) -> Result<crate::model::RotationView> {
        authorize_ceremony(actor, Permission::Rotate)?;
        let purpose = crate::core::passkeys::Purpose::Rotate;
        self.finish_step_up(actor, session, client, purpose, Some(tenant), credential_json).await?;
        let Some(_guard) = self.rotation_locks.try_lock(tenant) else {
            return Err(Error::RotationBusy);
        };
        match self.run_rotation(actor, client, tenant, "manual").await? {
            RotationResult::Rotated { version } => {
                Ok(crate::model::RotationView { tenant_id: tenant.clone(), result: "rotated".into(), version })
            }
            RotationResult::Busy => Err(Error::RotationBusy),
            RotationResult::NeedsReconcile { reason } => Err(Error::MailServer(format!("rotation gave up: {reason}"))),
        }
    }
}
