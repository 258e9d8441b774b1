//! The reveal window (ARCHITECTURE §4 "a reveal is always earned"): a platform admin gives a
//! reason, passes a WebAuthn step-up with user verification bound to this session, tenant and
//! purpose within two minutes, and gets a grant for one tenant for the configured window
//! (15 minutes). The server checks the grant on every reveal; every refusal is audited; every
//! plaintext sent is audited before it is sent.

use crate::core::Core;
use crate::core::access::passkeys::{Purpose, SessionBinding};
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize_ceremony, permits};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::random_bytes;
use crate::core::error::{Error, Result};
use crate::model::Permission;
use crate::model::{GrantView, RevealCategory, RevealStep, RevealedCredentialView, TenantId};
use chrono::{DateTime, Utc};
use serde_json::json;

#[derive(sqlx::FromRow)]
struct GrantRow {
    grant_id: String,
    email: String,
    tenant_id: String,
    reason: String,
    created_at_ms: i64,
    expires_at_ms: i64,
}

impl GrantRow {
    fn view(self) -> Option<GrantView> {
        Some(GrantView {
            grant_id: self.grant_id,
            admin_email: self.email,
            tenant_id: TenantId::parse(&self.tenant_id).ok()?,
            reason: self.reason,
            created_at: DateTime::from_timestamp_millis(self.created_at_ms)?,
            expires_at: DateTime::from_timestamp_millis(self.expires_at_ms)?,
        })
    }
}

