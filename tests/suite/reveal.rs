//! Admin access against the real core, OpenBao and database: enrollment, login, the step-up
//! reveal and every way a reveal must be refused (each refusal audited), grant expiry with an
//! injectable clock, disabling an admin, passkey management, invites and rate limits.

use crate::common;

use crate::common::passkeys::TestAdmin;
use crate::common::{ManualClock, TestEnv, credential_body};
use secrecy::ExposeSecret;
use smtp_vault::core::access::passkeys::SessionBinding;
use smtp_vault::core::admins::AdminSession;
use smtp_vault::core::{Actor, ClientInfo, Error};
use smtp_vault::model::{Role, StoreCredentialRequest, TenantId};
use std::sync::Arc;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;

const PASSWORD: &str = "Reveal-Me-Only-With-StepUp-42";

async fn setup() -> (TestEnv, Arc<ManualClock>) {
    let clock = ManualClock::new();
    let env = TestEnv::builder().clock(clock.clone()).start().await;
    for tenant in ["acme", "globex"] {
        let request = StoreCredentialRequest::from_json(credential_body(PASSWORD, "tok")).unwrap();
        env.core
            .store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap(), request)
            .await
            .unwrap();
    }
    (env, clock)
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

async fn events(env: &TestEnv, event: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT details FROM audit_events WHERE event_type = $1 ORDER BY seq")
        .bind(event)
        .fetch_all(env.core.db().pool())
        .await
        .unwrap();
    rows.into_iter().map(|(d,)| d).collect()
}

async fn open_window(env: &TestEnv, admin: &mut TestAdmin, tenant_id: &str) -> smtp_vault::model::GrantView {
    let local = ClientInfo::local();
    let options = env
        .core
        .begin_reveal(&admin.actor, &admin.session, &local, &tenant(tenant_id), "ticket OPS-1 check")
        .await
        .unwrap();
    let assertion = admin.assert(&options);
    match env.core.finish_reveal(&admin.actor, &admin.session, &local, &tenant(tenant_id), &assertion).await.unwrap() {
        smtp_vault::model::RevealStep::Granted(grant) => grant,
        other => panic!("no window: {other:?}"),
    }
}

