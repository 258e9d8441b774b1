//! Who is acting and what they may do: the [`Actor`] every core method takes, the client facts
//! recorded with audit events, and service tokens (random, shown once, stored hashed, checked in
//! constant time, expiring, revocable). Authorization is decided here, never at the edges.

pub mod passkeys;
pub mod ratelimit;
pub mod stepup;

use crate::core::audit::{self, EventType, NewEvent};
use crate::core::crypto::random_bytes;
use crate::core::db::{Db, ServiceTokenRow};
use crate::core::error::{Error, Result};
use crate::model::{Permission, Role, Scope, ServiceTokenSummary, StepUp};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use subtle::ConstantTimeEq;

/// The principal behind a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A platform caller with a service token.
    ServiceToken {
        /// Token id.
        token_id: String,
        /// Token name.
        name: String,
        /// Granted scopes.
        scopes: Vec<Scope>,
    },
    /// A person at the console host running the CLI (break-glass; has every scope, because
    /// whoever runs the binary already holds the keyring and the Vault credentials).
    Operator {
        /// Local user name.
        name: String,
    },
    /// A scheduled job inside the console.
    System {
        /// Job name.
        job: &'static str,
    },
    /// A signed-in admin (browser session).
    Admin {
        /// Admin id.
        admin_id: String,
        /// Login email.
        email: String,
        /// Role.
        role: Role,
    },
    /// Nobody signed in (failed logins are recorded under it).
    Anonymous,
}

impl Actor {
    /// The CLI operator, named after the local user.
    #[must_use]
    pub fn operator() -> Self {
        let name = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into());
        Actor::Operator { name }
    }

    /// (kind, id) as written to the audit log.
    #[must_use]
    pub fn audit_identity(&self) -> (&'static str, String) {
        match self {
            Actor::ServiceToken { token_id, name, .. } => ("service_token", format!("{token_id} ({name})")),
            Actor::Operator { name } => ("operator", format!("cli:{name}")),
            Actor::System { job } => ("system", (*job).to_owned()),
            Actor::Admin { admin_id, email, .. } => ("admin", format!("{admin_id} ({email})")),
            Actor::Anonymous => ("anonymous", String::new()),
        }
    }

    /// The refusal for an action this actor may not take: 401 for nobody, 403 for somebody.
    #[must_use]
    pub fn refuse(&self, why: &'static str) -> Error {
        if matches!(self, Actor::Anonymous) { Error::Unauthenticated } else { Error::Forbidden(why) }
    }

    /// The admin behind this actor, if it is one.
    #[must_use]
    pub fn admin_id(&self) -> Option<&str> {
        match self {
            Actor::Admin { admin_id, .. } => Some(admin_id),
            _ => None,
        }
    }
}

/// Facts about the caller's connection, recorded with audit events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Peer address.
    pub ip: Option<IpAddr>,
    /// Request id (x-request-id).
    pub request_id: Option<String>,
    /// The browser session the call came through, if any: step-up and reveal windows belong
    /// to the session that earned them.
    pub session: Option<crate::core::access::passkeys::SessionBinding>,
}

impl ClientInfo {
    /// For work with no network caller (CLI, jobs).
    #[must_use]
    pub fn local() -> Self {
        Self::default()
    }
}

/// How a permitted actor is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clearance {
    /// At once.
    Granted,
    /// Only when the admin's passkey ceremony for this action finishes.
    Ceremony,
    /// Only inside a step-up window of the admin's session.
    Window,
}

/// The one authorization decision: whether the table ([`Permission::rule`]) grants `actor`
/// `permission`, and what an admin still owes first.
///
/// A refusal is logged, not audited: bad input must change nothing (ARCHITECTURE §4), and a
/// denied call changes no state. Repeated denials are a monitoring signal (metrics), not events.
///
/// # Errors
/// [`Error::Unauthenticated`] for nobody, [`Error::MissingScope`] for a token without the scope
/// that grants it, [`Error::Forbidden`] for anyone else not granted it.
pub(crate) fn clearance(actor: &Actor, permission: Permission) -> Result<Clearance> {
    let rule = permission.rule();
    if !granted(actor, permission) {
        if matches!(actor, Actor::Anonymous) {
            return Err(Error::Unauthenticated);
        }
        let (kind, id) = actor.audit_identity();
        tracing::warn!(actor_kind = kind, actor = %id, permission = ?permission, "access denied");
        return Err(match (actor, rule.scope) {
            (Actor::ServiceToken { .. }, Some(scope)) => Error::MissingScope(scope),
            _ => Error::Forbidden(permission.refusal()),
        });
    }
    Ok(match (actor, rule.step_up) {
        (Actor::Admin { .. }, StepUp::Ceremony) => Clearance::Ceremony,
        (Actor::Admin { .. }, StepUp::Window) => Clearance::Window,
        _ => Clearance::Granted,
    })
}

