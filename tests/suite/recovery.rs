//! Recovery against real parts: a tenant recovered onto a second mail stand-in (Dovecot +
//! mailu-sim) logs in there over SMTP and the DNS hook gets the new address (through the core,
//! the API and the provisioning hook); DR drills into a scratch OpenBao measure RTO and RPO and
//! fail loudly when a change would be lost.

use crate::common;

use crate::common::alerts::AlertSink;
use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::{TestEnv, bao_binary, credential_body};
use secrecy::SecretString;
use smtp_vault::core::mail::{LoginCheck, MailServer, Mailu};
use smtp_vault::core::vault::{Vault, VaultAuth, VaultSettings};
use smtp_vault::core::{Actor, ClientInfo, Core, Error, Needs};
use smtp_vault::model::{RecoverTenantRequest, Scope, StoreCredentialRequest, TenantId};
use std::time::Duration;

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

struct Setup {
    env: TestEnv,
    old: MailStandIn,
    new: MailStandIn,
    sink: AlertSink,
    mailu: Mailu,
}

async fn setup() -> Setup {
    let old = MailStandIn::start();
    let new = MailStandIn::start();
    let sink = AlertSink::start();
    // Both stand-ins' CAs are trusted (each makes its own).
    let bundle = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bundle.path(), [old.ca_pem.clone(), new.ca_pem.clone()].concat()).unwrap();
    let (bundle_file, bundle_path) = bundle.keep().unwrap();
    drop(bundle_file);
    let (dns, provision) = (sink.hook_url("dns"), sink.hook_url("provision"));
    let env = TestEnv::builder()
        .config(|c| {
            c.smtp_ca_file = Some(bundle_path.clone());
            c.dns_hook_url = Some(dns.parse().unwrap());
            c.provision_hook_url = Some(provision.parse().unwrap());
            c.hook_token = Some(SecretString::from("hook-secret".to_owned()));
        })
        .start()
        .await;
    let pems = [old.ca_pem.clone(), new.ca_pem.clone()].concat();
    let mailu = Mailu::new(Duration::from_secs(5), Some(pems), common::lab_policy()).unwrap();
    mailu
        .create_user(&old.target("admin@acme.example"), &SecretString::from("Acme-Admin-Pass".to_owned()))
        .await
        .unwrap();
    let mut body = credential_body("Acme-Admin-Pass", API_TOKEN);
    body["username"] = "admin@acme.example".into();
    body["smtp_host"] = "localhost".into();
    body["smtp_port"] = old.smtp_port.into();
    body["mailu_api_url"] = old.api_url.clone().into();
    let request = StoreCredentialRequest::from_json(body).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();
    Setup { env, old, new, sink, mailu }
}

#[tokio::test]
async fn a_tenant_recovered_onto_a_second_server_logs_in_there_and_dns_is_told() {
    let s = setup().await;
    let password = SecretString::from("Acme-Admin-Pass".to_owned());
    assert_eq!(
        s.mailu.check_login(&s.new.target("admin@acme.example"), &password).await,
        LoginCheck::Rejected,
        "not there yet"
    );

    // A new Mailu API URL comes with its own token (the stored one is never sent elsewhere).
    let request =
        RecoverTenantRequest::new("127.0.0.1", &s.new.api_url, Some(API_TOKEN.into()), Some(s.new.smtp_port)).unwrap();
    let reviewer = Actor::ServiceToken { token_id: "t".into(), name: "n".into(), scopes: vec![Scope::CredentialsRead] };
    assert!(matches!(
        s.env.core.recover_tenant(&reviewer, &ClientInfo::local(), &acme(), &request).await,
        Err(Error::MissingScope(_))
    ));
    let done = s.env.core.recover_tenant(&Actor::operator(), &ClientInfo::local(), &acme(), &request).await.unwrap();
    assert!(done.created_user, "the replacement had no such user");
    assert_eq!(done.new_address, "127.0.0.1");
    assert_eq!(done.dns_hook, "notified");
    assert_eq!(
        s.mailu.check_login(&s.new.target("admin@acme.example"), &password).await,
        LoginCheck::Accepted,
        "logs in on the new server"
    );

    let hooks = s.sink.hooks("dns").await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["body"]["new_ip"], "127.0.0.1");
    assert_eq!(hooks[0]["body"]["tenant_id"], "acme");
    assert_eq!(hooks[0]["body"]["hostname"], "localhost");
    assert_eq!(hooks[0]["authorization"], "Bearer hook-secret");

    // Recorded: the new API URL and port in Vault and the database, and one audit event.
    let meta = s.env.core.credential_metadata(&Actor::operator(), &acme()).await.unwrap();
    assert_eq!((meta.mailu_api_url.as_str(), meta.smtp_port), (s.new.api_url.as_str(), s.new.smtp_port));
    let (details,): (String,) = sqlx::query_as(
        "SELECT details FROM audit_events WHERE event_type = 'smtp_credentials_recovered' AND tenant_id = 'acme'",
    )
    .fetch_one(s.env.core.db().pool())
    .await
    .unwrap();
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["new_address"], "127.0.0.1");
    assert!(details["old_address"].is_null());
    assert!(details["duration_ms"].as_u64().is_some());
    // The old server is untouched (it is gone in real life).
    assert_eq!(s.mailu.check_login(&s.old.target("admin@acme.example"), &password).await, LoginCheck::Accepted);

    // The rotation now works against the new server.
    let rotated = s.env.core.rotate_now(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap();
    let fresh = s.env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap();
    assert!(rotated.version > done.version);
    assert_eq!(s.mailu.check_login(&s.new.target("admin@acme.example"), &fresh.password).await, LoginCheck::Accepted);
}

