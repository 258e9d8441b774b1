//! Suspicious-activity rules against the real core, OpenBao, the database and the alert sinks:
//! a scripted day of logins, failed attempts, reveals, a missed backup, a tampered audit row
//! and Vault going away fires exactly the expected alerts, each once, and every kind reaches
//! both the security mailbox and Slack. Plus `/metrics` and its token.

use crate::common;

use crate::common::alerts::{AlertSink, SECURITY};
use crate::common::passkeys::{TestAdmin, register};
use crate::common::{ManualClock, TestEnv, credential_body};
use chrono::TimeZone;
use smtp_vault::core::access::passkeys::SessionBinding;
use smtp_vault::core::{Actor, ClientInfo, Core};
use smtp_vault::model::{Role, StoreCredentialRequest, TenantId};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

fn from(ip: &str) -> ClientInfo {
    ClientInfo { ip: Some(ip.parse::<IpAddr>().unwrap()), ..ClientInfo::default() }
}

/// Alerts raised since the last call: (kind, dedupe key), in order.
struct Ledger(BTreeSet<String>);

impl Ledger {
    async fn new_alerts(&mut self, core: &Core) -> Vec<(String, String)> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT alert_id, kind, dedupe_key FROM alerts ORDER BY created_at_ms, dedupe_key")
                .fetch_all(core.db().pool())
                .await
                .unwrap();
        rows.into_iter().filter(|(id, _, _)| self.0.insert(id.clone())).map(|(_, kind, key)| (kind, key)).collect()
    }

    /// Runs the event rules, then returns the kinds of what they raised.
    async fn after_rules(&mut self, core: &Core) -> Vec<String> {
        core.evaluate_rules().await.unwrap();
        self.new_alerts(core).await.into_iter().map(|(kind, _)| kind).collect()
    }
}

async fn login(core: &Core, email: &str, key: &mut SoftPasskey, client: &ClientInfo) -> Actor {
    let session = SessionBinding::generate().unwrap();
    let options = core.begin_login(&session, client, email).await.unwrap();
    let assertion = common::passkeys::answer(key, &serde_json::to_string(&options).unwrap());
    core.finish_login(&session, client, &assertion).await.unwrap()
}

async fn open_window(core: &Core, admin: &mut TestAdmin, tenant_id: &str) -> String {
    let local = ClientInfo::local();
    let options = core
        .begin_reveal(&admin.actor, &admin.session, &local, &tenant(tenant_id), "ticket SEC-7 check")
        .await
        .unwrap();
    let assertion = admin.assert(&options);
    core.finish_reveal(&admin.actor, &admin.session, &local, &tenant(tenant_id), &assertion).await.unwrap();
    assertion
}

