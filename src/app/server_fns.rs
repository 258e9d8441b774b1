//! Server functions: each loads the request context, makes one core call and converts.
//! Authorization is the core's; nothing here decides who may do what.
#![expect(clippy::too_many_arguments, reason = "query_audit takes each filter field as the form sends it")]

use crate::model::{
    AdminView, AlertView, CredentialMetadataView, EmergencyResetReceipt, GrantView, IncidentView, InviteCreatedView,
    InviteView, OverviewView, PasskeyView, RevealRequestView, RevealStep, RevealedCredentialView, RevertView, Role,
    RotationStatusView, RotationView, SweepView, TenantCounts, TenantPage, TenantSettingsView, UiError,
};
#[cfg(feature = "ssr")]
use crate::web::ui::{UiContext, fail, no_store, tenant};
use leptos::prelude::*;

/// The signed-in admin, or `None`.
#[server(prefix = "/_app", endpoint = "current_admin")]
pub async fn current_admin() -> Result<Option<AdminView>, UiError> {
    let ctx = UiContext::load().await?;
    if matches!(ctx.actor, crate::core::Actor::Anonymous) {
        return Ok(None);
    }
    ctx.core.current_admin(&ctx.actor).await.map(Some).map_err(fail)
}

/// Starts a passkey login; returns WebAuthn request options (JSON).
#[server(prefix = "/_app", endpoint = "begin_login")]
pub async fn begin_login(email: String) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let options = ctx.core.begin_login(&binding, &ctx.client, &email).await.map_err(fail)?;
    ctx.keep_binding(&binding).await?;
    Ok(options)
}

/// Finishes a passkey login and signs the session in.
#[server(prefix = "/_app", endpoint = "finish_login")]
pub async fn finish_login(credential: String) -> Result<AdminView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let actor = ctx.core.finish_login(&binding, &ctx.client, &credential).await.map_err(fail)?;
    ctx.sign_in(&actor).await?;
    ctx.core.current_admin(&actor).await.map_err(fail)
}

/// Signs out.
#[server(prefix = "/_app", endpoint = "logout")]
pub async fn logout() -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    if !matches!(ctx.actor, crate::core::Actor::Anonymous) {
        ctx.core.logout(&ctx.actor, &ctx.client).await.map_err(fail)?;
    }
    ctx.sign_out().await;
    Ok(())
}

/// Starts enrolling the first passkey from an invite.
#[server(prefix = "/_app", endpoint = "begin_enrollment")]
pub async fn begin_enrollment(token: String, display_name: String) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let options = ctx.core.begin_enrollment(&binding, &token, &display_name).await.map_err(fail)?;
    ctx.keep_binding(&binding).await?;
    Ok(options)
}

/// Finishes enrollment and signs the new admin in.
#[server(prefix = "/_app", endpoint = "finish_enrollment")]
pub async fn finish_enrollment(token: String, credential: String, passkey_name: String) -> Result<AdminView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let actor =
        ctx.core.finish_enrollment(&binding, &ctx.client, &token, &credential, &passkey_name).await.map_err(fail)?;
    ctx.sign_in(&actor).await?;
    ctx.core.current_admin(&actor).await.map_err(fail)
}

/// A page of tenants: `state` (a [`crate::model::TenantFilter`] name, or empty for all), next
/// rotation due within `due_days` days (or empty), `search` in the tenant id, from `cursor`.
#[server(prefix = "/_app", endpoint = "list_tenants")]
pub async fn list_tenants(
    state: String,
    due_days: String,
    search: String,
    cursor: String,
) -> Result<TenantPage, UiError> {
    let ctx = UiContext::load().await?;
    let invalid = |what: String| fail(crate::core::Error::InvalidInput(what));
    let state = match state.trim() {
        "" => None,
        name => Some(
            crate::model::TenantFilter::from_name(name).ok_or_else(|| invalid(format!("unknown state {name:?}")))?,
        ),
    };
    let due_before = match due_days.trim() {
        "" => None,
        days => {
            let days = days
                .parse::<i64>()
                .ok()
                .filter(|d| (0..=3650).contains(d))
                .ok_or_else(|| invalid("due within is a number of days".into()))?;
            Some(ctx.core.now() + chrono::Duration::days(days))
        }
    };
    let query =
        crate::model::TenantQuery { state, due_before, search: Some(search), cursor: Some(cursor), limit: None };
    ctx.core.tenant_page(&ctx.actor, &query).await.map_err(fail)
}

