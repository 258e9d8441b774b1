//! Revert to last-known-good against the real parts (OpenBao, the database, Dovecot +
//! mailu-sim): Vault's previous password goes back through the staged protocol, so it logs in
//! again and the rotated one is refused, with nobody reading a password; a crash mid-revert
//! resumes to the same password; a revert is refused where the previous password was retired
//! as exposed (emergency reset, sweep) or was not a rotation's; a password brought back keeps
//! counting its old exposure for sweeps.

use crate::common;
use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::passkeys::TestAdmin;
use crate::common::{TestEnv, console_command, credential_body};
use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::mail::{LoginCheck, MailServer, Mailu};
use smtp_vault::core::rotation::RotationStep;
use smtp_vault::core::{Actor, ClientInfo, Error};
use smtp_vault::model::{
    EmergencyResetRequest, RevertRequest, Role, Scope, StoreCredentialRequest, SweepRequest, SweepSubject, TenantId,
};
use std::sync::Arc;
use std::time::Duration;

const LOGIN: &str = "admin@acme.example";
const FIRST: &str = "First-acme-Password-1";

struct Setup {
    env: TestEnv,
    mail: MailStandIn,
    mailu: Mailu,
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn setup() -> Setup {
    let mail = MailStandIn::start();
    let ca = mail.ca_path();
    let env = TestEnv::builder().config(|c| c.smtp_ca_file = Some(ca)).start().await;
    let mailu = Mailu::new(Duration::from_secs(5), Some(mail.ca_pem.clone()), common::lab_policy()).unwrap();
    mailu.create_user(&mail.target(LOGIN), &SecretString::from(FIRST.to_owned())).await.unwrap();
    let mut body = credential_body(FIRST, API_TOKEN);
    body["username"] = LOGIN.into();
    body["smtp_host"] = "localhost".into();
    body["smtp_port"] = mail.smtp_port.into();
    body["mailu_api_url"] = mail.api_url.clone().into();
    let request = StoreCredentialRequest::from_json(body).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();
    Setup { env, mail, mailu }
}

async fn password(s: &Setup) -> SecretString {
    s.env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap().password
}

async fn logs_in(s: &Setup, password: &SecretString) -> bool {
    s.mailu.check_login(&s.mail.target(LOGIN), password).await == LoginCheck::Accepted
}

async fn count(s: &Setup, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(s.env.core.db().pool()).await.unwrap();
    n
}

fn why() -> RevertRequest {
    RevertRequest::new("the new password broke the relay").unwrap()
}

#[tokio::test]
async fn an_api_revert_brings_the_previous_password_back_through_the_staged_protocol() {
    let s = setup().await;
    s.env.core.rotate_now(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap();
    let rotated = password(&s).await;
    assert_ne!(rotated.expose_secret(), FIRST);
    let base = s.env.serve().await;
    let url = format!("{base}/api/v1/tenants/acme/smtp-credentials/revert");
    let http = reqwest::Client::new();
    let body = serde_json::json!({"reason": "the new password broke the relay"});

    let rotator = s.env.token(&[Scope::CredentialsRotate, Scope::CredentialsReset]).await;
    assert_eq!(http.post(&url).bearer_auth(&rotator).json(&body).send().await.unwrap().status(), 403);
    let token = s.env.token(&[Scope::CredentialsRevert]).await;
    for bad in
        [serde_json::json!({}), serde_json::json!({"reason": "x"}), serde_json::json!({"reason": "ok ok", "to": 1})]
    {
        assert_eq!(http.post(&url).bearer_auth(&token).json(&bad).send().await.unwrap().status(), 422, "{bad}");
    }
    assert_eq!(password(&s).await.expose_secret(), rotated.expose_secret(), "refusals changed nothing");

    let response = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let done: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (done["result"].as_str(), done["version"].as_u64(), done["reverted_to"].as_u64()),
        (Some("reverted"), Some(3), Some(1))
    );
    assert_eq!(password(&s).await.expose_secret(), FIRST, "version 3 holds version 1's password");
    assert!(logs_in(&s, &SecretString::from(FIRST.to_owned())).await, "the previous password logs in again");
    assert!(!logs_in(&s, &rotated).await, "the rotated one is refused");
    assert_eq!(s.env.core.credential_metadata(&Actor::operator(), &acme()).await.unwrap().version, 3);
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_rotated' AND details LIKE '%\"trigger\":\"revert\"%'").await,
        1,
        "it went through the rotation's own steps"
    );
    assert_eq!(count(&s, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_reverted'").await, 1);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM alerts WHERE kind = 'credential_reverted'").await, 1);
    // No reveal, no read: nobody saw a password for it.
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM audit_events WHERE event_type IN ('credential_revealed', 'credential_secret_read') AND actor_kind <> 'operator'").await,
        0
    );
}