#[tokio::test]
async fn recovery_through_the_api_and_the_provisioning_hook() {
    let s = setup().await;
    let base = s.env.serve().await;
    // Onto a new Mailu API URL: `tenants:redirect` as well (tests/attacks.rs: without it, 403).
    let token = s.env.token(&[Scope::TenantsRecover, Scope::TenantsRedirect]).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v1/tenants/acme/recover");
    for (bad, field) in [
        (serde_json::json!({"new_vps_ip": "not-an-ip", "mailu_api_url": s.new.api_url}), "new_vps_ip"),
        (serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": "ftp://x"}), "mailu_api_url"),
        (serde_json::json!({"new_vps_ip": "127.0.0.1"}), "mailu_api_url"),
        (serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": s.new.api_url, "smtp_port": 0}), "smtp_port"),
    ] {
        let response = http.post(&url).bearer_auth(&token).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), 422, "{bad}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(answer["error"]["message"].as_str().unwrap().contains(field));
    }
    let body = serde_json::json!({
        "new_vps_ip": "127.0.0.1", "mailu_api_url": s.new.api_url, "mailu_api_token": API_TOKEN, "smtp_port": s.new.smtp_port,
    });
    let response = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let done: serde_json::Value = response.json().await.unwrap();
    assert_eq!(done["new_address"], "127.0.0.1");
    let password = SecretString::from("Acme-Admin-Pass".to_owned());
    assert_eq!(s.mailu.check_login(&s.new.target("admin@acme.example"), &password).await, LoginCheck::Accepted);

    // Again, now with a replacement the provisioning hook hands out (the user exists there).
    s.sink
        .set_provision_answer(serde_json::json!({
            "new_vps_ip": "127.0.0.1", "mailu_api_url": s.new.api_url, "smtp_port": s.new.smtp_port,
        }))
        .await;
    let again = s.env.core.recover_tenant_provisioned(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap();
    assert!(!again.created_user);
    assert_eq!(again.old_address.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.sink.hooks("provision").await[0]["body"]["tenant_id"], "acme");
    assert_eq!(s.sink.hooks("dns").await.len(), 2);
}

fn root_settings(env: &TestEnv) -> VaultSettings {
    VaultSettings {
        addrs: vec![env.bao.addr.clone()],
        mount: "smtp".into(),
        approle_mount: "approle".into(),
        auth: VaultAuth::Token(env.bao.root_token.clone()),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn a_drill_restores_into_a_scratch_openbao_and_measures_rto_and_rpo() {
    let sink = AlertSink::start();
    let env = TestEnv::builder()
        .config(|c| {
            c.drill_bao = bao_binary().display().to_string();
            c.drill_rpo_secs = 0;
            sink.configure(c);
        })
        .start()
        .await;
    smtp_vault::core::generate_backup_key(&env.config).unwrap();
    let core = Core::connect(&env.config, Needs::ALL, None).await.unwrap();
    for tenant in ["acme", "globex"] {
        let request = StoreCredentialRequest::from_json(credential_body(&format!("Drill-{tenant}"), "tok")).unwrap();
        core.store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap(), request)
            .await
            .unwrap();
    }
    core.run_backup(&Actor::operator(), &mut |_, _| {}).await.unwrap();
    // A change after the backup reaches the journal: nothing is lost.
    let request = StoreCredentialRequest::from_json(credential_body("Drill-acme-changed", "tok")).unwrap();
    core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();
    let report = core.run_dr_drill(&Actor::operator(), None, &mut |_, _| {}).await.unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!((report.tenants, report.verified, report.journal_records), (2, 2, 1));
    assert_eq!((report.lost_changes, report.rpo_ms), (0, Some(0)));
    assert!(report.rto_ms > 0);

    // A change that bypassed the console (and so the journal) would be lost: the drill says so,
    // fails against an RPO target of 0 and raises an alert.
    let live = Vault::connect(root_settings(&env)).await.unwrap();
    let mut document = live.read_credential(&TenantId::parse("globex").unwrap()).await.unwrap().unwrap();
    document.document.webmail_url = "https://changed.example/".into();
    live.write_credential(&TenantId::parse("globex").unwrap(), &document.document, document.version).await.unwrap();
    let failed = core.run_dr_drill(&Actor::operator(), None, &mut |_, _| {}).await.unwrap();
    assert!(!failed.ok);
    assert_eq!(failed.lost_changes, 1);
    assert!(failed.problems.iter().any(|p| p.contains("RPO")), "{:?}", failed.problems);
    let drills = core.list_drills(&Actor::operator(), 10).await.unwrap();
    assert_eq!(drills.len(), 2);
    assert_eq!(drills[0].drill_id, failed.drill_id);
    core.deliver_due_alerts().await.unwrap();
    assert_eq!(sink.emails_about("disaster-recovery drill failed").await.len(), 1);
    assert_eq!(sink.slack_about("disaster-recovery drill failed").await.len(), 1);

    // With no backup at all the drill fails (recorded), it does not pretend.
    let empty = TestEnv::builder().config(|c| c.drill_bao = bao_binary().display().to_string()).start().await;
    smtp_vault::core::generate_backup_key(&empty.config).unwrap();
    let bare = Core::connect(&empty.config, Needs::ALL, None).await.unwrap();
    let none = bare.run_dr_drill(&Actor::operator(), None, &mut |_, _| {}).await.unwrap();
    assert!(!none.ok);
    assert!(none.problems[0].contains("backup"), "{:?}", none.problems);
}

#[tokio::test]
async fn a_platform_admin_recovers_onto_a_new_server_from_the_tenant_page_with_a_step_up() {
    let s = setup().await;
    let client = ClientInfo::local();
    let core = &s.env.core;
    let mut admin =
        common::passkeys::TestAdmin::enroll(core, "plat@example.com", smtp_vault::model::Role::PlatformAdmin).await;
    let reviewer =
        common::passkeys::TestAdmin::enroll(core, "rev@example.com", smtp_vault::model::Role::SecurityReviewer).await;
    let refused =
        core.begin_recovery(&reviewer.actor, &reviewer.session, &acme(), "127.0.0.1", &s.new.api_url, None).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))));
    let bad = core.begin_recovery(&admin.actor, &admin.session, &acme(), "nope", &s.new.api_url, None).await;
    assert!(matches!(bad, Err(Error::InvalidField(_))));
    let options = core
        .begin_recovery(&admin.actor, &admin.session, &acme(), "127.0.0.1", &s.new.api_url, Some(s.new.smtp_port))
        .await
        .unwrap();
    let assertion = admin.assert(&options);
    let done = core
        .finish_recovery(&admin.actor, &admin.session, &client, &acme(), &assertion, Some(API_TOKEN.into()))
        .await
        .unwrap();
    assert_eq!(done.new_address, "127.0.0.1");
    let password = SecretString::from("Acme-Admin-Pass".to_owned());
    assert_eq!(s.mailu.check_login(&s.new.target("admin@acme.example"), &password).await, LoginCheck::Accepted);
    let replay = core.finish_recovery(&admin.actor, &admin.session, &client, &acme(), &assertion, None).await;
    assert!(matches!(replay, Err(Error::Unauthenticated)), "the step-up is single use");
}

