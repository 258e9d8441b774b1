//! The WebAuthn relying party and the server-side ceremony store. A ceremony's state lives in
//! the database, is bound to the browser session (a hash of a per-session secret), to a purpose
//! and, for reveals, to a tenant, expires after two minutes, and is deleted when taken: an
//! assertion can be used once, in the session and for the purpose it was asked for.

use crate::core::crypto::random_bytes;
use crate::core::db::{Db, WriteTx};
use crate::core::error::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{Passkey, Url, Webauthn, WebauthnBuilder};

/// Why a ceremony was started; part of its binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// First passkey from an invite.
    Enroll,
    /// Sign in.
    Login,
    /// Another passkey for a signed-in admin.
    AddPasskey,
    /// Step-up before revealing a tenant's credential.
    Reveal,
    /// Step-up of a second platform admin approving or denying a four-eyes reveal.
    ApproveReveal,
    /// Step-up before rotating a tenant's credential from the UI.
    Rotate,
    /// Step-up before an emergency reset from the UI.
    EmergencyReset,
    /// Step-up before restoring a backup from the UI.
    Restore,
    /// Step-up before recovering a tenant onto a replacement server from the UI.
    Recover,
    /// Step-up before an exposure sweep from the UI.
    Sweep,
    /// Step-up before reverting a tenant's password from the UI.
    Revert,
    /// Step-up that opens a short window for sensitive account and destination changes in
    /// this session (passkeys, invites, roles, Mailu API URLs).
    Confirm,
}

impl Purpose {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Purpose::Enroll => "enroll",
            Purpose::Login => "login",
            Purpose::AddPasskey => "add_passkey",
            Purpose::Reveal => "reveal",
            Purpose::ApproveReveal => "approve_reveal",
            Purpose::Rotate => "rotate",
            Purpose::EmergencyReset => "emergency_reset",
            Purpose::Restore => "restore",
            Purpose::Recover => "recover",
            Purpose::Sweep => "sweep",
            Purpose::Revert => "revert",
            Purpose::Confirm => "confirm",
        }
    }
}

/// A per-session secret the web layer keeps in the session and hands to the core; ceremonies,
/// step-up windows and reveal windows are bound to its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionBinding(pub String);

impl std::fmt::Debug for SessionBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionBinding([redacted])")
    }
}

impl SessionBinding {
    /// A fresh random binding.
    ///
    /// # Errors
    /// When the OS random source fails.
    pub fn generate() -> Result<Self> {
        Ok(Self(hex::encode(random_bytes::<32>()?.as_ref())))
    }

    pub(crate) fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

/// What a taken ceremony carries besides its WebAuthn state.
#[derive(Debug)]
pub struct TakenCeremony<S> {
    /// WebAuthn state.
    pub state: S,
    /// Admin it was started for, if any.
    pub admin_id: Option<String>,
    /// Tenant it was started for, if any.
    pub tenant_id: Option<String>,
    /// Purpose-specific context (JSON).
    pub context: serde_json::Value,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// Whether it had expired when taken.
    pub expired: bool,
}

/// Where a ceremony should be bound.
pub struct Binding<'a> {
    /// The session.
    pub session: &'a SessionBinding,
    /// The purpose.
    pub purpose: Purpose,
    /// The admin, if known.
    pub admin_id: Option<&'a str>,
    /// The tenant, for reveals.
    pub tenant_id: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct CeremonyRow {
    state: String,
    admin_id: Option<String>,
    tenant_id: Option<String>,
    context: String,
    created_at_ms: i64,
    expires_at_ms: i64,
}

/// The relying party.
pub struct RelyingParty {
    webauthn: Webauthn,
    ttl: Duration,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelyingParty")
    }
}

