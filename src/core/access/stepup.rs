//! Step-up windows: changes that decide who can get in (passkeys, invites, roles, disabling) or
//! where a tenant's passwords go (its Mailu API URL) need the admin to have confirmed a passkey,
//! with user verification, in this very browser session within the last five minutes. A stolen
//! session cookie alone therefore cannot add a passkey, invite a friend or re-point a tenant.
//! Operators at the host (the CLI) are exempt: they already hold the keyring and Vault access.

use crate::core::Core;
use crate::core::access::passkeys::{Purpose, SessionBinding};
use crate::core::access::{self, Actor, Clearance, ClientInfo};
use crate::core::alerting::AlertKind;
use crate::core::alerting::{Alert, Audience};
use crate::core::audit::Severity;
use crate::core::db::WriteTx;
use crate::core::error::{Error, Result};
use crate::model::Permission;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What an admin confirms with a passkey, with everything the action will use: it is stored with
/// the ceremony (bound to the session, and to the tenant when there is one), and the action runs
/// with what was confirmed, never with what the finishing request says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    /// Reveal a tenant's password, for this reason.
    Reveal {
        /// Why (3 to 500 characters), recorded with the reveal.
        reason: String,
        /// The reason's category (what a tenant that asked to be told reads).
        #[serde(default)]
        category: crate::model::RevealCategory,
    },
    /// Approve (or deny) another admin's request to reveal a four-eyes tenant's password.
    DecideReveal {
        /// The request.
        request_id: String,
        /// Approve; otherwise deny.
        approve: bool,
    },
    /// Rotate a tenant's password now.
    Rotate,
    /// Press the emergency reset.
    EmergencyReset {
        /// The incident it belongs to.
        incident_id: String,
        /// Why.
        reason: String,
    },
    /// Recover a tenant onto this replacement server.
    Recover {
        /// The new server's address.
        new_vps_ip: String,
        /// Its Mailu API.
        mailu_api_url: String,
        /// Its SMTP port, when it changes.
        smtp_port: Option<u16>,
    },
    /// Restore this backup.
    Restore {
        /// The backup (a date).
        backup_id: String,
        /// Check only, write nothing.
        dry_run: bool,
        /// Overwrite what differs.
        force: bool,
    },
    /// Bring back the tenant's previous password (undo the last rotation).
    Revert {
        /// Why (3 to 1000 characters), recorded and sent to security.
        reason: String,
    },
    /// Rotate every tenant whose current password this subject saw.
    Sweep {
        /// Subject, lower bound, incident id and reason, as confirmed.
        request: crate::model::SweepRequest,
    },
    /// Open this session's step-up window.
    Confirm,
}

impl Intent {
    /// The ceremony's purpose (part of its binding).
    #[must_use]
    pub const fn purpose(&self) -> Purpose {
        match self {
            Intent::Reveal { .. } => Purpose::Reveal,
            Intent::DecideReveal { .. } => Purpose::ApproveReveal,
            Intent::Rotate => Purpose::Rotate,
            Intent::EmergencyReset { .. } => Purpose::EmergencyReset,
            Intent::Recover { .. } => Purpose::Recover,
            Intent::Restore { .. } => Purpose::Restore,
            Intent::Sweep { .. } => Purpose::Sweep,
            Intent::Revert { .. } => Purpose::Revert,
            Intent::Confirm => Purpose::Confirm,
        }
    }

    /// The permission the confirmed action needs (the window of [`Intent::Confirm`] guards
    /// changes that each check their own).
    #[must_use]
    pub const fn permission(&self) -> Option<Permission> {
        match self {
            Intent::Reveal { .. } => Some(Permission::Reveal),
            Intent::DecideReveal { .. } => Some(Permission::ApproveReveal),
            Intent::Rotate => Some(Permission::Rotate),
            Intent::EmergencyReset { .. } => Some(Permission::EmergencyReset),
            Intent::Recover { .. } => Some(Permission::RecoverTenant),
            Intent::Restore { .. } => Some(Permission::RestoreBackup),
            Intent::Sweep { .. } => Some(Permission::EmergencyReset),
            Intent::Revert { .. } => Some(Permission::Revert),
            Intent::Confirm => None,
        }
    }
}

/// How long a confirmation lets sensitive changes through.
pub const STEP_UP_WINDOW: Duration = Duration::minutes(5);
/// A passkey this young that passes a step-up is reported to security.
const NEW_PASSKEY_AGE: Duration = Duration::hours(24);