#[tokio::test]
async fn enrolled_admin_logs_in_steps_up_and_reveals_within_the_window() {
    let (env, _clock) = setup().await;
    let mut admin = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let local = ClientInfo::local();

    // Login in a fresh browser session.
    let session = SessionBinding::generate().unwrap();
    let options = env.core.begin_login(&session, &local, "Alice@Example.com").await.unwrap();
    let assertion = admin.assert(&options);
    let actor = env.core.finish_login(&session, &local, &assertion).await.unwrap();
    assert_eq!(actor, admin.actor);

    let grant = open_window(&env, &mut admin, "acme").await;
    assert_eq!(grant.expires_at - grant.created_at, chrono::Duration::minutes(15));
    let revealed = env.core.reveal_credential(&admin.actor, &admin.client(), &tenant("acme")).await.unwrap();
    assert_eq!(revealed.password.expose_secret(), PASSWORD);
    assert_eq!(revealed.grant_id, grant.grant_id);
    // Each plaintext sent is one audit event.
    env.core.reveal_credential(&admin.actor, &admin.client(), &tenant("acme")).await.unwrap();
    assert_eq!(events(&env, "credential_revealed").await.len(), 2);
    let granted = events(&env, "reveal_granted").await;
    assert!(granted[0].contains("ticket OPS-1 check") && granted[0].contains("passkey_id"), "{granted:?}");
    assert_eq!(events(&env, "reauth_succeeded").await.len(), 1);
    assert_eq!(events(&env, "login_succeeded").await.len(), 2, "enrollment signs in, then the login");

    // The password never reaches the audit table.
    let (hits,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE details LIKE $1")
        .bind(format!("%{PASSWORD}%"))
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(hits, 0);
    assert!(env.core.verify_audit_chain().await.unwrap().first_broken.is_none());
}

#[tokio::test]
async fn every_unearned_reveal_is_refused_and_audited() {
    let (env, clock) = setup().await;
    let local = ClientInfo::local();
    let mut admin = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let acme = tenant("acme");

    // 1. Without step-up: no window, refused.
    let err = env.core.reveal_credential(&admin.actor, &admin.client(), &acme).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
    assert_eq!(events(&env, "reveal_refused").await.len(), 1);

    // 2. An assertion answered more than two minutes after the challenge.
    let options = env.core.begin_reveal(&admin.actor, &admin.session, &local, &acme, "late answer").await.unwrap();
    clock.advance(chrono::Duration::minutes(3));
    let assertion = admin.assert(&options);
    let err = env.core.finish_reveal(&admin.actor, &admin.session, &local, &acme, &assertion).await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated));
    assert!(events(&env, "reauth_failed").await.last().unwrap().contains("challenge_expired"));

    // 3. A replayed assertion: the challenge is single-use.
    let options = env.core.begin_reveal(&admin.actor, &admin.session, &local, &acme, "replay check").await.unwrap();
    let assertion = admin.assert(&options);
    env.core.finish_reveal(&admin.actor, &admin.session, &local, &acme, &assertion).await.unwrap();
    let err = env.core.finish_reveal(&admin.actor, &admin.session, &local, &acme, &assertion).await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated));
    assert!(events(&env, "reauth_failed").await.last().unwrap().contains("no_challenge_in_progress"));

    // 4. The window for acme does not open globex.
    let err = env.core.reveal_credential(&admin.actor, &admin.client(), &tenant("globex")).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)));
    // ...and a challenge for acme cannot be answered for globex, nor from another session.
    let options = env.core.begin_reveal(&admin.actor, &admin.session, &local, &acme, "binding check").await.unwrap();
    let assertion = admin.assert(&options);
    let err =
        env.core.finish_reveal(&admin.actor, &admin.session, &local, &tenant("globex"), &assertion).await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated));
    let other_session = SessionBinding::generate().unwrap();
    let err = env.core.finish_reveal(&admin.actor, &other_session, &local, &acme, &assertion).await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated));

    // 5. After 15 minutes the server refuses, and records the expiry once.
    assert!(env.core.reveal_credential(&admin.actor, &admin.client(), &acme).await.is_ok());
    clock.advance(chrono::Duration::minutes(15) + chrono::Duration::seconds(1));
    let err = env.core.reveal_credential(&admin.actor, &admin.client(), &acme).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)));
    assert_eq!(events(&env, "reveal_expired").await.len(), 1);
    assert_eq!(env.core.record_expired_grants().await.unwrap(), 0, "recorded once");

    // 6. Without user verification (the browser would refuse; a forged UV=0 assertion).
    let options = env.core.begin_reveal(&admin.actor, &admin.session, &local, &acme, "no uv").await.unwrap();
    let mut request: webauthn_rs::prelude::RequestChallengeResponse = serde_json::from_str(&options).unwrap();
    request.public_key.user_verification = webauthn_rs_proto::UserVerificationPolicy::Discouraged_DO_NOT_USE;
    let assertion = admin.assert(&serde_json::to_string(&request).unwrap());
    let err = env.core.finish_reveal(&admin.actor, &admin.session, &local, &acme, &assertion).await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated));
    assert!(events(&env, "reauth_failed").await.last().unwrap().contains("user_not_verified"));

    // 7. Reviewers and responders never reveal, whatever they present.
    for (email, role) in [("rev@example.com", Role::SecurityReviewer), ("resp@example.com", Role::IncidentResponder)] {
        let other = TestAdmin::enroll(&env.core, email, role).await;
        let err = env.core.begin_reveal(&other.actor, &other.session, &local, &acme, "curious").await.unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)));
        let err = env.core.reveal_credential(&other.actor, &other.client(), &acme).await.unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)));
    }
    let refused = events(&env, "reveal_refused").await;
    assert!(refused.iter().filter(|d| d.contains("\"role\"")).count() >= 4, "{refused:?}");
    assert_eq!(events(&env, "reveal_granted").await.len(), 1, "only the one earned window");
}

