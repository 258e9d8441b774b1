//! Emergency reset against the real parts: OpenBao, the database, the mail stand-in (Dovecot +
//! mailu-sim) and the alert sinks (SMTP + Slack webhook). From the API and from the CLI each
//! reset must leave: a new password that logs in over SMTP while the old one is refused, no
//! open reveal window for the tenant, one critical audit event, one email and one Slack
//! message to security, one email to the tenant's contact, and an open incident. Also: the
//! UI's step-up path with the second-person review, and the 24-hour acknowledgment alert.

use crate::common;

use crate::common::alerts::{AlertSink, SECURITY};
use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::passkeys::TestAdmin;
use crate::common::{ManualClock, TestEnv, credential_body, wait_until};
use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::mail::{LoginCheck, MailServer, Mailu};
use smtp_vault::core::{Actor, ClientInfo, Error};
use smtp_vault::model::{EmergencyResetRequest, Role, Scope, StoreCredentialRequest, TenantId, TenantSettingsInput};
use std::time::Duration;

const CONTACT: &str = "ops@acme.example";

struct Setup {
    env: TestEnv,
    mail: MailStandIn,
    sink: AlertSink,
    mailu: Mailu,
}

async fn setup(clock: Option<smtp_vault::core::clock::SharedClock>) -> Setup {
    let mail = MailStandIn::start();
    let sink = AlertSink::start();
    let ca = mail.ca_path();
    let env = TestEnv::builder()
        .maybe_clock(clock)
        .config(|c| {
            c.smtp_ca_file = Some(ca);
            c.alert_retry_ms = 20;
            sink.configure(c);
        })
        .start()
        .await;
    let mailu = Mailu::new(Duration::from_secs(5), Some(mail.ca_pem.clone()), common::lab_policy()).unwrap();
    let email = "admin@acme.example";
    let password = "Initial-acme-Pass";
    mailu.create_user(&mail.target("admin@acme.example"), &SecretString::from(password.to_owned())).await.unwrap();
    let mut body = credential_body(password, API_TOKEN);
    body["username"] = email.into();
    body["smtp_host"] = "localhost".into();
    body["smtp_port"] = mail.smtp_port.into();
    body["mailu_api_url"] = mail.api_url.clone().into();
    let acme = TenantId::parse("acme").unwrap();
    let request = StoreCredentialRequest::from_json(body).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme, request).await.unwrap();
    let settings = TenantSettingsInput {
        rotation_period_days: 90,
        contact_email: Some(CONTACT.into()),
        mailu_api_url: mail.api_url.clone(),
        mailu_api_token: None,
        rotate_after_reveal: false,
        reveal_approval: None,
        password_policy: None,
        reveal_notice: None,
    };
    env.core.update_tenant_settings(&Actor::operator(), &ClientInfo::local(), &acme, settings).await.unwrap();
    Setup { env, mail, sink, mailu }
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn current_password(s: &Setup) -> SecretString {
    s.env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap().password
}

/// A platform admin with an open reveal window for acme.
async fn open_reveal_window(s: &Setup, email: &str) -> TestAdmin {
    let mut admin = TestAdmin::enroll(&s.env.core, email, Role::PlatformAdmin).await;
    let client = ClientInfo::local();
    let options =
        s.env.core.begin_reveal(&admin.actor, &admin.session, &client, &acme(), "checking a login").await.unwrap();
    let assertion = admin.assert(&options);
    s.env.core.finish_reveal(&admin.actor, &admin.session, &client, &acme(), &assertion).await.unwrap();
    assert_eq!(s.env.core.list_grants(&admin.actor, Some(&acme())).await.unwrap().len(), 1);
    admin
}

async fn count(s: &Setup, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(s.env.core.db().pool()).await.unwrap();
    n
}

