//! Recovery from lost infrastructure. VPS failure: the tenant's credential is read from Vault
//! and set on the replacement Mailu (the user created when absent), proven by an SMTP login to
//! the new address (the certificate checked against the tenant's host name), recorded, and
//! DNS is told through a hook. DR drills: the newest backup plus the journal is restored into a
//! scratch OpenBao, every tenant verified, RTO and RPO measured and kept, and an alert raised
//! when a drill fails or misses its targets.

use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize, authorize_ceremony};
use crate::core::alerting::{Alert, Audience, raise_in};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::backup::RestoreOptions;
use crate::core::config::Config;
use crate::core::crypto::{SecretField, random_bytes};
use crate::core::error::{Error, Result};
use crate::core::mail::{LoginCheck, MailTarget};
use crate::core::rotation::state::{self, Transition};
use crate::core::vault::{RoleSettings, Vault, VaultAuth, VaultSettings};
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
    pub dns_hook_url: Option<String>,
    /// Replacement-server provisioning hook.
    pub provision_hook_url: Option<String>,
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
    async fn call_hook(&self, url: &str, body: serde_json::Value) -> std::result::Result<reqwest::Response, String> {
        let policy = &self.settings.outbound;
        let url = policy.check_url(url).map_err(|refused| format!("the hook URL {refused}"))?;
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
            kind: "mailu_destination_changed",
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
        let old: Option<(Option<String>,)> = sqlx::query_as("SELECT server_ip FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let old_address = old.and_then(|(ip,)| ip);
        let recovered = format!(
            "UPDATE tenants SET server_ip = $1, mailu_api_url = $2, smtp_port = $3, version = $4, state = {}, \
             last_error = NULL, updated_at_ms = $5, smtp_tls = $7 WHERE tenant_id = $6",
            state::sql(Transition::Stored.target())
        );
        sqlx::query(&recovered)
            .bind(&new_address)
            .bind(&request.mailu_api_url)
            .bind(i64::from(port))
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .bind(now.timestamp_millis())
            .bind(tenant.as_str())
            .bind(tls.as_str())
            .execute(&mut *tx)
            .await?;
        let details = json!({
            "old_address": old_address, "new_address": new_address, "mailu_api_url": request.mailu_api_url,
            "created_user": created_user, "version": version, "duration_ms": duration_ms,
        });
        let event =
            NewEvent::info(EventType::CredentialsRecovered, Some(tenant), details).with_severity(Severity::Warning);
        audit::append(&mut tx, actor, client, event, now).await?;
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
                            kind: "dns_hook_failed",
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
        session: &crate::core::passkeys::SessionBinding,
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
        let context = json!({
            "new_vps_ip": request.new_vps_ip.to_string(), "mailu_api_url": request.mailu_api_url, "smtp_port": request.smtp_port,
        });
        self.begin_reauth(actor, session, crate::core::passkeys::Purpose::Recover, Some(tenant.as_str()), context).await
    }

    /// Finishes the step-up and recovers. The Mailu token (optional) comes only now, so it is
    /// never stored with the ceremony.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited), and those of [`Core::recover_tenant`].
    pub async fn finish_recovery(
        &self,
        actor: &Actor,
        session: &crate::core::passkeys::SessionBinding,
        client: &ClientInfo,
        tenant: &TenantId,
        credential_json: &str,
        mailu_api_token: Option<String>,
    ) -> Result<RecoveryView> {
        authorize_ceremony(actor, Permission::RecoverTenant)?;
        let purpose = crate::core::passkeys::Purpose::Recover;
        let (_, context) = self.finish_step_up(actor, session, client, purpose, Some(tenant), credential_json).await?;
        let port = context["smtp_port"].as_u64().and_then(|p| u16::try_from(p).ok());
        let token = mailu_api_token.filter(|t| !t.is_empty());
        let request = RecoverTenantRequest::new(
            context["new_vps_ip"].as_str().unwrap_or_default(),
            context["mailu_api_url"].as_str().unwrap_or_default(),
            token,
            port,
        )?;
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

    /// A disaster-recovery drill: restores the newest backup plus the journal into a scratch
    /// OpenBao started for the purpose (or the Vault at `vault_addr` with `token`), verifies
    /// every tenant, measures RTO and RPO against live Vault, keeps the report and alerts when
    /// it fails or misses a target.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless an operator or the scheduler; setup errors of the scratch
    /// server. A failed restore is a failed drill (recorded), not an error.
    pub async fn run_dr_drill(
        &self,
        actor: &Actor,
        given: Option<(String, SecretString)>,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<DrillReport> {
        authorize(actor, Permission::RunDrills)?;
        let started_at = self.now();
        let drill_id = hex::encode(random_bytes::<8>()?.as_ref());
        let (scratch, _server) = match given {
            Some((addr, token)) => (self.scratch_vault(&addr, token).await?, None),
            None => {
                let server = ScratchServer::start(&self.settings.recovery.drill_bao).await?;
                (self.scratch_vault(&server.addr, server.token.clone()).await?, Some(server))
            }
        };
        let clock = Instant::now();
        let mut problems = Vec::new();
        let mut report = DrillReport {
            drill_id: drill_id.clone(),
            started_at,
            backup_id: None,
            journal_records: 0,
            tenants: 0,
            verified: 0,
            rto_ms: 0,
            rpo_ms: None,
            lost_changes: 0,
            ok: false,
            problems: Vec::new(),
        };
        let options = RestoreOptions::default();
        match self.restore_state(None, &options).await {
            Err(e) => problems.push(format!("the backup could not be opened: {e}")),
            Ok(state) => {
                let restored_up_to = state.restored_up_to;
                match self.restore_into(&scratch, state, &options, progress).await {
                    Err(e) => problems.push(format!("the restore failed: {e}")),
                    Ok((restore, _)) => {
                        report.rto_ms = millis(clock.elapsed());
                        report.backup_id = Some(restore.backup_id.clone());
                        report.journal_records = restore.journal_records;
                        report.tenants = restore.tenants;
                        report.verified = restore.verified;
                        for (tenant, why) in restore.failed.iter().take(5) {
                            problems.push(format!("{tenant} did not verify: {why}"));
                        }
                        if restore.verified != restore.tenants {
                            problems.push(format!("{} of {} tenants verified", restore.verified, restore.tenants));
                        }
                        report.lost_changes = self.count_lost_changes(&scratch).await?;
                        let rpo = if report.lost_changes == 0 {
                            0
                        } else {
                            u64::try_from((self.now() - restored_up_to).num_milliseconds()).unwrap_or(0)
                        };
                        report.rpo_ms = Some(rpo);
                    }
                }
            }
        }
        let settings = &self.settings.recovery;
        if report.rto_ms > millis(settings.drill_rto) {
            problems.push(format!("RTO {} ms misses the target of {} s", report.rto_ms, settings.drill_rto.as_secs()));
        }
        if report.rpo_ms.is_some_and(|rpo| rpo > millis(settings.drill_rpo)) {
            problems.push(format!(
                "{} tenant(s) changed since the newest recoverable point; RPO misses the target of {} s",
                report.lost_changes,
                settings.drill_rpo.as_secs()
            ));
        }
        report.ok = problems.is_empty();
        report.problems = problems;
        self.record_drill(actor, &report).await?;
        Ok(report)
    }

    async fn scratch_vault(&self, addr: &str, token: SecretString) -> Result<Vault> {
        let live = self.vault()?;
        let vault = Vault::connect(VaultSettings {
            addrs: vec![addr.to_owned()],
            mount: live.mount().to_owned(),
            approle_mount: "approle".into(),
            auth: VaultAuth::Token(token),
            timeout: Duration::from_secs(10),
        })
        .await?;
        vault.setup(&RoleSettings::default()).await?;
        Ok(vault)
    }

    /// Tenants whose secret in live Vault differs from (or is missing in) the restored one.
    async fn count_lost_changes(&self, restored: &Vault) -> Result<usize> {
        let live = self.vault()?;
        let mut lost = 0;
        for tenant in live.list_tenants().await? {
            let Some(current) = live.read_credential(&tenant).await? else { continue };
            let again = restored.read_credential(&tenant).await?;
            if again.is_none_or(|r| r.document != current.document) {
                lost += 1;
            }
        }
        Ok(lost)
    }

    async fn record_drill(&self, actor: &Actor, report: &DrillReport) -> Result<()> {
        let text = serde_json::to_string(report).map_err(|e| Error::Internal(e.to_string()))?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO dr_drills (drill_id, started_at_ms, backup_id, ok, tenants, verified, rto_ms, rpo_ms, lost_changes, report) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&report.drill_id)
        .bind(report.started_at.timestamp_millis())
        .bind(report.backup_id.as_deref())
        .bind(i64::from(report.ok))
        .bind(i64::try_from(report.tenants).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.verified).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.rto_ms).unwrap_or(i64::MAX))
        .bind(report.rpo_ms.map(|r| i64::try_from(r).unwrap_or(i64::MAX)))
        .bind(i64::try_from(report.lost_changes).unwrap_or(i64::MAX))
        .bind(&text)
        .execute(&mut *tx)
        .await?;
        let severity = if report.ok { Severity::Info } else { Severity::Warning };
        let details = json!({
            "drill_id": report.drill_id, "ok": report.ok, "backup_id": report.backup_id, "tenants": report.tenants,
            "verified": report.verified, "rto_ms": report.rto_ms, "rpo_ms": report.rpo_ms, "problems": report.problems,
        });
        audit::append(
            &mut tx,
            actor,
            &ClientInfo::local(),
            NewEvent::info(EventType::DrDrillRan, None, details.clone()).with_severity(severity),
            now,
        )
        .await?;
        if !report.ok {
            let alert = Alert {
                kind: "dr_drill_failed",
                severity: Severity::Critical,
                tenant: None,
                dedupe_key: format!("dr_drill_failed:{}", report.drill_id),
                message: format!("the disaster-recovery drill failed: {}", report.problems.join("; ")),
                details,
                audience: Audience::Security,
            };
            crate::core::alerting::raise_in(&mut tx, &self.channels, alert, now).await?;
        }
        tx.commit().await?;
        self.wake_outbox();
        Ok(())
    }

    /// The newest drills (any admin, the operator).
    ///
    /// # Errors
    /// Refusals for others; database errors.
    pub async fn list_drills(&self, actor: &Actor, limit: i64) -> Result<Vec<DrillReport>> {
        authorize(actor, Permission::ViewOperations)?;
        let rows: Vec<(String,)> = sqlx::query_as("SELECT report FROM dr_drills ORDER BY started_at_ms DESC LIMIT $1")
            .bind(limit.clamp(1, 500))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.into_iter().filter_map(|(text,)| serde_json::from_str(&text).ok()).collect())
    }
}