#[tokio::test]
async fn a_disabled_admin_loses_sessions_and_grants_at_once() {
    let (env, _clock) = setup().await;
    let local = ClientInfo::local();
    let mut boss = TestAdmin::enroll(&env.core, "boss@example.com", Role::PlatformAdmin).await;
    let mut bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    boss.step_up(&env.core).await;
    open_window(&env, &mut bob, "acme").await;
    let Actor::Admin { admin_id: bob_id, .. } = bob.actor.clone() else { panic!() };
    let session = AdminSession { admin_id: bob_id.clone(), login_at: chrono::Utc::now() };
    assert!(env.core.authenticate_session(&session).await.is_ok());

    env.core.disable_admin(&boss.actor, &boss.client(), &bob_id).await.unwrap();
    assert!(matches!(env.core.authenticate_session(&session).await, Err(Error::Unauthenticated)));
    assert!(env.core.list_grants(&boss.actor, None).await.unwrap().is_empty());
    assert_eq!(events(&env, "reveal_revoked").await.len(), 1);
    assert!(env.core.begin_login(&SessionBinding::generate().unwrap(), &local, "bob@example.com").await.is_err());
    // Nobody disables themself or the last platform admin.
    let Actor::Admin { admin_id: boss_id, .. } = boss.actor.clone() else { panic!() };
    assert!(matches!(env.core.disable_admin(&boss.actor, &boss.client(), &boss_id).await, Err(Error::InvalidInput(_))));
    assert!(matches!(
        env.core.change_role(&boss.actor, &boss.client(), &boss_id, Role::SecurityReviewer).await,
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test]
async fn sessions_end_after_twelve_hours_whatever_the_activity() {
    let (env, clock) = setup().await;
    let admin = TestAdmin::enroll(&env.core, "alice@example.com", Role::SecurityReviewer).await;
    let Actor::Admin { admin_id, .. } = admin.actor.clone() else { panic!() };
    let session = AdminSession { admin_id, login_at: chrono::Utc::now() };
    clock.advance(chrono::Duration::hours(11));
    assert!(env.core.authenticate_session(&session).await.is_ok());
    clock.advance(chrono::Duration::hours(1) + chrono::Duration::seconds(1));
    assert!(matches!(env.core.authenticate_session(&session).await, Err(Error::Unauthenticated)));
}

#[tokio::test]
async fn grants_are_listed_and_revocable_by_owner_or_platform_admin() {
    let (env, _clock) = setup().await;
    let local = ClientInfo::local();
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let mut carol = TestAdmin::enroll(&env.core, "carol@example.com", Role::PlatformAdmin).await;
    let reviewer = TestAdmin::enroll(&env.core, "rev@example.com", Role::SecurityReviewer).await;
    let a = open_window(&env, &mut alice, "acme").await;
    let c = open_window(&env, &mut carol, "globex").await;
    assert_eq!(env.core.list_grants(&alice.actor, None).await.unwrap().len(), 2, "platform admins see all");
    assert!(env.core.list_grants(&reviewer.actor, None).await.unwrap().is_empty(), "others see their own");
    assert!(matches!(env.core.revoke_grant(&reviewer.actor, &local, &a.grant_id).await, Err(Error::NotFound(_))));
    env.core.revoke_grant(&alice.actor, &local, &c.grant_id).await.unwrap();
    assert!(env.core.reveal_credential(&carol.actor, &carol.client(), &tenant("globex")).await.is_err());
    env.core.revoke_grant(&alice.actor, &local, &a.grant_id).await.unwrap();
    assert!(env.core.reveal_credential(&alice.actor, &alice.client(), &tenant("acme")).await.is_err());
    assert_eq!(events(&env, "reveal_revoked").await.len(), 2);
}

#[tokio::test]
async fn passkeys_can_be_added_renamed_and_removed_but_never_the_last() {
    let (env, _clock) = setup().await;
    let local = ClientInfo::local();
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::IncidentResponder).await;
    let first = env.core.current_admin(&alice.actor).await.unwrap().passkeys[0].passkey_id.clone();
    alice.step_up(&env.core).await;
    let mine = alice.client();
    assert!(matches!(env.core.remove_passkey(&alice.actor, &mine, &first, false).await, Err(Error::InvalidInput(_))));

    let options = env.core.begin_add_passkey(&alice.actor, &alice.session).await.unwrap();
    let mut second_key = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    let credential = common::passkeys::register(&mut second_key, &options);
    let added =
        env.core.finish_add_passkey(&alice.actor, &alice.session, &mine, &credential, "backup key").await.unwrap();
    env.core.rename_passkey(&alice.actor, &mine, &added.passkey_id, "yubikey in safe").await.unwrap();
    let me = env.core.current_admin(&alice.actor).await.unwrap();
    assert_eq!(me.passkeys.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["soft key", "yubikey in safe"]);
    env.core.remove_passkey(&alice.actor, &mine, &first, false).await.unwrap();
    // The remaining key still logs in; the removed one does not.
    let session = SessionBinding::generate().unwrap();
    let options = env.core.begin_login(&session, &local, "alice@example.com").await.unwrap();
    assert!(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| alice.assert(&options))).is_err(),
        "the removed key cannot answer"
    );
    let request: webauthn_rs::prelude::RequestChallengeResponse = serde_json::from_str(&options).unwrap();
    let assertion = second_key
        .do_authentication(webauthn_rs::prelude::Url::parse(common::passkeys::ORIGIN).unwrap(), request)
        .unwrap();
    env.core.finish_login(&session, &local, &serde_json::to_string(&assertion).unwrap()).await.unwrap();
    for event in ["passkey_added", "passkey_renamed", "passkey_removed"] {
        assert!(!events(&env, event).await.is_empty(), "{event} audited");
    }
}