/// Tenants per state (the Credentials page's filter counts).
#[server(prefix = "/_app", endpoint = "fleet_counts")]
pub async fn fleet_counts() -> Result<TenantCounts, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.tenant_counts(&ctx.actor).await.map_err(fail)
}

/// The overview an admin lands on.
#[server(prefix = "/_app", endpoint = "overview")]
pub async fn overview() -> Result<OverviewView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.overview(&ctx.actor).await.map_err(fail)
}

/// A tenant's credential metadata.
#[server(prefix = "/_app", endpoint = "credential_metadata")]
pub async fn credential_metadata(tenant_id: String) -> Result<CredentialMetadataView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.credential_metadata(&ctx.actor, &tenant(&tenant_id)?).await.map_err(fail)
}

/// Starts a reveal: reason, then a WebAuthn step-up challenge (JSON).
#[server(prefix = "/_app", endpoint = "begin_reveal")]
pub async fn begin_reveal(tenant_id: String, reason: String, category: String) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let category = crate::model::RevealCategory::from_name(&category);
    ctx.core
        .begin_reveal_as(&ctx.actor, &binding, &ctx.client, &tenant(&tenant_id)?, &reason, category)
        .await
        .map_err(fail)
}

/// Finishes the step-up: opens the reveal window, or files the request a four-eyes tenant needs.
#[server(prefix = "/_app", endpoint = "finish_reveal")]
pub async fn finish_reveal(tenant_id: String, credential: String) -> Result<RevealStep, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_reveal(&ctx.actor, &binding, &ctx.client, &tenant(&tenant_id)?, &credential).await.map_err(fail)
}

/// Reveal requests of four-eyes tenants: the pending ones, or the latest of any status.
#[server(prefix = "/_app", endpoint = "list_reveal_requests")]
pub async fn list_reveal_requests(pending_only: bool) -> Result<Vec<RevealRequestView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.list_reveal_requests(&ctx.actor, pending_only).await.map_err(fail)
}

/// Starts approving or denying another admin's reveal request: the approver's step-up.
#[server(prefix = "/_app", endpoint = "begin_decide_reveal")]
pub async fn begin_decide_reveal(request_id: String, approve: bool) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.begin_decide_reveal(&ctx.actor, &binding, &ctx.client, &request_id, approve).await.map_err(fail)
}

/// Finishes the approver's step-up and records the decision.
#[server(prefix = "/_app", endpoint = "finish_decide_reveal")]
pub async fn finish_decide_reveal(request_id: String, credential: String) -> Result<RevealRequestView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_decide_reveal(&ctx.actor, &binding, &ctx.client, &request_id, &credential).await.map_err(fail)
}

/// The plaintext credential inside an open window (never cached).
#[server(prefix = "/_app", endpoint = "reveal_credential")]
pub async fn reveal_credential(tenant_id: String) -> Result<RevealedCredentialView, UiError> {
    no_store();
    let ctx = UiContext::load().await?;
    ctx.core.reveal_credential(&ctx.actor, &ctx.client, &tenant(&tenant_id)?).await.map_err(fail)
}

