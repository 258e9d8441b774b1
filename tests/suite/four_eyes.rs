//! Four-eyes reveals against the real core, OpenBao and database: a tenant that needs a second
//! platform admin opens a window only after another platform admin approves with their own
//! passkey; the requester never decides; denial and expiry are final; with nobody to approve it
//! fails closed; switching it off needs a confirmed session and alerts security.

use crate::common::passkeys::TestAdmin;
use crate::common::{ManualClock, TestEnv, credential_body};
use secrecy::ExposeSecret;
use smtp_vault::core::{Actor, ClientInfo, Error};
use smtp_vault::model::{
    RevealRequestStatus, RevealRequestView, RevealStep, Role, StoreCredentialRequest, TenantId, TenantSettingsInput,
};
use std::sync::Arc;

const PASSWORD: &str = "Four-Eyes-Only-Password-77";

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn setup() -> (TestEnv, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let env = TestEnv::builder().clock(clock.clone()).start().await;
    let request = StoreCredentialRequest::from_json(credential_body(PASSWORD, "tok")).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();
    (env, clock)
}

/// Switches four eyes for acme as `admin` (in a confirmed session).
async fn set_four_eyes(env: &TestEnv, admin: &mut TestAdmin, on: bool) -> Result<(), Error> {
    let current = env.core.tenant_settings(&admin.actor, &acme()).await.unwrap();
    let input = TenantSettingsInput { reveal_approval: Some(on), ..current.unchanged() };
    env.core.update_tenant_settings(&admin.actor, &admin.client(), &acme(), input).await.map(|_| ())
}

/// The requester's reason and step-up: what `finish_reveal` answers.
async fn ask(env: &TestEnv, admin: &mut TestAdmin) -> Result<RevealStep, Error> {
    let options = env.core.begin_reveal(&admin.actor, &admin.session, &admin.client(), &acme(), "ticket OPS-9").await?;
    let assertion = admin.assert(&options);
    env.core.finish_reveal(&admin.actor, &admin.session, &admin.client(), &acme(), &assertion).await
}

async fn ask_pending(env: &TestEnv, admin: &mut TestAdmin) -> RevealRequestView {
    match ask(env, admin).await.unwrap() {
        RevealStep::AwaitingApproval(request) => request,
        RevealStep::Granted(grant) => panic!("a four-eyes tenant opened a window alone: {grant:?}"),
    }
}

async fn decide(
    env: &TestEnv,
    approver: &mut TestAdmin,
    request_id: &str,
    approve: bool,
) -> Result<RevealRequestView, Error> {
    let client = approver.client();
    let options =
        env.core.begin_decide_reveal(&approver.actor, &approver.session, &client, request_id, approve).await?;
    let assertion = approver.assert(&options);
    env.core.finish_decide_reveal(&approver.actor, &approver.session, &client, request_id, &assertion).await
}

async fn count(env: &TestEnv, sql: &str, bind: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).bind(bind).fetch_one(env.core.db().pool()).await.unwrap();
    n
}

#[tokio::test]
async fn a_four_eyes_reveal_opens_only_after_another_platform_admin_approves_with_a_passkey() {
    let (env, _clock) = setup().await;
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let mut bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    alice.step_up(&env.core).await;
    set_four_eyes(&env, &mut alice, true).await.unwrap();
    assert!(env.core.tenant_settings(&alice.actor, &acme()).await.unwrap().reveal_approval);

    let request = ask_pending(&env, &mut alice).await;
    assert_eq!((request.status, request.requester_email.as_str()), (RevealRequestStatus::Pending, "alice@example.com"));
    // No window yet: the password stays in.
    assert!(matches!(
        env.core.reveal_credential(&alice.actor, &alice.client(), &acme()).await,
        Err(Error::Forbidden(_))
    ));
    // Bob is told by email, security through its channels; the notice only links to the page.
    let (alerts,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM alerts WHERE kind = 'reveal_approval_requested' AND audience IN ('admin', 'security')",
    )
    .fetch_one(env.core.db().pool())
    .await
    .unwrap();
    assert_eq!(alerts, 2, "one email to bob, one to security");
    let (message,): (String,) =
        sqlx::query_as("SELECT message FROM alerts WHERE kind = 'reveal_approval_requested' AND audience = 'admin'")
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
    assert!(message.contains("/approvals") && message.contains("alice@example.com"), "{message}");
    assert!(!message.contains(PASSWORD));

    // The requester cannot decide their own request, and the refusal is on record.
    let own = decide(&env, &mut alice, &request.request_id, true).await;
    assert!(matches!(own, Err(Error::Forbidden(_))), "{own:?}");
    let refusals = count(
        &env,
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'reveal_refused' AND details LIKE $1",
        "%own_request%",
    )
    .await;
    assert_eq!(refusals, 1);

    // Bob sees who, what and why, and approves with his own passkey.
    let pending = env.core.list_reveal_requests(&bob.actor, true).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].reason.as_str(), pending[0].tenant_id.as_str()), ("ticket OPS-9", "acme"));
    let approved = decide(&env, &mut bob, &request.request_id, true).await.unwrap();
    assert_eq!(approved.status, RevealRequestStatus::Approved);
    assert_eq!(approved.decided_by_email.as_deref(), Some("bob@example.com"));

    // Alice's window is open in the session that asked, not in another, and not for Bob.
    let revealed = env.core.reveal_credential(&alice.actor, &alice.client(), &acme()).await.unwrap();
    assert_eq!(revealed.password.expose_secret(), PASSWORD);
    let mut other = alice.client();
    other.session = Some(smtp_vault::core::access::passkeys::SessionBinding::generate().unwrap());
    assert!(env.core.reveal_credential(&alice.actor, &other, &acme()).await.is_err());
    assert!(env.core.reveal_credential(&bob.actor, &bob.client(), &acme()).await.is_err());

    // Decided once: a second approval finds nothing pending.
    assert!(matches!(decide(&env, &mut bob, &request.request_id, true).await, Err(Error::NotFound(_))));
    for event in ["reveal_requested", "reveal_approved", "reveal_granted", "credential_revealed"] {
        assert!(count(&env, "SELECT COUNT(*) FROM audit_events WHERE event_type = $1", event).await >= 1, "{event}");
    }
    assert!(env.core.verify_audit_chain().await.unwrap().first_broken.is_none());
}

