//! Recovery from lost infrastructure. VPS failure: the tenant's credential is read from Vault
//! and set on the replacement Mailu (the user created when absent), proven by an SMTP login to
//! the new address (the certificate checked against the tenant's host name), recorded, and
//! DNS is told through a hook. DR drills: the newest backup plus the journal is restored into a
//! scratch OpenBao, every tenant verified, RTO and RPO measured and kept, and an alert raised
//! when a drill fails or misses its targets.

mod drill;

use crate::core::Core;
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize, authorize_ceremony};
use crate::core::alerting::AlertKind;
use crate::core::alerting::{Alert, Audience, raise_in};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::config::Config;
use crate::core::credentials::records;
use crate::core::crypto::SecretField;
use crate::core::error::{Error, Result};
use crate::core::mail::{LoginCheck, MailTarget};
use crate::core::rotation::state::{self, Transition};
pub use crate::model::DrillReport;
use crate::model::{FieldError, Permission, RecoverTenantRequest, RecoveryView, TenantId};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// Hooks and drill settings.
#[derive(Debug, Clone)]
pub struct RecoverySettings {
    /// DNS-update hook.
    pub dns_hook_url: Option<url::Url>,
    /// Replacement-server provisioning hook.
    pub provision_hook_url: Option<url::Url>,
    /// Bearer token for both hooks.
    pub hook_token: Option<SecretString>,
    /// Binary for the drill's scratch server.
    pub drill_bao: String,
    /// RTO target.
    pub drill_rto: Duration,
    /// RPO target.
    pub drill_rpo: Duration,
}

impl RecoverySettings {
    /// From the configuration.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        Self {
            dns_hook_url: config.dns_hook_url.clone(),
            provision_hook_url: config.provision_hook_url.clone(),
            hook_token: config.hook_token.clone(),
            drill_bao: config.drill_bao.clone(),
            drill_rto: Duration::from_secs(config.drill_rto_secs),
            drill_rpo: Duration::from_secs(config.drill_rpo_secs),
        }
    }
}

/// What the provisioning hook answers.
#[derive(Deserialize)]
struct ProvisionedServer {
    new_vps_ip: String,
    mailu_api_url: String,
    mailu_api_token: Option<String>,
    smtp_port: Option<u16>,
    smtp_tls: Option<crate::model::SmtpTls>,
}

/// Who chose the replacement's Mailu API URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chosen {
    /// The caller of the recovery.
    ByCaller,
    /// The operator's provisioning hook (configuration the operator controls).
    ByHook,
}