/// Open reveal windows (all for platform admins, one's own otherwise), optionally for a tenant.
#[server(prefix = "/_app", endpoint = "list_grants")]
pub async fn list_grants(tenant_id: Option<String>) -> Result<Vec<GrantView>, UiError> {
    let ctx = UiContext::load().await?;
    let tenant = tenant_id.as_deref().map(tenant).transpose()?;
    ctx.core.list_grants(&ctx.actor, tenant.as_ref()).await.map_err(fail)
}

/// Closes a reveal window early.
#[server(prefix = "/_app", endpoint = "revoke_grant")]
pub async fn revoke_grant(grant_id: String) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.revoke_grant(&ctx.actor, &ctx.client, &grant_id).await.map_err(fail)
}

/// Every admin (platform admins).
#[server(prefix = "/_app", endpoint = "list_admins")]
pub async fn list_admins() -> Result<Vec<AdminView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.list_admins(&ctx.actor).await.map_err(fail)
}

/// Invites an admin (platform admins); the link is shown once.
#[server(prefix = "/_app", endpoint = "create_invite")]
pub async fn create_invite(email: String, role: Role) -> Result<InviteCreatedView, UiError> {
    no_store();
    let ctx = UiContext::load().await?;
    ctx.core.create_invite(&ctx.actor, &ctx.client, &email, role).await.map_err(fail)
}

/// Changes an admin's role (platform admins).
#[server(prefix = "/_app", endpoint = "change_role")]
pub async fn change_role(admin_id: String, role: Role) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.change_role(&ctx.actor, &ctx.client, &admin_id, role).await.map_err(fail)
}

/// Disables an admin (platform admins).
#[server(prefix = "/_app", endpoint = "disable_admin")]
pub async fn disable_admin(admin_id: String) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.disable_admin(&ctx.actor, &ctx.client, &admin_id).await.map_err(fail)
}

/// Starts a passkey confirmation that lets sensitive changes through for a few minutes in
/// this session; returns WebAuthn request options (JSON).
#[server(prefix = "/_app", endpoint = "begin_confirm")]
pub async fn begin_confirm() -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.begin_confirm(&ctx.actor, &binding).await.map_err(fail)
}

/// Finishes the confirmation; returns when its window closes.
#[server(prefix = "/_app", endpoint = "finish_confirm")]
pub async fn finish_confirm(credential: String) -> Result<chrono::DateTime<chrono::Utc>, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_confirm(&ctx.actor, &binding, &ctx.client, &credential).await.map_err(fail)
}

/// Invites that still work.
#[server(prefix = "/_app", endpoint = "list_invites")]
pub async fn list_invites() -> Result<Vec<InviteView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.list_invites(&ctx.actor).await.map_err(fail)
}

/// Revokes an unused invite.
#[server(prefix = "/_app", endpoint = "revoke_invite")]
pub async fn revoke_invite(invite_id: String) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.revoke_invite(&ctx.actor, &ctx.client, &invite_id).await.map_err(fail)
}

/// Starts registering another passkey for oneself.
#[server(prefix = "/_app", endpoint = "begin_add_passkey")]
pub async fn begin_add_passkey() -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.begin_add_passkey(&ctx.actor, &binding).await.map_err(fail)
}

/// Finishes registering another passkey.
#[server(prefix = "/_app", endpoint = "finish_add_passkey")]
pub async fn finish_add_passkey(credential: String, name: String) -> Result<PasskeyView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_add_passkey(&ctx.actor, &binding, &ctx.client, &credential, &name).await.map_err(fail)
}

/// Renames one of one's passkeys.
#[server(prefix = "/_app", endpoint = "rename_passkey")]
pub async fn rename_passkey(passkey_id: String, name: String) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.rename_passkey(&ctx.actor, &ctx.client, &passkey_id, &name).await.map_err(fail)
}

/// Removes one of one's passkeys (never the last); `lost` also sweeps what one could see.
#[server(prefix = "/_app", endpoint = "remove_passkey")]
pub async fn remove_passkey(passkey_id: String, lost: bool) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.remove_passkey(&ctx.actor, &ctx.client, &passkey_id, lost).await.map_err(fail)
}

