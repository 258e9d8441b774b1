//! Rotations of many tenants: the daily batch of due tenants (riding out a Vault outage with a
//! shared budget) and the repair of interrupted rotations at start-up.

use super::RotationResult;
use super::state;
use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::crypto::SecretField;
use crate::core::error::{Error, Result};
use crate::core::mail::LoginCheck;
use crate::core::vault::{PendingDocument, PendingPhase};
use crate::model::{CredentialState, Permission, TenantId};
use futures_util::StreamExt;
use std::sync::Mutex;
use std::time::Duration;

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
    pub(super) fn note(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.0.lock().is_ok_and(|mut began| now.duration_since(*began.get_or_insert(now)) < VAULT_OUTAGE_BUDGET)
    }

    /// True once the outage has outlasted the budget.
    pub(super) fn spent(&self) -> bool {
        self.0.lock().is_ok_and(|began| began.is_some_and(|b| b.elapsed() >= VAULT_OUTAGE_BUDGET))
    }

    /// Vault served a whole rotation: the outage is over.
    pub(super) fn end(&self) {
        if let Ok(mut began) = self.0.lock() {
            *began = None;
        }
    }
}

impl Core {
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
        // A rotation that gave up waits for a person (`repair`), not for the next batch.
        let due = format!(
            "SELECT tenant_id FROM tenants WHERE next_rotation_at_ms <= $1 \
             AND (deferred_until_ms IS NULL OR deferred_until_ms <= $1) AND NOT {} ORDER BY tenant_id",
            state::states_sql(&[CredentialState::NeedsReconcile])
        );
        let due: Vec<(String,)> = sqlx::query_as(&due).bind(now).fetch_all(self.db.pool()).await?;
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
            let rotating =
                row.as_ref().is_some_and(|(s, _)| CredentialState::from_name(s) == Some(CredentialState::Rotating));
            let moved = row.as_ref().is_some_and(|(_, recorded)| u64::try_from(*recorded).ok() != Some(version));
            if rotating && !moved {
                // The start was recorded but no password was staged (a crash, or Vault lost, in
                // between; or a roll-back that stopped before its bookkeeping): nothing reached
                // the mail server, so the rotation is dropped and the next one starts afresh.
                let unstaged = PendingDocument {
                    rotation_id: "not-staged".into(),
                    password: String::new(),
                    phase: PendingPhase::Staged,
                    attempts: 0,
                    trigger: "repair".into(),
                    started_at: self.now().to_rfc3339(),
                    secret_since: None,
                };
                // No pending record is deleted here: another process (an HA peer, the CLI) may
                // be between recording its start and staging its password. Its staging is
                // followed by marking the tenant `rotating` again before the mail server is
                // touched, and a record staged meanwhile is seen by the second look below.
                self.record_rolled_back(actor, client, tenant, &unstaged, "not_staged").await?;
                if let Some((staged, _)) = vault.read_pending(tenant).await? {
                    self.record_resumed_start(actor, client, tenant, &staged).await?;
                    return Ok(RotationResult::Busy);
                }
                return Ok(RotationResult::Rotated { version });
            }
            if rotating || moved {
                let finished = PendingDocument {
                    rotation_id: "recorded-after-restart".into(),
                    password: String::new(),
                    phase: PendingPhase::Applied,
                    attempts: 0,
                    trigger: "repair".into(),
                    started_at: self.now().to_rfc3339(),
                    secret_since: None,
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
        let mut tenants = self.tenants_with_pending_rotation().await?;
        tenants.extend(self.legacy_pending_scan().await?);
        for tenant in tenants {
            match self.repair_rotation(&actor, &ClientInfo::local(), &tenant).await {
                Ok(RotationResult::Rotated { .. }) => repaired += 1,
                Ok(other) => tracing::warn!(tenant = %tenant, outcome = ?other, "interrupted rotation not settled"),
                Err(e) => tracing::error!(tenant = %tenant, error = %e, "repairing an interrupted rotation failed"),
            }
        }
        Ok(repaired)
    }

    /// Tenants with an interrupted rotation, from the database's states: `rotating` (a start is
    /// recorded before its pending record is written, so every pending record has one), and
    /// the `needs_reconcile` ones whose pending record is still in Vault. Vault is asked only
    /// about the latter: the work grows with what is unsettled, not with the tenants.
    ///
    /// # Errors
    /// Vault and database errors.
    pub async fn tenants_with_pending_rotation(&self) -> Result<Vec<TenantId>> {
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT tenant_id, state FROM tenants WHERE {} ORDER BY tenant_id",
            state::states_sql(&[CredentialState::Rotating, CredentialState::NeedsReconcile])
        ))
        .fetch_all(self.db.pool())
        .await?;
        let mut found = Vec::new();
        for (tenant, state) in rows {
            let Ok(tenant) = TenantId::parse(&tenant) else { continue };
            if CredentialState::from_name(&state) == Some(CredentialState::Rotating)
                || self.vault()?.read_pending(&tenant).await?.is_some()
            {
                found.push(tenant);
            }
        }
        Ok(found)
    }
}
