//! Exposure sweeps against the real parts (OpenBao, the database, Dovecot + mailu-sim, the alert
//! sinks): disabling, demoting an admin or removing their passkey as lost rotates exactly the
//! tenants whose current password they could see, under one incident security hears of; a
//! tenant rotated since is left alone; an on-demand sweep (API, CLI) lists first and closes
//! the subject's windows; a token that still works is not swept; a tenant that cannot be
//! rotated is reported and alerted, never silently dropped.

use crate::common;
use crate::common::alerts::AlertSink;
use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::passkeys::TestAdmin;
use crate::common::{ManualClock, TestEnv, console_command, credential_body, wait_until};
use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::mail::{LoginCheck, MailServer, Mailu};
use smtp_vault::core::{Actor, ClientInfo, Error};
use smtp_vault::model::{IncidentView, Role, Scope, StoreCredentialRequest, SweepRequest, SweepSubject, TenantId};
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    env: TestEnv,
    mail: MailStandIn,
    sink: AlertSink,
    mailu: Mailu,
    clock: Arc<ManualClock>,
}

fn id(tenant: &str) -> TenantId {
    TenantId::parse(tenant).unwrap()
}

fn login(tenant: &str) -> String {
    format!("admin@{tenant}.example")
}

/// acme, globex and initech, each with a working account on the stand-in; `broken` is stored
/// too, but its account does not exist on Mailu, so no rotation of it can succeed.
async fn setup() -> Setup {
    let mail = MailStandIn::start();
    let sink = AlertSink::start();
    let clock = ManualClock::new();
    let ca = mail.ca_path();
    let env = TestEnv::builder()
        .clock(clock.clone())
        .config(|c| {
            c.smtp_ca_file = Some(ca);
            c.alert_retry_ms = 20;
            sink.configure(c);
        })
        .start()
        .await;
    let mailu = Mailu::new(Duration::from_secs(5), Some(mail.ca_pem.clone()), common::lab_policy()).unwrap();
    for tenant in ["acme", "globex", "initech", "broken"] {
        let password = format!("Initial-{tenant}-Pass-1");
        if tenant != "broken" {
            mailu.create_user(&mail.target(&login(tenant)), &SecretString::from(password.clone())).await.unwrap();
        }
        let mut body = credential_body(&password, API_TOKEN);
        body["username"] = login(tenant).into();
        body["smtp_host"] = "localhost".into();
        body["smtp_port"] = mail.smtp_port.into();
        body["mailu_api_url"] = mail.api_url.clone().into();
        let request = StoreCredentialRequest::from_json(body).unwrap();
        env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &id(tenant), request).await.unwrap();
    }
    Setup { env, mail, sink, mailu, clock }
}

async fn password(s: &Setup, tenant: &str) -> SecretString {
    s.env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &id(tenant)).await.unwrap().password
}

async fn version(s: &Setup, tenant: &str) -> u64 {
    s.env.core.credential_metadata(&Actor::operator(), &id(tenant)).await.unwrap().version
}

/// Opens `admin`'s reveal window for `tenant` (reason and passkey step-up).
async fn reveal(s: &Setup, admin: &mut TestAdmin, tenant: &str) {
    let client = admin.client();
    let options = s.env.core.begin_reveal(&admin.actor, &admin.session, &client, &id(tenant), "ticket OPS-1").await;
    let assertion = admin.assert(&options.unwrap());
    s.env.core.finish_reveal(&admin.actor, &admin.session, &client, &id(tenant), &assertion).await.unwrap();
}

async fn count(s: &Setup, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(s.env.core.db().pool()).await.unwrap();
    n
}

/// The sweep incident once it has finished (a sweep the core started by itself runs in the
/// background).
async fn finished_sweep(s: &Setup) -> IncidentView {
    wait_until("the sweep finished", Duration::from_secs(60), || async {
        count(s, "SELECT COUNT(*) FROM incidents WHERE kind = 'exposure_sweep' AND finished_at_ms IS NOT NULL").await
            == 1
    })
    .await;
    let incidents = s.env.core.list_incidents(&Actor::operator(), 10).await.unwrap();
    incidents.into_iter().find(|i| i.kind == "exposure_sweep").unwrap()
}

