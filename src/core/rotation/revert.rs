//! Revert to last-known-good: Vault's previous version of a tenant's password goes back through
//! the same staged protocol as any rotation (pending → Mailu → SMTP login → promote as a new
//! version), so a bad rotation is undone without anyone reading a password and without a moment
//! where Vault holds a password the server refuses. Only a rotation is undone, and only one that
//! was not a compromise response: a reset's or a sweep's predecessor was retired as exposed.

use super::{Given, REVERT_TRIGGER, RotationResult};
use crate::core::Core;
use crate::core::access::passkeys::{Purpose, SessionBinding};
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo, authorize, authorize_ceremony};
use crate::core::alerting::{self, Alert, AlertKind, Audience};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::SecretField;
use crate::core::error::{Error, Result};
use crate::model::{Permission, RevertRequest, RevertView, TenantId};
use chrono::{DateTime, Utc};
use serde_json::json;

/// Rotations whose predecessor may not come back: it was replaced because it was exposed.
const COMPROMISE_TRIGGERS: [&str; 2] = ["emergency", "sweep"];

/// What a revert would bring back.
struct Source {
    /// The current version (the rotation being undone).
    current: u64,
    /// The version whose password comes back.
    previous: u64,
    /// That password.
    password: secrecy::SecretString,
    /// No later than when it first existed: when the version before it was written (its
    /// rotation started after that), or the epoch when it was the first.
    since: DateTime<Utc>,
}

impl Core {
    /// Reverts from the API (`credentials:revert`) or the CLI.
    ///
    /// # Errors
    /// [`Error::MissingScope`]; [`Error::NotFound`]; [`Error::Stale`] (audited `revert_refused`)
    /// when there is nothing a revert may bring back; [`Error::RotationBusy`]; [`Error::MailServer`]
    /// when the server refused the previous password (the current one stays).
    pub async fn revert_credential(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: &RevertRequest,
    ) -> Result<RevertView> {
        authorize(actor, Permission::Revert)?;
        self.run_revert(actor, client, tenant, &request.reason, None).await
    }

    /// Starts a revert from the console: checks there is something to revert, then the
    /// passkey step-up, which confirms the reason.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for other roles, [`Error::InvalidField`], [`Error::NotFound`],
    /// [`Error::Stale`], rate limits.
    pub async fn begin_revert(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        reason: &str,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::Revert)?;
        let request = RevertRequest::new(reason)?;
        self.revert_source(actor, client, tenant).await?;
        self.begin_step_up(actor, session, Some(tenant), &Intent::Revert { reason: request.reason }).await
    }

    /// Finishes the step-up and reverts.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `reauth_failed`), and those of
    /// [`Core::revert_credential`].
    pub async fn finish_revert(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        credential_json: &str,
    ) -> Result<RevertView> {
        authorize_ceremony(actor, Permission::Revert)?;
        let (passkey_id, intent) =
            self.finish_step_up(actor, session, client, Purpose::Revert, Some(tenant), credential_json).await?;
        let Intent::Revert { reason } = intent else {
            return Err(Error::Unauthenticated);
        };
        self.run_revert(actor, client, tenant, &reason, Some(&passkey_id)).await
    }

    async fn run_revert(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        reason: &str,
        passkey_id: Option<&str>,
    ) -> Result<RevertView> {
        let Some(_guard) = self.rotation_locks.try_lock(tenant) else {
            return Err(Error::RotationBusy);
        };
        let source = self.revert_source(actor, client, tenant).await?;
        let given = Given { password: source.password, since: source.since };
        let version = match self.run_rotation_with(actor, client, tenant, REVERT_TRIGGER, Some(&given)).await? {
            RotationResult::Rotated { version } => version,
            RotationResult::Busy => return Err(Error::RotationBusy),
            RotationResult::NeedsReconcile { reason } => {
                return Err(Error::MailServer(format!("the revert gave up: {reason}")));
            }
        };
        let now = self.now();
        let by = actor.audit_identity().1;
        let details = json!({
            "version": version, "reverted_to": source.previous, "undone": source.current, "reason": reason,
            "passkey_id": passkey_id,
        });
        let mut tx = self.db.begin_write().await?;
        let event = NewEvent::info(EventType::CredentialReverted, Some(tenant), details.clone())
            .with_severity(Severity::Warning);
        audit::append(&mut tx, actor, client, event, now).await?;
        let alert = Alert {
            kind: AlertKind::CredentialReverted,
            severity: Severity::Warning,
            tenant: Some(tenant),
            dedupe_key: format!("credential_reverted:{tenant}:{version}"),
            message: format!(
                "{tenant}: password reverted to that of version {} by {by} (now version {version}): {reason}",
                source.previous
            ),
            details,
            audience: Audience::Security,
        };
        alerting::raise_in(&mut tx, &self.channels, alert, now).await?;
        tx.commit().await?;
        self.wake_outbox();
        Ok(RevertView { tenant_id: tenant.clone(), result: "reverted".into(), version, reverted_to: source.previous })
    }

    /// The password a revert would bring back, or the refusal (audited).
    async fn revert_source(&self, actor: &Actor, client: &ClientInfo, tenant: &TenantId) -> Result<Source> {
        let vault = self.vault()?;
        let current = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        if vault.read_pending(tenant).await?.is_some() {
            return Err(Error::RotationBusy);
        }
        // The rotation that wrote the current version, as the audit trail recorded it.
        let last: Option<(String,)> = sqlx::query_as(
            "SELECT details FROM audit_events WHERE tenant_id = $1 AND event_type IN \
             ('credential_rotated', 'credential_stored', 'backup_restored', 'smtp_credentials_recovered') \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        let last = last.and_then(|(details,)| serde_json::from_str::<serde_json::Value>(&details).ok());
        let rotated_to = last.as_ref().and_then(|d| d.get("version")).and_then(serde_json::Value::as_u64);
        let trigger = last.as_ref().and_then(|d| d.get("trigger")).and_then(serde_json::Value::as_str);
        let refusal = match (rotated_to, trigger) {
            (Some(v), Some(t)) if v == current.version && COMPROMISE_TRIGGERS.contains(&t) => Some(
                "the last rotation replaced a password as exposed (emergency reset or exposure sweep): it may not come back",
            ),
            (Some(v), Some(_)) if v == current.version => None,
            _ => Some("the current version was not written by a rotation; a revert only undoes a rotation"),
        };
        let previous = match refusal {
            Some(_) => None,
            None => match current.version.checked_sub(1).filter(|v| *v > 0) {
                Some(v) => vault.read_credential_version(tenant, v).await?.map(|doc| (v, doc)),
                None => None,
            },
        };
        let Some((previous, document)) = previous else {
            let why = refusal.unwrap_or("Vault holds no earlier version of this credential (deleted or destroyed)");
            let mut tx = self.db.begin_write().await?;
            let details = json!({"version": current.version, "why": why});
            let event =
                NewEvent::info(EventType::RevertRefused, Some(tenant), details).with_severity(Severity::Warning);
            audit::append(&mut tx, actor, client, event, self.now()).await?;
            tx.commit().await?;
            return Err(Error::Stale(why));
        };
        let password = self.keyring()?.open(&document.password, tenant, SecretField::Password)?;
        let since = match previous.checked_sub(1).filter(|v| *v > 0) {
            Some(before) => vault.version_written_at(tenant, before).await?.unwrap_or_default(),
            None => DateTime::<Utc>::default(),
        };
        Ok(Source { current: current.version, previous, password, since })
    }
}
