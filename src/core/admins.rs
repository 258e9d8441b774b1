//! Admins and how they get in: one-time invites, enrollment of the first passkey, passkey
//! login, session checks, further passkeys, role changes and disabling. Every change is
//! audited; a disabled admin's sessions stop working at their next request (each request is
//! re-checked here) and their reveal grants are revoked in the same transaction.

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::{Alert, Audience, raise_in};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::random_bytes;
use crate::core::error::{Error, Result};
use crate::core::passkeys::{Binding, Purpose, SessionBinding, credential_id_text};
use crate::core::ratelimit::{self, Decision, RateLimiter};
use crate::core::reveal::OpenGrants;
use crate::model::Permission;
use crate::model::{AdminView, InviteCreatedView, InviteView, PasskeyView, Role};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Uuid,
};

/// How long an invite link works.
pub const INVITE_TTL_HOURS: i64 = 24;

/// A signed-in admin as the web layer keeps it in the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// The admin.
    pub admin_id: String,
    /// When they signed in.
    pub login_at: DateTime<Utc>,
}

fn ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(DateTime::from_timestamp_millis)
}

fn hash_text(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn new_id() -> Result<String> {
    Ok(hex::encode(random_bytes::<8>()?.as_ref()))
}

fn clean_name(text: &str, what: &str, max: usize) -> Result<String> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!("{what} must be 1-{max} printable characters")));
    }
    Ok(t.to_owned())
}

fn clean_email(text: &str) -> Result<String> {
    let e = text.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid { Ok(e) } else { Err(Error::InvalidInput("a valid email address is required".into())) }
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|_| Error::InvalidInput("the passkey response is malformed".into()))
}

#[derive(sqlx::FromRow)]
struct AdminRow {
    admin_id: String,
    email: String,
    display_name: String,
    role: String,
    active: i64,
}

#[derive(sqlx::FromRow)]
struct PasskeyRow {
    passkey_id: String,
    name: String,
    passkey: String,
    created_at_ms: i64,
    last_used_at_ms: Option<i64>,
}

impl AdminRow {
    fn role(&self) -> Result<Role> {
        self.role.parse().map_err(|_| Error::Internal(format!("admin {} has an unknown role", self.admin_id)))
    }

    fn actor(&self) -> Result<Actor> {
        Ok(Actor::Admin { admin_id: self.admin_id.clone(), email: self.email.clone(), role: self.role()? })
    }
}

impl Core {
    async fn admin_row(&self, admin_id: &str) -> Result<Option<AdminRow>> {
        Ok(sqlx::query_as("SELECT admin_id, email, display_name, role, active FROM admins WHERE admin_id = $1")
            .bind(admin_id)
            .fetch_optional(self.db.pool())
            .await?)
    }

    async fn passkey_rows(&self, admin_id: &str) -> Result<Vec<PasskeyRow>> {
        Ok(sqlx::query_as(
            "SELECT passkey_id, name, passkey, created_at_ms, last_used_at_ms FROM passkeys WHERE admin_id = $1 ORDER BY created_at_ms",
        )
        .bind(admin_id)
        .fetch_all(self.db.pool())
        .await?)
    }

    async fn admin_view(&self, row: &AdminRow) -> Result<AdminView> {
        let passkeys = self
            .passkey_rows(&row.admin_id)
            .await?
            .into_iter()
            .map(|p| PasskeyView {
                passkey_id: p.passkey_id,
                name: p.name,
                created_at: ms(Some(p.created_at_ms)).unwrap_or_default(),
                last_used_at: ms(p.last_used_at_ms),
            })
            .collect();
        Ok(AdminView {
            admin_id: row.admin_id.clone(),
            email: row.email.clone(),
            display_name: row.display_name.clone(),
            role: row.role()?,
            active: row.active != 0,
            passkeys,
        })
    }

    /// Turns a stored session into an actor, or refuses: unknown or disabled admin, or a session
    /// older than the absolute lifetime.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`], database errors.
    pub async fn authenticate_session(&self, session: &AdminSession) -> Result<Actor> {
        if self.now() - session.login_at > self.settings.session_absolute
            || session.login_at > self.now() + Duration::minutes(5)
        {
            return Err(Error::Unauthenticated);
        }
        match self.admin_row(&session.admin_id).await? {
            Some(row) if row.active != 0 => row.actor(),
            _ => Err(Error::Unauthenticated),
        }
    }

