//! Admins and how they get in: one-time invites, enrollment of the first passkey, passkey
//! login, session checks, further passkeys, role changes and disabling. Every change is
//! audited; a disabled admin's sessions stop working at their next request (each request is
//! re-checked here) and their reveal grants are revoked in the same transaction.

mod login;
mod passkeys;
mod reauth;

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::passkeys::drop_ceremonies_of;
use crate::core::access::stepup::{self, StepUpsOf};
use crate::core::access::{Actor, ClientInfo};
use crate::core::audit::{self, EventType, NewEvent};
use crate::core::credentials::reveal::OpenGrants;
use crate::core::crypto::random_bytes;
use crate::core::emergency::sweep::SweepCause;
use crate::core::error::{Error, Result};
use crate::model::Permission;
use crate::model::{AdminView, InviteCreatedView, InviteView, PasskeyView, Role};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use passkeys::insert_passkey;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};

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
        stepup::end_step_ups(&mut tx, StepUpsOf::Admin(admin_id)).await?;
        // A demoted platform admin keeps no reveal window.
        if role != Role::PlatformAdmin {
            self.revoke_open_grants(&mut tx, actor, client, OpenGrants::OfAdmin(admin_id), "role_changed", now).await?;
        }
        let details = json!({"admin_id": admin_id, "from": old, "to": role.as_str()});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::AdminRoleChanged, None, details), now).await?;
        // Whoever may no longer reveal should not keep knowing what they revealed.
        let sweep = if old == Role::PlatformAdmin.as_str() && role != Role::PlatformAdmin {
            self.open_admin_sweep_in(&mut tx, actor, client, admin_id, SweepCause::Demoted).await?
        } else {
            None
        };
        tx.commit().await?;
        if let Some(incident) = sweep {
            self.spawn_sweep(actor, client, &incident);
        }
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
        drop_ceremonies_of(&mut tx, admin_id).await?;
        stepup::end_step_ups(&mut tx, StepUpsOf::Admin(admin_id)).await?;
        audit::append(
            &mut tx,
            actor,
            client,
            NewEvent::info(EventType::AdminDisabled, None, json!({"admin_id": admin_id})),
            now,
        )
        .await?;
        let sweep = self.open_admin_sweep_in(&mut tx, actor, client, admin_id, SweepCause::Disabled).await?;
        tx.commit().await?;
        if let Some(incident) = sweep {
            self.spawn_sweep(actor, client, &incident);
        }
        Ok(())
    }
}