/// Everything a reset must leave behind, each asserted on its own.
async fn assert_reset_left(s: &Setup, old: &SecretString, admin: &TestAdmin) {
    let new = current_password(s).await;
    assert_ne!(new.expose_secret(), old.expose_secret(), "a new password");
    assert_eq!(
        s.mailu.check_login(&s.mail.target("admin@acme.example"), &new).await,
        LoginCheck::Accepted,
        "the new one logs in"
    );
    assert_eq!(
        s.mailu.check_login(&s.mail.target("admin@acme.example"), old).await,
        LoginCheck::Rejected,
        "the old one is refused"
    );

    assert!(s.env.core.list_grants(&admin.actor, Some(&acme())).await.unwrap().is_empty(), "no open window");
    let refused = s.env.core.reveal_credential(&admin.actor, &ClientInfo::local(), &acme()).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "the revoked window no longer reveals");
    assert_eq!(
        count(
            s,
            "SELECT COUNT(*) FROM audit_events WHERE event_type = 'reveal_revoked' AND details LIKE '%emergency_reset%'"
        )
        .await,
        1
    );

    assert_eq!(
        count(s, "SELECT COUNT(*) FROM audit_events WHERE severity = 'critical'").await,
        1,
        "one critical event"
    );
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM audit_events WHERE severity = 'critical' AND event_type = 'emergency_reset'")
            .await,
        1
    );

    // Delivered once each: wait until the outbox says so, then count at the sinks.
    wait_until("alerts delivered", Duration::from_secs(30), || async {
        count(s, "SELECT COUNT(*) FROM alert_deliveries WHERE state = 'delivered'").await == 3
    })
    .await;
    let security = s.sink.emails_about("emergency reset of acme").await;
    assert_eq!(security.len(), 1, "one security email");
    assert!(security[0]["to"].to_string().contains(SECURITY));
    assert!(security[0]["data"].as_str().unwrap().contains("INC-7"), "names the incident");
    assert_eq!(s.sink.slack_about("emergency reset of acme").await.len(), 1, "one Slack message");
    let letter = s.sink.emails_about("was reset").await;
    assert_eq!(letter.len(), 1, "one tenant notification");
    assert!(letter[0]["to"].to_string().contains(CONTACT));
    let letter_text = letter[0]["data"].as_str().unwrap();
    assert!(!letter_text.contains("laptop stolen"), "the reason stays internal");
    for message in s.sink.messages().await["emails"].as_array().unwrap() {
        assert!(!message["data"].as_str().unwrap().contains(new.expose_secret()), "no password in any email");
    }

    let incidents = s.env.core.list_incidents(&Actor::operator(), 10).await.unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!((incidents[0].state.as_str(), incidents[0].outcome.as_str()), ("open", "rotated"));
    assert_eq!(incidents[0].incident_id, "INC-7");
    assert_eq!(incidents[0].grants_revoked, 1);
}

#[tokio::test]
async fn an_api_reset_rotates_revokes_alerts_notifies_and_opens_an_incident() {
    let s = setup(None).await;
    let worker = tokio::spawn({
        let core = s.env.core.clone();
        async move { core.run_outbox_worker(Duration::from_millis(50)).await }
    });
    let admin = open_reveal_window(&s, "alice@example.com").await;
    let old = current_password(&s).await;
    let base = s.env.serve().await;
    let url = format!("{base}/api/v1/tenants/acme/smtp-credentials/emergency-reset");
    let http = reqwest::Client::new();
    let body = serde_json::json!({"incident_id": "INC-7", "reason": "laptop stolen"});

    // Refusals first: they change nothing.
    let reader = s.env.token(&[Scope::CredentialsRead, Scope::CredentialsRotate]).await;
    let response = http.post(&url).bearer_auth(&reader).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let token = s.env.token(&[Scope::CredentialsReset]).await;
    for (bad, field) in [
        (serde_json::json!({"incident_id": "INC 7", "reason": "x y z"}), "incident_id"),
        (serde_json::json!({"incident_id": "INC-7"}), "reason"),
        (serde_json::json!({"incident_id": "INC-7", "reason": "ok!", "force": true}), "force"),
    ] {
        let response = http.post(&url).bearer_auth(&token).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), 422);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "invalid_field");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field));
    }
    let unknown = format!("{base}/api/v1/tenants/nobody/smtp-credentials/emergency-reset");
    assert_eq!(http.post(&unknown).bearer_auth(&token).json(&body).send().await.unwrap().status(), 404);
    let bad_id = format!("{base}/api/v1/tenants/Not_A_Tenant/smtp-credentials/emergency-reset");
    assert_eq!(http.post(&bad_id).bearer_auth(&token).json(&body).send().await.unwrap().status(), 400);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM incidents").await, 0);
    assert_eq!(current_password(&s).await.expose_secret(), old.expose_secret());

    let response = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let receipt: serde_json::Value = response.json().await.unwrap();
    assert_eq!(receipt["result"], "rotated");
    assert_eq!(receipt["new_version"], 2);
    assert_eq!(receipt["grants_revoked"], 1);
    assert_eq!(receipt["incident_id"], "INC-7");
    let channels: Vec<String> = receipt["notified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}:{}", d["channel"].as_str().unwrap(), d["recipient"].as_str().unwrap()))
        .collect();
    assert!(channels.contains(&format!("email:{SECURITY}")), "{channels:?}");
    assert!(channels.contains(&"slack:Slack".to_owned()), "{channels:?}");
    assert!(channels.contains(&format!("email:{CONTACT}")), "{channels:?}");
    assert!(receipt["timings"]["total_ms"].as_u64().is_some());

    assert_reset_left(&s, &old, &admin).await;
    worker.abort();
}

