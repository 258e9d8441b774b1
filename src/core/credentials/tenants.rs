//! Per-tenant settings: rotation period, contact email for notices, the Mailu API URL and
//! token (the token re-sealed into Vault, never shown again), and "rotate after reveal", which
//! rotates a credential as soon as the last reveal window for it closes (one-time-password
//! style). Platform admins (or an operator) change them; every change is audited.

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::{Alert, AlertKind, Audience, raise_in};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::credentials::reveal::OpenGrants;
use crate::core::crypto::SecretField;
use crate::core::error::{Error, Result};
use crate::core::recovery::same_destination;
use crate::model::{
    PasswordAlphabet, PasswordPolicy, Permission, RevealNotice, TenantId, TenantSettingsInput, TenantSettingsView,
};
use secrecy::ExposeSecret;
use serde_json::json;

/// `rotation_period_days, contact_email, mailu_api_url, rotate_after_reveal, reveal_approval`.
type SettingsRow = (Option<i64>, Option<String>, String, i64, i64, String);

/// A stored policy, checked: a row a database writer weakened (a length under the minimum, an
/// unknown alphabet) fails the generation instead of yielding a weak password.
fn stored_policy(tenant: &TenantId, length: Option<i64>, alphabet: Option<&str>) -> Result<PasswordPolicy> {
    let default = PasswordPolicy::default();
    let broken = |what: String| {
        Error::Internal(format!(
            "tenant {tenant}'s stored password policy is invalid ({what}); set it again in its settings"
        ))
    };
    let length = match length {
        None => default.length,
        Some(n) => u16::try_from(n).map_err(|_| broken(format!("length {n}")))?,
    };
    let alphabet = match alphabet {
        None => default.alphabet,
        Some(name) => PasswordAlphabet::from_name(name).ok_or_else(|| broken(format!("alphabet {name:?}")))?,
    };
    PasswordPolicy::new(length, alphabet).map_err(broken)
}

impl Core {
    /// How `tenant`'s generated passwords look (the default when none was set).
    ///
    /// # Errors
    /// [`Error::Internal`] for a stored policy that is not a valid one; database errors.
    pub(crate) async fn password_policy(&self, tenant: &TenantId) -> Result<PasswordPolicy> {
        let row: Option<(Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT password_length, password_alphabet FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?;
        let (length, alphabet) = row.unwrap_or_default();
        stored_policy(tenant, length, alphabet.as_deref())
    }

    /// Records the contact and reveal notices a provisioning request asked for, with its audit
    /// event, in the caller's transaction.
    pub(crate) async fn record_notices(
        &self,
        tx: &mut crate::core::db::WriteTx,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        contact: Option<&str>,
        notice: RevealNotice,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE tenants SET contact_email = COALESCE($1, contact_email), reveal_notice = $2 WHERE tenant_id = $3",
        )
        .bind(contact)
        .bind(notice.as_str())
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await?;
        let details = json!({"contact_email": contact, "reveal_notice": notice.as_str(), "via": "provisioning"});
        let event = NewEvent::info(EventType::TenantSettingsChanged, Some(tenant), details);
        audit::append(tx, actor, client, event, self.now()).await?;
        Ok(())
    }

    /// Records the policy a provisioning request asked for, with its audit event, in the
    /// caller's transaction.
    pub(crate) async fn record_password_policy(
        &self,
        tx: &mut crate::core::db::WriteTx,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        policy: PasswordPolicy,
        via: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE tenants SET password_length = $1, password_alphabet = $2 WHERE tenant_id = $3")
            .bind(i64::from(policy.length))
            .bind(policy.alphabet.as_str())
            .bind(tenant.as_str())
            .execute(&mut **tx)
            .await?;
        let details = json!({"password_policy": policy, "via": via});
        audit::append(
            tx,
            actor,
            client,
            NewEvent::info(EventType::TenantSettingsChanged, Some(tenant), details),
            self.now(),
        )
        .await?;
        Ok(())
    }