/// The scratch server's command. Its root token goes in the environment, which only its user
/// can read: a command line is visible to every local user (`ps`), and the console's own
/// environment (its Vault credentials) is not passed on.
fn scratch_command(binary: &str, port: u16, token: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["server", "-dev", "-dev-no-store-token", &format!("-dev-listen-address=127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BAO_DEV_ROOT_TOKEN_ID", token)
        .env("VAULT_DEV_ROOT_TOKEN_ID", token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// A dev-mode OpenBao on a free loopback port, killed when dropped.
struct ScratchServer {
    _child: tokio::process::Child,
    addr: String,
    token: SecretString,
}

impl ScratchServer {
    async fn start(binary: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("finding a free port for the drill", e))?
            .port();
        let token = format!("drill-{}", hex::encode(random_bytes::<16>()?.as_ref()));
        let child = scratch_command(binary, port, &token).spawn().map_err(|e| {
            Error::io(format!("starting the drill's scratch server `{binary}` (SMTP_VAULT_DRILL_BAO)"), e)
        })?;
        let addr = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{addr}/v1/sys/health")).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Vault("the drill's scratch server did not become ready in 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { _child: child, addr, token: SecretString::from(token) })
    }
}

#[cfg(test)]
mod scratch_tests {
    use super::scratch_command;

    #[test]
    fn the_drill_token_is_not_on_the_command_line() {
        let command = scratch_command("bao", 8299, "drill-secret-token");
        let std = command.as_std();
        assert!(std.get_args().all(|a| !a.to_string_lossy().contains("drill-secret-token")));
        let env: Vec<_> = std.get_envs().collect();
        assert!(env.iter().any(|(k, v)| *k == "BAO_DEV_ROOT_TOKEN_ID" && v.is_some_and(|v| v == "drill-secret-token")));
        assert!(env.iter().all(|(k, _)| *k != "VAULT_TOKEN" && *k != "VAULT_SECRET_ID"));
    }
}