#[tokio::test]
async fn invites_are_single_use_and_expire_after_a_day() {
    let (env, clock) = setup().await;
    let invite = env
        .core
        .create_invite(&Actor::operator(), &ClientInfo::local(), "dave@example.com", Role::SecurityReviewer)
        .await
        .unwrap();
    let token = invite.link.rsplit_once('/').unwrap().1.to_owned();
    assert!(invite.link.starts_with("http://localhost:3000/enroll/"));
    clock.advance(chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    let session = SessionBinding::generate().unwrap();
    assert!(matches!(env.core.begin_enrollment(&session, &token, "Dave").await, Err(Error::InvalidInput(_))));
    // A used link does not work twice.
    let _eve = TestAdmin::enroll(&env.core, "eve@example.com", Role::SecurityReviewer).await;
    let (token_hash_used,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM invites WHERE used_at_ms IS NOT NULL")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(token_hash_used, 1);
    assert!(matches!(env.core.begin_enrollment(&session, "not-a-token", "X").await, Err(Error::InvalidInput(_))));
    // Only platform admins (or the operator) invite.
    assert!(matches!(
        env.core.create_invite(&_eve.actor, &ClientInfo::local(), "x@example.com", Role::PlatformAdmin).await,
        Err(Error::Forbidden(_))
    ));
}

#[tokio::test]
async fn failed_logins_are_audited_and_rate_limited() {
    let (env, _clock) = setup().await;
    let local = ClientInfo { ip: Some("192.0.2.7".parse().unwrap()), ..ClientInfo::default() };
    let _alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let session = SessionBinding::generate().unwrap();
    assert!(matches!(env.core.begin_login(&session, &local, "nobody@example.com").await, Err(Error::Unauthenticated)));
    let foreign = common::matrix::FOREIGN_ASSERTION;
    assert!(matches!(env.core.finish_login(&session, &local, foreign).await, Err(Error::Unauthenticated)));
    assert_eq!(events(&env, "login_failed").await.len(), 2);
    // Not a WebAuthn answer at all: bad input, refused and not audited.
    assert!(matches!(env.core.finish_login(&session, &local, "{}").await, Err(Error::InvalidInput(_))));
    assert_eq!(events(&env, "login_failed").await.len(), 2);
    let mut limited = false;
    for _ in 0..20 {
        if matches!(env.core.begin_login(&session, &local, "alice@example.com").await, Err(Error::RateLimited)) {
            limited = true;
            break;
        }
    }
    assert!(limited, "login attempts must be rate-limited");
}