#[tokio::test]
async fn a_revert_is_refused_where_the_previous_password_was_retired_as_exposed_or_never_rotated() {
    let s = setup().await;
    let operator = Actor::operator();
    let local = ClientInfo::local();
    // Only the stored version: nothing to undo.
    assert!(matches!(s.env.core.revert_credential(&operator, &local, &acme(), &why()).await, Err(Error::Stale(_))));
    // After an emergency reset the previous password was retired as compromised.
    let reset = EmergencyResetRequest::new("INC-3", "pasted in a ticket").unwrap();
    s.env.core.emergency_reset(&operator, &local, &acme(), &reset).await.unwrap();
    let after_reset = password(&s).await;
    let refused = s.env.core.revert_credential(&operator, &local, &acme(), &why()).await;
    assert!(matches!(refused, Err(Error::Stale(m)) if m.contains("exposed")), "{refused:?}");
    assert_eq!(password(&s).await.expose_secret(), after_reset.expose_secret());
    assert_eq!(count(&s, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'revert_refused'").await, 2);

    // A later ordinary rotation may be undone, back to the reset's password, from the CLI.
    s.env.core.rotate_now(&operator, &local, &acme()).await.unwrap();
    let out = tokio::process::Command::from({
        let mut command = console_command(&s.env);
        command
            .args(["revert", "--tenant", "acme", "--reason", "clients cannot take the new one"])
            .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
            .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
            .env("SMTP_VAULT_SMTP_CA_FILE", s.mail.ca_path());
        command
    })
    .output()
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("acme: reverted to the password of version 2 (now version 4)"), "{stdout}");
    assert_eq!(password(&s).await.expose_secret(), after_reset.expose_secret());
    assert!(logs_in(&s, &after_reset).await);
    // A revert's own predecessor may be brought back (undoing the undo), and the UI path needs
    // a platform admin's passkey.
    let responder = TestAdmin::enroll(&s.env.core, "resp@example.com", Role::IncidentResponder).await;
    let refused =
        s.env.core.begin_revert(&responder.actor, &responder.session, &responder.client(), &acme(), "mine").await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let mut alice = TestAdmin::enroll(&s.env.core, "alice@example.com", Role::PlatformAdmin).await;
    let client = alice.client();
    let options = s.env.core.begin_revert(&alice.actor, &alice.session, &client, &acme(), "back again").await.unwrap();
    let assertion = alice.assert(&options);
    let done = s.env.core.finish_revert(&alice.actor, &alice.session, &client, &acme(), &assertion).await.unwrap();
    assert_eq!((done.version, done.reverted_to), (5, 3));
}

#[tokio::test]
async fn a_crash_mid_revert_resumes_to_the_same_password_and_its_old_exposure_still_counts() {
    let s = setup().await;
    let operator = Actor::operator();
    let local = ClientInfo::local();
    // Bob saw the first password; then it was rotated away, so a sweep of Bob finds nothing.
    let mut bob = TestAdmin::enroll(&s.env.core, "bob@example.com", Role::PlatformAdmin).await;
    let options = s.env.core.begin_reveal(&bob.actor, &bob.session, &bob.client(), &acme(), "ticket OPS-2").await;
    let assertion = bob.assert(&options.unwrap());
    s.env.core.finish_reveal(&bob.actor, &bob.session, &bob.client(), &acme(), &assertion).await.unwrap();
    let grant = s.env.core.list_grants(&bob.actor, None).await.unwrap().remove(0);
    s.env.core.revoke_grant(&bob.actor, &bob.client(), &grant.grant_id).await.unwrap();
    s.env.core.rotate_now(&operator, &local, &acme()).await.unwrap();
    let sweep = SweepRequest::new(SweepSubject::Admin("bob@example.com".into()), None, None, "", true).unwrap();
    let plan = s.env.core.exposure_sweep(&operator, &local, &sweep, None).await.unwrap();
    assert!(plan.tenants.is_empty(), "{plan:?}");

    // The revert stops right after the mail server took the old password.
    let crashed = s
        .env
        .core
        .clone()
        .with_fault_injector(Arc::new(|_: &TenantId, at: RotationStep| at == RotationStep::MailApplied));
    assert!(crashed.revert_credential(&operator, &local, &acme(), &why()).await.is_err());
    // Whatever resumes it (here the next rotation run) finishes the revert, not a new password.
    s.env.core.rotate_credential(&operator, &local, &acme(), "scheduled").await.unwrap();
    assert_eq!(password(&s).await.expose_secret(), FIRST);
    assert!(logs_in(&s, &SecretString::from(FIRST.to_owned())).await);

    // SECURITY: the password Bob saw is current again, so his exposure counts again.
    let plan = s.env.core.exposure_sweep(&operator, &local, &sweep, None).await.unwrap();
    assert_eq!(plan.tenants.iter().map(|t| t.tenant_id.as_str()).collect::<Vec<_>>(), ["acme"]);
}