#[tokio::test]
async fn a_cli_reset_does_the_same_and_delivers_the_alerts_itself() {
    let s = setup(None).await;
    let admin = open_reveal_window(&s, "bob@example.com").await;
    let old = current_password(&s).await;
    let c = &s.env.config;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_smtp-vault"))
        .args(["emergency-reset", "--tenant", "acme", "--incident", "INC-7", "--reason", "laptop stolen"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &c.database_url)
        // The stand-in and the sinks answer over plain http/SMTP on loopback.
        .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
        .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
        .env("VAULT_ADDR", c.vault_addr_text())
        .env("VAULT_ROLE_ID", &s.env.role_id)
        .env("VAULT_SECRET_ID", s.env.secret_id.expose_secret())
        .env("SMTP_VAULT_KEYRING", &c.keyring_path)
        .env("SMTP_VAULT_SMTP_CA_FILE", s.mail.ca_path())
        .env("SMTP_VAULT_ALERT_SMTP_URL", c.alert_smtp_url.as_ref().unwrap().expose_secret())
        .env("SMTP_VAULT_ALERT_EMAIL_TO", SECURITY)
        .env("SMTP_VAULT_SLACK_WEBHOOK_URL", c.slack_webhook_url.as_ref().unwrap().expose_secret())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("acme: rotated to version"), "{stdout}");
    assert!(stdout.contains("1 reveal window(s) revoked"), "{stdout}");
    // The CLI delivered before it exited: nothing is left pending.
    assert_eq!(count(&s, "SELECT COUNT(*) FROM alert_deliveries WHERE state <> 'delivered'").await, 0, "{stdout}");
    assert_reset_left(&s, &old, &admin).await;

    // Bad input: a clear one-line error, nothing changed.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_smtp-vault"))
        .args(["emergency-reset", "--tenant", "acme", "--incident", "INC 8", "--reason", "again"])
        .env("DATABASE_URL", &c.database_url)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("incident_id"));
    assert_eq!(count(&s, "SELECT COUNT(*) FROM incidents").await, 1);
}

#[tokio::test]
async fn the_ui_path_needs_a_step_up_and_a_second_admin_to_acknowledge() {
    let s = setup(None).await;
    let core = &s.env.core;
    let client = ClientInfo::local();
    let mut responder = TestAdmin::enroll(core, "resp@example.com", Role::IncidentResponder).await;
    let reviewer = TestAdmin::enroll(core, "rev@example.com", Role::SecurityReviewer).await;

    // A reviewer may not reset; a responder must give a valid incident id and reason.
    let refused = core.begin_emergency_reset(&reviewer.actor, &reviewer.session, &acme(), "INC-9", "leak").await;
    assert!(matches!(refused, Err(Error::Forbidden(_))));
    let bad = core.begin_emergency_reset(&responder.actor, &responder.session, &acme(), "INC-9", "").await;
    assert!(matches!(bad, Err(Error::InvalidField(_))));
    // No step-up: refused and audited.
    let foreign = common::matrix::FOREIGN_ASSERTION;
    let none = core.finish_emergency_reset(&responder.actor, &responder.session, &client, &acme(), foreign).await;
    assert!(matches!(none, Err(Error::Unauthenticated)));
    assert_eq!(count(&s, "SELECT COUNT(*) FROM incidents").await, 0);

    let options = core
        .begin_emergency_reset(&responder.actor, &responder.session, &acme(), "INC-9", "token in a log")
        .await
        .unwrap();
    let assertion = responder.assert(&options);
    let receipt =
        core.finish_emergency_reset(&responder.actor, &responder.session, &client, &acme(), &assertion).await.unwrap();
    assert_eq!(receipt.incident_id, "INC-9");
    // The step-up is single use.
    let replay = core.finish_emergency_reset(&responder.actor, &responder.session, &client, &acme(), &assertion).await;
    assert!(matches!(replay, Err(Error::Unauthenticated)));
    assert_eq!(count(&s, "SELECT COUNT(*) FROM incidents").await, 1);

    // The one who reset cannot acknowledge it (refused and audited); another admin can, once.
    let own = core.acknowledge_incident(&responder.actor, &client, &receipt.incident, "all fine").await;
    assert!(matches!(own, Err(Error::Forbidden(_))), "{own:?}");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'incident_ack_refused'").await, 1);
    let no_note = core.acknowledge_incident(&reviewer.actor, &client, &receipt.incident, " ").await;
    assert!(matches!(no_note, Err(Error::InvalidInput(_))));
    let done = core
        .acknowledge_incident(&reviewer.actor, &client, &receipt.incident, "checked the log rotation")
        .await
        .unwrap();
    assert_eq!(done.state, "acknowledged");
    assert_eq!(done.ack_note.as_deref(), Some("checked the log rotation"));
    assert!(done.acknowledged_by.unwrap().contains("rev@example.com"));
    let events: Vec<&str> = done.history.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        events,
        ["emergency_reset", "emergency_reset_finished", "incident_ack_refused", "incident_acknowledged"]
    );
    let twice = core.acknowledge_incident(&reviewer.actor, &client, &receipt.incident, "again, again").await;
    assert!(matches!(twice, Err(Error::InvalidInput(_))));
    // Service tokens and the CLI operator never acknowledge.
    let token = Actor::ServiceToken { token_id: "t".into(), name: "n".into(), scopes: vec![Scope::CredentialsReset] };
    assert!(matches!(
        core.acknowledge_incident(&token, &client, &receipt.incident, "ok ok").await,
        Err(Error::Forbidden(_))
    ));
}