/// Which open grants to revoke.
#[derive(Debug, Clone, Copy)]
pub enum OpenGrants<'a> {
    /// One grant by id.
    One(&'a str),
    /// Every open grant of an admin.
    OfAdmin(&'a str),
    /// Every open grant for a tenant.
    OfTenant(&'a TenantId),
    /// Every open grant earned with one passkey.
    OfPasskey(&'a str),
    /// Every open grant of one browser session (by its binding's hash).
    OfSession(&'a str),
}

const GRANT_COLUMNS: &str = "g.grant_id, a.email, g.tenant_id, g.reason, g.created_at_ms, g.expires_at_ms";

impl Core {
    /// Records a refused reveal step and returns the error to answer with.
    pub(super) async fn refuse(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        event: EventType,
        reason: &str,
        error: Error,
    ) -> Error {
        let details = json!({"reason": reason});
        let event = NewEvent::info(event, Some(tenant), details).with_severity(Severity::Warning);
        match audit::record(&self.db, actor, client, event, self.now()).await {
            Ok(_) => error,
            Err(e) => e,
        }
    }

    async fn require_revealer(&self, actor: &Actor, client: &ClientInfo, tenant: &TenantId) -> Result<()> {
        if actor.admin_id().is_none() {
            return Err(Error::Unauthenticated);
        }
        match authorize_ceremony(actor, Permission::Reveal) {
            Ok(()) => Ok(()),
            Err(refused) => Err(self.refuse(actor, client, tenant, EventType::RevealRefused, "role", refused).await),
        }
    }

    /// Starts a reveal: checks the role and the reason and returns the WebAuthn step-up
    /// challenge (JSON), bound to this session, this tenant and the reveal purpose.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (audited), [`Error::InvalidInput`] for a missing reason,
    /// [`Error::NotFound`] for an unknown tenant, [`Error::RateLimited`].
    pub async fn begin_reveal(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        reason: &str,
    ) -> Result<String> {
        self.begin_reveal_as(actor, session, client, tenant, reason, RevealCategory::Other).await
    }

    /// [`Core::begin_reveal`] with the reason's category (what a tenant that asked to be told
    /// of reveals reads).
    ///
    /// # Errors
    /// Those of [`Core::begin_reveal`].
    pub async fn begin_reveal_as(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        reason: &str,
        category: RevealCategory,
    ) -> Result<String> {
        self.require_revealer(actor, client, tenant).await?;
        let reason = reason.trim();
        if reason.chars().count() < 3
            || reason.chars().count() > 500
            || reason.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(Error::InvalidInput("give a reason of 3 to 500 characters".into()));
        }
        let known: Option<(String,)> = sqlx::query_as("SELECT tenant_id FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        if known.is_none() {
            return Err(Error::NotFound("credential"));
        }
        // Four eyes: fail closed before the step-up when nobody could approve.
        if self.reveal_needs_approval(tenant).await? {
            self.check_approver_exists(actor, client, tenant).await?;
        }
        let intent = Intent::Reveal { reason: reason.to_owned(), category };
        self.begin_step_up(actor, session, Some(tenant), &intent).await
    }

    /// Finishes the step-up and opens the reveal window, or, for a tenant whose reveals need a
    /// second platform admin, files the request that waits for one.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited `reauth_failed` with the cause) for a missing,
    /// replayed, expired, unverified or invalid assertion; [`Error::Forbidden`] (audited).
    pub async fn finish_reveal(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        credential_json: &str,
    ) -> Result<RevealStep> {
        self.require_revealer(actor, client, tenant).await?;
        let Actor::Admin { admin_id, email, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let (passkey_id, intent) =
            match self.finish_reauth(actor, session, Purpose::Reveal, Some(tenant.as_str()), credential_json).await? {
                Ok(ok) => ok,
                Err(cause) => {
                    return Err(self
                        .refuse(actor, client, tenant, EventType::ReauthFailed, cause, Error::Unauthenticated)
                        .await);
                }
            };
        let Intent::Reveal { reason, category } = intent else {
            return Err(Error::Unauthenticated);
        };
        if self.reveal_needs_approval(tenant).await? {
            let request =
                self.request_reveal_approval(actor, client, session, tenant, &reason, category, &passkey_id).await?;
            return Ok(RevealStep::AwaitingApproval(request));
        }
        let now = self.now();
        let expires_at = now + self.settings.reveal_window;
        let grant_id = hex::encode(random_bytes::<8>()?.as_ref());
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO reveal_grants (grant_id, admin_id, tenant_id, reason, passkey_id, created_at_ms, expires_at_ms, \
             binding_hash, category) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&grant_id)
        .bind(admin_id)
        .bind(tenant.as_str())
        .bind(&reason)
        .bind(&passkey_id)
        .bind(now.timestamp_millis())
        .bind(expires_at.timestamp_millis())
        .bind(session.hash())
        .bind(category.as_str())
        .execute(&mut *tx)
        .await?;
        self.queue_reveal_notice(&mut tx, tenant, &grant_id, category, &reason, now).await?;
        let reauth = json!({"purpose": "reveal", "passkey_id": passkey_id});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::ReauthSucceeded, Some(tenant), reauth), now)
            .await?;
        let details = json!({
            "grant_id": grant_id, "reason": reason, "category": category.as_str(), "passkey_id": passkey_id,
            "expires_at": expires_at,
        });
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::RevealGranted, Some(tenant), details), now)
            .await?;
        tx.commit().await?;
        self.wake_outbox();
        Ok(RevealStep::Granted(GrantView {
            grant_id,
            admin_email: email.clone(),
            tenant_id: tenant.clone(),
            reason,
            created_at: now,
            expires_at,
        }))
    }

    /// The plaintext credential, inside an open reveal window of this admin for this tenant,
    /// earned in the browser session the call comes through (another session of the same admin,
    /// a stolen cookie for instance, has no window). Each call is audited
    /// (`credential_revealed`) before the plaintext is returned.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (audited) without an open grant or the role; Vault, crypto and
    /// database errors.
    pub async fn reveal_credential(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<RevealedCredentialView> {
        self.require_revealer(actor, client, tenant).await?;
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        self.record_expired_grants().await?;
        let now = self.now();
        let session = client.session.as_ref().map(SessionBinding::hash).unwrap_or_default();
        let grant: Option<(String, i64)> = sqlx::query_as(
            "SELECT grant_id, expires_at_ms FROM reveal_grants WHERE admin_id = $1 AND tenant_id = $2 \
             AND revoked_at_ms IS NULL AND expires_at_ms > $3 AND binding_hash = $4 ORDER BY expires_at_ms DESC",
        )
        .bind(admin_id)
        .bind(tenant.as_str())
        .bind(now.timestamp_millis())
        .bind(&session)
        .fetch_optional(self.db.pool())
        .await?;
        let Some((grant_id, expires_ms)) = grant else {
            return Err(self
                .refuse(
                    actor,
                    client,
                    tenant,
                    EventType::RevealRefused,
                    "no_open_reveal_window",
                    Error::Forbidden("no open reveal window for this tenant"),
                )
                .await);
        };
        let (mut stored, state) = self.read_to_hand_out(tenant).await?;
        let password = self.password_to_hand_out(actor, client, tenant, &mut stored, state, now).await?;
        let details = json!({"grant_id": grant_id, "version": stored.version});
        audit::record(
            &self.db,
            actor,
            client,
            NewEvent::info(EventType::CredentialRevealed, Some(tenant), details),
            now,
        )
        .await?;
        metrics::counter!("smtp_vault_reveals_total").increment(1);
        Ok(RevealedCredentialView {
            tenant_id: tenant.clone(),
            username: stored.document.username,
            password,
            grant_id,
            expires_at: DateTime::from_timestamp_millis(expires_ms).unwrap_or(now),
            expires_in_secs: (expires_ms - now.timestamp_millis()).max(0) / 1000,
        })
    }

    /// Open reveal windows: all of them for platform admins, one's own for others, optionally
    /// for one tenant.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for non-admins, database errors.
    pub async fn list_grants(&self, actor: &Actor, tenant: Option<&TenantId>) -> Result<Vec<GrantView>> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        self.record_expired_grants().await?;
        let all = permits(actor, Permission::OverseeAdmins);
        let rows: Vec<GrantRow> = sqlx::query_as(&format!(
            "SELECT {GRANT_COLUMNS} FROM reveal_grants g JOIN admins a ON a.admin_id = g.admin_id \
             WHERE g.revoked_at_ms IS NULL AND g.expires_at_ms > $1 AND ($2 = 1 OR g.admin_id = $3) \
             AND ($4 = '' OR g.tenant_id = $4) ORDER BY g.expires_at_ms"
        ))
        .bind(self.now().timestamp_millis())
        .bind(i64::from(all))
        .bind(admin_id)
        .bind(tenant.map_or("", TenantId::as_str))
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.into_iter().filter_map(GrantRow::view).collect())
    }

    /// Closes a reveal window early: one's own, or anyone's for a platform admin.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown, closed or someone else's grant.
    pub async fn revoke_grant(&self, actor: &Actor, client: &ClientInfo, grant_id: &str) -> Result<()> {
        let Actor::Admin { admin_id, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT tenant_id, admin_id FROM reveal_grants WHERE grant_id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(grant_id)
        .bind(now.timestamp_millis())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((tenant_id, _)) =
            row.filter(|(_, owner)| owner == admin_id || permits(actor, Permission::OverseeAdmins))
        else {
            return Err(Error::NotFound("open reveal window"));
        };
        let revoked_tenant = TenantId::parse(&tenant_id).ok();
        self.revoke_open_grants(&mut tx, actor, client, OpenGrants::One(grant_id), "revoked", now).await?;
        tx.commit().await?;
        if let Some(tenant) = revoked_tenant {
            self.rotate_after_reveal(&tenant).await?;
        }
        Ok(())
    }

    /// Revokes open grants inside the caller's transaction, one audit event each; returns how
    /// many were open.
    pub(crate) async fn revoke_open_grants(
        &self,
        tx: &mut crate::core::db::WriteTx,
        actor: &Actor,
        client: &ClientInfo,
        which: OpenGrants<'_>,
        cause: &str,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        let (column, value) = match which {
            OpenGrants::One(grant_id) => ("grant_id", grant_id),
            OpenGrants::OfAdmin(admin_id) => ("admin_id", admin_id),
            OpenGrants::OfTenant(tenant) => ("tenant_id", tenant.as_str()),
            OpenGrants::OfPasskey(passkey_id) => ("passkey_id", passkey_id),
            OpenGrants::OfSession(binding_hash) => ("binding_hash", binding_hash),
        };
        let open: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT grant_id, tenant_id, admin_id FROM reveal_grants \
             WHERE {column} = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2"
        ))
        .bind(value)
        .bind(now.timestamp_millis())
        .fetch_all(&mut **tx)
        .await?;
        let count = open.len();
        for (grant_id, tenant_id, owner) in open {
            sqlx::query("UPDATE reveal_grants SET revoked_at_ms = $1, revoked_by = $2 WHERE grant_id = $3")
                .bind(now.timestamp_millis())
                .bind(actor.audit_identity().1)
                .bind(&grant_id)
                .execute(&mut **tx)
                .await?;
            let tenant = TenantId::parse(&tenant_id).ok();
            let details = json!({"grant_id": grant_id, "owner": owner, "cause": cause});
            audit::append(tx, actor, client, NewEvent::info(EventType::RevealRevoked, tenant.as_ref(), details), now)
                .await?;
        }
        // What ends a window also ends a request that would open one.
        self.withdraw_open_requests(tx, actor, client, which, cause, now).await?;
        Ok(count)
    }

    /// Writes one `reveal_expired` event for each window that has closed by time and was not
    /// recorded yet. Runs on reads and from a background task; idempotent.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_expired_grants(&self) -> Result<usize> {
        let now = self.now();
        let closed: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT grant_id, tenant_id, admin_id FROM reveal_grants WHERE expiry_recorded = 0 AND revoked_at_ms IS NULL AND expires_at_ms <= $1",
        )
        .bind(now.timestamp_millis())
        .fetch_all(self.db.pool())
        .await?;
        let mut recorded = 0;
        let mut closed_tenants = Vec::new();
        let system = Actor::System { job: "reveal-expiry" };
        for (grant_id, tenant_id, admin_id) in closed {
            let mut tx = self.db.begin_write().await?;
            // Claiming the row first makes concurrent sweepers record each expiry once.
            let claimed =
                sqlx::query("UPDATE reveal_grants SET expiry_recorded = 1 WHERE grant_id = $1 AND expiry_recorded = 0")
                    .bind(&grant_id)
                    .execute(&mut *tx)
                    .await?;
            if claimed.rows_affected() == 1 {
                let tenant = TenantId::parse(&tenant_id).ok();
                let details = json!({"grant_id": grant_id, "owner": admin_id});
                audit::append(
                    &mut tx,
                    &system,
                    &ClientInfo::local(),
                    NewEvent::info(EventType::RevealExpired, tenant.as_ref(), details),
                    now,
                )
                .await?;
                recorded += 1;
                closed_tenants.extend(tenant);
            }
            tx.commit().await?;
        }
        for tenant in closed_tenants {
            self.rotate_after_reveal(&tenant).await?;
        }
        Ok(recorded)
    }
}
