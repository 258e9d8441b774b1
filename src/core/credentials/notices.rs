//! Tenants told of reveals (opt-in per tenant): when a reveal window opens for a tenant whose
//! settings ask for it, a letter to its contact is queued in the same transaction as the window
//! (so no window opens untold) and leaves through the alert outbox. It says when, the role and
//! the reason's category; the reason as written only if the tenant's setting says so (it may
//! name internal tickets or people). Never the admin's name, never the password.

use crate::core::Core;
use crate::core::alerting::{self, Alert, AlertKind, Audience};
use crate::core::audit::Severity;
use crate::core::db::WriteTx;
use crate::core::error::Result;
use crate::model::{RevealCategory, RevealNotice, TenantId};
use chrono::{DateTime, Utc};
use serde_json::json;

impl Core {
    /// Queues the tenant's letter for a window that opens now, if the tenant asked for one.
    pub(crate) async fn queue_reveal_notice(
        &self,
        tx: &mut WriteTx,
        tenant: &TenantId,
        grant_id: &str,
        category: RevealCategory,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let row: Option<(String, Option<String>, String)> =
            sqlx::query_as("SELECT reveal_notice, contact_email, username FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut **tx)
                .await?;
        let Some((notice, contact, username)) = row else { return Ok(()) };
        let notice = RevealNotice::from_name(&notice).unwrap_or_default();
        if notice == RevealNotice::Off {
            return Ok(());
        }
        let when = now.format("%Y-%m-%d %H:%M UTC");
        let why = match notice {
            RevealNotice::Reason => format!("\nReason given: {}\n", reason.replace('\n', " ")),
            _ => String::new(),
        };
        let letter = Alert {
            kind: AlertKind::TenantRevealNotice,
            severity: Severity::Info,
            tenant: Some(tenant),
            dedupe_key: format!("tenant_reveal_notice:{grant_id}"),
            message: format!(
                "The admin password of your mail server ({tenant}) was revealed to a platform administrator"
            ),
            details: json!({"grant_id": grant_id, "body": format!(
                "Hello,\n\nthe admin SMTP password of your mail server ({tenant}, login {username}) was made visible \
                 to a platform administrator of your provider on {when}, for at most 15 minutes.\n\
                 Category: {}.\n{why}\n\
                 This follows your request to be told of every such access. If you did not expect it, reply to \
                 your platform contact quoting reference {grant_id}.\n\n-- smtp-vault\n",
                category.label()
            )}),
            audience: Audience::Tenant { contact },
        };
        alerting::raise_in(tx, &self.channels, letter, now).await?;
        Ok(())
    }
}