/// Issue 15, point 3: a replacement is reached by address before DNS points at it, but Mailu's
/// certificates name hosts: the console reaches the API (https) and SMTP (implicit TLS, on a
/// port that is not 465) at `new_vps_ip` and checks each certificate against the host name,
/// trusting the configured CA. `mail.standin.example` resolves nowhere, so only a connection
/// pinned to the address can succeed, and only a name check against it can pass.
#[tokio::test]
async fn recovery_by_address_checks_each_certificate_against_the_host_name() {
    let s = setup().await;
    let host = "mail.standin.example";
    let mut body = credential_body("Acme-Admin-Pass", API_TOKEN);
    body["username"] = "admin@acme.example".into();
    body["smtp_host"] = host.into();
    body["smtp_port"] = s.old.smtps_port.into();
    body["smtp_tls"] = "implicit".into();
    body["mailu_api_url"] = format!("https://{host}:{}/api/v1", s.old.api_https_port).into();
    let request = StoreCredentialRequest::from_json(body).unwrap();
    s.env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();

    let url = format!("https://{host}:{}/api/v1", s.new.api_https_port);
    let request = RecoverTenantRequest::new("127.0.0.1", &url, Some(API_TOKEN.into()), Some(s.new.smtps_port)).unwrap();
    let done = s.env.core.recover_tenant(&Actor::operator(), &ClientInfo::local(), &acme(), &request).await;
    let done = done.unwrap();
    assert!(done.created_user);
    let target = smtp_vault::core::mail::MailTarget {
        smtp_port: s.new.smtps_port,
        smtp_tls: smtp_vault::model::SmtpTls::Implicit,
        ..s.new.target("admin@acme.example")
    };
    let password = SecretString::from("Acme-Admin-Pass".to_owned());
    assert_eq!(s.mailu.check_login(&target, &password).await, LoginCheck::Accepted);
    let meta = s.env.core.credential_metadata(&Actor::operator(), &acme()).await.unwrap();
    assert_eq!(
        (meta.mailu_api_url, meta.smtp_port, meta.smtp_tls),
        (url, s.new.smtps_port, smtp_vault::model::SmtpTls::Implicit)
    );
}