impl RelyingParty {
    /// Builds the relying party for the console's public URL (the origin, port included).
    ///
    /// # Errors
    /// [`Error::Config`] for a URL without a host.
    pub fn new(origin: &Url, ceremony_ttl: Duration) -> Result<Self> {
        let rp_id = origin.host_str().ok_or_else(|| Error::Config("public URL has no host".into()))?.to_owned();
        let webauthn = WebauthnBuilder::new(&rp_id, origin)
            .and_then(|b| b.rp_name("smtp-vault").build())
            .map_err(|e| Error::Config(format!("WebAuthn relying party: {e}")))?;
        Ok(Self { webauthn, ttl: ceremony_ttl })
    }

    /// The webauthn-rs handle.
    #[must_use]
    pub fn webauthn(&self) -> &Webauthn {
        &self.webauthn
    }

    /// Stores a ceremony's state.
    ///
    /// # Errors
    /// Database or serialisation errors.
    pub async fn store<S: Serialize>(
        &self,
        db: &Db,
        binding: Binding<'_>,
        context: serde_json::Value,
        state: &S,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let state = serde_json::to_string(state).map_err(|e| Error::Internal(format!("ceremony state: {e}")))?;
        // Opportunistic cleanup keeps the table small without a separate job.
        sqlx::query("DELETE FROM ceremonies WHERE expires_at_ms < $1")
            .bind((now - Duration::hours(1)).timestamp_millis())
            .execute(db.pool())
            .await?;
        sqlx::query(
            "INSERT INTO ceremonies (ceremony_id, binding_hash, purpose, admin_id, tenant_id, context, state, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(hex::encode(random_bytes::<16>()?.as_ref()))
        .bind(binding.session.hash())
        .bind(binding.purpose.as_str())
        .bind(binding.admin_id)
        .bind(binding.tenant_id)
        .bind(context.to_string())
        .bind(state)
        .bind(now.timestamp_millis())
        .bind((now + self.ttl).timestamp_millis())
        .execute(db.pool())
        .await?;
        Ok(())
    }

    /// Takes (deletes and returns) the newest ceremony for this binding; every other one for the
    /// same binding is deleted too, so no state can be answered twice.
    ///
    /// # Errors
    /// Database errors; `Ok(None)` when there is none (never started, or already used).
    pub async fn take<S: DeserializeOwned>(
        &self,
        db: &Db,
        binding: Binding<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<TakenCeremony<S>>> {
        let rows: Vec<CeremonyRow> = sqlx::query_as(
            "DELETE FROM ceremonies WHERE binding_hash = $1 AND purpose = $2 \
             AND COALESCE(admin_id, '') = $3 AND COALESCE(tenant_id, '') = $4 \
             RETURNING state, admin_id, tenant_id, context, created_at_ms, expires_at_ms",
        )
        .bind(binding.session.hash())
        .bind(binding.purpose.as_str())
        .bind(binding.admin_id.unwrap_or(""))
        .bind(binding.tenant_id.unwrap_or(""))
        .fetch_all(db.pool())
        .await?;
        let Some(row) = rows.into_iter().max_by_key(|r| r.created_at_ms) else {
            return Ok(None);
        };
        let state = serde_json::from_str(&row.state).map_err(|e| Error::Internal(format!("ceremony state: {e}")))?;
        Ok(Some(TakenCeremony {
            state,
            admin_id: row.admin_id,
            tenant_id: row.tenant_id,
            context: serde_json::from_str(&row.context).unwrap_or_default(),
            created_at: DateTime::from_timestamp_millis(row.created_at_ms).unwrap_or_default(),
            expired: now.timestamp_millis() > row.expires_at_ms,
        }))
    }
}

/// Drops every ceremony an admin has begun (disabled: none may finish).
pub(crate) async fn drop_ceremonies_of(tx: &mut WriteTx, admin_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM ceremonies WHERE admin_id = $1").bind(admin_id).execute(&mut **tx).await?;
    Ok(())
}

/// The stable text id of a passkey's credential (base64url).
#[must_use]
pub fn credential_id_text(passkey: &Passkey) -> String {
    let bytes: &[u8] = passkey.cred_id().as_ref();
    URL_SAFE_NO_PAD.encode(bytes)
}