/// Whether the table grants `actor` `permission` outright (no step-up owed), without logging a
/// refusal: for choosing what to show (everyone's reveal windows, or one's own).
pub(crate) fn permits(actor: &Actor, permission: Permission) -> bool {
    granted(actor, permission)
        && !matches!((actor, permission.rule().step_up), (Actor::Admin { .. }, StepUp::Ceremony | StepUp::Window))
}

fn granted(actor: &Actor, permission: Permission) -> bool {
    let rule = permission.rule();
    match actor {
        Actor::ServiceToken { scopes, .. } => rule.scope.is_some_and(|scope| scopes.contains(&scope)),
        Actor::Operator { .. } => rule.operator,
        Actor::System { .. } => rule.system,
        Actor::Admin { role, .. } => role.may(permission),
        Actor::Anonymous => false,
    }
}

/// For an action that runs now and needs no step-up from this actor. An admin who owes a
/// ceremony is refused (the action runs only from its finish); one who owes a window goes
/// through [`Core::authorize_now`].
///
/// # Errors
/// Those of [`clearance`]; [`Error::Forbidden`] when a ceremony is owed,
/// [`Error::StepUpRequired`] when a window is.
pub(crate) fn authorize(actor: &Actor, permission: Permission) -> Result<()> {
    match clearance(actor, permission)? {
        Clearance::Granted => Ok(()),
        Clearance::Ceremony => Err(Error::Forbidden(permission.refusal())),
        Clearance::Window => Err(Error::StepUpRequired),
    }
}

/// For the begin and the finish of an admin's passkey ceremony: only an admin whom the table
/// sends through one.
///
/// # Errors
/// Those of [`clearance`]; [`Error::Forbidden`] for anyone the table lets through otherwise.
pub(crate) fn authorize_ceremony(actor: &Actor, permission: Permission) -> Result<()> {
    match clearance(actor, permission)? {
        Clearance::Ceremony => Ok(()),
        Clearance::Granted | Clearance::Window => Err(Error::Forbidden(permission.refusal())),
    }
}

const TOKEN_PREFIX: &str = "svt_";

/// A newly created token: the only time the secret exists in the clear.
pub struct CreatedToken {
    /// Its listing.
    pub summary: ServiceTokenSummary,
    /// The whole bearer token, `svt_{id}_{secret}`.
    pub token: SecretString,
}

fn secret_hash(secret: &str) -> String {
    // SECURITY: the secret is 256 random bits, so a fast hash is enough: there is nothing to
    // brute-force, and a slow KDF would only slow every API call.
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(DateTime::from_timestamp_millis)
}

fn summary(row: &ServiceTokenRow) -> ServiceTokenSummary {
    ServiceTokenSummary {
        token_id: row.token_id.clone(),
        name: row.name.clone(),
        scopes: row.scopes.split_whitespace().filter_map(|s| s.parse().ok()).collect(),
        created_by: row.created_by.clone(),
        created_at: ms(Some(row.created_at_ms)).unwrap_or_default(),
        expires_at: ms(row.expires_at_ms),
        revoked_at: ms(row.revoked_at_ms),
        last_used_at: ms(row.last_used_at_ms),
    }
}

const TOKEN_COLUMNS: &str =
    "token_id, name, secret_hash, scopes, created_by, created_at_ms, expires_at_ms, revoked_at_ms, last_used_at_ms";