#[tokio::test]
async fn denial_and_expiry_are_final_audited_and_the_decision_is_the_one_confirmed() {
    let (env, clock) = setup().await;
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let mut bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    alice.step_up(&env.core).await;
    set_four_eyes(&env, &mut alice, true).await.unwrap();

    // Bob's passkey confirms "deny": finishing cannot turn it into an approval.
    let request = ask_pending(&env, &mut alice).await;
    let denied = decide(&env, &mut bob, &request.request_id, false).await.unwrap();
    assert_eq!(denied.status, RevealRequestStatus::Denied);
    assert!(env.core.reveal_credential(&alice.actor, &alice.client(), &acme()).await.is_err());
    assert_eq!(count(&env, "SELECT COUNT(*) FROM audit_events WHERE event_type = $1", "reveal_denied").await, 1);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM reveal_grants WHERE admin_id <> $1", "").await, 0);

    // The requester signs out: her pending request goes with her session (an approver can no
    // longer open a window the sign-out closed).
    let signed_out = ask_pending(&env, &mut alice).await;
    env.core.logout(&alice.actor, &alice.client()).await.unwrap();
    assert!(matches!(decide(&env, &mut bob, &signed_out.request_id, true).await, Err(Error::NotFound(_))));
    let all = env.core.list_reveal_requests(&bob.actor, false).await.unwrap();
    let status = all.iter().find(|r| r.request_id == signed_out.request_id).map(|r| r.status);
    assert_eq!(status, Some(RevealRequestStatus::Withdrawn));
    let withdrawn = count(
        &env,
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'reveal_request_withdrawn' AND details LIKE $1",
        "%logged_out%",
    )
    .await;
    assert_eq!(withdrawn, 1);
    alice.session = smtp_vault::core::access::passkeys::SessionBinding::generate().unwrap();

    // Nobody decides within 30 minutes: the request lapses, once, and cannot be approved later.
    let late = ask_pending(&env, &mut alice).await;
    clock.advance(chrono::Duration::minutes(31));
    assert_eq!(env.core.record_expired_requests().await.unwrap(), 1);
    assert_eq!(env.core.record_expired_requests().await.unwrap(), 0);
    let all = env.core.list_reveal_requests(&bob.actor, false).await.unwrap();
    assert_eq!(
        all.iter().find(|r| r.request_id == late.request_id).map(|r| r.status),
        Some(RevealRequestStatus::Expired)
    );
    assert!(matches!(decide(&env, &mut bob, &late.request_id, true).await, Err(Error::NotFound(_))));
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM audit_events WHERE event_type = $1", "reveal_request_expired").await,
        1
    );
}

