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

pub mod schedule;

mod batch;
mod plan;
mod revert;
pub(crate) mod state;
mod steps;

pub use batch::VAULT_OUTAGE_BUDGET;

use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize, authorize_ceremony};
use crate::core::crypto::random_bytes;
use crate::core::error::{Error, Result};
use crate::model::{CredentialState, PasswordPolicy, Permission, TenantId};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// A point in the rotation where a crash can be injected (tests of the invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// The database says `rotating`; Vault has no pending record yet.
    StartRecorded,
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
    pub const ALL: [RotationStep; 6] = [
        RotationStep::StartRecorded,
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

/// The trigger of a revert's rotation (in its pending record and audit events).
pub(crate) const REVERT_TRIGGER: &str = "revert";

/// The password a rotation sets when it is not a fresh one: a revert's, with when it first
/// existed (exposure sweeps count from then).
pub(crate) struct Given {
    pub(crate) password: SecretString,
    pub(crate) since: chrono::DateTime<chrono::Utc>,
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

/// A new random password under `policy`: each character drawn uniformly from its alphabet
/// (rejection sampling over the OS random source: no character is likelier than another).
///
/// # Errors
/// When the OS random source fails.
pub fn generate_password(policy: &PasswordPolicy) -> Result<SecretString> {
    let alphabet = policy.alphabet.characters();
    let size = alphabet.len();
    // Bytes at or above the largest multiple of the alphabet's size would favour its start.
    let limit = 256 - 256 % size;
    let wanted = usize::from(policy.length);
    let mut password = String::with_capacity(wanted);
    while password.len() < wanted {
        for &byte in random_bytes::<64>()?.iter() {
            if usize::from(byte) < limit && password.len() < wanted {
                password.push(char::from(alphabet[usize::from(byte) % size]));
            }
        }
    }
    Ok(SecretString::from(password))
}

fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret().as_bytes().ct_eq(b.expose_secret().as_bytes()).into()
}

impl Core {
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
        self.run_rotation_with(actor, client, tenant, trigger, None).await
    }

    /// A rotation that sets `given` instead of a fresh password (a revert).
    pub(crate) async fn run_rotation_with(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        trigger: &str,
        given: Option<&Given>,
    ) -> Result<RotationResult> {
        let result = self.rotation_steps(actor, client, tenant, trigger, given).await;
        let outcome = match &result {
            Ok(RotationResult::Rotated { .. }) => "rotated",
            Ok(RotationResult::NeedsReconcile { .. }) => CredentialState::NeedsReconcile.as_str(),
            Ok(RotationResult::Busy) => "busy",
            Err(_) => "error",
        };
        metrics::counter!("smtp_vault_rotations_total", "outcome" => outcome).increment(1);
        result
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
              'rotation_deferred', 'heartbeat_drifted', 'credential_reverted', 'revert_refused') ORDER BY seq DESC LIMIT 50",
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
        session: &crate::core::access::passkeys::SessionBinding,
        tenant: &TenantId,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::Rotate)?;
        self.vault()?.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        self.begin_step_up(actor, session, Some(tenant), &crate::core::access::stepup::Intent::Rotate).await
    }

    /// Finishes "Rotate now": checks the step-up, then rotates.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `reauth_failed`), and those of [`Core::rotate_now`].
    pub async fn finish_rotation(
        &self,
        actor: &Actor,
        session: &crate::core::access::passkeys::SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        credential_json: &str,
    ) -> Result<crate::model::RotationView> {
        authorize_ceremony(actor, Permission::Rotate)?;
        let purpose = crate::core::access::passkeys::Purpose::Rotate;
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

#[cfg(test)]
mod password_tests {
    use super::generate_password;
    use crate::model::{PasswordAlphabet, PasswordPolicy};
    use secrecy::ExposeSecret;
    use std::collections::HashSet;

    #[test]
    fn generated_passwords_have_the_policy_s_length_and_use_its_whole_alphabet() {
        for alphabet in [PasswordAlphabet::Alphanumeric, PasswordAlphabet::AlphanumericSymbols] {
            for length in [PasswordPolicy::MIN_LENGTH, 32, PasswordPolicy::MAX_LENGTH] {
                let policy = PasswordPolicy::new(length, alphabet).unwrap_or_else(|e| panic!("{e}"));
                let mut seen = HashSet::new();
                for _ in 0..100 {
                    let password = generate_password(&policy).unwrap_or_else(|e| panic!("{e}"));
                    let bytes = password.expose_secret().as_bytes().to_vec();
                    assert_eq!(bytes.len(), usize::from(length));
                    assert!(bytes.iter().all(|b| alphabet.characters().contains(b)));
                    seen.extend(bytes);
                }
                // 2,000 or more draws over at most 70 characters: every one of them shows up.
                assert_eq!(seen.len(), alphabet.characters().len(), "{alphabet:?} {length}");
            }
        }
    }

    #[test]
    fn a_policy_outside_20_to_128_characters_is_refused() {
        assert!(PasswordPolicy::new(19, PasswordAlphabet::Alphanumeric).is_err());
        assert!(PasswordPolicy::new(129, PasswordAlphabet::Alphanumeric).is_err());
        assert_eq!(PasswordPolicy::default().length, 32);
    }
}
