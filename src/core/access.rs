//! Who is acting and what they may do: the [`Actor`] every core method takes, the client facts
//! recorded with audit events, and service tokens (random, shown once, stored hashed, checked in
//! constant time, expiring, revocable). Authorization is decided here, never at the edges.

use crate::core::audit::{self, EventType, NewEvent};
use crate::core::crypto::random_bytes;
use crate::core::db::{Db, ServiceTokenRow};
use crate::core::error::{Error, Result};
use crate::model::{Role, Scope, ServiceTokenSummary};
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

    /// Whether this actor holds `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Actor::ServiceToken { scopes, .. } => scopes.contains(&scope),
            Actor::Operator { .. } | Actor::System { .. } => true,
            // Admins read plaintext only through a reveal window, never by scope.
            Actor::Admin { role, .. } => match scope {
                Scope::CredentialsRead => true,
                Scope::AuditRead => matches!(role, Role::PlatformAdmin | Role::SecurityReviewer),
                _ => false,
            },
            Actor::Anonymous => false,
        }
    }

    /// The refusal for an action this actor may not take: 401 for nobody, 403 for somebody.
    #[must_use]
    pub fn refuse(&self, why: &'static str) -> Error {
        if matches!(self, Actor::Anonymous) { Error::Unauthenticated } else { Error::Forbidden(why) }
    }

    /// May this actor reveal credentials (after step-up)? Platform admins only.
    #[must_use]
    pub fn may_reveal(&self) -> bool {
        matches!(self, Actor::Admin { role: Role::PlatformAdmin, .. })
    }

    /// May this admin press the emergency reset (after a step-up)? Platform admins and
    /// incident responders.
    #[must_use]
    pub fn may_respond(&self) -> bool {
        matches!(self, Actor::Admin { role: Role::PlatformAdmin | Role::IncidentResponder, .. })
    }

    /// May this actor invite, change and disable admins?
    #[must_use]
    pub fn may_manage_admins(&self) -> bool {
        matches!(self, Actor::Admin { role: Role::PlatformAdmin, .. } | Actor::Operator { .. })
    }

    /// May this actor manage service tokens? Only operators at the host (admins later).
    #[must_use]
    pub fn may_manage_tokens(&self) -> bool {
        matches!(self, Actor::Operator { .. })
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
    pub session: Option<crate::core::passkeys::SessionBinding>,
}

impl ClientInfo {
    /// For work with no network caller (CLI, jobs).
    #[must_use]
    pub fn local() -> Self {
        Self::default()
    }
}

/// Checks `actor` holds `scope`.
///
/// A refusal is logged, not audited: bad input must change nothing (ARCHITECTURE §4), and a
/// denied call changes no state. Repeated denials are a monitoring signal (metrics), not events.
///
/// # Errors
/// [`Error::MissingScope`].
pub(crate) fn require_scope(actor: &Actor, scope: Scope) -> Result<()> {
    if actor.has_scope(scope) {
        return Ok(());
    }
    if matches!(actor, Actor::Anonymous) {
        return Err(Error::Unauthenticated);
    }
    let (kind, id) = actor.audit_identity();
    tracing::warn!(actor_kind = kind, actor = %id, needed_scope = scope.as_str(), "access denied");
    Err(Error::MissingScope(scope))
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
    if !actor.may_manage_tokens() {
        return Err(actor.refuse("only an operator can create service tokens"));
    }
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
    if !actor.may_manage_tokens() {
        return Err(actor.refuse("only an operator can list service tokens"));
    }
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
    if !actor.may_manage_tokens() {
        return Err(actor.refuse("only an operator can revoke service tokens"));
    }
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
