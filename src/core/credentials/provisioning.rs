//! Provisioning during Mailu setup: the console generates the password, stores it in Vault
//! first (so it is never only on the mail server), creates or updates the Mailu admin user,
//! and proves it with a real SMTP login. A failure leaves the tenant `needs_reconcile` with the
//! reason, never a password nobody knows.

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::error::{Error, Result};
use crate::core::mail::{LoginCheck, MailError};
use crate::core::rotation::generate_password;
use crate::core::rotation::state::{self, Transition};
use crate::model::{Permission, ProvisionCredentialRequest, StoreCredentialRequest, StoredCredentialView, TenantId};

impl Core {
    /// Provisions a new tenant's admin credential end to end.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the tenant already has a credential (rotate instead);
    /// [`Error::MailServer`] when Mailu or the SMTP check fails (tenant left `needs_reconcile`).
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn provision_credential(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: ProvisionCredentialRequest,
    ) -> Result<StoredCredentialView> {
        authorize(actor, Permission::WriteCredentials)?;
        if self.vault()?.read_credential(tenant).await?.is_some() {
            return Err(Error::InvalidInput("this tenant already has a credential; rotate it instead".into()));
        }
        let policy = request.password_policy.unwrap_or_default();
        let password = generate_password(&policy)?;
        let store = StoreCredentialRequest {
            username: request.username,
            password: password.clone(),
            smtp_host: request.smtp_host,
            smtp_port: request.smtp_port,
            smtp_tls: request.smtp_tls,
            webmail_url: request.webmail_url,
            mailu_api_url: request.mailu_api_url,
            mailu_api_token: request.mailu_api_token,
        };
        let stored = self.store_credential(actor, client, tenant, store).await?;
        if request.password_policy.is_some() || request.contact_email.is_some() || request.reveal_notice.is_some() {
            let mut tx = self.db.begin_write().await?;
            if request.password_policy.is_some() {
                self.record_password_policy(&mut tx, actor, client, tenant, policy, "provisioning").await?;
            }
            if request.contact_email.is_some() || request.reveal_notice.is_some() {
                let notice = request.reveal_notice.unwrap_or_default();
                self.record_notices(&mut tx, actor, client, tenant, request.contact_email.as_deref(), notice).await?;
            }
            tx.commit().await?;
        }
        let document = self.vault()?.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?.document;
        let target = self.mail_target(tenant, &document)?;
        let mail = self.mail()?;
        let applied = match mail.user_exists(&target).await {
            Ok(true) => mail.set_password(&target, &password).await,
            Ok(false) => mail.create_user(&target, &password).await,
            Err(e) => Err(e),
        };
        if let Err(error) = applied {
            return Err(self.provisioning_failed(tenant, &error.to_string()).await);
        }
        match mail.check_login(&target, &password).await {
            LoginCheck::Accepted => Ok(stored),
            LoginCheck::Rejected => {
                Err(self.provisioning_failed(tenant, "the new password was refused at SMTP login").await)
            }
            LoginCheck::Unknown(why) => {
                Err(self.provisioning_failed(tenant, &format!("SMTP login could not be checked: {why}")).await)
            }
        }
    }

    async fn provisioning_failed(&self, tenant: &TenantId, reason: &str) -> Error {
        // Nothing of this tenant's was rotated yet: no rotation event, only the state and why.
        let gave_up = format!(
            "UPDATE tenants SET state = {}, last_error = $1 WHERE tenant_id = $2",
            state::sql(Transition::GaveUp.target())
        );
        let marked = sqlx::query(&gave_up).bind(reason).bind(tenant.as_str()).execute(self.db.pool()).await;
        match marked {
            Ok(_) => Error::MailServer(reason.to_owned()),
            Err(e) => e.into(),
        }
    }
}

impl From<MailError> for Error {
    fn from(e: MailError) -> Self {
        Error::MailServer(e.to_string())
    }
}