async fn assert_rotated_and_old_refused(s: &Setup, tenant: &str, old: &SecretString) {
    let new = password(s, tenant).await;
    assert_ne!(new.expose_secret(), old.expose_secret(), "{tenant}: a new password");
    let target = s.mail.target(&login(tenant));
    assert_eq!(s.mailu.check_login(&target, &new).await, LoginCheck::Accepted, "{tenant}: the new one logs in");
    assert_eq!(s.mailu.check_login(&target, old).await, LoginCheck::Rejected, "{tenant}: the old one is refused");
}

#[tokio::test]
async fn disabling_an_admin_rotates_exactly_what_they_could_see_under_one_incident() {
    let s = setup().await;
    let worker = tokio::spawn({
        let core = s.env.core.clone();
        async move { core.run_outbox_worker(Duration::from_millis(50)).await }
    });
    let mut boss = TestAdmin::enroll(&s.env.core, "boss@example.com", Role::PlatformAdmin).await;
    let mut bob = TestAdmin::enroll(&s.env.core, "bob@example.com", Role::PlatformAdmin).await;
    reveal(&s, &mut bob, "acme").await;
    reveal(&s, &mut bob, "globex").await;
    let acme_before = password(&s, "acme").await;
    // Bob's windows close; globex is rotated afterwards, so what Bob saw of it is dead already.
    s.clock.advance(chrono::Duration::minutes(20));
    s.env.core.rotate_now(&Actor::operator(), &ClientInfo::local(), &id("globex")).await.unwrap();
    let (globex_version, initech_version) = (version(&s, "globex").await, version(&s, "initech").await);

    boss.step_up(&s.env.core).await;
    let bob_id = bob.actor.admin_id().unwrap().to_owned();
    s.env.core.disable_admin(&boss.actor, &boss.client(), &bob_id).await.unwrap();

    let incident = finished_sweep(&s).await;
    assert_eq!((incident.outcome.as_str(), incident.state.as_str()), ("rotated", "open"));
    assert_eq!(incident.subject.as_deref(), Some("admin bob@example.com"));
    assert!(incident.reason.contains("disabled"), "{}", incident.reason);
    let swept: Vec<(&str, &str)> = incident.sweep.iter().map(|t| (t.tenant_id.as_str(), t.outcome.as_str())).collect();
    assert_eq!(swept, [("acme", "rotated")], "only acme: globex was rotated since, initech never seen");
    assert_rotated_and_old_refused(&s, "acme", &acme_before).await;
    assert_eq!(version(&s, "globex").await, globex_version);
    assert_eq!(version(&s, "initech").await, initech_version);
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'exposure_sweep' AND severity = 'critical'")
            .await,
        1
    );
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_rotated' AND details LIKE '%sweep%'"
        )
        .await,
        1
    );
    let history: Vec<&str> = incident.history.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(history, ["exposure_sweep", "exposure_sweep_finished"]);
    wait_until("security told", Duration::from_secs(30), || async {
        s.sink.emails_about("exposure sweep of admin bob@example.com").await.len() == 1
    })
    .await;
    assert_eq!(s.sink.slack_about("exposure sweep of admin bob@example.com").await.len(), 1);

    // A second person reviews it; the admin who disabled Bob (and so started it) cannot.
    let refused = s.env.core.acknowledge_incident(&boss.actor, &boss.client(), &incident.incident, "seen it").await;
    assert!(matches!(refused, Err(Error::Forbidden(_))));
    let carol = TestAdmin::enroll(&s.env.core, "carol@example.com", Role::SecurityReviewer).await;
    let acked = s.env.core.acknowledge_incident(&carol.actor, &carol.client(), &incident.incident, "checked").await;
    assert_eq!(acked.unwrap().state, "acknowledged");

    // Run again: nothing is exposed any more, so nothing more happens.
    let again = SweepRequest::new(SweepSubject::Admin("bob@example.com".into()), None, None, "", false).unwrap();
    let view = s.env.core.exposure_sweep(&Actor::operator(), &ClientInfo::local(), &again, None).await.unwrap();
    assert!(view.incident.is_none() && view.tenants.is_empty(), "{view:?}");
    worker.abort();
}

