//! Four-eyes reveals. A tenant can require that a reveal be approved by a second platform admin:
//! the requester gives a reason and passes their own step-up, which files a request instead of
//! opening a window; every other platform admin is told (email, and Slack through the security
//! channel) with a link to the approvals page; another platform admin — never the requester —
//! approves or denies with their own passkey step-up within 30 minutes; approval opens the
//! requester's window in the session that asked. Nothing passes without a second person: with
//! no other platform admin the request is refused (it fails closed), and only a passkey
//! ceremony in the console decides (no token, operator, job or chat button can).

use crate::core::Core;
use crate::core::access::passkeys::{Purpose, SessionBinding};
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo, authorize, authorize_ceremony};
use crate::core::alerting::{Alert, AlertKind, Audience, raise_in};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::random_bytes;
use crate::core::error::{Error, Result};
use crate::model::{GrantView, Permission, RevealCategory, RevealRequestStatus, RevealRequestView, Role, TenantId};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

/// How long a request waits for a decision.
pub const REQUEST_TTL: Duration = Duration::minutes(30);

#[derive(sqlx::FromRow)]
struct RequestRow {
    request_id: String,
    tenant_id: String,
    requester_id: String,
    requester_email: String,
    reason: String,
    category: String,
    passkey_id: String,
    binding_hash: String,
    status: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    decided_by_email: Option<String>,
    decided_at_ms: Option<i64>,
}

impl RequestRow {
    fn view(&self) -> Option<RevealRequestView> {
        Some(RevealRequestView {
            request_id: self.request_id.clone(),
            tenant_id: TenantId::parse(&self.tenant_id).ok()?,
            requester_email: self.requester_email.clone(),
            reason: self.reason.clone(),
            status: RevealRequestStatus::from_name(&self.status)?,
            created_at: DateTime::from_timestamp_millis(self.created_at_ms)?,
            expires_at: DateTime::from_timestamp_millis(self.expires_at_ms)?,
            decided_by_email: self.decided_by_email.clone(),
            decided_at: self.decided_at_ms.and_then(DateTime::from_timestamp_millis),
        })
    }
}

const REQUEST_SELECT: &str = "SELECT r.request_id, r.tenant_id, r.requester_id, a.email AS requester_email, r.reason, \
     r.category, r.passkey_id, r.binding_hash, r.status, r.created_at_ms, r.expires_at_ms, d.email AS decided_by_email, \
     r.decided_at_ms FROM reveal_requests r JOIN admins a ON a.admin_id = r.requester_id \
     LEFT JOIN admins d ON d.admin_id = r.decided_by";