/// A tenant's rotation state, heartbeat, notices and history.
#[server(prefix = "/_app", endpoint = "rotation_status")]
pub async fn rotation_status(tenant_id: String) -> Result<RotationStatusView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.rotation_status(&ctx.actor, &tenant(&tenant_id)?).await.map_err(fail)
}

/// Starts "Rotate now": a WebAuthn step-up challenge (JSON).
#[server(prefix = "/_app", endpoint = "begin_rotation")]
pub async fn begin_rotation(tenant_id: String) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.begin_rotation(&ctx.actor, &binding, &tenant(&tenant_id)?).await.map_err(fail)
}

/// Finishes the step-up and rotates now.
#[server(prefix = "/_app", endpoint = "finish_rotation")]
pub async fn finish_rotation(tenant_id: String, credential: String) -> Result<RotationView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_rotation(&ctx.actor, &binding, &ctx.client, &tenant(&tenant_id)?, &credential).await.map_err(fail)
}

/// Starts "Revert to the previous password": a step-up challenge bound to the reason.
#[server(prefix = "/_app", endpoint = "begin_revert")]
pub async fn begin_revert(tenant_id: String, reason: String) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.begin_revert(&ctx.actor, &binding, &ctx.client, &tenant(&tenant_id)?, &reason).await.map_err(fail)
}

/// Finishes the step-up and reverts through the staged protocol.
#[server(prefix = "/_app", endpoint = "finish_revert")]
pub async fn finish_revert(tenant_id: String, credential: String) -> Result<RevertView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_revert(&ctx.actor, &binding, &ctx.client, &tenant(&tenant_id)?, &credential).await.map_err(fail)
}

/// A tenant's Mailu global admins as last inventoried.
#[server(prefix = "/_app", endpoint = "list_mailu_admins")]
pub async fn list_mailu_admins(tenant_id: String) -> Result<Vec<crate::model::MailuAdminView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.mailu_admins(&ctx.actor, &tenant(&tenant_id)?).await.map_err(fail)
}

/// Vouches for a Mailu global admin account (platform admins, confirmed session).
#[server(prefix = "/_app", endpoint = "trust_mailu_admin")]
pub async fn trust_mailu_admin(
    tenant_id: String,
    email: String,
    note: String,
) -> Result<crate::model::MailuAdminView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.trust_mailu_admin(&ctx.actor, &ctx.client, &tenant(&tenant_id)?, &email, &note).await.map_err(fail)
}

/// A tenant's settings.
#[server(prefix = "/_app", endpoint = "tenant_settings")]
pub async fn tenant_settings(tenant_id: String) -> Result<TenantSettingsView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.tenant_settings(&ctx.actor, &tenant(&tenant_id)?).await.map_err(fail)
}

/// Changes a tenant's settings (platform admins).
#[server(prefix = "/_app", endpoint = "update_tenant_settings")]
pub async fn update_tenant_settings(
    tenant_id: String,
    rotation_period_days: u32,
    contact_email: String,
    mailu_api_url: String,
    mailu_api_token: String,
    rotate_after_reveal: bool,
    reveal_approval: bool,
    password_length: u16,
    password_alphabet: String,
    reveal_notice: String,
) -> Result<TenantSettingsView, UiError> {
    let ctx = UiContext::load().await?;
    let alphabet = crate::model::PasswordAlphabet::from_name(&password_alphabet).ok_or_else(|| {
        fail(crate::core::Error::InvalidInput("the password alphabet is alphanumeric or alphanumeric_symbols".into()))
    })?;
    let settings = crate::model::TenantSettingsInput {
        rotation_period_days,
        contact_email: Some(contact_email),
        mailu_api_url,
        mailu_api_token: Some(secrecy::SecretString::from(mailu_api_token)),
        rotate_after_reveal,
        reveal_approval: Some(reveal_approval),
        password_policy: Some(crate::model::PasswordPolicy { length: password_length, alphabet }),
        reveal_notice: Some(crate::model::RevealNotice::from_name(&reveal_notice).ok_or_else(|| {
            fail(crate::core::Error::InvalidInput("reveal notices are off, category or reason".into()))
        })?),
    };
    ctx.core.update_tenant_settings(&ctx.actor, &ctx.client, &tenant(&tenant_id)?, settings).await.map_err(fail)
}