#[tokio::test]
async fn demotion_and_a_passkey_removed_as_lost_sweep_but_a_plain_removal_or_promotion_does_not() {
    let s = setup().await;
    let mut boss = TestAdmin::enroll(&s.env.core, "boss@example.com", Role::PlatformAdmin).await;
    let mut bob = TestAdmin::enroll(&s.env.core, "bob@example.com", Role::PlatformAdmin).await;
    reveal(&s, &mut bob, "acme").await;
    let sweeps = "SELECT COUNT(*) FROM incidents WHERE kind = 'exposure_sweep'";

    // A passkey removed as an ordinary change: no sweep.
    bob.step_up(&s.env.core).await;
    let mut added = Vec::new();
    for name in ["spare", "travel"] {
        let options = s.env.core.begin_add_passkey(&bob.actor, &bob.session).await.unwrap();
        let mut key = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
        let credential = common::passkeys::register(&mut key, &options);
        let view = s.env.core.finish_add_passkey(&bob.actor, &bob.session, &bob.client(), &credential, name).await;
        added.push(view.unwrap().passkey_id);
    }
    s.env.core.remove_passkey(&bob.actor, &bob.client(), &added[0], false).await.unwrap();
    assert_eq!(count(&s, sweeps).await, 0);

    // Removed as lost: what Bob could see is rotated, and his open window closes.
    let before = password(&s, "acme").await;
    s.env.core.remove_passkey(&bob.actor, &bob.client(), &added[1], true).await.unwrap();
    let incident = finished_sweep(&s).await;
    assert!(incident.reason.contains("passkey"), "{}", incident.reason);
    assert_rotated_and_old_refused(&s, "acme", &before).await;
    assert!(s.env.core.list_grants(&bob.actor, Some(&id("acme"))).await.unwrap().is_empty());

    // Demotion sweeps what was seen since; a change that keeps reveals does not.
    s.clock.advance(chrono::Duration::minutes(1));
    reveal(&s, &mut bob, "globex").await;
    boss.step_up(&s.env.core).await;
    let bob_id = bob.actor.admin_id().unwrap().to_owned();
    s.env.core.change_role(&boss.actor, &boss.client(), &bob_id, Role::PlatformAdmin).await.unwrap();
    assert_eq!(count(&s, sweeps).await, 1);
    let before = password(&s, "globex").await;
    s.env.core.change_role(&boss.actor, &boss.client(), &bob_id, Role::IncidentResponder).await.unwrap();
    wait_until("the second sweep finished", Duration::from_secs(60), || async {
        count(&s, "SELECT COUNT(*) FROM incidents WHERE kind = 'exposure_sweep' AND finished_at_ms IS NOT NULL").await
            == 2
    })
    .await;
    assert_rotated_and_old_refused(&s, "globex", &before).await;
    // SECURITY: Bob, still an admin, does not review his own sweep.
    let incidents = s.env.core.list_incidents(&Actor::operator(), 10).await.unwrap();
    for incident in &incidents {
        let own = s.env.core.acknowledge_incident(&bob.actor, &bob.client(), &incident.incident, "all fine").await;
        assert!(matches!(own, Err(Error::Forbidden(_))), "{own:?}");
    }
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM sweep_tenants WHERE outcome = 'rotated'").await,
        2,
        "acme once, globex once"
    );
}