/// Whose step-up windows end: what a session, an admin or a passkey earned ends with it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StepUpsOf<'a> {
    /// The session with this binding hash (logout).
    Session(&'a str),
    /// Every session of an admin (role changed, disabled).
    Admin(&'a str),
    /// Every window a passkey opened (removed).
    Passkey(&'a str),
}

/// Ends the step-up windows of `of`, in the caller's transaction.
pub(crate) async fn end_step_ups(tx: &mut WriteTx, of: StepUpsOf<'_>) -> Result<()> {
    let (query, key) = match of {
        StepUpsOf::Session(hash) => ("DELETE FROM step_ups WHERE binding_hash = $1", hash),
        StepUpsOf::Admin(admin) => ("DELETE FROM step_ups WHERE admin_id = $1", admin),
        StepUpsOf::Passkey(passkey) => ("DELETE FROM step_ups WHERE passkey_id = $1", passkey),
    };
    sqlx::query(query).bind(key).execute(&mut **tx).await?;
    Ok(())
}

impl Core {
    /// Starts a confirmation for sensitive changes; returns the WebAuthn request options (JSON).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for anything but an admin; rate limits.
    pub async fn begin_confirm(&self, actor: &Actor, session: &SessionBinding) -> Result<String> {
        self.begin_step_up(actor, session, None, &Intent::Confirm).await
    }

    /// Finishes the confirmation and opens this session's step-up window; returns when it
    /// closes.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `reauth_failed`) for a bad assertion.
    pub async fn finish_confirm(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        credential_json: &str,
    ) -> Result<DateTime<Utc>> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let (passkey_id, _) =
            self.finish_step_up(actor, session, client, Purpose::Confirm, None, credential_json).await?;
        let now = self.now();
        let expires_at = now + STEP_UP_WINDOW;
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM step_ups WHERE expires_at_ms < $1")
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        // An upsert: two confirmations of one session at once must not collide on its key.
        sqlx::query(
            "INSERT INTO step_ups (binding_hash, admin_id, passkey_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (binding_hash) DO UPDATE SET admin_id = $2, passkey_id = $3, created_at_ms = $4, expires_at_ms = $5",
        )
        .bind(session.hash())
        .bind(admin_id)
        .bind(&passkey_id)
        .bind(now.timestamp_millis())
        .bind(expires_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(expires_at)
    }

    /// For an action that runs now: [`access::authorize`], and for an admin whom the table sends
    /// through a step-up window, that window must be open for the session the call came through.
    ///
    /// # Errors
    /// Those of [`access::clearance`]; [`Error::StepUpRequired`]; [`Error::Forbidden`] when the
    /// action runs only from a ceremony.
    pub(crate) async fn authorize_now(
        &self,
        actor: &Actor,
        session: Option<&SessionBinding>,
        permission: Permission,
    ) -> Result<()> {
        match access::clearance(actor, permission)? {
            Clearance::Granted => Ok(()),
            Clearance::Window => self.step_up_window_open(actor, session).await,
            Clearance::Ceremony => Err(Error::Forbidden(permission.refusal())),
        }
    }

    async fn step_up_window_open(&self, actor: &Actor, session: Option<&SessionBinding>) -> Result<()> {
        match actor {
            Actor::Admin { admin_id, .. } => {
                let Some(session) = session else {
                    return Err(Error::StepUpRequired);
                };
                let open: Option<(i64,)> = sqlx::query_as(
                    "SELECT expires_at_ms FROM step_ups WHERE binding_hash = $1 AND admin_id = $2 AND expires_at_ms > $3",
                )
                .bind(session.hash())
                .bind(admin_id)
                .bind(self.now().timestamp_millis())
                .fetch_optional(self.db.pool())
                .await?;
                open.map(|_| ()).ok_or(Error::StepUpRequired)
            }
            _ => Err(Error::StepUpRequired),
        }
    }

    /// After a passkey passed a step-up: when it was added (not enrolled with the account) less
    /// than a day ago, security hears of it once. A stolen session that slipped a passkey in
    /// shows up the first time that passkey is used where it matters.
    pub(crate) async fn flag_new_passkey(&self, actor: &Actor, passkey_id: &str) -> Result<()> {
        let Actor::Admin { admin_id, email, .. } = actor else {
            return Ok(());
        };
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT p.created_at_ms, a.created_at_ms, p.name FROM passkeys p JOIN admins a ON a.admin_id = p.admin_id \
             WHERE p.passkey_id = $1 AND p.admin_id = $2",
        )
        .bind(passkey_id)
        .bind(admin_id)
        .fetch_optional(self.db.pool())
        .await?;
        let Some((added_ms, enrolled_ms, name)) = row else {
            return Ok(());
        };
        let young = self.now().timestamp_millis() - added_ms < NEW_PASSKEY_AGE.num_milliseconds();
        // The passkey made at enrollment is written in the same transaction as the account.
        if !young || added_ms == enrolled_ms {
            return Ok(());
        }
        self.raise_alert(Alert {
            kind: AlertKind::NewPasskeyStepUp,
            severity: Severity::Warning,
            tenant: None,
            dedupe_key: format!("new_passkey_step_up:{passkey_id}"),
            message: format!("{email} passed a step-up with the passkey \"{name}\", added less than 24 h ago"),
            details: json!({"admin_id": admin_id, "email": email, "passkey_id": passkey_id, "added_at_ms": added_ms}),
            audience: Audience::Security,
        })
        .await?;
        Ok(())
    }
}