/// Defers the next rotation once, by up to 7 days, with a reason (platform admins).
#[server(prefix = "/_app", endpoint = "defer_rotation")]
pub async fn defer_rotation(tenant_id: String, days: u32, reason: String) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core
        .defer_rotation(&ctx.actor, &ctx.client, &tenant(&tenant_id)?, days, &reason)
        .await
        .map(|_| ())
        .map_err(fail)
}

/// Every alert kind and when it fires, with the thresholds in effect (any signed-in admin).
#[server(prefix = "/_app", endpoint = "alert_rules")]
pub async fn alert_rules() -> Result<Vec<crate::model::AlertRuleView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.alert_rules(&ctx.actor).map_err(fail)
}

/// The newest alerts with their delivery state (any signed-in admin).
#[server(prefix = "/_app", endpoint = "list_alerts")]
pub async fn list_alerts() -> Result<Vec<AlertView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.list_alerts(&ctx.actor, 100).await.map_err(fail)
}

/// Starts an emergency reset: a WebAuthn step-up challenge (JSON) bound to the incident id and
/// reason (platform admins, incident responders).
#[server(prefix = "/_app", endpoint = "begin_emergency_reset")]
pub async fn begin_emergency_reset(tenant_id: String, incident_id: String, reason: String) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let tenant = tenant(&tenant_id)?;
    ctx.core.begin_emergency_reset(&ctx.actor, &binding, &tenant, &incident_id, &reason).await.map_err(fail)
}

/// Finishes the step-up and resets: rotate now, revoke reveals, alert, notify.
#[server(prefix = "/_app", endpoint = "finish_emergency_reset")]
pub async fn finish_emergency_reset(tenant_id: String, credential: String) -> Result<EmergencyResetReceipt, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let tenant = tenant(&tenant_id)?;
    ctx.core.finish_emergency_reset(&ctx.actor, &binding, &ctx.client, &tenant, &credential).await.map_err(fail)
}

/// The form's sweep request: `subject_kind` is `admin` (subject an email) or `token` (an id).
#[cfg(feature = "ssr")]
fn sweep_request(
    subject_kind: &str,
    subject: String,
    since: &str,
    incident_id: &str,
    reason: &str,
    dry_run: bool,
) -> Result<crate::model::SweepRequest, UiError> {
    use crate::model::{SweepRequest, SweepSubject};
    let subject = if subject_kind == "token" { SweepSubject::Token(subject) } else { SweepSubject::Admin(subject) };
    let since = SweepRequest::parse_since(since).map_err(|e| fail(crate::core::Error::from(e)))?;
    SweepRequest::new(subject, since, Some(incident_id), reason, dry_run).map_err(|e| fail(crate::core::Error::from(e)))
}

/// The tenants an exposure sweep would rotate (platform admins, incident responders; no
/// step-up: it changes nothing).
#[server(prefix = "/_app", endpoint = "plan_sweep")]
pub async fn plan_sweep(subject_kind: String, subject: String, since: String) -> Result<SweepView, UiError> {
    let ctx = UiContext::load().await?;
    let request = sweep_request(&subject_kind, subject, &since, "", "", true)?;
    ctx.core.plan_exposure_sweep(&ctx.actor, &ctx.client, &request).await.map_err(fail)
}