/// Whether two Mailu API URLs are the same destination (a trailing slash aside).
pub(crate) fn same_destination(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/')
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    async fn call_hook(
        &self,
        url: &url::Url,
        body: serde_json::Value,
    ) -> std::result::Result<reqwest::Response, String> {
        let policy = &self.settings.outbound;
        let url = policy.check_url(url.as_str()).map_err(|refused| format!("the hook URL {refused}"))?;
        let client = policy.http_client(Duration::from_secs(20))?;
        let mut request = client.post(url).json(&body);
        if let Some(token) = &self.settings.recovery.hook_token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.map_err(|e| format!("{}", e.without_url()))?;
        if response.status().is_success() { Ok(response) } else { Err(format!("HTTP {}", response.status().as_u16())) }
    }

    /// Recovers a tenant onto a replacement server (VPS failure).
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `tenants:recover` (and `tenants:redirect` for a new
    /// Mailu API URL); [`Error::NotFound`]; [`Error::MailServer`] when the new Mailu or the SMTP
    /// login fails (audited `recovery_failed`, nothing recorded as recovered).
    #[tracing::instrument(skip_all, fields(tenant = %tenant))]
    pub async fn recover_tenant(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: &RecoverTenantRequest,
    ) -> Result<RecoveryView> {
        authorize(actor, Permission::RecoverTenant)?;
        self.run_recovery(actor, client, tenant, request, Chosen::ByCaller).await
    }

    /// Checks the replacement against the outbound policy and decides whether `actor` may send
    /// the tenant's passwords to `url`: onto the stored URL anyone who may recover; onto
    /// another, only a platform admin (whose recovery step-up is bound to that URL), a token
    /// with `tenants:redirect`, the operator at the host, or the operator's provisioning hook.
    /// Returns whether the URL is a new destination.
    fn check_destination(
        &self,
        actor: &Actor,
        stored_url: &str,
        request: &RecoverTenantRequest,
        chosen: Chosen,
    ) -> Result<bool> {
        let policy = &self.settings.outbound;
        policy
            .check_url(&request.mailu_api_url)
            .map_err(|refused| FieldError::new("mailu_api_url", refused.to_string()))?;
        if !policy.allows_ip(request.new_vps_ip) {
            return Err(FieldError::new(
                "new_vps_ip",
                "is an internal address, which the outbound policy refuses unless SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS allows its network",
            )
            .into());
        }
        if same_destination(stored_url, &request.mailu_api_url) {
            return Ok(false);
        }
        // The operator's provisioning hook chose it; an admin's recovery ceremony names the URL,
        // so whichever step-up the table asks of an admin is already given.
        if chosen != Chosen::ByHook {
            crate::core::access::clearance(actor, Permission::RedirectTenant)?;
        }
        Ok(true)
    }

    /// Records in the caller's transaction that a tenant's passwords go to `to` from now on
    /// (`mailu_destination_changed`, naming its actor, who therefore cannot acknowledge it) and
    /// queues the security alert. Every path that re-points a tenant goes through it: a store
    /// over it, its settings, a recovery.
    #[expect(clippy::too_many_arguments, reason = "the event's facts, each distinct")]
    pub(crate) async fn record_destination_change(
        &self,
        tx: &mut crate::core::db::WriteTx,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        (from, to): (&str, &str),
        via: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let (kind, who) = actor.audit_identity();
        let details = json!({"from": from, "to": to, "via": via, "admin": who});
        let event = NewEvent::info(EventType::MailuDestinationChanged, Some(tenant), details.clone())
            .with_severity(Severity::Warning);
        audit::append(tx, actor, client, event, now).await?;
        let alert = Alert {
            kind: AlertKind::MailuDestinationChanged,
            severity: Severity::Warning,
            tenant: Some(tenant),
            dedupe_key: format!("mailu_destination_changed:{tenant}:{to}:{}", now.timestamp_millis()),
            message: format!("{tenant}: its passwords now go to a new Mailu API URL, {to} ({kind} {who})"),
            details,
            audience: Audience::Security,
        };
        raise_in(tx, &self.channels, alert, now).await?;
        Ok(())
    }

    async fn run_recovery(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: &RecoverTenantRequest,
        chosen: Chosen,
    ) -> Result<RecoveryView> {
        let clock = Instant::now();
        let Some(_guard) = self.rotation_locks.lock_within(tenant, Duration::from_secs(60)).await else {
            return Err(Error::RotationBusy);
        };
        let vault = self.vault()?;
        let stored = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        let redirect = self.check_destination(actor, &stored.document.mailu_api_url, request, chosen)?;
        if redirect && request.mailu_api_token.is_none() {
            // SECURITY: a stored token is only ever sent to the URL it was stored for.
            return Err(FieldError::new(
                "mailu_api_token",
                "is required with a new Mailu API URL: the stored token is only sent to the URL it was stored for",
            )
            .into());
        }
        if redirect {
            // Committed before the first byte goes to the new host.
            let mut tx = self.db.begin_write().await?;
            let change = (stored.document.mailu_api_url.as_str(), request.mailu_api_url.as_str());
            self.record_destination_change(&mut tx, actor, client, tenant, change, "recovery", self.now()).await?;
            tx.commit().await?;
            self.wake_outbox();
        }
        let outcome = self.recover_onto(actor, client, tenant, request, stored, clock).await;
        if let Err(error) = &outcome {
            let details = json!({
                "new_address": request.new_vps_ip.to_string(), "mailu_api_url": request.mailu_api_url,
                "error": error.to_string(),
            });
            let event =
                NewEvent::info(EventType::RecoveryFailed, Some(tenant), details).with_severity(Severity::Warning);
            audit::record(&self.db, actor, client, event, self.now()).await?;
        }
        outcome
    }

    async fn recover_onto(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        request: &RecoverTenantRequest,
        stored: crate::core::vault::VersionedDocument,
        clock: Instant,
    ) -> Result<RecoveryView> {
        let vault = self.vault()?;
        let keyring = self.keyring()?;
        let password = keyring.open(&stored.document.password, tenant, SecretField::Password)?;
        let token = match &request.mailu_api_token {
            Some(token) => token.clone(),
            None => keyring.open(&stored.document.mailu_api_token, tenant, SecretField::MailuApiToken)?,
        };
        let new_address = request.new_vps_ip.to_string();
        let port = request.smtp_port.unwrap_or(stored.document.smtp_port);
        // A document from before modes were stored means "by port": by the new port, then.
        let tls =
            request.smtp_tls.or(stored.document.smtp_tls).unwrap_or(crate::model::SmtpTls::default_for_port(port));
        let target = MailTarget {
            username: stored.document.username.clone(),
            smtp_host: new_address.clone(),
            smtp_port: port,
            smtp_tls: tls,
            api_url: request.mailu_api_url.clone(),
            api_token: token.clone(),
            // SECURITY: both reached at the replacement's address before DNS moves, but each
            // certificate must still name the tenant's host (Mailu's name hosts, not addresses).
            tls_name: Some(stored.document.smtp_host.clone()),
            api_address: Some(request.new_vps_ip),
        };
        let mail = self.mail()?;
        let created_user = !mail.user_exists(&target).await?;
        if created_user {
            mail.create_user(&target, &password).await?;
        } else {
            mail.set_password(&target, &password).await?;
        }
        match mail.check_login(&target, &password).await {
            LoginCheck::Accepted => {}
            LoginCheck::Rejected => {
                return Err(Error::MailServer(
                    "the replacement server refused the stored password at SMTP login".into(),
                ));
            }
            LoginCheck::Unknown(why) => {
                return Err(Error::MailServer(format!(
                    "SMTP login on the replacement server could not be checked: {why}"
                )));
            }
        }
        // A rotation that was in flight targeted the lost server; the new one has the current
        // password, so the pending one is moot.
        vault.delete_pending(tenant).await?;
        let mut document = stored.document.clone();
        document.mailu_api_url.clone_from(&request.mailu_api_url);
        document.smtp_port = port;
        document.smtp_tls = Some(tls);
        if let Some(new_token) = &request.mailu_api_token {
            document.mailu_api_token = keyring.seal(tenant, SecretField::MailuApiToken, new_token)?;
        }
        let version = if document == stored.document {
            stored.version
        } else {
            self.write_credential_journaled(tenant, &document, stored.version).await?
        };
        let now = self.now();
        let duration_ms = millis(clock.elapsed());
        let mut tx = self.db.begin_write().await?;
        let recovered = records::Recovered {
            server_ip: &new_address,
            mailu_api_url: &request.mailu_api_url,
            smtp_port: port,
            smtp_tls: tls,
            version,
        };
        let old_address = records::record_recovered(&mut tx, tenant, &recovered, now).await?;
        let details = json!({
            "old_address": old_address, "new_address": new_address, "mailu_api_url": request.mailu_api_url,
            "created_user": created_user, "version": version, "duration_ms": duration_ms,
        });
        let event =
            NewEvent::info(EventType::CredentialsRecovered, Some(tenant), details).with_severity(Severity::Warning);
        // Whatever state it was in, the credential now stands on the replacement server.
        if !state::transition(&mut tx, actor, client, tenant, Transition::Stored, event.clone(), now).await? {
            audit::append(&mut tx, actor, client, event, now).await?;
        }
        tx.commit().await?;
        let dns_hook = match &self.settings.recovery.dns_hook_url {
            None => "not_configured".to_owned(),
            Some(url) => {
                let body = json!({
                    "tenant_id": tenant, "hostname": stored.document.smtp_host,
                    "old_ip": old_address, "new_ip": new_address,
                });
                match self.call_hook(url, body).await {
                    Ok(_) => "notified".to_owned(),
                    Err(why) => {
                        let alert = Alert {
                            kind: AlertKind::DnsHookFailed,
                            severity: Severity::Critical,
                            tenant: Some(tenant),
                            dedupe_key: format!("dns_hook_failed:{tenant}:{new_address}"),
                            message: format!(
                                "{tenant} was recovered onto {new_address}, but the DNS hook failed ({why}): point {} there by hand",
                                stored.document.smtp_host
                            ),
                            details: json!({"new_address": new_address, "error": why}),
                            audience: Audience::Security,
                        };
                        self.raise_alert(alert).await?;
                        format!("failed: {why}")
                    }
                }
            }
        };
        Ok(RecoveryView {
            tenant_id: tenant.clone(),
            old_address,
            new_address,
            created_user,
            version,
            dns_hook,
            recovered_at: now,
            duration_ms: millis(clock.elapsed()),
        })
    }

    /// Starts a recovery from the tenant page: platform admins and incident responders, with a
    /// WebAuthn step-up bound to the replacement's address, API URL and port.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::InvalidField`], [`Error::NotFound`], rate limits.
    pub async fn begin_recovery(
        &self,
        actor: &Actor,
        session: &crate::core::access::passkeys::SessionBinding,
        tenant: &TenantId,
        new_vps_ip: &str,
        mailu_api_url: &str,
        smtp_port: Option<u16>,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::RecoverTenant)?;
        let request = RecoverTenantRequest::new(new_vps_ip, mailu_api_url, None, smtp_port)?;
        let stored = self.vault()?.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        // Refused before the passkey prompt; checked again when the recovery runs.
        self.check_destination(actor, &stored.document.mailu_api_url, &request, Chosen::ByCaller)?;
        let intent = Intent::Recover {
            new_vps_ip: request.new_vps_ip.to_string(),
            mailu_api_url: request.mailu_api_url,
            smtp_port: request.smtp_port,
        };
        self.begin_step_up(actor, session, Some(tenant), &intent).await
    }

    /// Finishes the step-up and recovers. The Mailu token (optional) comes only now, so it is
    /// never stored with the ceremony.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited), and those of [`Core::recover_tenant`].
    pub async fn finish_recovery(
        &self,
        actor: &Actor,
        session: &crate::core::access::passkeys::SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        credential_json: &str,
        mailu_api_token: Option<String>,
    ) -> Result<RecoveryView> {
        authorize_ceremony(actor, Permission::RecoverTenant)?;
        let purpose = crate::core::access::passkeys::Purpose::Recover;
        let (_, intent) = self.finish_step_up(actor, session, client, purpose, Some(tenant), credential_json).await?;
        let Intent::Recover { new_vps_ip, mailu_api_url, smtp_port } = intent else {
            return Err(Error::Unauthenticated);
        };
        let token = mailu_api_token.filter(|t| !t.is_empty());
        let request = RecoverTenantRequest::new(&new_vps_ip, &mailu_api_url, token, smtp_port)?;
        self.run_recovery(actor, client, tenant, &request, Chosen::ByCaller).await
    }

    /// `recover --provision`: asks the provisioning hook for a replacement server, then
    /// recovers onto it.
    ///
    /// # Errors
    /// [`Error::Config`] without a hook; [`Error::MailServer`] when the hook fails or answers
    /// something unusable; those of [`Core::recover_tenant`].
    pub async fn recover_tenant_provisioned(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<RecoveryView> {
        authorize(actor, Permission::RecoverTenant)?;
        let url = self
            .settings
            .recovery
            .provision_hook_url
            .clone()
            .ok_or_else(|| Error::Config("set SMTP_VAULT_PROVISION_HOOK_URL to use --provision".into()))?;
        let stored = self.vault()?.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        let body = json!({"tenant_id": tenant, "hostname": stored.document.smtp_host});
        let response =
            self.call_hook(&url, body).await.map_err(|why| Error::MailServer(format!("provisioning hook: {why}")))?;
        let server: ProvisionedServer = response
            .json()
            .await
            .map_err(|_| Error::MailServer("provisioning hook: the answer is not the expected JSON".into()))?;
        let request = RecoverTenantRequest::new(
            &server.new_vps_ip,
            &server.mailu_api_url,
            server.mailu_api_token,
            server.smtp_port,
        )
        .map_err(|e| Error::MailServer(format!("provisioning hook: {e}")))?
        .with_tls(server.smtp_tls);
        self.run_recovery(actor, client, tenant, &request, Chosen::ByHook).await
    }
}
