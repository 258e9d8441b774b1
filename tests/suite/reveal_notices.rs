//! Tenants told of reveals (opt-in) against the real core, database, OpenBao and the SMTP sink:
//! a tenant that asked gets a letter for each window that opens (a direct reveal, or one a
//! second admin approved), with when, the role and the reason's category; the reason as
//! written only when it asked for that; never the admin's name or the password; nothing when
//! it did not ask. Set from the settings (CLI here) or a provisioning request.

use crate::common::alerts::AlertSink;
use crate::common::passkeys::TestAdmin;
use crate::common::{TestEnv, console_command, credential_body, wait_until};
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{
    ProvisionCredentialRequest, RevealCategory, RevealNotice, RevealStep, Role, StoreCredentialRequest, TenantId,
    TenantSettingsInput,
};
use std::time::Duration;

const PASSWORD: &str = "Told-Tenant-Password-42";
const CONTACT: &str = "it@acme.example";

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn set_notice(env: &TestEnv, notice: RevealNotice) {
    let current = env.core.tenant_settings(&Actor::operator(), &acme()).await.unwrap();
    let input =
        TenantSettingsInput { reveal_notice: Some(notice), contact_email: Some(CONTACT.into()), ..current.unchanged() };
    env.core.update_tenant_settings(&Actor::operator(), &ClientInfo::local(), &acme(), input).await.unwrap();
}

async fn reveal(env: &TestEnv, admin: &mut TestAdmin, reason: &str, category: RevealCategory) -> RevealStep {
    let client = admin.client();
    let options = env.core.begin_reveal_as(&admin.actor, &admin.session, &client, &acme(), reason, category).await;
    let assertion = admin.assert(&options.unwrap());
    env.core.finish_reveal(&admin.actor, &admin.session, &client, &acme(), &assertion).await.unwrap()
}

async fn letters(sink: &AlertSink) -> Vec<String> {
    sink.emails_about("was revealed to a platform administrator")
        .await
        .iter()
        .map(|m| {
            assert!(m["to"].to_string().contains(CONTACT), "{m}");
            m["data"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn wait_for_letters(sink: &AlertSink, n: usize) -> Vec<String> {
    wait_until("the tenant's letters", Duration::from_secs(30), || async { letters(sink).await.len() >= n }).await;
    letters(sink).await
}

#[tokio::test]
async fn a_tenant_that_asked_is_told_of_each_reveal_with_the_reason_only_if_it_asked_for_that() {
    let sink = AlertSink::start();
    let env = TestEnv::builder().config(|c| sink.configure(c)).alerts(&sink).start().await;
    let request = StoreCredentialRequest::from_json(credential_body(PASSWORD, "tok")).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();
    let worker = tokio::spawn({
        let core = env.core.clone();
        async move { core.run_outbox_worker(Duration::from_millis(50)).await }
    });
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let mut bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;

    // Not asked: no letter (the sink is checked after a later one arrives).
    reveal(&env, &mut alice, "ticket OPS-1 quiet", RevealCategory::Audit).await;

    // Category only: when, the role, the category; not the reason, the admin or the password.
    set_notice(&env, RevealNotice::Category).await;
    reveal(&env, &mut alice, "INTERNAL-4711 customer escalation", RevealCategory::Support).await;
    let first = wait_for_letters(&sink, 1).await;
    assert_eq!(first.len(), 1, "no letter for the reveal before the tenant asked");
    let text = &first[0];
    assert!(text.contains("a platform administrator") && text.contains("Category: support request"), "{text}");
    for secret in ["INTERNAL-4711", "alice@example.com", PASSWORD, "OPS-1"] {
        assert!(!text.contains(secret), "the letter leaked {secret}: {text}");
    }

    // With the reason: a four-eyes reveal approved by a second admin is told the same way.
    set_notice(&env, RevealNotice::Reason).await;
    let current = env.core.tenant_settings(&Actor::operator(), &acme()).await.unwrap();
    alice.step_up(&env.core).await;
    let input = TenantSettingsInput { reveal_approval: Some(true), ..current.unchanged() };
    env.core.update_tenant_settings(&alice.actor, &alice.client(), &acme(), input).await.unwrap();
    let RevealStep::AwaitingApproval(request) =
        reveal(&env, &mut alice, "moving acme to the new host", RevealCategory::Migration).await
    else {
        panic!("a four-eyes tenant opened a window alone");
    };
    assert_eq!(letters(&sink).await.len(), 1, "no letter before the window opens");
    let client = bob.client();
    let options = env.core.begin_decide_reveal(&bob.actor, &bob.session, &client, &request.request_id, true).await;
    let assertion = bob.assert(&options.unwrap());
    env.core.finish_decide_reveal(&bob.actor, &bob.session, &client, &request.request_id, &assertion).await.unwrap();
    let all = wait_for_letters(&sink, 2).await;
    let second = all.iter().find(|t| t.contains("migration")).unwrap();
    assert!(second.contains("Reason given: moving acme to the new host"), "{second}");
    assert!(!second.contains("bob@example.com") && !second.contains(PASSWORD));

    // Off again (from the CLI): the next reveal is not told.
    let out = tokio::process::Command::from({
        let mut command = console_command(&env);
        command.args(["tenant", "reveal-notice", "--tenant", "acme", "off"]);
        command
    })
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.core.tenant_settings(&Actor::operator(), &acme()).await.unwrap().reveal_notice, RevealNotice::Off);
    worker.abort();
    let (queued,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'tenant_reveal_notice'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(queued, 2);
}

#[test]
fn a_provisioning_request_may_ask_for_reveal_notices_to_a_contact() {
    let mut body = credential_body(PASSWORD, "tok");
    body.as_object_mut().unwrap().remove("password");
    body["contact_email"] = " IT@Acme.Example ".into();
    body["reveal_notice"] = "category".into();
    let request = ProvisionCredentialRequest::from_json(body.clone()).unwrap();
    assert_eq!(request.contact_email.as_deref(), Some("it@acme.example"));
    assert_eq!(request.reveal_notice, Some(RevealNotice::Category));
    body["reveal_notice"] = "always".into();
    assert_eq!(
        ProvisionCredentialRequest::from_json(body.clone()).err().map(|e| e.field),
        Some("reveal_notice".into())
    );
    body["reveal_notice"] = "off".into();
    body["contact_email"] = "nobody".into();
    assert_eq!(ProvisionCredentialRequest::from_json(body).err().map(|e| e.field), Some("contact_email".into()));
}