/// Starts an exposure sweep: a step-up challenge bound to the subject, bound and reason.
#[server(prefix = "/_app", endpoint = "begin_sweep")]
pub async fn begin_sweep(
    subject_kind: String,
    subject: String,
    since: String,
    incident_id: String,
    reason: String,
) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let request = sweep_request(&subject_kind, subject, &since, &incident_id, &reason, false)?;
    ctx.core.begin_exposure_sweep(&ctx.actor, &binding, &request).await.map_err(fail)
}

/// Finishes the step-up and starts the sweep (its progress shows on the incident).
#[server(prefix = "/_app", endpoint = "finish_sweep")]
pub async fn finish_sweep(credential: String) -> Result<SweepView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_exposure_sweep(&ctx.actor, &binding, &ctx.client, &credential).await.map_err(fail)
}

/// Incidents with their review and history (any signed-in admin).
#[server(prefix = "/_app", endpoint = "list_incidents")]
pub async fn list_incidents() -> Result<Vec<IncidentView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.list_incidents(&ctx.actor, 100).await.map_err(fail)
}

/// Acknowledges an incident with a note (another admin than the one who reset).
#[server(prefix = "/_app", endpoint = "acknowledge_incident")]
pub async fn acknowledge_incident(incident: String, note: String) -> Result<IncidentView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.acknowledge_incident(&ctx.actor, &ctx.client, &incident, &note).await.map_err(fail)
}

/// Sends a test alert to the security channels (platform admins).
#[server(prefix = "/_app", endpoint = "send_test_alert")]
pub async fn send_test_alert() -> Result<AlertView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.send_test_alert(&ctx.actor, &ctx.client).await.map_err(fail)
}

/// Queues a dead-lettered alert again (platform admins).
#[server(prefix = "/_app", endpoint = "retry_alert")]
pub async fn retry_alert(alert_id: String) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.retry_alert(&ctx.actor, &ctx.client, &alert_id).await.map_err(fail)
}

/// Backups in the target, newest first (any signed-in admin).
#[server(prefix = "/_app", endpoint = "list_backups")]
pub async fn list_backups() -> Result<Vec<crate::model::BackupView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.list_backups(&ctx.actor).await.map_err(fail)
}

/// Disaster-recovery drills, newest first (any signed-in admin).
#[server(prefix = "/_app", endpoint = "list_drills")]
pub async fn list_drills() -> Result<Vec<crate::model::DrillReport>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.list_drills(&ctx.actor, 50).await.map_err(fail)
}

/// Starts a restore: a WebAuthn step-up bound to the backup and options (platform admins).
#[server(prefix = "/_app", endpoint = "begin_restore")]
pub async fn begin_restore(backup_id: String, dry_run: bool, force: bool) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.begin_restore(&ctx.actor, &binding, &backup_id, dry_run, force).await.map_err(fail)
}

/// Finishes the step-up and starts the restore in the background.
#[server(prefix = "/_app", endpoint = "finish_restore")]
pub async fn finish_restore(credential: String) -> Result<crate::model::RestoreStatusView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    ctx.core.finish_restore(&ctx.actor, &binding, &ctx.client, &credential).await.map_err(fail)
}

/// The progress of the restore started from the console (any signed-in admin).
#[server(prefix = "/_app", endpoint = "restore_status")]
pub async fn restore_status() -> Result<Option<crate::model::RestoreStatusView>, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.restore_status(&ctx.actor).map_err(fail)
}

/// Starts recovering a tenant onto a replacement server: a WebAuthn step-up (platform admins,
/// incident responders).
#[server(prefix = "/_app", endpoint = "begin_recovery")]
pub async fn begin_recovery(
    tenant_id: String,
    new_vps_ip: String,
    mailu_api_url: String,
    smtp_port: Option<u16>,
) -> Result<String, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let tenant = tenant(&tenant_id)?;
    ctx.core.begin_recovery(&ctx.actor, &binding, &tenant, &new_vps_ip, &mailu_api_url, smtp_port).await.map_err(fail)
}