impl Core {
    /// Whether reveals of `tenant` need a second platform admin's approval.
    pub(crate) async fn reveal_needs_approval(&self, tenant: &TenantId) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT reveal_approval FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some_and(|(on,)| on != 0))
    }

    /// The emails of the active platform admins other than `requester_id`: who may approve.
    pub(crate) async fn approvers_for(&self, requester_id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT email FROM admins WHERE role = $1 AND active = 1 AND admin_id <> $2 ORDER BY email")
                .bind(Role::PlatformAdmin.as_str())
                .bind(requester_id)
                .fetch_all(self.db.pool())
                .await?;
        Ok(rows.into_iter().map(|(email,)| email).collect())
    }

    /// Files the request a four-eyes reveal step-up leads to, tells every possible approver and
    /// security, and audits `reveal_requested`. Refused (audited) when nobody could approve.
    #[allow(clippy::too_many_arguments, reason = "the requester's whole step-up, as finish_reveal has it")]
    pub(crate) async fn request_reveal_approval(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        session: &SessionBinding,
        tenant: &TenantId,
        reason: &str,
        category: RevealCategory,
        passkey_id: &str,
    ) -> Result<RevealRequestView> {
        let Actor::Admin { admin_id, email, .. } = actor else {
            return Err(Error::Unauthenticated);
        };
        let approvers = self.approvers_for(admin_id).await?;
        if approvers.is_empty() {
            return Err(self.refuse_no_approver(actor, client, tenant).await);
        }
        let now = self.now();
        let expires_at = now + REQUEST_TTL;
        let request_id = hex::encode(random_bytes::<8>()?.as_ref());
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO reveal_requests (request_id, tenant_id, requester_id, reason, passkey_id, binding_hash, status, \
             created_at_ms, expires_at_ms, category) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&request_id)
        .bind(tenant.as_str())
        .bind(admin_id)
        .bind(reason)
        .bind(passkey_id)
        .bind(session.hash())
        .bind(RevealRequestStatus::Pending.as_str())
        .bind(now.timestamp_millis())
        .bind(expires_at.timestamp_millis())
        .bind(category.as_str())
        .execute(&mut *tx)
        .await?;
        let reauth = json!({"purpose": Purpose::Reveal.as_str(), "passkey_id": passkey_id});
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::ReauthSucceeded, Some(tenant), reauth), now)
            .await?;
        let details = json!({
            "request_id": request_id, "reason": reason, "passkey_id": passkey_id,
            "expires_at": expires_at, "approvers": approvers,
        });
        audit::append(&mut tx, actor, client, NewEvent::info(EventType::RevealRequested, Some(tenant), details), now)
            .await?;
        // SECURITY: the notice carries a link to the approvals page and nothing to act on: a
        // decision needs the approver's passkey, which only the console can ask for.
        let page = format!("{}/approvals", self.settings.public_url);
        let until = expires_at.format("%H:%M UTC");
        let message = format!("{email} asks to reveal {tenant}'s password: approve or deny at {page} by {until}");
        // The reason stays in the console (the Approvals page): notices leave it, by email and chat.
        let details = json!({
            "request_id": request_id, "requester": email, "approvals_page": page, "expires_at": expires_at,
        });
        for approver in &approvers {
            let alert = Alert {
                kind: AlertKind::RevealApprovalRequested,
                severity: Severity::Warning,
                tenant: Some(tenant),
                dedupe_key: format!("reveal_approval_requested:{request_id}:{approver}"),
                message: message.clone(),
                details: details.clone(),
                audience: Audience::Admin { email: approver.clone() },
            };
            raise_in(&mut tx, &self.channels, alert, now).await?;
        }
        let alert = Alert {
            kind: AlertKind::RevealApprovalRequested,
            severity: Severity::Warning,
            tenant: Some(tenant),
            dedupe_key: format!("reveal_approval_requested:{request_id}"),
            message,
            details,
            audience: Audience::Security,
        };
        raise_in(&mut tx, &self.channels, alert, now).await?;
        tx.commit().await?;
        self.wake_outbox();
        Ok(RevealRequestView {
            request_id,
            tenant_id: tenant.clone(),
            requester_email: email.clone(),
            reason: reason.to_owned(),
            status: RevealRequestStatus::Pending,
            created_at: now,
            expires_at,
            decided_by_email: None,
            decided_at: None,
        })
    }

    async fn refuse_no_approver(&self, actor: &Actor, client: &ClientInfo, tenant: &TenantId) -> Error {
        let refusal = Error::Forbidden(
            "this tenant's reveals need a second platform admin's approval, and there is no other platform admin",
        );
        self.refuse(actor, client, tenant, EventType::RevealRefused, "no_approver", refusal).await
    }

    /// Checked before a four-eyes reveal's step-up: someone must be able to approve it.
    pub(crate) async fn check_approver_exists(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<()> {
        let Some(admin_id) = actor.admin_id() else {
            return Err(Error::Unauthenticated);
        };
        if self.approvers_for(admin_id).await?.is_empty() {
            return Err(self.refuse_no_approver(actor, client, tenant).await);
        }
        Ok(())
    }

    /// Reveal requests, newest first: the pending ones only, or the last 100 of any status.
    ///
    /// # Errors
    /// [`Error::Forbidden`] / [`Error::MissingScope`] without the audit trail's permission.
    pub async fn list_reveal_requests(&self, actor: &Actor, pending_only: bool) -> Result<Vec<RevealRequestView>> {
        authorize(actor, Permission::ReadAudit)?;
        self.record_expired_requests().await?;
        let rows: Vec<RequestRow> = sqlx::query_as(&format!(
            "{REQUEST_SELECT} WHERE ($1 = 0 OR r.status = $2) ORDER BY r.created_at_ms DESC, r.request_id LIMIT 100"
        ))
        .bind(i64::from(pending_only))
        .bind(RevealRequestStatus::Pending.as_str())
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.iter().filter_map(RequestRow::view).collect())
    }

    async fn open_request(&self, request_id: &str) -> Result<RequestRow> {
        self.record_expired_requests().await?;
        let row: Option<RequestRow> = sqlx::query_as(&format!("{REQUEST_SELECT} WHERE r.request_id = $1"))
            .bind(request_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.filter(|r| r.status == RevealRequestStatus::Pending.as_str())
            .ok_or(Error::NotFound("pending reveal request"))
    }

    /// Refuses the requester deciding their own request (audited).
    async fn refuse_own_request(&self, actor: &Actor, client: &ClientInfo, row: &RequestRow) -> Result<()> {
        if actor.admin_id() != Some(row.requester_id.as_str()) {
            return Ok(());
        }
        let tenant = TenantId::parse(&row.tenant_id).ok();
        let details = json!({"reason": "own_request", "request_id": row.request_id});
        let event = NewEvent::info(EventType::RevealRefused, tenant.as_ref(), details).with_severity(Severity::Warning);
        audit::record(&self.db, actor, client, event, self.now()).await?;
        Err(Error::Forbidden("a reveal request is decided by another platform admin, never by the one who asked"))
    }

    /// Starts a decision on a pending request: the approver's own passkey step-up, bound to this
    /// session, the request's tenant and what they decide.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for the requester or a non-platform admin, [`Error::NotFound`] for a
    /// request that is not pending.
    pub async fn begin_decide_reveal(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        request_id: &str,
        approve: bool,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::ApproveReveal)?;
        let row = self.open_request(request_id).await?;
        self.refuse_own_request(actor, client, &row).await?;
        let tenant = TenantId::parse(&row.tenant_id).map_err(|_| Error::NotFound("pending reveal request"))?;
        let intent = Intent::DecideReveal { request_id: row.request_id, approve };
        self.begin_step_up(actor, session, Some(&tenant), &intent).await
    }

    /// Finishes a decision: the approver's step-up, then the request is approved (the
    /// requester's window opens in the session that asked) or denied, once.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a failed step-up, [`Error::Forbidden`] for the requester,
    /// [`Error::Stale`] when it was decided or lapsed meanwhile or the requester may no longer
    /// reveal.
    pub async fn finish_decide_reveal(
        &self,
        actor: &Actor,
        session: &SessionBinding,
        client: &ClientInfo,
        request_id: &str,
        credential_json: &str,
    ) -> Result<RevealRequestView> {
        authorize_ceremony(actor, Permission::ApproveReveal)?;
        let row = self.open_request(request_id).await?;
        self.refuse_own_request(actor, client, &row).await?;
        let tenant = TenantId::parse(&row.tenant_id).map_err(|_| Error::NotFound("pending reveal request"))?;
        let (passkey_id, intent) =
            self.finish_step_up(actor, session, client, Purpose::ApproveReveal, Some(&tenant), credential_json).await?;
        let Intent::DecideReveal { request_id: confirmed, approve } = intent else {
            return Err(Error::Unauthenticated);
        };
        if confirmed != row.request_id {
            return Err(Error::Unauthenticated);
        }
        let Some(approver_id) = actor.admin_id() else {
            return Err(Error::Unauthenticated);
        };
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        // The requester must still be an active platform admin when the window would open.
        let requester: Option<(String, i64)> = sqlx::query_as("SELECT role, active FROM admins WHERE admin_id = $1")
            .bind(&row.requester_id)
            .fetch_optional(&mut *tx)
            .await?;
        let requester_may = requester.is_some_and(|(role, active)| active == 1 && role == Role::PlatformAdmin.as_str());
        if approve && !requester_may {
            return Err(Error::Stale("the requester may no longer reveal credentials"));
        }
        let status = if approve { RevealRequestStatus::Approved } else { RevealRequestStatus::Denied };
        let grant_id = if approve { Some(hex::encode(random_bytes::<8>()?.as_ref())) } else { None };
        // Decided once: a concurrent decision, or the request lapsing, leaves nothing to decide.
        let decided = sqlx::query(
            "UPDATE reveal_requests SET status = $1, decided_by = $2, decided_at_ms = $3, grant_id = $4 \
             WHERE request_id = $5 AND status = $6 AND expires_at_ms > $3 AND requester_id <> $2",
        )
        .bind(status.as_str())
        .bind(approver_id)
        .bind(now.timestamp_millis())
        .bind(&grant_id)
        .bind(&row.request_id)
        .bind(RevealRequestStatus::Pending.as_str())
        .execute(&mut *tx)
        .await?;
        if decided.rows_affected() != 1 {
            return Err(Error::Stale("the request was decided or lapsed meanwhile"));
        }
        let mut grant = None;
        if let Some(grant_id) = &grant_id {
            let expires_at = now + self.settings.reveal_window;
            sqlx::query(
                "INSERT INTO reveal_grants (grant_id, admin_id, tenant_id, reason, passkey_id, created_at_ms, \
                 expires_at_ms, binding_hash, category) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(grant_id)
            .bind(&row.requester_id)
            .bind(tenant.as_str())
            .bind(&row.reason)
            .bind(&row.passkey_id)
            .bind(now.timestamp_millis())
            .bind(expires_at.timestamp_millis())
            .bind(&row.binding_hash)
            .bind(&row.category)
            .execute(&mut *tx)
            .await?;
            let category = RevealCategory::from_name(&row.category);
            self.queue_reveal_notice(&mut tx, &tenant, grant_id, category, &row.reason, now).await?;
            grant = Some(GrantView {
                grant_id: grant_id.clone(),
                admin_email: row.requester_email.clone(),
                tenant_id: tenant.clone(),
                reason: row.reason.clone(),
                created_at: now,
                expires_at,
            });
        }
        let details = json!({
            "request_id": row.request_id, "requester": row.requester_email, "reason": row.reason,
            "passkey_id": passkey_id, "grant_id": grant_id,
        });
        let event = if approve { EventType::RevealApproved } else { EventType::RevealDenied };
        audit::append(&mut tx, actor, client, NewEvent::info(event, Some(&tenant), details), now).await?;
        if let Some(grant) = &grant {
            let details = json!({
                "grant_id": grant.grant_id, "owner": row.requester_email, "reason": grant.reason,
                "passkey_id": row.passkey_id, "expires_at": grant.expires_at, "approved_by": actor.audit_identity().1,
                "request_id": row.request_id,
            });
            audit::append(
                &mut tx,
                actor,
                client,
                NewEvent::info(EventType::RevealGranted, Some(&tenant), details),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        let mut view = row.view().ok_or(Error::NotFound("pending reveal request"))?;
        view.status = status;
        view.decided_at = Some(now);
        if let Actor::Admin { email, .. } = actor {
            view.decided_by_email = Some(email.clone());
        }
        Ok(view)
    }

    /// Withdraws the pending requests that `which` names (the requester's session, passkey or
    /// role ended, or the tenant was reset), one `reveal_request_withdrawn` each, in the caller's
    /// transaction: an approver can no longer open a window that its cause should have closed.
    pub(crate) async fn withdraw_open_requests(
        &self,
        tx: &mut crate::core::db::WriteTx,
        actor: &Actor,
        client: &ClientInfo,
        which: super::reveal::OpenGrants<'_>,
        cause: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        use super::reveal::OpenGrants;
        let (column, value) = match which {
            OpenGrants::One(_) => return Ok(()),
            OpenGrants::OfAdmin(admin_id) => ("requester_id", admin_id),
            OpenGrants::OfTenant(tenant) => ("tenant_id", tenant.as_str()),
            OpenGrants::OfPasskey(passkey_id) => ("passkey_id", passkey_id),
            OpenGrants::OfSession(binding_hash) => ("binding_hash", binding_hash),
        };
        let open: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT request_id, tenant_id, requester_id FROM reveal_requests WHERE {column} = $1 AND status = $2"
        ))
        .bind(value)
        .bind(RevealRequestStatus::Pending.as_str())
        .fetch_all(&mut **tx)
        .await?;
        for (request_id, tenant_id, requester_id) in open {
            sqlx::query(
                "UPDATE reveal_requests SET status = $1, decided_at_ms = $2 WHERE request_id = $3 AND status = $4",
            )
            .bind(RevealRequestStatus::Withdrawn.as_str())
            .bind(now.timestamp_millis())
            .bind(&request_id)
            .bind(RevealRequestStatus::Pending.as_str())
            .execute(&mut **tx)
            .await?;
            let tenant = TenantId::parse(&tenant_id).ok();
            let details = json!({"request_id": request_id, "owner": requester_id, "cause": cause});
            let event = NewEvent::info(EventType::RevealRequestWithdrawn, tenant.as_ref(), details);
            audit::append(tx, actor, client, event, now).await?;
        }
        Ok(())
    }

    /// Marks each pending request past its time `expired`, once (`reveal_request_expired`).
    /// Runs on reads and from the background task that records closed windows; idempotent.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_expired_requests(&self) -> Result<usize> {
        let now = self.now();
        let lapsed: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT request_id, tenant_id, requester_id FROM reveal_requests WHERE status = $1 AND expires_at_ms <= $2",
        )
        .bind(RevealRequestStatus::Pending.as_str())
        .bind(now.timestamp_millis())
        .fetch_all(self.db.pool())
        .await?;
        let system = Actor::System { job: "reveal-expiry" };
        let mut recorded = 0;
        for (request_id, tenant_id, requester_id) in lapsed {
            let mut tx = self.db.begin_write().await?;
            let claimed = sqlx::query("UPDATE reveal_requests SET status = $1 WHERE request_id = $2 AND status = $3")
                .bind(RevealRequestStatus::Expired.as_str())
                .bind(&request_id)
                .bind(RevealRequestStatus::Pending.as_str())
                .execute(&mut *tx)
                .await?;
            if claimed.rows_affected() == 1 {
                let tenant = TenantId::parse(&tenant_id).ok();
                let details = json!({"request_id": request_id, "owner": requester_id});
                let event = NewEvent::info(EventType::RevealRequestExpired, tenant.as_ref(), details);
                audit::append(&mut tx, &system, &ClientInfo::local(), event, now).await?;
                recorded += 1;
            }
            tx.commit().await?;
        }
        Ok(recorded)
    }
}
