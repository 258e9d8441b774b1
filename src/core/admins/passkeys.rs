//! An admin's own passkeys: add, rename, remove, each inside a step-up window.

use super::{clean_name, new_id, parse_json};
use crate::core::Core;
use crate::core::access::passkeys::{Binding, Purpose, SessionBinding, credential_id_text};
use crate::core::access::stepup::{self, StepUpsOf};
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::AlertKind;
use crate::core::alerting::{Alert, Audience, raise_in};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::credentials::reveal::OpenGrants;
use crate::core::emergency::sweep::SweepCause;
use crate::core::error::{Error, Result};
use crate::model::PasskeyView;
use crate::model::Permission;
use chrono::{DateTime, Utc};
use serde_json::json;
use webauthn_rs::prelude::{CredentialID, Passkey, PasskeyRegistration, RegisterPublicKeyCredential, Uuid};

pub(super) async fn insert_passkey(
    tx: &mut sqlx::AnyConnection,
    admin_id: &str,
    name: &str,
    passkey: &Passkey,
    now: DateTime<Utc>,
) -> Result<String> {
    let passkey_id = new_id()?;
    let stored = serde_json::to_string(passkey).map_err(|e| Error::Internal(format!("passkey: {e}")))?;
    sqlx::query(
        "INSERT INTO passkeys (passkey_id, admin_id, name, credential_id, passkey, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&passkey_id)
    .bind(admin_id)
    .bind(name)
    .bind(credential_id_text(passkey))
    .bind(stored)
    .bind(now.timestamp_millis())
    .execute(&mut *tx)
    .await
    // webauthn-rs does not check that a credential is new to the whole site: the unique index
    // does, and the answer stays vague.
    .map_err(|_| Error::InvalidInput("this passkey is already registered".into()))?;
    Ok(passkey_id)
}

impl Core {
    /// Starts registering another passkey for the signed-in admin.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`], database errors.
    pub async fn begin_add_passkey(&self, actor: &Actor, session: &SessionBinding) -> Result<String> {
        let Actor::Admin { admin_id, email, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        self.authorize_now(actor, Some(session), Permission::ManageOwnPasskeys).await?;
        let row = self.admin_row(admin_id).await?.ok_or(Error::Unauthenticated)?;
        let handle: (String,) = sqlx::query_as("SELECT user_handle FROM admins WHERE admin_id = $1")
            .bind(admin_id)
            .fetch_one(self.db.pool())
            .await?;
        let handle = Uuid::parse_str(&handle.0).map_err(|_| Error::Internal("stored user handle".into()))?;
        let existing: Vec<CredentialID> =
            self.passkeys_of(admin_id).await?.iter().map(|(_, p)| p.cred_id().clone()).collect();
        let rp = self.relying_party()?;
        let (challenge, state) = rp
            .webauthn()
            .start_passkey_registration(handle, email, &row.display_name, Some(existing))
            .map_err(|e| Error::Internal(format!("webauthn: {e}")))?;
        let binding = Binding { session, purpose: Purpose::AddPasskey, admin_id: Some(admin_id), tenant_id: None };
        rp.store(&self.db, binding, json!({}), &state, self.now()).await?;
        serde_json::to_string(&challenge).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Finishes registering another passkey.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad response or name, [`Error::Unauthenticated`].
    pub async fn finish_add_passkey(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        credential_json: &str,
        name: &str,
    ) -> Result<PasskeyView> {
        let Actor::Admin { admin_id, email, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let name = clean_name(name, "passkey name", 60)?;
        self.authorize_now(actor, Some(session), Permission::ManageOwnPasskeys).await?;
        let rp = self.relying_party()?;
        let now = self.now();
        let binding = Binding { session, purpose: Purpose::AddPasskey, admin_id: Some(admin_id), tenant_id: None };
        let taken = rp
            .take::<PasskeyRegistration>(&self.db, binding, now)
            .await?
            .filter(|c| !c.expired)
            .ok_or_else(|| Error::InvalidInput("no passkey registration in progress; start again".into()))?;
        let credential: RegisterPublicKeyCredential = parse_json(credential_json)?;
        let passkey = rp
            .webauthn()
            .finish_passkey_registration(&credential, &taken.state)
            .map_err(|e| Error::InvalidInput(format!("the passkey could not be verified ({e})")))?;
        let mut tx = self.db.begin_write().await?;
        let passkey_id = insert_passkey(&mut tx, admin_id, &name, &passkey, now).await?;
        let details = json!({"admin_id": admin_id, "passkey_id": passkey_id, "name": name});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::PasskeyAdded, None, details.clone()), now)
            .await?;
        // A passkey is a way in that outlives every session: security hears of each one, and
        // so does its owner, who did not add it if the session was stolen.
        let ip = client.ip.map_or_else(|| "an unknown address".to_owned(), |ip| ip.to_string());
        let letter = format!(
            "A passkey named \"{name}\" was added to your smtp-vault account ({email}) from {ip}.\n\n\
             If you did not add it, remove it on the Admins page and tell your security team: whoever \
             added it can sign in as you.\n"
        );
        let notices = [
            (
                format!("passkey_added:{passkey_id}"),
                format!("{email} added the passkey \"{name}\" from {ip}"),
                details,
                Audience::Security,
            ),
            (
                format!("passkey_added:{passkey_id}:owner"),
                "A passkey was added to your smtp-vault account".to_owned(),
                json!({"body": letter}),
                Audience::Admin { email: email.clone() },
            ),
        ];
        for (dedupe_key, message, details, audience) in notices {
            let alert = Alert {
                kind: AlertKind::PasskeyAdded,
                severity: Severity::Warning,
                tenant: None,
                dedupe_key,
                message,
                details,
                audience,
            };
            raise_in(&mut tx, &self.channels, alert, now).await?;
        }
        tx.commit().await?;
        self.wake_outbox();
        Ok(PasskeyView { passkey_id, name, created_at: now, last_used_at: None })
    }

    /// Renames one of the admin's own passkeys.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a passkey that is not theirs; invalid names.
    pub async fn rename_passkey(&self, actor: &Actor, client: &ClientInfo, passkey_id: &str, name: &str) -> Result<()> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let name = clean_name(name, "passkey name", 60)?;
        self.authorize_now(actor, client.session.as_ref(), Permission::ManageOwnPasskeys).await?;
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query("UPDATE passkeys SET name = $1 WHERE passkey_id = $2 AND admin_id = $3")
            .bind(&name)
            .bind(passkey_id)
            .bind(admin_id)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(Error::NotFound("passkey"));
        }
        let details = json!({"admin_id": admin_id, "passkey_id": passkey_id, "name": name});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::PasskeyRenamed, None, details), self.now())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes one of the admin's own passkeys, never the last one. Removed as `lost` (or
    /// compromised), it also sweeps: every tenant whose current password the admin could see
    /// is rotated, since whoever holds the key may have signed in as them.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InvalidInput`] for the last passkey.
    pub async fn remove_passkey(&self, actor: &Actor, client: &ClientInfo, passkey_id: &str, lost: bool) -> Result<()> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        self.authorize_now(actor, client.session.as_ref(), Permission::ManageOwnPasskeys).await?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        // Locks the admin's rows first (write), so two removals cannot both see "two left".
        sqlx::query("UPDATE admins SET active = active WHERE admin_id = $1").bind(admin_id).execute(&mut *tx).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM passkeys WHERE admin_id = $1")
            .bind(admin_id)
            .fetch_one(&mut *tx)
            .await?;
        let mine: Option<(String,)> =
            sqlx::query_as("SELECT passkey_id FROM passkeys WHERE passkey_id = $1 AND admin_id = $2")
                .bind(passkey_id)
                .bind(admin_id)
                .fetch_optional(&mut *tx)
                .await?;
        if mine.is_none() {
            return Err(Error::NotFound("passkey"));
        }
        if count <= 1 {
            return Err(Error::InvalidInput("the last passkey cannot be removed; add another one first".into()));
        }
        sqlx::query("DELETE FROM passkeys WHERE passkey_id = $1").bind(passkey_id).execute(&mut *tx).await?;
        // What the passkey earned ends with it: a lost or stolen key keeps no open window.
        stepup::end_step_ups(&mut tx, StepUpsOf::Passkey(passkey_id)).await?;
        self.revoke_open_grants(&mut tx, actor, client, OpenGrants::OfPasskey(passkey_id), "passkey_removed", now)
            .await?;
        let details = json!({"admin_id": admin_id, "passkey_id": passkey_id, "lost": lost});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::PasskeyRemoved, None, details), now).await?;
        let sweep = if lost {
            self.open_admin_sweep_in(&mut tx, actor, client, admin_id, SweepCause::PasskeyLost).await?
        } else {
            None
        };
        tx.commit().await?;
        if let Some(incident) = sweep {
            self.spawn_sweep(actor, client, &incident);
        }
        Ok(())
    }
}