/// Creates a token with `scopes`, optionally expiring after `ttl`.
///
/// # Errors
/// [`Error::Forbidden`] unless the actor may manage tokens; [`Error::InvalidInput`] for an empty
/// name or no scopes; database errors.
pub(crate) async fn create_token(
    db: &Db,
    actor: &Actor,
    client: &ClientInfo,
    name: &str,
    scopes: &[Scope],
    ttl: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<CreatedToken> {
    authorize(actor, Permission::ManageTokens)?;
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(Error::InvalidInput("token name must be 1-100 printable characters".into()));
    }
    if scopes.is_empty() {
        return Err(Error::InvalidInput("a token needs at least one scope".into()));
    }
    if ttl.is_some_and(|t| t <= Duration::zero()) {
        return Err(Error::InvalidInput("token lifetime must be positive".into()));
    }
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let token_id = hex::encode(random_bytes::<6>()?.as_ref());
    let secret = SecretString::from(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?.as_ref()));
    let expires_at = ttl.map(|t| now + t);
    let scope_text = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    let created_by = actor.audit_identity().1;
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO service_tokens (token_id, name, secret_hash, scopes, created_by, created_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&token_id)
    .bind(name)
    .bind(secret_hash(secret.expose_secret()))
    .bind(&scope_text)
    .bind(&created_by)
    .bind(now.timestamp_millis())
    .bind(expires_at.map(|t| t.timestamp_millis()))
    .execute(&mut *tx)
    .await?;
    let details = json!({"token_id": token_id, "name": name, "scopes": scope_text, "expires_at": expires_at});
    audit::append(&mut tx, actor, client, NewEvent::info(EventType::ServiceTokenCreated, None, details), now).await?;
    tx.commit().await?;
    let token = SecretString::from(format!("{TOKEN_PREFIX}{token_id}_{}", secret.expose_secret()));
    let summary = ServiceTokenSummary {
        token_id,
        name: name.to_owned(),
        scopes,
        created_by,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    Ok(CreatedToken { summary, token })
}

/// Every token, newest first.
///
/// # Errors
/// [`Error::Forbidden`] or database errors.
pub(crate) async fn list_tokens(db: &Db, actor: &Actor) -> Result<Vec<ServiceTokenSummary>> {
    authorize(actor, Permission::ManageTokens)?;
    let rows: Vec<ServiceTokenRow> =
        sqlx::query_as(&format!("SELECT {TOKEN_COLUMNS} FROM service_tokens ORDER BY created_at_ms DESC, token_id"))
            .fetch_all(db.pool())
            .await?;
    Ok(rows.iter().map(summary).collect())
}