/// Finishes the step-up and recovers (the Mailu token, if a new one, comes only here).
#[server(prefix = "/_app", endpoint = "finish_recovery")]
pub async fn finish_recovery(
    tenant_id: String,
    credential: String,
    mailu_api_token: String,
) -> Result<crate::model::RecoveryView, UiError> {
    let ctx = UiContext::load().await?;
    let binding = ctx.binding().await?;
    let tenant = tenant(&tenant_id)?;
    let token = Some(mailu_api_token).filter(|t| !t.is_empty());
    ctx.core.finish_recovery(&ctx.actor, &binding, &ctx.client, &tenant, &credential, token).await.map_err(fail)
}

/// The trail's filter from the form's fields. Dates are `YYYY-MM-DD` (UTC; `until` inclusive)
/// or empty; `since` may also be `Nd`, the last N days.
#[cfg(feature = "ssr")]
fn audit_filter(
    [tenant, event, actor, severity, text, since, until]: [String; 7],
) -> Result<crate::model::AuditQuery, UiError> {
    let day = |text: &str, add: i64| -> Result<Option<chrono::DateTime<chrono::Utc>>, UiError> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        if let Some(days) =
            text.trim().strip_suffix('d').and_then(|n| n.parse::<i64>().ok()).filter(|n| (1..=3650).contains(n))
        {
            return Ok(Some(chrono::Utc::now() - chrono::Duration::days(days)));
        }
        let date = crate::app::when::parse_day(text)
            .ok_or_else(|| fail(crate::core::Error::InvalidInput("dates are YYYY-MM-DD".into())))?;
        Ok(Some(date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() + chrono::Duration::days(add)))
    };
    let some = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    Ok(crate::model::AuditQuery {
        tenant: some(tenant),
        event: some(event),
        actor: some(actor),
        severity: some(severity),
        since: day(&since, 0)?,
        until: day(&until, 1)?,
        text: some(text),
        cursor: None,
        limit: None,
    })
}

/// A page of the audit trail, newest first (security reviewers, platform admins).
#[server(prefix = "/_app", endpoint = "query_audit")]
pub async fn query_audit(
    tenant: String,
    event: String,
    actor: String,
    severity: String,
    text: String,
    since: String,
    until: String,
    cursor: String,
) -> Result<crate::model::AuditPage, UiError> {
    let ctx = UiContext::load().await?;
    let mut query = audit_filter([tenant, event, actor, severity, text, since, until])?;
    query.cursor = Some(cursor).filter(|c| !c.trim().is_empty());
    query.limit = Some(50);
    ctx.core.query_audit(&ctx.actor, &query).await.map_err(fail)
}

/// Events per day under the same filter, for the chart above the trail.
#[server(prefix = "/_app", endpoint = "audit_chart")]
pub async fn audit_chart(
    tenant: String,
    event: String,
    actor: String,
    severity: String,
    text: String,
    since: String,
    until: String,
) -> Result<crate::model::AuditChart, UiError> {
    let ctx = UiContext::load().await?;
    let query = audit_filter([tenant, event, actor, severity, text, since, until])?;
    ctx.core.audit_per_day(&ctx.actor, &query).await.map_err(fail)
}

/// Recomputes the audit chain and says where it breaks, if it does.
#[server(prefix = "/_app", endpoint = "audit_chain_state")]
pub async fn audit_chain_state() -> Result<crate::model::ChainStateView, UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.audit_chain_state(&ctx.actor).await.map_err(fail)
}

/// Acknowledges an alert (any signed-in admin).
#[server(prefix = "/_app", endpoint = "acknowledge_alert")]
pub async fn acknowledge_alert(alert_id: String) -> Result<(), UiError> {
    let ctx = UiContext::load().await?;
    ctx.core.acknowledge_alert(&ctx.actor, &ctx.client, &alert_id).await.map_err(fail)
}
