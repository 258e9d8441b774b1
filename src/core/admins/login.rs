//! Getting in: enrollment from a one-time invite, passkey login (rate-limited per address and per
//! email+address, a cloned authenticator's counter alerted), logout.

use super::{AdminRow, clean_email, clean_name, hash_text, insert_passkey, new_id, parse_json};
use crate::core::Core;
use crate::core::access::passkeys::{Binding, Purpose, SessionBinding};
use crate::core::access::ratelimit::{self, Decision, RateLimiter};
use crate::core::access::stepup::{self, StepUpsOf};
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::AlertKind;
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::credentials::reveal::OpenGrants;
use crate::core::error::{Error, Result};
use crate::model::Role;
use serde_json::json;
use webauthn_rs::prelude::{
    CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Uuid,
};

impl Core {
    pub(super) async fn open_invite(&self, token: &str) -> Result<(String, String, Role)> {
        let row: Option<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT invite_id, email, role, expires_at_ms, used_at_ms FROM invites WHERE token_hash = $1 AND revoked_at_ms IS NULL",
        )
        .bind(hash_text(token))
        .fetch_optional(self.db.pool())
        .await?;
        match row {
            Some((id, email, role, expires, None)) if expires > self.now().timestamp_millis() => {
                Ok((id, email, role.parse().map_err(Error::Internal)?))
            }
            // SECURITY: one answer for unknown, used and expired links.
            _ => Err(Error::InvalidInput(
                "this enrollment link is invalid, used or expired; ask for a new invite".into(),
            )),
        }
    }

    /// Starts enrolling the first passkey from an invite link; returns the WebAuthn creation
    /// options (JSON) for the browser.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad link or name; database errors.
    pub async fn begin_enrollment(&self, session: &SessionBinding, token: &str, display_name: &str) -> Result<String> {
        let (invite_id, email, role) = self.open_invite(token).await?;
        let display_name = clean_name(display_name, "display name", 100)?;
        let handle = Uuid::new_v4();
        let rp = self.relying_party()?;
        let (challenge, state) = rp
            .webauthn()
            .start_passkey_registration(handle, &email, &display_name, None)
            .map_err(|e| Error::Internal(format!("webauthn: {e}")))?;
        let context = json!({"invite_id": invite_id, "user_handle": handle.to_string(), "display_name": display_name, "email": email, "role": role.as_str()});
        let binding = Binding { session, purpose: Purpose::Enroll, admin_id: None, tenant_id: None };
        rp.store(&self.db, binding, context, &state, self.now()).await?;
        serde_json::to_string(&challenge).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Finishes enrollment: verifies the new passkey, creates the admin, uses up the invite and
    /// returns the new admin, signed in.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad link, response or name; database errors.
    pub async fn finish_enrollment(
        &self,
        session: &SessionBinding,
        client: &ClientInfo,
        token: &str,
        credential_json: &str,
        passkey_name: &str,
    ) -> Result<Actor> {
        let (invite_id, _, _) = self.open_invite(token).await?;
        let passkey_name = clean_name(passkey_name, "passkey name", 60)?;
        let rp = self.relying_party()?;
        let now = self.now();
        let binding = Binding { session, purpose: Purpose::Enroll, admin_id: None, tenant_id: None };
        let taken = rp
            .take::<PasskeyRegistration>(&self.db, binding, now)
            .await?
            .filter(|c| !c.expired && c.context["invite_id"] == invite_id.as_str())
            .ok_or_else(|| Error::InvalidInput("no enrollment in progress; start again".into()))?;
        let credential: RegisterPublicKeyCredential = parse_json(credential_json)?;
        let passkey = rp
            .webauthn()
            .finish_passkey_registration(&credential, &taken.state)
            .map_err(|e| Error::InvalidInput(format!("the passkey could not be verified ({e})")))?;
        let ctx = &taken.context;
        let (email, display_name, role, handle) = (
            ctx["email"].as_str().unwrap_or_default().to_owned(),
            ctx["display_name"].as_str().unwrap_or_default().to_owned(),
            ctx["role"].as_str().unwrap_or_default().parse::<Role>().map_err(Error::Internal)?,
            ctx["user_handle"].as_str().unwrap_or_default().to_owned(),
        );
        let admin_id = new_id()?;
        let mut tx = self.db.begin_write().await?;
        let used = sqlx::query(
            "UPDATE invites SET used_at_ms = $1 WHERE invite_id = $2 AND used_at_ms IS NULL AND revoked_at_ms IS NULL",
        )
        .bind(now.timestamp_millis())
        .bind(&invite_id)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(Error::InvalidInput(
                "this enrollment link is invalid, used or expired; ask for a new invite".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO admins (admin_id, email, display_name, role, active, user_handle, created_at_ms) VALUES ($1, $2, $3, $4, 1, $5, $6)",
        )
        .bind(&admin_id)
        .bind(&email)
        .bind(&display_name)
        .bind(role.as_str())
        .bind(&handle)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(|_| Error::InvalidInput("an admin with this email already exists".into()))?;
        let actor = Actor::Admin { admin_id: admin_id.clone(), email: email.clone(), role };
        let passkey_id = insert_passkey(&mut tx, &admin_id, &passkey_name, &passkey, now).await?;
        let details = json!({"admin_id": admin_id, "email": email, "role": role.as_str(), "invite_id": invite_id});
        audit::append(&mut tx, &actor, client, NewEvent::info(EventType::AdminEnrolled, None, details), now).await?;
        let details = json!({"admin_id": admin_id, "passkey_id": passkey_id, "name": passkey_name});
        audit::append(&mut tx, &actor, client, NewEvent::info(EventType::PasskeyAdded, None, details), now).await?;
        audit::append(
            &mut tx,
            &actor,
            client,
            NewEvent::info(EventType::LoginSucceeded, None, json!({"passkey_id": passkey_id, "via": "enrollment"})),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(actor)
    }

    pub(super) async fn login_failed(&self, client: &ClientInfo, email: &str, reason: &str) -> Error {
        let actor = Actor::Anonymous;
        let event = NewEvent::info(EventType::LoginFailed, None, json!({"email": email, "reason": reason}))
            .with_severity(Severity::Warning);
        match audit::record(&self.db, &actor, client, event, self.now()).await {
            Ok(_) => Error::Unauthenticated,
            Err(e) => e,
        }
    }

    pub(super) fn rate_limited(&self, checks: &[(&RateLimiter, &str)]) -> Result<()> {
        let now = self.now();
        // Every key is counted, even after one refuses, so a refused caller keeps paying.
        let decisions: Vec<Decision> = checks.iter().map(|(limiter, key)| limiter.check(key, now)).collect();
        if decisions.contains(&Decision::Untracked) {
            metrics::counter!("smtp_vault_rate_limiter_saturated_total").increment(1);
        }
        if decisions.contains(&Decision::Refused) { Err(Error::RateLimited) } else { Ok(()) }
    }

    /// Starts a passkey login for `email`; returns the WebAuthn request options (JSON).
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::Unauthenticated`] (audited) for an unknown or disabled
    /// admin; database errors.
    pub async fn begin_login(&self, session: &SessionBinding, client: &ClientInfo, email: &str) -> Result<String> {
        let email = clean_email(email)?;
        let address = client.ip.map(ratelimit::address_key).unwrap_or_default();
        let account = format!("{email}|{address}");
        self.rate_limited(&[(&self.limits.login_address, &address), (&self.limits.login_account, &account)])?;
        let row: Option<AdminRow> =
            sqlx::query_as("SELECT admin_id, email, display_name, role, active FROM admins WHERE email = $1")
                .bind(&email)
                .fetch_optional(self.db.pool())
                .await?;
        let Some(row) = row.filter(|r| r.active != 0) else {
            return Err(self.login_failed(client, &email, "unknown_or_disabled").await);
        };
        let passkeys = self.passkeys_of(&row.admin_id).await?;
        let rp = self.relying_party()?;
        let (challenge, state) = rp
            .webauthn()
            .start_passkey_authentication(&passkeys.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>())
            .map_err(|e| Error::Internal(format!("webauthn: {e}")))?;
        let binding = Binding { session, purpose: Purpose::Login, admin_id: None, tenant_id: None };
        rp.store(&self.db, binding, json!({"admin_id": row.admin_id, "email": email}), &state, self.now()).await?;
        serde_json::to_string(&challenge).map_err(|e| Error::Internal(e.to_string()))
    }

    pub(super) async fn passkeys_of(&self, admin_id: &str) -> Result<Vec<(String, Passkey)>> {
        self.passkey_rows(admin_id)
            .await?
            .into_iter()
            .map(|r| {
                serde_json::from_str(&r.passkey)
                    .map(|p| (r.passkey_id, p))
                    .map_err(|e| Error::Internal(format!("stored passkey: {e}")))
            })
            .collect()
    }

    /// Verifies an assertion against the admin's passkeys, requires user verification, updates
    /// the signature counter; returns the passkey id used.
    pub(super) async fn alert_counter_regressed(&self, admin_id: &str, credential: &PublicKeyCredential) {
        let passkey = self
            .passkeys_of(admin_id)
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|(_, p)| AsRef::<[u8]>::as_ref(p.cred_id()) == AsRef::<[u8]>::as_ref(&credential.raw_id))
            .map(|(id, _)| id)
            .unwrap_or_default();
        let alert = crate::core::alerting::Alert {
            kind: AlertKind::PasskeyCounterRegressed,
            severity: Severity::Critical,
            tenant: None,
            dedupe_key: format!("passkey_counter_regressed:{passkey}:{}", self.now().timestamp_millis()),
            message: format!(
                "admin {admin_id}: passkey {passkey} signed with a counter at or below the last one seen; it may have been copied"
            ),
            details: json!({"admin_id": admin_id, "passkey_id": passkey}),
            audience: crate::core::alerting::Audience::Security,
        };
        if let Err(e) = self.raise_alert(alert).await {
            tracing::error!(error = %e, "could not raise the passkey counter alert");
        }
    }

    pub(super) async fn verify_assertion(
        &self,
        admin_id: &str,
        state: &PasskeyAuthentication,
        credential: &PublicKeyCredential,
    ) -> std::result::Result<String, &'static str> {
        let rp = self.relying_party().map_err(|_| "configuration")?;
        let result = match rp.webauthn().finish_passkey_authentication(credential, state) {
            Ok(result) => result,
            Err(webauthn_rs::prelude::WebauthnError::UserNotVerified) => return Err("user_not_verified"),
            // A valid signature whose counter did not move past the stored one: two
            // authenticators hold this key (it was copied) or one is broken. Refused, and
            // security hears of it.
            Err(webauthn_rs::prelude::WebauthnError::CredentialPossibleCompromise) => {
                self.alert_counter_regressed(admin_id, credential).await;
                return Err("counter_regressed");
            }
            Err(_) => return Err("assertion_invalid"),
        };
        // SECURITY: webauthn-rs already refuses UV=0 for passkeys; checked again so a policy
        // change upstream cannot silently weaken step-up.
        if !result.user_verified() {
            return Err("user_not_verified");
        }
        let passkeys = self.passkeys_of(admin_id).await.map_err(|_| "storage")?;
        let used: &CredentialID = result.cred_id();
        let (passkey_id, mut passkey) =
            passkeys.into_iter().find(|(_, p)| p.cred_id() == used).ok_or("unknown_passkey")?;
        let now = self.now().timestamp_millis();
        // Keeps the signature counter current, so a cloned authenticator shows up.
        passkey.update_credential(&result);
        let stored = serde_json::to_string(&passkey).map_err(|_| "storage")?;
        sqlx::query("UPDATE passkeys SET passkey = $1, last_used_at_ms = $2 WHERE passkey_id = $3")
            .bind(stored)
            .bind(now)
            .bind(&passkey_id)
            .execute(self.db.pool())
            .await
            .map_err(|_| "storage")?;
        Ok(passkey_id)
    }

    /// Finishes a passkey login; returns the signed-in actor. The caller must then cycle the
    /// session id.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `login_failed` with the reason) or database errors.
    pub async fn finish_login(
        &self,
        session: &SessionBinding,
        client: &ClientInfo,
        credential_json: &str,
    ) -> Result<Actor> {
        // Not even a WebAuthn response: bad input, refused before any ceremony is consumed (and
        // not audited; an answer that parses but fails is).
        let credential: PublicKeyCredential = parse_json(credential_json)?;
        let rp = self.relying_party()?;
        let binding = Binding { session, purpose: Purpose::Login, admin_id: None, tenant_id: None };
        let Some(taken) = rp.take::<PasskeyAuthentication>(&self.db, binding, self.now()).await? else {
            return Err(self.login_failed(client, "", "no_login_in_progress").await);
        };
        let email = taken.context["email"].as_str().unwrap_or_default().to_owned();
        if taken.expired {
            return Err(self.login_failed(client, &email, "challenge_expired").await);
        }
        let admin_id = taken.context["admin_id"].as_str().unwrap_or_default().to_owned();
        let passkey_id = match self.verify_assertion(&admin_id, &taken.state, &credential).await {
            Ok(id) => id,
            Err(reason) => return Err(self.login_failed(client, &email, reason).await),
        };
        let row = match self.admin_row(&admin_id).await? {
            Some(row) if row.active != 0 => row,
            _ => {
                return Err(self.login_failed(client, &email, "unknown_or_disabled").await);
            }
        };
        let actor = row.actor()?;
        audit::record(
            &self.db,
            &actor,
            client,
            NewEvent::info(EventType::LoginSucceeded, None, json!({"passkey_id": passkey_id})),
            self.now(),
        )
        .await?;
        Ok(actor)
    }

    /// Records a logout and closes the session's reveal and step-up windows.
    ///
    /// # Errors
    /// Database errors.
    pub async fn logout(&self, actor: &Actor, client: &ClientInfo) -> Result<()> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        // What this session earned ends with it: its reveal windows and its step-up window.
        if let Some(session) = &client.session {
            let hash = session.hash();
            self.revoke_open_grants(&mut tx, actor, client, OpenGrants::OfSession(&hash), "logged_out", now).await?;
            stepup::end_step_ups(&mut tx, StepUpsOf::Session(&hash)).await?;
        }
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::LoggedOut, None, json!({})), now).await?;
        tx.commit().await?;
        Ok(())
    }
}
