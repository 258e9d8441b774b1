//! The staged rotation of one tenant, step by step (generate → stage in Vault → apply on Mailu →
//! verify by SMTP login → promote → drop pending → record), resumable from its pending record
//! after a crash; what to do after each observation is decided in [`super::plan`].

use super::plan::{self, Next};
use super::{Given, RotationResult, RotationStep, generate_password, same};
use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::crypto::{SecretField, random_bytes};
use crate::core::error::{Error, Result};
use crate::core::mail::LoginCheck;
use crate::core::vault::{PendingDocument, PendingPhase};
use crate::model::TenantId;

impl Core {
    pub(super) fn checkpoint(&self, tenant: &TenantId, step: RotationStep) -> Result<()> {
        match &self.fault {
            Some(crash) if crash(tenant, step) => Err(Error::Internal(format!("injected crash after {step:?}"))),
            _ => Ok(()),
        }
    }

    pub(super) async fn rotation_steps(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        trigger: &str,
        given: Option<&Given>,
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
                        secret_since: None,
                    };
                    self.record_rotated(actor, client, tenant, &finished, current.version).await?;
                    return Ok(RotationResult::Rotated { version: current.version });
                }
                None => {
                    let now = self.now();
                    let password = match given {
                        Some(given) => given.password.clone(),
                        None => generate_password(&self.password_policy(tenant).await?)?,
                    };
                    let pending = PendingDocument {
                        rotation_id: hex::encode(random_bytes::<8>()?.as_ref()),
                        password: keyring.seal(tenant, SecretField::Password, &password)?,
                        phase: PendingPhase::Staged,
                        attempts: 0,
                        trigger: trigger.to_owned(),
                        started_at: now.to_rfc3339(),
                        secret_since: given.map(|g| g.since.to_rfc3339()),
                    };
                    // The database says `rotating` before Vault holds the pending record, so a
                    // crash at any point leaves a state that start-up repair finds without
                    // reading every tenant's pending record (a start with no record behind it is
                    // rolled back there).
                    self.record_rotation_started(actor, client, tenant, &pending).await?;
                    self.checkpoint(tenant, RotationStep::StartRecorded)?;
                    let version = match self.write_pending_journaled(tenant, &pending, 0).await {
                        Ok(v) => v,
                        // Another run staged one meanwhile: it owns the `rotating` state too.
                        Err(Error::Conflict) => return Ok(RotationResult::Busy),
                        Err(e) => return Err(e),
                    };
                    // A repair elsewhere that judged the start abandoned may have set the
                    // tenant back to `active` meanwhile: marked again before the mail server is
                    // touched (readers look for a pending password only where the state says so).
                    self.record_resumed_start(actor, client, tenant, &pending).await?;
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
                    match plan::after_apply_error(&error, fresh) {
                        Next::Defer => return self.defer_rate_limited(actor, client, tenant, &pending).await,
                        Next::GiveUp { reason } => return self.give_up(actor, client, tenant, &pending, &reason).await,
                        Next::Retry { new_password, reason } => {
                            if !self
                                .retry_later(tenant, &mut pending, &mut pending_version, new_password, &reason)
                                .await?
                            {
                                return self.give_up(actor, client, tenant, &pending, &reason).await;
                            }
                            continue;
                        }
                        next => return Err(Error::Internal(format!("rotation plan: {next:?} after an apply error"))),
                    }
                }
                self.checkpoint(tenant, RotationStep::MailApplied)?;
                pending.phase = PendingPhase::Applied;
                pending_version = self.write_pending_journaled(tenant, &pending, pending_version).await?;
                self.checkpoint(tenant, RotationStep::PhaseApplied)?;
            }
            let mut next = plan::after_new_login(&mail.check_login(&target, &new_password).await);
            if next == Next::CheckCurrent {
                // The server did not keep the change. Only if the current password still logs in
                // is a fresh attempt safe; otherwise the target changed without a record.
                next = plan::after_current_login(&mail.check_login(&target, &current_password).await);
            }
            match next {
                Next::Promote => {
                    let mut document = current.document.clone();
                    document.password = pending.password.clone();
                    let version = self.write_credential_journaled(tenant, &document, current.version).await?;
                    self.checkpoint(tenant, RotationStep::Promoted)?;
                    vault.delete_pending(tenant).await?;
                    self.checkpoint(tenant, RotationStep::PendingDropped)?;
                    self.record_rotated(actor, client, tenant, &pending, version).await?;
                    return Ok(RotationResult::Rotated { version });
                }
                Next::GiveUp { reason } => return self.give_up(actor, client, tenant, &pending, &reason).await,
                Next::Retry { new_password, reason } => {
                    if !self.retry_later(tenant, &mut pending, &mut pending_version, new_password, &reason).await? {
                        return self.give_up(actor, client, tenant, &pending, &reason).await;
                    }
                }
                next @ (Next::CheckCurrent | Next::Defer) => {
                    return Err(Error::Internal(format!("rotation plan: {next:?} after the logins")));
                }
            }
        }
    }

    /// Counts a failed attempt in the pending record (with a new password when the old one was
    /// refused, back to "staged") and waits the backoff. False when the attempts are spent
    /// (the caller gives up).
    pub(super) async fn retry_later(
        &self,
        tenant: &TenantId,
        pending: &mut PendingDocument,
        version: &mut u64,
        new_password: bool,
        reason: &str,
    ) -> Result<bool> {
        // A revert sets one particular password; if the server refuses it, another would not
        // be a revert. Give up (the current password stays).
        if new_password && pending.trigger == super::REVERT_TRIGGER {
            return Ok(false);
        }
        pending.attempts += 1;
        if new_password {
            let password = generate_password(&self.password_policy(tenant).await?)?;
            pending.password = self.keyring()?.seal(tenant, SecretField::Password, &password)?;
            pending.phase = PendingPhase::Staged;
        }
        *version = self.write_pending_journaled(tenant, pending, *version).await?;
        sqlx::query("UPDATE tenants SET rotation_attempts = $1, last_error = $2 WHERE tenant_id = $3")
            .bind(i64::from(pending.attempts))
            .bind(reason)
            .bind(tenant.as_str())
            .execute(self.db.pool())
            .await?;
        let left = plan::attempts_left(pending.attempts, self.settings.rotation_max_attempts);
        if left {
            let backoff = self.settings.rotation_retry_base * 2u32.saturating_pow(pending.attempts.saturating_sub(1));
            tracing::warn!(tenant = %tenant, attempt = pending.attempts, reason, "rotation attempt failed; retrying");
            tokio::time::sleep(backoff).await;
        }
        Ok(left)
    }

    /// Drops a rotation Mailu's rate limit stopped before anything was sent, and says so.
    pub(super) async fn defer_rate_limited(
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
}