    /// A tenant's settings.
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::NotFound`].
    pub async fn tenant_settings(&self, actor: &Actor, tenant: &TenantId) -> Result<TenantSettingsView> {
        authorize(actor, Permission::ReadCredentials)?;
        let row: Option<SettingsRow> = sqlx::query_as(
            "SELECT rotation_period_days, contact_email, mailu_api_url, rotate_after_reveal, reveal_approval, reveal_notice \
             FROM tenants WHERE tenant_id = $1",
        )
        .bind(tenant.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        let (days, contact_email, mailu_api_url, after_reveal, approval, notice) =
            row.ok_or(Error::NotFound("credential"))?;
        let default_days = u32::try_from(self.settings.rotation_period.num_days()).unwrap_or(90);
        Ok(TenantSettingsView {
            tenant_id: tenant.clone(),
            rotation_period_days: days.and_then(|d| u32::try_from(d).ok()).unwrap_or(default_days),
            contact_email,
            mailu_api_url,
            rotate_after_reveal: after_reveal != 0,
            reveal_approval: approval != 0,
            password_policy: self.password_policy(tenant).await?,
            reveal_notice: RevealNotice::from_name(&notice).unwrap_or_default(),
        })
    }

    /// Changes a tenant's settings.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::InvalidInput`] naming the bad field, [`Error::Conflict`]
    /// when the credential changed meanwhile.
    pub async fn update_tenant_settings(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        input: TenantSettingsInput,
    ) -> Result<TenantSettingsView> {
        authorize(actor, Permission::ConfigureTenants)?;
        if !(1..=365).contains(&input.rotation_period_days) {
            return Err(Error::InvalidInput("rotation period must be 1 to 365 days".into()));
        }
        let contact = input.contact_email.map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty());
        if contact.as_deref().is_some_and(|e| !e.contains('@') || e.len() > 254 || e.contains(char::is_whitespace)) {
            return Err(Error::InvalidInput("contact email is not an email address".into()));
        }
        let url = input.mailu_api_url.trim().to_owned();
        if url.len() > 2048 {
            return Err(Error::InvalidInput("Mailu API URL must be an http(s) URL".into()));
        }
        self.settings
            .outbound
            .check_url(&url)
            .map_err(|refused| Error::InvalidInput(format!("the Mailu API URL {refused}")))?;
        let new_token = input.mailu_api_token.filter(|t| !t.expose_secret().is_empty());
        let policy = match input.password_policy {
            None => self.password_policy(tenant).await?,
            Some(p) => PasswordPolicy::new(p.length, p.alphabet).map_err(Error::InvalidInput)?,
        };
        let notice = match input.reveal_notice {
            Some(notice) => notice,
            None => self.tenant_settings(actor, tenant).await?.reveal_notice,
        };
        let was_guarded = self.reveal_needs_approval(tenant).await?;
        let guarded = input.reveal_approval.unwrap_or(was_guarded);
        // SECURITY: whoever could switch the second pair of eyes off could then reveal alone:
        // either way the change needs a confirmed session, and switching off alerts security.
        if guarded != was_guarded {
            self.authorize_now(actor, client.session.as_ref(), Permission::GuardReveals).await?;
        }
        let vault = self.vault()?;
        let stored = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        let mut document = stored.document.clone();
        // SECURITY: where a tenant's passwords go is as sensitive as the passwords. A new URL
        // needs a fresh step-up, and a token of its own: the stored one is only ever sent to
        // the URL it was stored for.
        let redirect = !same_destination(&url, &document.mailu_api_url);
        if redirect {
            self.authorize_now(actor, client.session.as_ref(), Permission::RedirectTenant).await?;
            if new_token.is_none() {
                return Err(Error::InvalidInput(
                    "a new Mailu API URL needs its own API token: the stored one is only sent to the URL it was stored for"
                        .into(),
                ));
            }
        }
        let from_url = document.mailu_api_url.clone();
        let vault_change = url != document.mailu_api_url || new_token.is_some();
        document.mailu_api_url.clone_from(&url);
        if let Some(token) = &new_token {
            document.mailu_api_token = self.keyring()?.seal(tenant, SecretField::MailuApiToken, token)?;
        }
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let version = if vault_change { stored.version + 1 } else { stored.version };
        let updated = sqlx::query(
            "UPDATE tenants SET rotation_period_days = $1, contact_email = $2, mailu_api_url = $3, rotate_after_reveal = $4, \
             version = $5, next_rotation_at_ms = COALESCE(rotated_at_ms, stored_at_ms) + $6, updated_at_ms = $7, \
             reveal_approval = $9, password_length = $10, password_alphabet = $11, reveal_notice = $13 \
             WHERE tenant_id = $8 AND reveal_approval = $12",
        )
        .bind(i64::from(input.rotation_period_days))
        .bind(&contact)
        .bind(&url)
        .bind(i64::from(input.rotate_after_reveal))
        .bind(i64::try_from(version).map_err(|_| Error::Internal("version overflow".into()))?)
        .bind(i64::from(input.rotation_period_days) * 86_400_000)
        .bind(now.timestamp_millis())
        .bind(tenant.as_str())
        .bind(i64::from(guarded))
        .bind(i64::from(policy.length))
        .bind(policy.alphabet.as_str())
        .bind(i64::from(was_guarded))
        .bind(notice.as_str())
        .execute(&mut *tx)
        .await?;
        // Four eyes as this change saw it, or nothing: a concurrent switch is never overwritten
        // unseen (which could turn it off without the confirmation and the alert).
        if updated.rows_affected() != 1 {
            return Err(Error::Stale("the tenant's four-eyes setting changed meanwhile: reload and save again"));
        }
        let details = json!({
            "rotation_period_days": input.rotation_period_days, "contact_email": contact, "mailu_api_url": url,
            "mailu_api_token_changed": new_token.is_some(), "rotate_after_reveal": input.rotate_after_reveal,
            "reveal_approval": guarded, "password_policy": policy, "reveal_notice": notice.as_str(),
        });
        audit::append(
            &mut tx,
            actor,
            client,
            NewEvent::info(EventType::TenantSettingsChanged, Some(tenant), details),
            now,
        )
        .await?;
        if redirect {
            self.record_destination_change(&mut tx, actor, client, tenant, (&from_url, &url), "settings", now).await?;
        }
        if guarded && !was_guarded {
            // From now on every window needs two people: none opened by one stays.
            self.revoke_open_grants(&mut tx, actor, client, OpenGrants::OfTenant(tenant), "four_eyes_on", now).await?;
        }
        if was_guarded && !guarded {
            let who = actor.audit_identity().1;
            let alert = Alert {
                kind: AlertKind::RevealApprovalSwitchedOff,
                severity: Severity::Critical,
                tenant: Some(tenant),
                dedupe_key: format!("reveal_approval_switched_off:{tenant}:{}", now.timestamp_millis()),
                message: format!("{who} switched off four-eyes reveals for {tenant}: one admin can now reveal alone"),
                details: json!({"by": who}),
                audience: Audience::Security,
            };
            raise_in(&mut tx, &self.channels, alert, now).await?;
        }
        if vault_change {
            self.write_credential_journaled(tenant, &document, stored.version).await?;
        }
        tx.commit().await?;
        if redirect || (was_guarded && !guarded) {
            self.wake_outbox();
        }
        self.tenant_settings(actor, tenant).await
    }

    /// After a reveal window for `tenant` closed: rotates when the tenant asks for it and no
    /// other window for it is open.
    pub(crate) async fn rotate_after_reveal(&self, tenant: &TenantId) -> Result<()> {
        let now = self.now().timestamp_millis();
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT t.rotate_after_reveal, (SELECT COUNT(*) FROM reveal_grants g WHERE g.tenant_id = t.tenant_id \
             AND g.revoked_at_ms IS NULL AND g.expires_at_ms > $1) FROM tenants t WHERE t.tenant_id = $2",
        )
        .bind(now)
        .bind(tenant.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        if let Some((1, 0)) = row {
            let actor = Actor::System { job: "rotate-after-reveal" };
            let outcome = self.rotate_credential(&actor, &ClientInfo::local(), tenant, "reveal").await;
            if let Err(e) = &outcome {
                tracing::error!(tenant = %tenant, error = %e, "rotation after reveal failed; the daily cycle will repair it");
            }
        }
        Ok(())
    }
}
