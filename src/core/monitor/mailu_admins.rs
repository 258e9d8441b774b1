//! Rogue Mailu admins: each day every tenant's Mailu is asked for its accounts with global admin
//! rights (`GET /api/v1/user`, which lists every user with its `global_admin` flag). An account
//! that is neither the tenant's own admin login (the one the console keeps) nor vouched for by a
//! platform admin raises a critical `mailu_unknown_admin` once: rotating the console's password
//! does not remove a backdoor account, whose holder can read all mail and set any password. The
//! inventory is kept per tenant with first and last sighting; the password hashes Mailu's list
//! includes are never kept.

use crate::core::Core;
use crate::core::access::{Actor, ClientInfo, authorize};
use crate::core::alerting::{self, Alert, AlertKind, Audience};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::error::{Error, Result};
use crate::model::{MailuAdminView, Permission, TenantId};
use chrono::DateTime;
use serde_json::json;

/// The inventory's column list, in [`Row`]'s order.
const COLUMNS: &str =
    "tenant_id, email, status, enabled, first_seen_ms, last_seen_ms, gone_at_ms, marked_by, marked_at_ms, note";

type Row = (String, String, String, i64, i64, i64, Option<i64>, Option<String>, Option<i64>, Option<String>);

fn view(row: Row) -> MailuAdminView {
    let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let (tenant_id, email, status, enabled, first, last, gone, marked_by, marked_at, note) = row;
    MailuAdminView {
        tenant_id,
        email,
        status,
        enabled: enabled != 0,
        first_seen: at(first),
        last_seen: at(last),
        gone_at: gone.map(at),
        marked_by,
        marked_at: marked_at.map(at),
        note,
    }
}

/// What one inventory pass found.
#[derive(Debug, Default)]
pub struct AdminInventory {
    /// Tenants whose Mailu answered.
    pub checked: usize,
    /// Accounts newly found unknown (alerted now), as `tenant: email`.
    pub unknown: Vec<String>,
    /// Tenants that could not be asked, with why.
    pub failed: Vec<(TenantId, String)>,
}

impl Core {
    /// Asks each tenant's Mailu (or one's) for its global admins and records what it lists;
    /// a new unknown account is audited and alerted once.
    ///
    /// # Errors
    /// [`Error::MissingScope`]; database errors. A tenant that cannot be asked is in `failed`.
    pub async fn check_mailu_admins(&self, actor: &Actor, only: Option<&TenantId>) -> Result<AdminInventory> {
        authorize(actor, Permission::ReadCredentials)?;
        let tenants: Vec<(String, String)> = match only {
            Some(t) => {
                sqlx::query_as("SELECT tenant_id, username FROM tenants WHERE tenant_id = $1")
                    .bind(t.as_str())
                    .fetch_all(self.db.pool())
                    .await?
            }
            None => {
                sqlx::query_as("SELECT tenant_id, username FROM tenants ORDER BY tenant_id")
                    .fetch_all(self.db.pool())
                    .await?
            }
        };
        if only.is_some() && tenants.is_empty() {
            return Err(Error::NotFound("credential"));
        }
        let mut report = AdminInventory::default();
        for (tenant_id, username) in tenants {
            let Ok(tenant) = TenantId::parse(&tenant_id) else { continue };
            match self.inventory_one(actor, &tenant, &username).await {
                Ok(found) => {
                    report.checked += 1;
                    report.unknown.extend(found.into_iter().map(|e| format!("{tenant}: {e}")));
                }
                Err(e) => report.failed.push((tenant, e.to_string())),
            }
        }
        if !report.unknown.is_empty() {
            self.wake_outbox();
        }
        Ok(report)
    }