#[tokio::test]
async fn an_incident_left_unacknowledged_for_24_hours_raises_one_alert() {
    let clock = ManualClock::new();
    let s = setup(Some(clock.clone())).await;
    let request = EmergencyResetRequest::new("INC-11", "suspicious login").unwrap();
    s.env.core.emergency_reset(&Actor::operator(), &ClientInfo::local(), &acme(), &request).await.unwrap();
    clock.advance(chrono::Duration::hours(23));
    assert_eq!(s.env.core.alert_unacknowledged_incidents().await.unwrap(), 0);
    clock.advance(chrono::Duration::hours(2));
    assert_eq!(s.env.core.alert_unacknowledged_incidents().await.unwrap(), 1);
    assert_eq!(s.env.core.alert_unacknowledged_incidents().await.unwrap(), 0, "raised once");
    let alerts = s.env.core.list_alerts(&Actor::operator(), 50).await.unwrap();
    let overdue: Vec<_> = alerts.iter().filter(|a| a.kind == "incident_unacknowledged").collect();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].severity, "critical");
    assert!(s.env.core.list_incidents(&Actor::operator(), 5).await.unwrap()[0].overdue);
    s.env.core.deliver_due_alerts().await.unwrap();
    assert_eq!(s.sink.emails_about("unacknowledged after 25 h").await.len(), 1);
    assert_eq!(s.sink.slack_about("unacknowledged after 25 h").await.len(), 1);
}

#[tokio::test]
async fn a_reset_cut_short_by_a_crash_is_marked_interrupted_with_an_alert() {
    let clock = ManualClock::new();
    let s = setup(Some(clock.clone())).await;
    // What a process killed between containment and the end leaves behind.
    let opened = clock.now_ms();
    sqlx::query(
        "INSERT INTO incidents (incident_id, reference, tenant_id, reason, opened_by, opened_at_ms, state, outcome, grants_revoked) \
         VALUES ('00ff00ff00ff00ff', 'INC-12', 'acme', 'crash test', 'cli:root', $1, 'open', 'rotating', 0)",
    )
    .bind(opened)
    .execute(s.env.core.db().pool())
    .await
    .unwrap();
    clock.advance(chrono::Duration::minutes(5));
    assert_eq!(s.env.core.settle_interrupted_resets(chrono::Duration::minutes(15)).await.unwrap(), 0, "may still run");
    clock.advance(chrono::Duration::minutes(20));
    assert_eq!(s.env.core.settle_interrupted_resets(chrono::Duration::minutes(15)).await.unwrap(), 1);
    assert_eq!(s.env.core.settle_interrupted_resets(chrono::Duration::minutes(15)).await.unwrap(), 0, "once");
    let incident = &s.env.core.list_incidents(&Actor::operator(), 5).await.unwrap()[0];
    assert_eq!((incident.outcome.as_str(), incident.state.as_str()), ("interrupted", "open"));
    let alerts = s.env.core.list_alerts(&Actor::operator(), 10).await.unwrap();
    assert_eq!(alerts.iter().filter(|a| a.kind == "emergency_reset_interrupted").count(), 1);
}