#[tokio::test]
async fn a_scripted_day_fires_exactly_the_expected_alerts_and_each_reaches_both_sinks() {
    // Wednesday 2026-12-02, 10:00 UTC: inside the allowed hours.
    let clock = ManualClock::at(chrono::Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap());
    let sink = AlertSink::start();
    let mut env = TestEnv::builder()
        .clock(clock.clone())
        .config(|config| {
            sink.configure(config);
            config.rule_reveal_burst_count = 4;
            config.rule_reveal_burst_tenants = 2;
            config.rule_reveal_burst_minutes = 10;
            config.rule_reveal_hours = smtp_vault::core::monitor::reveal_hours(Some("mon-fri 08:00-18:00")).unwrap();
            config.rule_failed_auth_count = 3;
            config.rule_failed_auth_minutes = 15;
            config.rule_backup_max_age_hours = 26;
        })
        .start()
        .await;
    smtp_vault::core::generate_backup_key(&env.config).unwrap();
    let core = Core::connect(&env.config, smtp_vault::core::Needs::ALL, Some(clock.clone())).await.unwrap();
    for id in TENANTS {
        let request = StoreCredentialRequest::from_json(credential_body("Initial-Password-1", "tok")).unwrap();
        core.store_credential(&Actor::operator(), &ClientInfo::local(), &tenant(id), request).await.unwrap();
    }
    let mut ledger = Ledger(BTreeSet::new());
    let mut alice = TestAdmin::enroll(&core, "alice@example.com", Role::PlatformAdmin).await;
    let mut bob = TestAdmin::enroll(&core, "bob@example.com", Role::PlatformAdmin).await;
    assert_eq!(ledger.after_rules(&core).await, Vec::<String>::new(), "setup and enrollment are routine");

    // Logins: the first address is learnt, the same one again is routine, a new one is news.
    login(&core, "alice@example.com", &mut alice.authenticator, &from("10.0.0.1")).await;
    login(&core, "alice@example.com", &mut alice.authenticator, &from("10.0.0.1")).await;
    login(&core, "bob@example.com", &mut bob.authenticator, &from("10.0.0.7")).await;
    assert_eq!(ledger.after_rules(&core).await, Vec::<String>::new());
    login(&core, "alice@example.com", &mut alice.authenticator, &from("10.0.0.2")).await;
    assert_eq!(ledger.after_rules(&core).await, ["login_new_ip"]);

    // A second passkey: adding it (after a step-up) tells security and its owner at once, its
    // first login is news (from a known address).
    alice.step_up(&core).await;
    let options = core.begin_add_passkey(&alice.actor, &alice.session).await.unwrap();
    let mut second_key = SoftPasskey::new(true);
    let credential = register(&mut second_key, &options);
    core.finish_add_passkey(&alice.actor, &alice.session, &alice.client(), &credential, "backup key").await.unwrap();
    assert_eq!(ledger.after_rules(&core).await, ["passkey_added", "passkey_added"]);
    login(&core, "alice@example.com", &mut second_key, &from("10.0.0.1")).await;
    assert_eq!(ledger.after_rules(&core).await, ["login_new_passkey"]);

    // Failed logins for one email from three addresses: one alert at the third, none after.
    let session = SessionBinding::generate().unwrap();
    for ip in ["10.9.9.1", "10.9.9.2"] {
        assert!(core.begin_login(&session, &from(ip), "mallory@example.com").await.is_err());
    }
    assert_eq!(ledger.after_rules(&core).await, Vec::<String>::new());
    for ip in ["10.9.9.3", "10.9.9.4"] {
        assert!(core.begin_login(&session, &from(ip), "mallory@example.com").await.is_err());
    }
    let found = ledger.new_alerts(&core).await;
    assert!(found.is_empty(), "nothing is raised before the rules run: {found:?}");
    assert_eq!(ledger.after_rules(&core).await, ["failed_logins"], "once for the burst, not per attempt");

    // Failed re-auths: a replayed step-up answer, three times.
    let replay = open_window(&core, &mut alice, "acme").await;
    for _ in 0..2 {
        let local = ClientInfo::local();
        assert!(core.finish_reveal(&alice.actor, &alice.session, &local, &tenant("acme"), &replay).await.is_err());
    }
    assert_eq!(ledger.after_rules(&core).await, Vec::<String>::new());
    let local = ClientInfo::local();
    assert!(core.finish_reveal(&alice.actor, &alice.session, &local, &tenant("acme"), &replay).await.is_err());
    assert_eq!(ledger.after_rules(&core).await, ["failed_reauths"]);

    // Reveal bursts: alice reads one password four times; bob reads three tenants once each.
    for _ in 0..3 {
        core.reveal_credential(&alice.actor, &alice.client(), &tenant("acme")).await.unwrap();
    }
    assert_eq!(ledger.after_rules(&core).await, Vec::<String>::new());
    core.reveal_credential(&alice.actor, &alice.client(), &tenant("acme")).await.unwrap();
    core.reveal_credential(&alice.actor, &alice.client(), &tenant("acme")).await.unwrap();
    assert_eq!(ledger.after_rules(&core).await, ["reveal_burst"], "one alert per burst");
    for id in ["globex", "initech"] {
        open_window(&core, &mut bob, id).await;
        core.reveal_credential(&bob.actor, &bob.client(), &tenant(id)).await.unwrap();
    }
    assert_eq!(ledger.after_rules(&core).await, Vec::<String>::new());
    open_window(&core, &mut bob, "umbrella").await;
    core.reveal_credential(&bob.actor, &bob.client(), &tenant("umbrella")).await.unwrap();
    assert_eq!(ledger.after_rules(&core).await, ["reveal_burst"], "more than two tenants");

    // 20:00: outside the allowed hours (and no burst: the window has moved on).
    clock.advance(chrono::Duration::hours(10));
    open_window(&core, &mut alice, "globex").await;
    core.reveal_credential(&alice.actor, &alice.client(), &tenant("globex")).await.unwrap();
    assert_eq!(ledger.after_rules(&core).await, ["reveal_outside_hours"]);
    // Every event was judged once: another pass finds nothing new.
    assert_eq!(core.evaluate_rules().await.unwrap().events, 0);

    // State checks: nothing wrong yet.
    assert_eq!(core.run_state_checks().await.unwrap(), 0);
    assert!(!core.check_audit_chain().await.unwrap());
    // 27 hours after the first event without a backup: once per day while it lasts.
    clock.advance(chrono::Duration::hours(17));
    assert_eq!(core.run_state_checks().await.unwrap(), 1);
    assert_eq!(core.run_state_checks().await.unwrap(), 0);
    assert_eq!(ledger.new_alerts(&core).await.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["backup_overdue"]);
    core.run_backup(&Actor::operator(), &mut |_, _| {}).await.unwrap();
    assert_eq!(core.run_state_checks().await.unwrap(), 0, "a fresh backup settles it");
    clock.advance(chrono::Duration::hours(25));
    assert_eq!(core.run_state_checks().await.unwrap(), 0, "25 hours is within the limit");
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(core.run_state_checks().await.unwrap(), 1);
    assert_eq!(ledger.new_alerts(&core).await.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["backup_overdue"]);
    core.run_backup(&Actor::operator(), &mut |_, _| {}).await.unwrap();

    // A tampered audit row: one alert naming the link, not one per check.
    sqlx::query("UPDATE audit_events SET details = '{}' WHERE seq = 5").execute(core.db().pool()).await.unwrap();
    assert!(core.check_audit_chain().await.unwrap());
    assert!(!core.check_audit_chain().await.unwrap());
    let found = ledger.new_alerts(&core).await;
    assert_eq!(found, [("audit_chain_broken".to_owned(), "audit_chain_broken:5".to_owned())]);

    // Vault sealed, then gone: one alert as each episode starts.
    let (status, _) = env.vault_root(reqwest::Method::PUT, "sys/seal", None).await;
    assert_eq!(status, 204);
    assert_eq!(core.run_state_checks().await.unwrap(), 1);
    assert_eq!(core.run_state_checks().await.unwrap(), 0);
    env.bao.stop();
    assert_eq!(core.run_state_checks().await.unwrap(), 1);
    assert_eq!(core.run_state_checks().await.unwrap(), 0);
    let kinds: Vec<String> = ledger.new_alerts(&core).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(kinds, ["vault_sealed", "vault_unreachable"]);
    assert_eq!(core.evaluate_rules().await.unwrap().alerts, 0, "the rules found nothing more");

    // Every alert, exactly once in the security mailbox and once on Slack.
    let report = core.flush_alerts(Duration::from_secs(20)).await.unwrap();
    assert_eq!(report.dead, 0);
    let alerts = core.list_alerts(&Actor::operator(), 100).await.unwrap();
    let kinds: BTreeSet<&str> = alerts.iter().map(|a| a.kind.as_str()).collect();
    // Every rule, and the passkey added at source (to security, and a letter to its owner).
    let mut expected: BTreeSet<&str> = smtp_vault::core::monitor::RULES.iter().map(|r| r.kind.as_str()).collect();
    expected.insert("passkey_added");
    assert_eq!(kinds, expected, "the script exercised every rule");
    assert_eq!(alerts.len(), 14);
    let messages = sink.messages().await;
    let owner: Vec<_> = alerts.iter().filter(|a| a.audience == "admin").collect();
    assert_eq!(owner.len(), 1);
    let letters: Vec<_> = messages["emails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["message_id"].as_str().unwrap_or_default().contains(&owner[0].alert_id))
        .collect();
    assert_eq!(letters.len(), 1);
    assert!(letters[0]["to"].to_string().contains("alice@example.com"), "{letters:?}");
    for alert in alerts.iter().filter(|a| a.audience == "security") {
        let emails: Vec<_> = messages["emails"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["message_id"].as_str().unwrap_or_default().contains(&alert.alert_id))
            .collect();
        assert_eq!(emails.len(), 1, "{}: {emails:?}", alert.kind);
        assert!(emails[0]["to"].to_string().contains(SECURITY));
        let slack: Vec<_> =
            messages["slack"].as_array().unwrap().iter().filter(|m| m.to_string().contains(&alert.alert_id)).collect();
        assert_eq!(slack.len(), 1, "{}: {slack:?}", alert.kind);
        assert!(slack[0]["text"].as_str().unwrap().contains(&alert.severity.to_uppercase()), "{slack:?}");
    }
}

/// The value of the first sample of `name` whose labels include all of `labels`.
fn sample(body: &str, name: &str, labels: &[&str]) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let matches =
            series == name || (series.starts_with(&format!("{name}{{")) && labels.iter().all(|l| series.contains(l)));
        (matches && (labels.is_empty() || series.contains('{'))).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn metrics_count_requests_reveals_and_rotations_and_report_health_behind_a_token() {
    let env = TestEnv::builder()
        .config(|config| {
            config.metrics_token = Some(secrecy::SecretString::from("scrape-secret-1".to_owned()));
        })
        .start()
        .await;
    let base = env.serve().await;
    let http = reqwest::Client::new();
    let scrape = |token: Option<&'static str>| {
        let mut request = http.get(format!("{base}/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(scrape(None).await.unwrap().status(), 401);
    assert_eq!(scrape(Some("scrape-secret-2")).await.unwrap().status(), 401);

    for _ in 0..3 {
        assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    }
    assert_eq!(http.get(format!("{base}/api/v1/tenants/acme/smtp-credentials")).send().await.unwrap().status(), 401);
    let core = &env.core;
    let request = StoreCredentialRequest::from_json(credential_body("Initial-Password-1", "tok")).unwrap();
    core.store_credential(&Actor::operator(), &ClientInfo::local(), &tenant("acme"), request).await.unwrap();
    let mut admin = TestAdmin::enroll(core, "alice@example.com", Role::PlatformAdmin).await;
    open_window(core, &mut admin, "acme").await;
    core.reveal_credential(&admin.actor, &admin.client(), &tenant("acme")).await.unwrap();
    // mail.acme.example does not resolve: the rotation gives up and says so.
    let outcome =
        core.rotate_credential(&Actor::operator(), &ClientInfo::local(), &tenant("acme"), "manual").await.unwrap();
    assert!(matches!(outcome, smtp_vault::core::rotation::RotationResult::NeedsReconcile { .. }), "{outcome:?}");

    let response = scrape(Some("scrape-secret-1")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let body = response.text().await.unwrap();
    let healthz = ["method=\"GET\"", "route=\"/healthz\"", "status=\"200\""];
    assert_eq!(sample(&body, "smtp_vault_http_requests_total", &healthz), Some(3.0), "{body}");
    let refused = ["route=\"/api/v1/tenants/{id}/smtp-credentials\"", "status=\"401\""];
    assert_eq!(sample(&body, "smtp_vault_http_requests_total", &refused), Some(1.0), "by pattern, not raw path");
    let fast = ["route=\"/healthz\"", "le=\"+Inf\""];
    assert_eq!(sample(&body, "smtp_vault_http_request_duration_seconds_bucket", &fast), Some(3.0));
    assert_eq!(sample(&body, "smtp_vault_reveals_total", &[]), Some(1.0));
    assert_eq!(sample(&body, "smtp_vault_rotations_total", &["outcome=\"needs_reconcile\""]), Some(1.0));
    assert_eq!(sample(&body, "smtp_vault_vault_up", &[]), Some(1.0));
    assert_eq!(sample(&body, "smtp_vault_vault_health", &["state=\"active\""]), Some(1.0));
    assert_eq!(sample(&body, "smtp_vault_vault_health", &["state=\"sealed\""]), Some(0.0));
    assert_eq!(sample(&body, "smtp_vault_database_up", &[]), Some(1.0));
    assert_eq!(sample(&body, "smtp_vault_backup_age_seconds", &[]), Some(-1.0), "no backup yet");
    assert_eq!(sample(&body, "smtp_vault_credentials", &["state=\"needs_reconcile\""]), Some(1.0));
    assert_eq!(sample(&body, "smtp_vault_reveal_windows_open", &[]), Some(1.0));
    assert_eq!(sample(&body, "smtp_vault_outbox_depth", &["state=\"dead\""]), Some(0.0));
    assert_eq!(sample(&body, "smtp_vault_alerts_unacknowledged", &[]), Some(1.0), "the needs_reconcile alert");
    assert!(!body.contains("acme"), "no tenant ids in labels");
    assert!(!body.contains("scrape-secret"));
}

#[tokio::test]
async fn two_consoles_on_one_database_judge_each_event_once() {
    let env = TestEnv::builder().config(|config| config.rule_failed_auth_count = 3).start().await;
    let other = Core::connect(&env.config, smtp_vault::core::Needs::ALL, None).await.unwrap();
    env.core.evaluate_rules().await.unwrap();
    let session = SessionBinding::generate().unwrap();
    for i in 0..40 {
        let email = format!("probe{}@example.com", i % 4);
        assert!(env.core.begin_login(&session, &from(&format!("10.1.0.{i}")), &email).await.is_err());
    }
    let (a, b) = tokio::join!(env.core.evaluate_rules(), other.evaluate_rules());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.events + b.events, 40, "every event judged once: {a:?} {b:?}");
    assert_eq!(a.alerts + b.alerts, 4, "one alert per probed email: {a:?} {b:?}");
    let (alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'failed_logins'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(alerts, 4);
}