#[tokio::test]
async fn attack_a_four_eyes_reveal_never_passes_without_a_second_platform_admin() {
    let (env, _clock) = setup().await;
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let mut reviewer = TestAdmin::enroll(&env.core, "rev@example.com", Role::SecurityReviewer).await;
    let mut responder = TestAdmin::enroll(&env.core, "resp@example.com", Role::IncidentResponder).await;
    alice.step_up(&env.core).await;
    set_four_eyes(&env, &mut alice, true).await.unwrap();

    // Alice is the only platform admin: nobody could approve, so nothing starts (fails closed).
    let alone = ask(&env, &mut alice).await;
    assert!(matches!(&alone, Err(Error::Forbidden(m)) if m.contains("no other platform admin")), "{alone:?}");
    let refused = count(
        &env,
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'reveal_refused' AND details LIKE $1",
        "%no_approver%",
    )
    .await;
    assert_eq!(refused, 1);

    // A second platform admin appears, Alice asks; other roles cannot approve.
    let mut bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    let request = ask_pending(&env, &mut alice).await;
    for who in [&mut reviewer, &mut responder] {
        let client = who.client();
        let refused = env.core.begin_decide_reveal(&who.actor, &who.session, &client, &request.request_id, true).await;
        assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    }
    // Operators and tokens have no passkey: never approvers.
    assert!(
        env.core
            .begin_decide_reveal(&Actor::operator(), &bob.session, &ClientInfo::local(), &request.request_id, true)
            .await
            .is_err()
    );

    // Bob is demoted before he decides: his role, checked at the decision, no longer lets him.
    let options =
        env.core.begin_decide_reveal(&bob.actor, &bob.session, &bob.client(), &request.request_id, true).await.unwrap();
    let assertion = bob.assert(&options);
    let demoted = Actor::Admin {
        admin_id: bob.actor.admin_id().unwrap().to_owned(),
        email: "bob@example.com".into(),
        role: Role::SecurityReviewer,
    };
    let late =
        env.core.finish_decide_reveal(&demoted, &bob.session, &bob.client(), &request.request_id, &assertion).await;
    assert!(matches!(late, Err(Error::Forbidden(_))), "{late:?}");
    assert!(env.core.reveal_credential(&alice.actor, &alice.client(), &acme()).await.is_err());
}

#[tokio::test]
async fn attack_switching_four_eyes_off_needs_a_confirmed_session_and_alerts_security() {
    let (env, _clock) = setup().await;
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let _bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    // Before four eyes, Alice alone opens a window.
    assert!(matches!(ask(&env, &mut alice).await.unwrap(), RevealStep::Granted(_)));
    // A stolen cookie (no step-up in this session) cannot switch it either way.
    let refused = set_four_eyes(&env, &mut alice, true).await;
    assert!(matches!(refused, Err(Error::StepUpRequired)), "{refused:?}");
    alice.step_up(&env.core).await;
    set_four_eyes(&env, &mut alice, true).await.unwrap();
    let off_alerts = || async {
        count(
            &env,
            "SELECT COUNT(*) FROM alerts WHERE kind = $1 AND severity = 'critical'",
            "reveal_approval_switched_off",
        )
        .await
    };
    assert_eq!(off_alerts().await, 0, "switching on is not alarming");
    // Switching on closes the window one person opened.
    assert!(env.core.reveal_credential(&alice.actor, &alice.client(), &acme()).await.is_err());
    assert_eq!(
        count(
            &env,
            "SELECT COUNT(*) FROM audit_events WHERE event_type = 'reveal_revoked' AND details LIKE $1",
            "%four_eyes_on%"
        )
        .await,
        1
    );
    set_four_eyes(&env, &mut alice, false).await.unwrap();
    assert_eq!(off_alerts().await, 1, "switching off is");
    // Off again: one admin reveals alone, as before.
    assert!(matches!(ask(&env, &mut alice).await.unwrap(), RevealStep::Granted(_)));
    let changes = count(
        &env,
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'tenant_settings_changed' AND details LIKE $1",
        "%\"reveal_approval\":false%",
    )
    .await;
    assert_eq!(changes, 1);
}

#[tokio::test]
async fn the_operator_switches_four_eyes_and_lists_requests_from_the_command_line() {
    let (env, _clock) = setup().await;
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let _bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    let on =
        crate::common::console_command(&env).args(["reveals", "four-eyes", "--tenant", "acme", "on"]).output().unwrap();
    assert!(on.status.success(), "{}", String::from_utf8_lossy(&on.stderr));
    assert!(String::from_utf8_lossy(&on.stderr).contains("need a second platform admin"));
    assert!(env.core.tenant_settings(&alice.actor, &acme()).await.unwrap().reveal_approval);
    let request = ask_pending(&env, &mut alice).await;
    let listed = crate::common::console_command(&env).args(["reveals", "requests", "--pending"]).output().unwrap();
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(
        out.contains(&request.request_id)
            && out.contains("alice@example.com")
            && out.contains("pending")
            && out.contains("ticket OPS-9"),
        "{out}"
    );
    let bad = crate::common::console_command(&env)
        .args(["reveals", "four-eyes", "--tenant", "acme", "maybe"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap refuses a state that is neither on nor off");
}