#[tokio::test]
async fn an_api_sweep_lists_first_closes_the_admins_windows_and_reports_what_it_could_not_rotate() {
    let s = setup().await;
    let mut bob = TestAdmin::enroll(&s.env.core, "bob@example.com", Role::PlatformAdmin).await;
    reveal(&s, &mut bob, "acme").await;
    reveal(&s, &mut bob, "broken").await;
    // Those two windows close; only what Bob could see after `since` is in the narrowed list.
    s.clock.advance(chrono::Duration::minutes(20));
    let since = chrono::DateTime::from_timestamp_millis(s.clock.now_ms()).unwrap();
    s.clock.advance(chrono::Duration::minutes(1));
    reveal(&s, &mut bob, "initech").await;
    let base = s.env.serve().await;
    let url = format!("{base}/api/v1/sweeps");
    let http = reqwest::Client::new();

    let reader = s.env.token(&[Scope::CredentialsRead, Scope::CredentialsRotate]).await;
    let body = serde_json::json!({"admin_email": "bob@example.com", "dry_run": true});
    assert_eq!(http.post(&url).bearer_auth(&reader).json(&body).send().await.unwrap().status(), 403);
    let token = s.env.token(&[Scope::CredentialsReset]).await;
    let bad = serde_json::json!({"admin_email": "bob@example.com", "token_id": "abc"});
    let answer = http.post(&url).bearer_auth(&token).json(&bad).send().await.unwrap();
    assert_eq!(answer.status(), 422);
    let nobody = serde_json::json!({"admin_email": "nobody@example.com", "dry_run": true});
    assert_eq!(http.post(&url).bearer_auth(&token).json(&nobody).send().await.unwrap().status(), 404);

    // The dry run lists and changes nothing; `since` narrows it.
    let plan: serde_json::Value =
        http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap().json().await.unwrap();
    let listed: Vec<&str> =
        plan["tenants"].as_array().unwrap().iter().map(|t| t["tenant_id"].as_str().unwrap()).collect();
    assert_eq!(listed, ["acme", "broken", "initech"]);
    assert_eq!(plan["dry_run"], true);
    let narrowed = serde_json::json!({"admin_email": "bob@example.com", "dry_run": true, "since": since.to_rfc3339()});
    let plan: serde_json::Value =
        http.post(&url).bearer_auth(&token).json(&narrowed).send().await.unwrap().json().await.unwrap();
    assert_eq!(plan["tenants"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM incidents").await, 0);
    assert_eq!(s.env.core.list_grants(&bob.actor, None).await.unwrap().len(), 1, "the dry run closed nothing");

    let before = password(&s, "acme").await;
    let run = serde_json::json!({"admin_email": "bob@example.com", "incident_id": "INC-9", "reason": "laptop left in a taxi"});
    let response = http.post(&url).bearer_auth(&token).json(&run).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let done: serde_json::Value = response.json().await.unwrap();
    assert_eq!((done["rotated"].as_u64(), done["failed"].as_u64()), (Some(2), Some(1)), "{done}");
    let broken = done["tenants"].as_array().unwrap().iter().find(|t| t["tenant_id"] == "broken").unwrap();
    assert_eq!(broken["outcome"], "failed");
    assert!(!broken["error"].as_str().unwrap_or_default().is_empty());
    assert_rotated_and_old_refused(&s, "acme", &before).await;
    // SECURITY: Bob's windows closed with the sweep: he cannot reveal the new passwords.
    assert!(s.env.core.list_grants(&bob.actor, None).await.unwrap().is_empty());
    assert!(matches!(
        s.env.core.reveal_credential(&bob.actor, &bob.client(), &id("acme")).await,
        Err(Error::Forbidden(_))
    ));
    let incident = s.env.core.list_incidents(&Actor::operator(), 10).await.unwrap().remove(0);
    assert_eq!((incident.incident_id.as_str(), incident.outcome.as_str()), ("INC-9", "partly_rotated"));
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM alerts WHERE kind = 'exposure_sweep_failed' AND severity = 'critical'").await,
        1
    );
}

#[tokio::test]
async fn a_token_sweep_waits_for_the_revocation_and_rotates_what_the_token_read_from_the_cli() {
    let s = setup().await;
    let token = s.env.token(&[Scope::CredentialsReadSecret]).await;
    let token_id = token.trim_start_matches("svt_").split('_').next().unwrap().to_owned();
    let base = s.env.serve().await;
    let http = reqwest::Client::new();
    let read = http
        .get(format!("{base}/api/v1/tenants/globex/smtp-credentials/secret"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let sweep = async |dry: bool| {
        let mut command = console_command(&s.env);
        command
            .args(["sweep", "--token", &token_id, "--reason", "token leaked in a CI log"])
            // The stand-in answers over plain http on loopback, with its own CA for SMTP.
            .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
            .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
            .env("SMTP_VAULT_SMTP_CA_FILE", s.mail.ca_path());
        if dry {
            command.arg("--dry-run");
        }
        tokio::process::Command::from(command).output().await.unwrap()
    };
    let listed = sweep(true).await;
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("globex\texposed") && !text.contains("acme"), "{text}");

    // SECURITY: a working token would read the new password at once: refused until revoked.
    let refused = sweep(false).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoke it first"));
    assert_eq!(count(&s, "SELECT COUNT(*) FROM incidents").await, 0);

    let before = password(&s, "globex").await;
    assert!(s.env.core.revoke_token(&Actor::operator(), &token_id).await.unwrap());
    let done = sweep(false).await;
    let text = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{text}{}", String::from_utf8_lossy(&done.stderr));
    assert!(text.contains("globex\trotated") && text.contains("1 rotated, 0 failed"), "{text}");
    assert_rotated_and_old_refused(&s, "globex", &before).await;
    let incident = s.env.core.list_incidents(&Actor::operator(), 10).await.unwrap().remove(0);
    assert_eq!(incident.subject.as_deref(), Some(format!("token {token_id}").as_str()));
}
