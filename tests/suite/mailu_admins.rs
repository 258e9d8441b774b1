//! Rogue Mailu admins against the real core, OpenBao, the database and the Mailu stand-in (which
//! lists users as Mailu's `GET /api/v1/user` does, password hashes and `global_admin` included):
//! a global admin the console did not create raises one critical `mailu_unknown_admin`, from
//! the daily cycle as from the CLI; vouching for it needs a platform admin's confirmed session
//! and is audited; an account no longer listed is marked gone; Mailu's hashes are never kept;
//! a hostile list is refused.

use crate::common;
use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::passkeys::TestAdmin;
use crate::common::{TestEnv, console_command, credential_body};
use secrecy::SecretString;
use smtp_vault::core::mail::{MailServer, Mailu, parse_global_admins};
use smtp_vault::core::{Actor, ClientInfo, Error};
use smtp_vault::model::{Role, StoreCredentialRequest, TenantId};
use std::time::Duration;

const LOGIN: &str = "admin@acme.example";

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(env.core.db().pool()).await.unwrap();
    n
}

/// Calls the stand-in's Mailu API as anyone holding the tenant's Mailu token could.
async fn mailu_api(mail: &MailStandIn, method: reqwest::Method, path: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", mail.api_url))
        .bearer_auth(API_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
}

#[tokio::test]
async fn an_unknown_global_admin_on_a_tenant_s_mailu_is_alerted_once_and_vouched_for_only_in_a_confirmed_session() {
    let mail = MailStandIn::start();
    let ca = mail.ca_path();
    let env = TestEnv::builder().config(|c| c.smtp_ca_file = Some(ca)).start().await;
    let mailu = Mailu::new(Duration::from_secs(5), Some(mail.ca_pem.clone()), common::lab_policy()).unwrap();
    // The console's own account (created as provisioning creates it: a global admin).
    mailu.create_user(&mail.target(LOGIN), &SecretString::from("Acme-Admin-Pass-1".to_owned())).await.unwrap();
    let mut body = credential_body("Acme-Admin-Pass-1", API_TOKEN);
    body["username"] = LOGIN.into();
    body["smtp_host"] = "localhost".into();
    body["smtp_port"] = mail.smtp_port.into();
    body["mailu_api_url"] = mail.api_url.clone().into();
    let request = StoreCredentialRequest::from_json(body).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();
    // An ordinary user, and a backdoor: someone with the Mailu token made a second global admin.
    let user = serde_json::json!({"email": "bob@acme.example", "raw_password": "Bob-Pass-12345"});
    mailu_api(&mail, reqwest::Method::POST, "/user", user).await;
    let rogue =
        serde_json::json!({"email": "backdoor@acme.example", "raw_password": "x-Rogue-1", "global_admin": true});
    mailu_api(&mail, reqwest::Method::POST, "/user", rogue).await;

    // The heartbeat takes the inventory in the tenant's daily turn (made now).
    sqlx::query("UPDATE tenants SET heartbeat_due_at_ms = 0").execute(env.core.db().pool()).await.unwrap();
    let report = env.core.heartbeat_due().await.unwrap();
    assert_eq!(report.unknown_admins, ["acme: backdoor@acme.example"]);
    let alerts = "SELECT COUNT(*) FROM alerts WHERE kind = 'mailu_unknown_admin' AND severity = 'critical'";
    assert_eq!(count(&env, alerts).await, 1);
    assert_eq!(
        count(&env, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'mailu_unknown_admin_found'").await,
        1
    );
    let listed = env.core.mailu_admins(&Actor::operator(), &acme()).await.unwrap();
    let seen: Vec<(&str, &str)> = listed.iter().map(|a| (a.email.as_str(), a.status.as_str())).collect();
    assert_eq!(seen, [("admin@acme.example", "console"), ("backdoor@acme.example", "unknown")], "bob is no admin");
    // Mailu's list carries password hashes: none is kept.
    assert_eq!(count(&env, "SELECT COUNT(*) FROM mailu_admins WHERE note LIKE '%$sim$%'").await, 0);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM audit_events WHERE details LIKE '%$sim$%'").await, 0);

    // Asked again (the CLI): still one alert.
    let out = tokio::process::Command::from({
        let mut command = console_command(&env);
        command
            .args(["mailu-admins", "check", "--tenant", "acme"])
            .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
            .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,::1/128");
        command
    })
    .output()
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 tenant(s) checked, 0 unknown admin(s) found"));
    assert_eq!(count(&env, alerts).await, 1);

    // Vouching: a reviewer may not; a platform admin needs a confirmed session and a note.
    let reviewer = TestAdmin::enroll(&env.core, "rev@example.com", Role::SecurityReviewer).await;
    let refused =
        env.core.trust_mailu_admin(&reviewer.actor, &reviewer.client(), &acme(), "backdoor@acme.example", "fine").await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let note = "the tenant's second admin, ticket OPS-77";
    let unconfirmed =
        env.core.trust_mailu_admin(&alice.actor, &alice.client(), &acme(), "backdoor@acme.example", note).await;
    assert!(matches!(unconfirmed, Err(Error::StepUpRequired)), "{unconfirmed:?}");
    alice.step_up(&env.core).await;
    let console_own = env.core.trust_mailu_admin(&alice.actor, &alice.client(), &acme(), LOGIN, note).await;
    assert!(matches!(console_own, Err(Error::NotFound(_))), "only an unknown account is vouched for");
    let known = env.core.trust_mailu_admin(&alice.actor, &alice.client(), &acme(), "BACKDOOR@acme.example", note).await;
    let known = known.unwrap();
    assert_eq!((known.status.as_str(), known.note.as_deref()), ("known", Some(note)));
    assert!(known.marked_by.unwrap().contains("alice@example.com"));
    assert_eq!(count(&env, "SELECT COUNT(*) FROM audit_events WHERE event_type = 'mailu_admin_marked_known'").await, 1);

    // Demoted in Mailu: the next inventory marks it gone; a new rogue is alerted on its own.
    mailu_api(&mail, reqwest::Method::PATCH, "/user/backdoor@acme.example", serde_json::json!({"global_admin": false}))
        .await;
    let second = serde_json::json!({"email": "ops@acme.example", "raw_password": "x-Rogue-2", "global_admin": true});
    mailu_api(&mail, reqwest::Method::POST, "/user", second).await;
    let found = env.core.check_mailu_admins(&Actor::operator(), None).await.unwrap();
    assert_eq!(found.unknown, ["acme: ops@acme.example"]);
    assert_eq!(count(&env, alerts).await, 2);
    let listed = env.core.mailu_admins(&Actor::operator(), &acme()).await.unwrap();
    let gone = listed.iter().find(|a| a.email == "backdoor@acme.example").unwrap();
    assert!(gone.gone_at.is_some());
}

#[test]
fn a_hostile_user_list_is_refused_and_only_global_admins_are_kept() {
    let listed = br#"[{"email":"A@x.example","global_admin":true,"password":"$h$"},{"email":"b@x.example"},
        {"email":"c@x.example","global_admin":true,"enabled":false},{"email":"a@x.example","global_admin":true}]"#;
    let admins = parse_global_admins(listed).unwrap();
    let emails: Vec<(&str, bool)> = admins.iter().map(|a| (a.email.as_str(), a.enabled)).collect();
    assert_eq!(emails, [("a@x.example", true), ("c@x.example", false)]);
    for hostile in [&b"{}"[..], b"[1,2]", b"[{\"global_admin\":true}]", b"not json", b""] {
        assert!(parse_global_admins(hostile).is_err(), "{}", String::from_utf8_lossy(hostile));
    }
    let huge = format!("[{}]", vec![r#"{"email":"a@x.example"}"#; 400_000].join(","));
    assert!(parse_global_admins(huge.as_bytes()).is_err(), "a list over the size limit");
    // A control character in a login is not shown as an account.
    assert!(parse_global_admins(b"[{\"email\":\"x\\u0007@y.example\",\"global_admin\":true}]").unwrap().is_empty());
}