    async fn inventory_one(&self, actor: &Actor, tenant: &TenantId, username: &str) -> Result<Vec<String>> {
        let current = self.vault()?.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        // Only to the Mailu recorded for the tenant: its API token goes nowhere else.
        let target = self.recorded_mail_target(tenant, &current.document).await?;
        let admins = self.mail()?.global_admins(&target).await.map_err(|e| Error::MailServer(e.to_string()))?;
        let now = self.now();
        let ms = now.timestamp_millis();
        let own = username.trim().to_lowercase();
        let mut tx = self.db.begin_write().await?;
        let mut alerted = Vec::new();
        for account in &admins {
            let status = if account.email == own { "console" } else { "unknown" };
            sqlx::query(
                "INSERT INTO mailu_admins (tenant_id, email, status, enabled, first_seen_ms, last_seen_ms, alerted) \
                 VALUES ($1, $2, $3, $4, $5, $5, 0) ON CONFLICT (tenant_id, email) DO UPDATE SET enabled = $4, \
                 last_seen_ms = $5, gone_at_ms = NULL",
            )
            .bind(tenant.as_str())
            .bind(&account.email)
            .bind(status)
            .bind(i64::from(account.enabled))
            .bind(ms)
            .execute(&mut *tx)
            .await?;
            // Once per account: the claim decides, so two consoles raise it once.
            let claimed = sqlx::query(
                "UPDATE mailu_admins SET alerted = 1 WHERE tenant_id = $1 AND email = $2 AND status = 'unknown' \
                 AND alerted = 0",
            )
            .bind(tenant.as_str())
            .bind(&account.email)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 1 {
                let details =
                    json!({"email": account.email, "enabled": account.enabled, "mailu_api_url": target.api_url});
                let event = NewEvent::info(EventType::MailuUnknownAdminFound, Some(tenant), details.clone())
                    .with_severity(Severity::Critical);
                audit::append(&mut tx, actor, &ClientInfo::local(), event, now).await?;
                let alert = Alert {
                    kind: AlertKind::MailuUnknownAdmin,
                    severity: Severity::Critical,
                    tenant: Some(tenant),
                    dedupe_key: format!("mailu_unknown_admin:{tenant}:{}", account.email),
                    message: format!(
                        "{tenant}: Mailu lists {} as a global admin; the console did not create it and nobody vouched \
                         for it (rotating does not remove it)",
                        account.email
                    ),
                    details,
                    audience: Audience::Security,
                };
                alerting::raise_in(&mut tx, &self.channels, alert, now).await?;
                alerted.push(account.email.clone());
            }
        }
        let listed: Vec<&str> = admins.iter().map(|a| a.email.as_str()).collect();
        let known: Vec<(String,)> =
            sqlx::query_as("SELECT email FROM mailu_admins WHERE tenant_id = $1 AND gone_at_ms IS NULL")
                .bind(tenant.as_str())
                .fetch_all(&mut *tx)
                .await?;
        for (email,) in known.into_iter().filter(|(e,)| !listed.contains(&e.as_str())) {
            sqlx::query("UPDATE mailu_admins SET gone_at_ms = $1 WHERE tenant_id = $2 AND email = $3")
                .bind(ms)
                .bind(tenant.as_str())
                .bind(&email)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(alerted)
    }

    /// A tenant's Mailu global admins as last inventoried (listed first, gone last).
    ///
    /// # Errors
    /// [`Error::MissingScope`], database errors.
    pub async fn mailu_admins(&self, actor: &Actor, tenant: &TenantId) -> Result<Vec<MailuAdminView>> {
        authorize(actor, Permission::ReadCredentials)?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM mailu_admins WHERE tenant_id = $1 ORDER BY gone_at_ms IS NOT NULL, email"
        ))
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.into_iter().map(view).collect())
    }

    /// A platform admin vouches for an account (in a confirmed session), with a note: it is
    /// `known` from now on and raises no alert. Audited.
    ///
    /// # Errors
    /// [`Error::Forbidden`] / [`Error::StepUpRequired`], [`Error::InvalidInput`] for a missing
    /// note, [`Error::NotFound`] for an account the inventory never listed.
    pub async fn trust_mailu_admin(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        email: &str,
        note: &str,
    ) -> Result<MailuAdminView> {
        self.authorize_now(actor, client.session.as_ref(), Permission::TrustMailuAdmins).await?;
        let note = note.trim();
        if !(3..=500).contains(&note.chars().count()) || note.chars().any(char::is_control) {
            return Err(Error::InvalidInput("say why the account is legitimate (3 to 500 characters)".into()));
        }
        let email = email.trim().to_lowercase();
        let now = self.now();
        let by = actor.audit_identity().1;
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE mailu_admins SET status = 'known', marked_by = $1, marked_at_ms = $2, note = $3 \
             WHERE tenant_id = $4 AND email = $5 AND status = 'unknown'",
        )
        .bind(&by)
        .bind(now.timestamp_millis())
        .bind(note)
        .bind(tenant.as_str())
        .bind(&email)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(Error::NotFound("unknown Mailu admin account"));
        }
        let details = json!({"email": email, "note": note});
        let event =
            NewEvent::info(EventType::MailuAdminMarkedKnown, Some(tenant), details).with_severity(Severity::Warning);
        audit::append(&mut tx, actor, client, event, now).await?;
        tx.commit().await?;
        self.mailu_admins(actor, tenant)
            .await?
            .into_iter()
            .find(|a| a.email == email)
            .ok_or(Error::NotFound("unknown Mailu admin account"))
    }
}