/// Revokes a token; returns false if it was already revoked.
///
/// # Errors
/// [`Error::Forbidden`], [`Error::NotFound`] or database errors.
pub(crate) async fn revoke_token(
    db: &Db,
    actor: &Actor,
    client: &ClientInfo,
    token_id: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    authorize(actor, Permission::ManageTokens)?;
    let mut tx = db.begin_write().await?;
    let updated =
        sqlx::query("UPDATE service_tokens SET revoked_at_ms = $1 WHERE token_id = $2 AND revoked_at_ms IS NULL")
            .bind(now.timestamp_millis())
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
    if updated.rows_affected() == 0 {
        let exists: Option<(String,)> = sqlx::query_as("SELECT token_id FROM service_tokens WHERE token_id = $1")
            .bind(token_id)
            .fetch_optional(&mut *tx)
            .await?;
        return if exists.is_some() { Ok(false) } else { Err(Error::NotFound("service token")) };
    }
    let event = NewEvent::info(EventType::ServiceTokenRevoked, None, json!({"token_id": token_id}));
    audit::append(&mut tx, actor, client, event, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Resolves a bearer token to its actor.
///
/// # Errors
/// [`Error::Unauthenticated`] for a malformed, unknown, wrong, expired or revoked token (one
/// answer for all, so callers learn nothing about which tokens exist); database errors.
pub(crate) async fn authenticate_token(db: &Db, presented: &str, now: DateTime<Utc>) -> Result<Actor> {
    let Some((token_id, secret)) = presented.strip_prefix(TOKEN_PREFIX).and_then(|rest| rest.split_once('_')) else {
        return Err(Error::Unauthenticated);
    };
    if token_id.len() != 12 || !token_id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.len() > 64 {
        return Err(Error::Unauthenticated);
    }
    let row: Option<ServiceTokenRow> =
        sqlx::query_as(&format!("SELECT {TOKEN_COLUMNS} FROM service_tokens WHERE token_id = $1"))
            .bind(token_id)
            .fetch_optional(db.pool())
            .await?;
    let presented_hash = secret_hash(secret);
    // SECURITY: compare in constant time, and against a dummy when the id is unknown, so the
    // response time does not tell which ids exist or how much of a secret matched.
    let stored = row.as_ref().map_or("0".repeat(64), |r| r.secret_hash.clone());
    let matches: bool = presented_hash.as_bytes().ct_eq(stored.as_bytes()).into();
    let Some(row) = row.filter(|_| matches) else {
        return Err(Error::Unauthenticated);
    };
    let now_ms = now.timestamp_millis();
    if row.revoked_at_ms.is_some() || row.expires_at_ms.is_some_and(|t| t <= now_ms) {
        return Err(Error::Unauthenticated);
    }
    // Last use is kept to the minute: one small write per token per minute, not per request.
    if row.last_used_at_ms.is_none_or(|t| now_ms - t >= 60_000) {
        sqlx::query("UPDATE service_tokens SET last_used_at_ms = $1 WHERE token_id = $2")
            .bind(now_ms)
            .bind(&row.token_id)
            .execute(db.pool())
            .await?;
    }
    let summary = summary(&row);
    Ok(Actor::ServiceToken { token_id: summary.token_id, name: summary.name, scopes: summary.scopes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(role: Role) -> Actor {
        Actor::Admin { admin_id: "a1".into(), email: "a@example.com".into(), role }
    }

    fn token(scopes: &[Scope]) -> Actor {
        Actor::ServiceToken { token_id: "t1".into(), name: "backend".into(), scopes: scopes.to_vec() }
    }

    #[test]
    fn an_admin_who_owes_a_ceremony_is_refused_the_direct_call_and_let_into_the_ceremony() {
        let platform = admin(Role::PlatformAdmin);
        for permission in [Permission::Reveal, Permission::Rotate, Permission::RestoreBackup] {
            assert!(matches!(authorize(&platform, permission), Err(Error::Forbidden(_))), "{permission:?}");
            assert!(authorize_ceremony(&platform, permission).is_ok(), "{permission:?}");
        }
        // The operator acts at once and is never sent through an admin's ceremony.
        let operator = Actor::Operator { name: "root".into() };
        assert!(authorize(&operator, Permission::Rotate).is_ok());
        assert!(matches!(authorize_ceremony(&operator, Permission::Rotate), Err(Error::Forbidden(_))));
        assert!(matches!(authorize(&operator, Permission::Reveal), Err(Error::Forbidden(_))));
    }

    #[test]
    fn a_window_is_owed_by_admins_only() {
        assert!(matches!(authorize(&admin(Role::PlatformAdmin), Permission::ManageAdmins), Err(Error::StepUpRequired)));
        assert_eq!(clearance(&admin(Role::PlatformAdmin), Permission::ManageAdmins).ok(), Some(Clearance::Window));
        assert_eq!(
            clearance(&Actor::Operator { name: "root".into() }, Permission::ManageAdmins).ok(),
            Some(Clearance::Granted)
        );
        assert!(!permits(&admin(Role::PlatformAdmin), Permission::ManageAdmins));
        assert!(permits(&admin(Role::PlatformAdmin), Permission::OverseeAdmins));
    }

    #[test]
    fn refusals_say_who_is_missing_what() {
        assert!(matches!(authorize(&Actor::Anonymous, Permission::ReadCredentials), Err(Error::Unauthenticated)));
        assert!(matches!(
            authorize(&token(&[Scope::CredentialsRead]), Permission::ReadSecret),
            Err(Error::MissingScope(Scope::CredentialsReadSecret))
        ));
        assert!(authorize(&token(&[Scope::CredentialsReadSecret]), Permission::ReadSecret).is_ok());
        // A token never reveals, whatever its scopes: no scope grants it.
        assert!(matches!(authorize(&token(&Scope::ALL), Permission::Reveal), Err(Error::Forbidden(_))));
        assert!(matches!(authorize(&admin(Role::SecurityReviewer), Permission::Rotate), Err(Error::Forbidden(_))));
        assert!(matches!(
            authorize(&Actor::System { job: "rotation" }, Permission::ManageAdmins),
            Err(Error::Forbidden(_))
        ));
    }
}