    /// The signed-in admin with their passkeys.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for anything but an admin.
    pub async fn current_admin(&self, actor: &Actor) -> Result<AdminView> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let row = self.admin_row(admin_id).await?.ok_or(Error::Unauthenticated)?;
        self.admin_view(&row).await
    }

    /// Creates a one-time enrollment link for `email` with `role` (platform admins, or an
    /// operator at the host to bootstrap a fresh install).
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::InvalidInput`], [`Error::Conflict`] when an active admin
    /// has that email; database errors.
    pub async fn create_invite(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        email: &str,
        role: Role,
    ) -> Result<InviteCreatedView> {
        self.authorize_now(actor, client.session.as_ref(), Permission::ManageAdmins).await?;
        let email = clean_email(email)?;
        let existing: Option<(i64,)> = sqlx::query_as("SELECT active FROM admins WHERE email = $1")
            .bind(&email)
            .fetch_optional(self.db.pool())
            .await?;
        if existing.is_some() {
            return Err(Error::InvalidInput(
                "an admin with this email exists; change their role or re-enable instead".into(),
            ));
        }
        let now = self.now();
        let token = SecretString::from(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?.as_ref()));
        let invite_id = new_id()?;
        let expires_at = now + Duration::hours(INVITE_TTL_HOURS);
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO invites (invite_id, token_hash, email, role, created_by, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&invite_id)
        .bind(hash_text(token.expose_secret()))
        .bind(&email)
        .bind(role.as_str())
        .bind(actor.audit_identity().1)
        .bind(now.timestamp_millis())
        .bind(expires_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        let details = json!({"invite_id": invite_id, "email": email, "role": role.as_str(), "expires_at": expires_at});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::AdminInvited, None, details), now).await?;
        tx.commit().await?;
        let link = format!("{}/enroll/{}", self.settings.public_url.trim_end_matches('/'), token.expose_secret());
        Ok(InviteCreatedView { invite_id, email, role, link, expires_at })
    }

    /// Invites that still work (platform admins).
    ///
    /// # Errors
    /// [`Error::Forbidden`], database errors.
    pub async fn list_invites(&self, actor: &Actor) -> Result<Vec<InviteView>> {
        authorize(actor, Permission::OverseeAdmins)?;
        let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT invite_id, email, role, created_by, created_at_ms, expires_at_ms FROM invites \
             WHERE used_at_ms IS NULL AND revoked_at_ms IS NULL AND expires_at_ms > $1 ORDER BY created_at_ms",
        )
        .bind(self.now().timestamp_millis())
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(invite_id, email, role, created_by, created, expires)| {
                Some(InviteView {
                    invite_id,
                    email,
                    role: role.parse().ok()?,
                    created_by,
                    created_at: ms(Some(created))?,
                    expires_at: ms(Some(expires))?,
                })
            })
            .collect())
    }

    /// Revokes an invite before it is used: its link stops working at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::StepUpRequired`], [`Error::NotFound`] for an unknown,
    /// used, expired or already revoked invite.
    pub async fn revoke_invite(&self, actor: &Actor, client: &ClientInfo, invite_id: &str) -> Result<()> {
        self.authorize_now(actor, client.session.as_ref(), Permission::ManageAdmins).await?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let revoked = sqlx::query(
            "UPDATE invites SET revoked_at_ms = $1 WHERE invite_id = $2 AND used_at_ms IS NULL AND revoked_at_ms IS NULL \
             AND expires_at_ms > $1",
        )
        .bind(now.timestamp_millis())
        .bind(invite_id)
        .execute(&mut *tx)
        .await?;
        if revoked.rows_affected() != 1 {
            return Err(Error::NotFound("open invite"));
        }
        let details = json!({"invite_id": invite_id});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::InviteRevoked, None, details), now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn open_invite(&self, token: &str) -> Result<(String, String, Role)> {
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

    async fn login_failed(&self, client: &ClientInfo, email: &str, reason: &str) -> Error {
        let actor = Actor::Anonymous;
        let event = NewEvent::info(EventType::LoginFailed, None, json!({"email": email, "reason": reason}))
            .with_severity(Severity::Warning);
        match audit::record(&self.db, &actor, client, event, self.now()).await {
            Ok(_) => Error::Unauthenticated,
            Err(e) => e,
        }
    }

    fn rate_limited(&self, checks: &[(&RateLimiter, &str)]) -> Result<()> {
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

    async fn passkeys_of(&self, admin_id: &str) -> Result<Vec<(String, Passkey)>> {
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
    async fn alert_counter_regressed(&self, admin_id: &str, credential: &PublicKeyCredential) {
        let passkey = self
            .passkeys_of(admin_id)
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|(_, p)| AsRef::<[u8]>::as_ref(p.cred_id()) == AsRef::<[u8]>::as_ref(&credential.raw_id))
            .map(|(id, _)| id)
            .unwrap_or_default();
        let alert = crate::core::alerting::Alert {
            kind: "passkey_counter_regressed",
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

    async fn verify_assertion(
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
            sqlx::query("DELETE FROM step_ups WHERE binding_hash = $1").bind(&hash).execute(&mut *tx).await?;
        }
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::LoggedOut, None, json!({})), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts a step-up re-authentication for `purpose`, bound to this session (and tenant).
    /// Returns the WebAuthn request options (JSON).
    pub(crate) async fn begin_reauth(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        purpose: Purpose,
        tenant_id: Option<&str>,
        context: Value,
    ) -> Result<String> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        self.rate_limited(&[(&self.limits.reauth, admin_id)])?;
        let passkeys = self.passkeys_of(admin_id).await?;
        let rp = self.relying_party()?;
        let (challenge, state) = rp
            .webauthn()
            .start_passkey_authentication(&passkeys.into_iter().map(|(_, p)| p).collect::<Vec<_>>())
            .map_err(|e| Error::Internal(format!("webauthn: {e}")))?;
        let binding = Binding { session, purpose, admin_id: Some(admin_id), tenant_id };
        rp.store(&self.db, binding, context, &state, self.now()).await?;
        serde_json::to_string(&challenge).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Finishes a step-up: takes the ceremony for this session, purpose and tenant and checks
    /// the assertion. `Ok(Err(reason))` is a refusal the caller audits.
    pub(crate) async fn finish_reauth(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        purpose: Purpose,
        tenant_id: Option<&str>,
        credential_json: &str,
    ) -> Result<std::result::Result<(String, Value), &'static str>> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let credential: PublicKeyCredential = parse_json(credential_json)?;
        let rp = self.relying_party()?;
        let binding = Binding { session, purpose, admin_id: Some(admin_id), tenant_id };
        let Some(taken) = rp.take::<PasskeyAuthentication>(&self.db, binding, self.now()).await? else {
            return Ok(Err("no_challenge_in_progress"));
        };
        if taken.expired {
            return Ok(Err("challenge_expired"));
        }
        let verified = self.verify_assertion(admin_id, &taken.state, &credential).await;
        if let Ok(passkey_id) = &verified {
            self.flag_new_passkey(actor, passkey_id).await?;
        }
        Ok(verified.map(|id| (id, taken.context)))
    }

    /// Finishes a step-up and records it either way: a refusal is audited `reauth_failed`
    /// (warning, with the cause) and answered [`Error::Unauthenticated`]; a success is audited
    /// `reauth_succeeded` with the passkey used. Returns the passkey id and the ceremony's
    /// context (what the admin confirmed).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`]; database errors.
    pub(crate) async fn finish_step_up(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        purpose: Purpose,
        tenant: Option<&crate::model::TenantId>,
        credential_json: &str,
    ) -> Result<(String, Value)> {
        let outcome = self
            .finish_reauth(actor, session, purpose, tenant.map(crate::model::TenantId::as_str), credential_json)
            .await?;
        let (event, found) = match outcome {
            Ok((passkey_id, context)) => (
                NewEvent::info(
                    EventType::ReauthSucceeded,
                    tenant,
                    json!({"purpose": purpose.as_str(), "passkey_id": passkey_id}),
                ),
                Some((passkey_id, context)),
            ),
            Err(cause) => (
                NewEvent::info(EventType::ReauthFailed, tenant, json!({"purpose": purpose.as_str(), "reason": cause}))
                    .with_severity(Severity::Warning),
                None,
            ),
        };
        audit::record(&self.db, actor, client, event, self.now()).await?;
        found.ok_or(Error::Unauthenticated)
    }

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
                kind: "passkey_added",
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

    /// Removes one of the admin's own passkeys, never the last one.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InvalidInput`] for the last passkey.
    pub async fn remove_passkey(&self, actor: &Actor, client: &ClientInfo, passkey_id: &str) -> Result<()> {
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
        sqlx::query("DELETE FROM step_ups WHERE passkey_id = $1").bind(passkey_id).execute(&mut *tx).await?;
        self.revoke_open_grants(&mut tx, actor, client, OpenGrants::OfPasskey(passkey_id), "passkey_removed", now)
            .await?;
        let details = json!({"admin_id": admin_id, "passkey_id": passkey_id});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::PasskeyRemoved, None, details), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every admin (platform admins only).
    ///
    /// # Errors
    /// [`Error::Forbidden`], database errors.
    pub async fn list_admins(&self, actor: &Actor) -> Result<Vec<AdminView>> {
        authorize(actor, Permission::OverseeAdmins)?;
        let rows: Vec<AdminRow> =
            sqlx::query_as("SELECT admin_id, email, display_name, role, active FROM admins ORDER BY email")
                .fetch_all(self.db.pool())
                .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.admin_view(row).await?);
        }
        Ok(out)
    }

    /// Locks the active platform admins' rows until the transaction ends. SQLite's write
    /// transactions are serial already; on PostgreSQL (read committed) two admins demoting each
    /// other at once would each count the other as still there, and both commit.
    async fn lock_platform_admins(&self, conn: &mut sqlx::AnyConnection) -> Result<()> {
        if self.db.backend() == crate::core::db::Backend::Postgres {
            sqlx::query(
                "SELECT admin_id FROM admins WHERE role = 'platform_admin' AND active = 1 ORDER BY admin_id FOR UPDATE",
            )
            .fetch_all(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn active_platform_admins(&self, conn: &mut sqlx::AnyConnection) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM admins WHERE role = 'platform_admin' AND active = 1")
            .fetch_one(&mut *conn)
            .await?;
        Ok(n)
    }

    /// Changes an admin's role; the last active platform admin cannot be demoted.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::NotFound`], [`Error::InvalidInput`].
    pub async fn change_role(&self, actor: &Actor, client: &ClientInfo, admin_id: &str, role: Role) -> Result<()> {
        self.authorize_now(actor, client.session.as_ref(), Permission::ManageAdmins).await?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        self.lock_platform_admins(&mut tx).await?;
        let old: Option<(String,)> = sqlx::query_as("SELECT role FROM admins WHERE admin_id = $1")
            .bind(admin_id)
            .fetch_optional(&mut *tx)
            .await?;
        let old = old.ok_or(Error::NotFound("admin"))?.0;
        sqlx::query("UPDATE admins SET role = $1 WHERE admin_id = $2")
            .bind(role.as_str())
            .bind(admin_id)
            .execute(&mut *tx)
            .await?;
        if old == Role::PlatformAdmin.as_str() && self.active_platform_admins(&mut tx).await? == 0 {
            return Err(Error::InvalidInput("at least one active platform admin must remain".into()));
        }
        // A changed role starts over: no step-up window carries across it.
        sqlx::query("DELETE FROM step_ups WHERE admin_id = $1").bind(admin_id).execute(&mut *tx).await?;
        // A demoted platform admin keeps no reveal window.
        if role != Role::PlatformAdmin {
            self.revoke_open_grants(&mut tx, actor, client, OpenGrants::OfAdmin(admin_id), "role_changed", now).await?;
        }
        let details = json!({"admin_id": admin_id, "from": old, "to": role.as_str()});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::AdminRoleChanged, None, details), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables an admin: their sessions stop at the next request, their grants are revoked.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::NotFound`], [`Error::InvalidInput`] for oneself or the
    /// last platform admin.
    pub async fn disable_admin(&self, actor: &Actor, client: &ClientInfo, admin_id: &str) -> Result<()> {
        self.authorize_now(actor, client.session.as_ref(), Permission::ManageAdmins).await?;
        if actor.admin_id() == Some(admin_id) {
            return Err(Error::InvalidInput("you cannot disable yourself".into()));
        }
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        self.lock_platform_admins(&mut tx).await?;
        let target: Option<(String,)> = sqlx::query_as("SELECT role FROM admins WHERE admin_id = $1")
            .bind(admin_id)
            .fetch_optional(&mut *tx)
            .await?;
        let was_platform_admin = target.is_some_and(|(role,)| role == Role::PlatformAdmin.as_str());
        let updated =
            sqlx::query("UPDATE admins SET active = 0, disabled_at_ms = $1 WHERE admin_id = $2 AND active = 1")
                .bind(now.timestamp_millis())
                .bind(admin_id)
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() != 1 {
            return Err(Error::NotFound("active admin"));
        }
        if was_platform_admin && self.active_platform_admins(&mut tx).await? == 0 {
            return Err(Error::InvalidInput("at least one active platform admin must remain".into()));
        }
        self.revoke_open_grants(&mut tx, actor, client, OpenGrants::OfAdmin(admin_id), "admin_disabled", now).await?;
        sqlx::query("DELETE FROM ceremonies WHERE admin_id = $1").bind(admin_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM step_ups WHERE admin_id = $1").bind(admin_id).execute(&mut *tx).await?;
        audit::append(
            &mut tx,
            actor,
            client,
            NewEvent::info(EventType::AdminDisabled, None, json!({"admin_id": admin_id})),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_passkey(
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
