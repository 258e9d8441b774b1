//! The attack suite of docs/security.md: each test is an attacker's requests against a real
//! console (OpenBao, the database, the mail stand-in with Dovecot), asserting that the attack
//! fails, that nothing leaves (a listener of the attacker's sees no secret) and that nothing is
//! written. One test per finding; the names are the ones docs/security.md lists.

use crate::common;

use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::passkeys::{TestAdmin, answer, http_admin, http_login, server_fn};
use crate::common::{TestEnv, credential_body};
use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::mail::{MailError, MailServer, Mailu};
use smtp_vault::core::{Actor, ClientInfo, Error};
use smtp_vault::model::{ProvisionCredentialRequest, Role, Scope, StoreCredentialRequest, TenantId};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// An attacker's HTTP listener on loopback: records every request it gets (raw) and answers
/// each with `answer` (a whole HTTP response).
struct Listener {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    async fn start(answer: String) -> Self {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", socket.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                let (record, answer) = (record.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 65_536];
                    let mut got = Vec::new();
                    // A request here is small: read what arrives within a short quiet period.
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buffer)).await
                    {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buffer[..n]);
                        if got.windows(4).any(|w| w == b"\r\n\r\n") && request_complete(&got) {
                            break;
                        }
                    }
                    record.lock().unwrap().push(String::from_utf8_lossy(&got).into_owned());
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Listener { url, seen }
    }

    /// A listener that answers like a Mailu that took the call.
    async fn mailu_like() -> Self {
        Self::start(http_answer(200, r#"{"code":200,"message":"ok","email":"admin@acme.example"}"#, "")).await
    }

    fn seen(&self) -> String {
        self.seen.lock().unwrap().join("\n----\n")
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn request_complete(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    body.len() >= length
}

fn http_answer(status: u16, body: &str, extra_headers: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

/// A console with `acme` provisioned on a real mail stand-in (so it has a real password that
/// logs in), the password it holds, and the stand-in.
async fn provisioned() -> (TestEnv, MailStandIn, SecretString) {
    let mail = MailStandIn::start();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &mail.ca_pem).unwrap();
    let (_, ca_path) = ca.keep().unwrap();
    let env = TestEnv::builder().config(|c| c.smtp_ca_file = Some(ca_path.clone())).start().await;
    let mut body = credential_body("unused", API_TOKEN);
    body.as_object_mut().unwrap().remove("password");
    body["smtp_host"] = "localhost".into();
    body["smtp_port"] = mail.smtp_port.into();
    body["mailu_api_url"] = mail.api_url.clone().into();
    let request = ProvisionCredentialRequest::from_json(body).unwrap();
    env.core.provision_credential(&Actor::operator(), &ClientInfo::local(), &acme(), request).await.unwrap();
    let secret = env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap();
    (env, mail, secret.password)
}

async fn events(env: &TestEnv, event_type: &str) -> Vec<String> {
    sqlx::query_as::<_, (String,)>("SELECT details FROM audit_events WHERE event_type = $1 ORDER BY seq")
        .bind(event_type)
        .fetch_all(env.core.db().pool())
        .await
        .unwrap()
        .into_iter()
        .map(|(d,)| d)
        .collect()
}

async fn stored_url(env: &TestEnv) -> String {
    env.core.credential_metadata(&Actor::operator(), &acme()).await.unwrap().mailu_api_url
}

// Finding 1: credential redirection.

#[tokio::test]
async fn attack_recover_token_redirects_the_password_to_its_own_listener() {
    let (env, mail, password) = provisioned().await;
    let base = env.serve().await;
    let listener = Listener::mailu_like().await;
    let recover_only = env.token(&[Scope::TenantsRecover]).await;
    let http = reqwest::Client::new();
    let url = format!("{base}/api/v1/tenants/acme/recover");
    let before = common::db_fingerprint(&env.core).await;
    // With and without a token of its own: the stored token must never go either.
    for body in [
        serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": format!("{}/api/v1", listener.url)}),
        serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": format!("{}/api/v1", listener.url), "mailu_api_token": "attacker"}),
    ] {
        let response = http.post(&url).bearer_auth(&recover_only).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 403, "{}", response.text().await.unwrap());
    }
    assert_eq!(listener.requests(), 0, "nothing may reach the attacker: {}", listener.seen());
    assert_eq!(common::db_fingerprint(&env.core).await, before, "a refused redirect writes nothing");
    assert_eq!(stored_url(&env).await, mail.api_url);

    // Even with `tenants:redirect`, the stored Mailu token is never sent to another URL.
    let redirect = env.token(&[Scope::TenantsRecover, Scope::TenantsRedirect]).await;
    let body = serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": format!("{}/api/v1", listener.url)});
    let response = http.post(&url).bearer_auth(&redirect).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("mailu_api_token"));
    assert_eq!(listener.requests(), 0, "{}", listener.seen());
    assert!(!listener.seen().contains(password.expose_secret()));
}

#[tokio::test]
async fn attack_a_redirect_with_its_scope_is_recorded_before_the_first_byte_leaves() {
    let (env, _mail, _) = provisioned().await;
    let listener = Listener::mailu_like().await;
    let token = Actor::ServiceToken {
        token_id: "t".into(),
        name: "dr-runbook".into(),
        scopes: vec![Scope::TenantsRecover, Scope::TenantsRedirect],
    };
    let request = smtp_vault::model::RecoverTenantRequest::new(
        "127.0.0.1",
        &format!("{}/api/v1", listener.url),
        Some("its-own-token".into()),
        Some(1),
    )
    .unwrap();
    // The listener is no Mailu with Dovecot behind it: the recovery fails at the SMTP check.
    let outcome = env.core.recover_tenant(&token, &ClientInfo::local(), &acme(), &request).await;
    assert!(matches!(outcome, Err(Error::MailServer(_))), "{outcome:?}");
    assert!(listener.requests() > 0, "the scope holder may send it there");
    assert!(!listener.seen().contains(API_TOKEN), "the stored token never goes to a new URL");
    // The change of destination was committed first, the failure after; security is alerted.
    let (changed_seq,): (i64,) =
        sqlx::query_as("SELECT seq FROM audit_events WHERE event_type = 'mailu_destination_changed'")
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
    let (failed_seq,): (i64,) = sqlx::query_as("SELECT seq FROM audit_events WHERE event_type = 'recovery_failed'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert!(changed_seq < failed_seq);
    let (alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'mailu_destination_changed'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(alerts, 1);
}

#[tokio::test]
async fn attack_an_incident_responder_recovers_onto_a_url_of_their_own() {
    let (env, mail, password) = provisioned().await;
    let base = env.serve().await;
    let listener = Listener::mailu_like().await;
    let (browser, _key) = http_admin(&env, &base, "resp@example.com", Role::IncidentResponder).await;
    let attacker_url = format!("{}/api/v1", listener.url);
    let form = [("tenant_id", "acme"), ("new_vps_ip", "127.0.0.1"), ("mailu_api_url", attacker_url.as_str())];
    let (status, body) = server_fn(&browser, &base, "begin_recovery", &form).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(listener.requests(), 0);
    assert!(!listener.seen().contains(password.expose_secret()));
    assert_eq!(stored_url(&env).await, mail.api_url);
}

#[tokio::test]
async fn attack_a_bare_admin_session_repoints_the_tenant_through_its_settings() {
    let (env, mail, _) = provisioned().await;
    let base = env.serve().await;
    let listener = Listener::mailu_like().await;
    let (browser, _key) = http_admin(&env, &base, "plat@example.com", Role::PlatformAdmin).await;
    let attacker_url = format!("{}/api/v1", listener.url);
    let form = [
        ("tenant_id", "acme"),
        ("rotation_period_days", "1"),
        ("contact_email", ""),
        ("mailu_api_url", attacker_url.as_str()),
        ("mailu_api_token", ""),
        ("rotate_after_reveal", "false"),
        ("reveal_approval", "false"),
        ("password_length", "32"),
        ("password_alphabet", "alphanumeric"),
        ("reveal_notice", "off"),
    ];
    let before = events(&env, "tenant_settings_changed").await.len();
    let (status, body) = server_fn(&browser, &base, "update_tenant_settings", &form).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("step_up_required"), "{body}");
    assert_eq!(stored_url(&env).await, mail.api_url);
    assert_eq!(events(&env, "tenant_settings_changed").await.len(), before);
    // A rotation now still goes to the real server, not to the attacker.
    env.core.rotate_now(&Actor::operator(), &ClientInfo::local(), &acme()).await.unwrap();
    assert_eq!(listener.requests(), 0, "{}", listener.seen());
}

#[tokio::test]
async fn attack_internal_and_plaintext_destinations_are_refused_by_the_outbound_policy() {
    // A console on the production policy (no plaintext, no internal networks).
    let env = TestEnv::builder()
        .config(|c| {
            c.outbound_allow_plaintext = false;
            c.outbound_allow_networks = Vec::new();
        })
        .start()
        .await;
    let writer = Actor::ServiceToken { token_id: "t".into(), name: "p".into(), scopes: vec![Scope::CredentialsWrite] };
    for url in [
        "http://mail.acme.example/api/v1",
        "https://169.254.169.254/latest/meta-data",
        "https://127.0.0.1:8200/v1/sys",
        "https://[::1]/api/v1",
        "https://10.0.0.5/api/v1",
        "https://[::ffff:127.0.0.1]/api/v1",
    ] {
        let mut body = credential_body("P4ssword-for-policy", "tok");
        body["mailu_api_url"] = url.into();
        let request = StoreCredentialRequest::from_json(body).unwrap();
        let refused = env.core.store_credential(&writer, &ClientInfo::local(), &acme(), request).await;
        assert!(matches!(refused, Err(Error::InvalidField(ref f)) if f.field == "mailu_api_url"), "{url}: {refused:?}");
    }
    // A name that resolves to loopback is refused when the console connects.
    let listener = Listener::mailu_like().await;
    let port = listener.url.rsplit(':').next().unwrap().to_owned();
    let strict = Mailu::new(Duration::from_secs(5), None, Default::default()).unwrap();
    let target = smtp_vault::core::mail::MailTarget {
        username: "admin@acme.example".into(),
        smtp_host: "localhost".into(),
        smtp_port: 1,
        smtp_tls: smtp_vault::model::SmtpTls::Starttls,
        api_url: format!("https://localhost:{port}/api/v1"),
        api_token: SecretString::from("tok".to_owned()),
        tls_name: None,
        api_address: None,
    };
    let result = strict.set_password(&target, &SecretString::from("Never-Sent-1".to_owned())).await;
    assert!(matches!(result, Err(MailError::Unreachable(_))), "{result:?}");
    assert_eq!(listener.requests(), 0, "{}", listener.seen());
    assert!(
        env.core.tenant_page(&Actor::operator(), &Default::default()).await.unwrap().tenants.is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn attack_a_hostile_mailu_redirects_the_password_and_answers_an_oracle() {
    let catcher = Listener::mailu_like().await;
    let redirecting = Listener::start(http_answer(
        307,
        "{}",
        &format!("Location: {}/api/v1/user/admin@acme.example\r\n", catcher.url),
    ))
    .await;
    let mailu = Mailu::new(Duration::from_secs(5), None, common::lab_policy()).unwrap();
    let target = smtp_vault::core::mail::MailTarget {
        username: "admin@acme.example".into(),
        smtp_host: "localhost".into(),
        smtp_port: 1,
        smtp_tls: smtp_vault::model::SmtpTls::Starttls,
        api_url: format!("{}/api/v1", redirecting.url),
        api_token: SecretString::from("tok".to_owned()),
        tls_name: None,
        api_address: None,
    };
    let password = SecretString::from("Redirected-Password-1".to_owned());
    assert!(matches!(mailu.set_password(&target, &password).await, Err(MailError::Malformed)));
    assert_eq!(catcher.requests(), 0, "a redirect is never followed: {}", catcher.seen());
    // The server's own words never travel on to a caller; an answer not shaped like Mailu's
    // is not taken for success.
    let chatty = Listener::start(http_answer(400, r#"{"message":"ORACLE-TEXT internal host db1 is up"}"#, "")).await;
    let error = mailu
        .set_password(
            &smtp_vault::core::mail::MailTarget { api_url: format!("{}/api/v1", chatty.url), ..target_clone(&target) },
            &password,
        )
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("ORACLE-TEXT"), "{error}");
    let portal = Listener::start(http_answer(200, "<html>captive portal</html>", "")).await;
    let error = mailu
        .set_password(
            &smtp_vault::core::mail::MailTarget { api_url: format!("{}/api/v1", portal.url), ..target_clone(&target) },
            &password,
        )
        .await;
    assert_eq!(error, Err(MailError::Malformed));
    // A user name is one path segment, whatever it holds.
    let spy = Listener::mailu_like().await;
    let odd = smtp_vault::core::mail::MailTarget {
        username: "a/../../domain?x=1#@acme.example".into(),
        api_url: format!("{}/api/v1", spy.url),
        ..target_clone(&target)
    };
    let _ = mailu.set_password(&odd, &password).await;
    assert!(spy.seen().starts_with("PATCH /api/v1/user/a%2F..%2F..%2Fdomain%3Fx=1%23@acme.example "), "{}", spy.seen());
}

fn target_clone(t: &smtp_vault::core::mail::MailTarget) -> smtp_vault::core::mail::MailTarget {
    smtp_vault::core::mail::MailTarget {
        username: t.username.clone(),
        smtp_host: t.smtp_host.clone(),
        smtp_port: t.smtp_port,
        smtp_tls: t.smtp_tls,
        api_url: t.api_url.clone(),
        api_token: t.api_token.clone(),
        tls_name: t.tls_name.clone(),
        api_address: t.api_address,
    }
}

// Finding 2: account takeover from a session.

#[tokio::test]
async fn attack_a_stolen_session_adds_a_passkey_invites_and_changes_roles() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let (victim, mut key) = http_admin(&env, &base, "victim@example.com", Role::PlatformAdmin).await;
    let (_other, _) = http_admin(&env, &base, "other@example.com", Role::SecurityReviewer).await;
    let other_id = env
        .core
        .list_admins(&Actor::operator())
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.email == "other@example.com")
        .unwrap()
        .admin_id;
    let before = common::db_fingerprint(&env.core).await;
    // The stolen cookie: the victim's own session, no passkey at hand.
    for (name, form) in [
        ("begin_add_passkey", vec![]),
        ("create_invite", vec![("email", "friend@evil.example"), ("role", "platform_admin")]),
        ("change_role", vec![("admin_id", other_id.as_str()), ("role", "platform_admin")]),
        ("disable_admin", vec![("admin_id", other_id.as_str())]),
    ] {
        let (status, body) = server_fn(&victim, &base, name, &form).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert!(body.contains("step_up_required"), "{name}: {body}");
    }
    assert_eq!(common::db_fingerprint(&env.core).await, before, "nothing written");
    // The victim's step-up in their own browser does not serve a second session.
    let (status, options) = server_fn(&victim, &base, "begin_confirm", &[]).await;
    assert_eq!(status, 200);
    let credential = answer(&mut key, &options);
    assert_eq!(server_fn(&victim, &base, "finish_confirm", &[("credential", &credential)]).await.0, 200);
    let (thief, _) = http_login(&env, &base, "victim@example.com", &mut key).await;
    let (status, body) = server_fn(&thief, &base, "begin_add_passkey", &[]).await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn attack_a_passkey_slipped_in_is_reported_when_added_and_at_its_first_step_up() {
    let sink = common::alerts::AlertSink::start();
    let env = TestEnv::builder().alerts(&sink).start().await;
    let mut admin = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    // The enrollment passkey's own step-up is routine.
    admin.step_up(&env.core).await;
    let options = env.core.begin_add_passkey(&admin.actor, &admin.session).await.unwrap();
    let mut slipped = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    let credential = common::passkeys::register(&mut slipped, &options);
    env.core.finish_add_passkey(&admin.actor, &admin.session, &admin.client(), &credential, "usb").await.unwrap();
    env.core.deliver_due_alerts().await.unwrap();
    assert_eq!(sink.slack_about("added the passkey").await.len(), 1, "security hears of it");
    let owner: Vec<_> = sink.emails_about("A passkey was added to your smtp-vault account").await;
    assert_eq!(owner.len(), 1, "the owner is mailed");
    assert!(owner[0].to_string().contains("alice@example.com"), "{}", owner[0]);
    // Its first step-up within a day is flagged, once.
    admin.authenticator = slipped;
    admin.step_up(&env.core).await;
    admin.step_up(&env.core).await;
    let (flagged,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'new_passkey_step_up'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(flagged, 1);
}

// Finding 3: invite tokens in the log, and invites that cannot be revoked: see
// tests/no_secret_in_logs.rs for the log; revocation here.

#[tokio::test]
async fn attack_a_leaked_invite_link_is_revoked_before_it_is_used() {
    let env = TestEnv::start().await;
    let invite = env
        .core
        .create_invite(&Actor::operator(), &ClientInfo::local(), "new@example.com", Role::PlatformAdmin)
        .await
        .unwrap();
    let token = invite.link.rsplit_once('/').unwrap().1.to_owned();
    assert_eq!(env.core.list_invites(&Actor::operator()).await.unwrap().len(), 1);
    env.core.revoke_invite(&Actor::operator(), &ClientInfo::local(), &invite.invite_id).await.unwrap();
    let session = smtp_vault::core::access::passkeys::SessionBinding::generate().unwrap();
    assert!(matches!(env.core.begin_enrollment(&session, &token, "Mallory").await, Err(Error::InvalidInput(_))));
    assert!(env.core.list_invites(&Actor::operator()).await.unwrap().is_empty());
    assert_eq!(events(&env, "invite_revoked").await.len(), 1);
    // A platform admin revokes only after a step-up.
    let mut admin = TestAdmin::enroll(&env.core, "boss@example.com", Role::PlatformAdmin).await;
    let second = env
        .core
        .create_invite(&Actor::operator(), &ClientInfo::local(), "two@example.com", Role::SecurityReviewer)
        .await
        .unwrap();
    let refused = env.core.revoke_invite(&admin.actor, &admin.client(), &second.invite_id).await;
    assert!(matches!(refused, Err(Error::StepUpRequired)));
    admin.step_up(&env.core).await;
    env.core.revoke_invite(&admin.actor, &admin.client(), &second.invite_id).await.unwrap();
}

// Finding 4: rate limits behind a proxy.

/// A `begin_login` through the proxy, as the client at `from`.
async fn login_from(http: &reqwest::Client, base: &str, from: &str, email: &str) -> u16 {
    http.post(format!("{base}/_app/begin_login"))
        .header("x-forwarded-for", from)
        .form(&[("email", email)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn session_rows(env: &TestEnv) -> i64 {
    let table = if env.db.is_postgres() { "tower_sessions.session" } else { "tower_sessions" };
    let (n,): (i64,) =
        sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(env.core.db().pool()).await.unwrap();
    n
}

#[tokio::test]
async fn attack_a_login_flood_through_the_proxy_locks_out_every_admin() {
    // The console behind a reverse proxy on loopback (every test request comes through it).
    let env = TestEnv::builder().config(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).start().await;
    let base = env.serve().await;
    let _alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let http = reqwest::Client::new();
    // One attacker: made-up emails, then Alice's, until refused.
    let mut refused_after = None;
    for i in 0..100 {
        let email = if i % 2 == 0 { format!("made-up-{i}@example.com") } else { "alice@example.com".into() };
        if login_from(&http, &base, "203.0.113.66", &email).await == 429 {
            refused_after = Some(i);
            break;
        }
    }
    assert!(refused_after.is_some(), "the attacker's address is limited");
    // A botnet: Alice's email from many addresses.
    for i in 0..40 {
        let _ = login_from(&http, &base, &format!("198.51.100.{i}"), "alice@example.com").await;
    }
    // Alice, through the same proxy from her own address, still gets her challenge.
    assert_eq!(login_from(&http, &base, "192.0.2.10", "alice@example.com").await, 200);
    // The audit trail names the client, not the proxy; a forged left-hand entry is not believed.
    let (forged,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'login_failed' AND client_ip = '203.0.113.66'",
    )
    .fetch_one(env.core.db().pool())
    .await
    .unwrap();
    assert!(forged > 0);
    assert_eq!(login_from(&http, &base, "10.9.9.9, 203.0.113.77", "ghost@example.com").await, 401);
    let (seen,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE client_ip IN ('127.0.0.1', '10.9.9.9')")
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
    assert_eq!(seen, 0, "no event carries the proxy's or a forged address");
    let (ghost,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE client_ip = '203.0.113.77'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(ghost, 1);
}

#[tokio::test]
async fn attack_a_forwarded_for_header_from_an_untrusted_peer_escapes_the_limit() {
    // No trusted proxy: whatever the caller claims, its address is its peer's.
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..40 {
        statuses.push(login_from(&http, &base, &format!("198.51.100.{i}"), &format!("x{i}@example.com")).await);
    }
    assert!(statuses.contains(&429), "rotating the header does not reset the limit: {statuses:?}");
    let (claimed,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE client_ip LIKE '198.51.100.%'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(claimed, 0);
    assert_eq!(session_rows(&env).await, 0, "anonymous calls write no session rows");
}

// Finding 5: server-function bodies.

#[tokio::test]
async fn attack_a_multi_megabyte_body_to_a_server_function_is_refused_unread() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let http = reqwest::Client::new();
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap()))
            .unwrap()
    };
    let before = rss();
    let big = vec![b'a'; 8 * 1024 * 1024];
    for _ in 0..8 {
        let declared = http
            .post(format!("{base}/_app/readiness"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(declared.status(), 413);
        // No declared length (chunked): cut off once past the limit.
        let status = chunked_post(&base, "/_app/readiness", 8 * 1024 * 1024).await;
        assert!(status.starts_with("HTTP/1.1 4"), "{status}");
    }
    // 128 MB were sent; the server (in this process) buffered none of it for long.
    let grown_mb = rss().saturating_sub(before) / 1024;
    assert!(grown_mb < 64, "memory grew by {grown_mb} MB");
}

/// POSTs `size` bytes as a chunked body over a raw connection (no declared length); returns
/// the status line the server answered, whenever it answered.
async fn chunked_post(base: &str, path: &str, size: usize) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = [format!("{:x}\r\n", 65_536).into_bytes(), vec![b'a'; 65_536], b"\r\n".to_vec()].concat();
    for _ in 0..size / 65_536 {
        // The server may stop reading (and answer) before the end.
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer)).await.unwrap().unwrap_or(0);
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
}

// Finding 6: reveal windows belong to the session that earned them.

#[tokio::test]
async fn attack_a_second_session_reads_plaintext_in_a_window_earned_elsewhere() {
    let (env, _mail, password) = provisioned().await;
    let base = env.serve().await;
    let (first, mut key) = http_admin(&env, &base, "alice@example.com", Role::PlatformAdmin).await;
    let (status, options) = server_fn(
        &first,
        &base,
        "begin_reveal",
        &[("tenant_id", "acme"), ("reason", "ticket OPS-9"), ("category", "other")],
    )
    .await;
    assert_eq!(status, 200);
    let credential = answer(&mut key, &options);
    assert_eq!(
        server_fn(&first, &base, "finish_reveal", &[("tenant_id", "acme"), ("credential", &credential)]).await.0,
        200
    );
    let (status, body) = server_fn(&first, &base, "reveal_credential", &[("tenant_id", "acme")]).await;
    assert_eq!(status, 200);
    assert!(body.contains(password.expose_secret()));
    // The same admin in another browser (a stolen cookie): no window of its own.
    let (second, _) = http_login(&env, &base, "alice@example.com", &mut key).await;
    let (status, body) = server_fn(&second, &base, "reveal_credential", &[("tenant_id", "acme")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains(password.expose_secret()));
    // Logging out closes the window it earned.
    assert_eq!(server_fn(&first, &base, "logout", &[]).await.0, 200);
    assert!(events(&env, "reveal_revoked").await.iter().any(|d| d.contains("logged_out")));
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM reveal_grants WHERE revoked_at_ms IS NULL AND expires_at_ms > $1")
            .bind(chrono::Utc::now().timestamp_millis())
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn attack_removing_the_passkey_that_earned_a_window_closes_it() {
    let (env, _mail, _) = provisioned().await;
    let mut admin = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let first = env.core.current_admin(&admin.actor).await.unwrap().passkeys[0].passkey_id.clone();
    // A second passkey (the one that stays).
    admin.step_up(&env.core).await;
    let options = env.core.begin_add_passkey(&admin.actor, &admin.session).await.unwrap();
    let mut spare = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    let credential = common::passkeys::register(&mut spare, &options);
    env.core.finish_add_passkey(&admin.actor, &admin.session, &admin.client(), &credential, "spare").await.unwrap();
    // A window earned with the first one.
    let options =
        env.core.begin_reveal(&admin.actor, &admin.session, &admin.client(), &acme(), "ticket OPS-10").await.unwrap();
    let assertion = admin.assert(&options);
    env.core.finish_reveal(&admin.actor, &admin.session, &admin.client(), &acme(), &assertion).await.unwrap();
    assert!(env.core.reveal_credential(&admin.actor, &admin.client(), &acme()).await.is_ok());
    // The first passkey is lost: removing it closes what it earned (the step-up too).
    env.core.remove_passkey(&admin.actor, &admin.client(), &first, false).await.unwrap();
    assert!(matches!(
        env.core.reveal_credential(&admin.actor, &admin.client(), &acme()).await,
        Err(Error::Forbidden(_))
    ));
    assert!(events(&env, "reveal_revoked").await.iter().any(|d| d.contains("passkey_removed")));
    let refused = env.core.change_role(&admin.actor, &admin.client(), "nobody", Role::SecurityReviewer).await;
    assert!(matches!(refused, Err(Error::StepUpRequired)), "{refused:?}");
}

// Finding 7: a database writer rewrites or cuts the audit chain.

/// A few audited changes: tokens created by the operator.
async fn some_events(env: &TestEnv, n: usize) {
    for i in 0..n {
        env.core.create_token(&Actor::operator(), &format!("t{i}"), &[Scope::AuditRead], None).await.unwrap();
    }
}

async fn head(env: &TestEnv) -> i64 {
    let (seq,): (i64,) =
        sqlx::query_as("SELECT seq FROM audit_head WHERE id = 1").fetch_one(env.core.db().pool()).await.unwrap();
    seq
}

#[tokio::test]
async fn attack_a_database_writer_rewrites_the_chain_and_fixes_up_the_head() {
    let env = TestEnv::start().await;
    some_events(&env, 6).await;
    let anchor = env.core.write_audit_anchor().await.unwrap().expect("the chain grew: an anchor");
    assert_eq!(anchor.seq, head(&env).await);
    some_events(&env, 3).await;
    assert_eq!(env.core.verify_audit_chain().await.unwrap().first_broken, None);
    let target = head(&env).await - 4;
    common::rewrite_chain_unkeyed(&env.core, target, Some((target, r#"{"name":"nothing to see"}"#))).await;
    let report = env.core.verify_audit_chain().await.unwrap();
    let broken = report.first_broken.expect("the rewrite shows");
    assert_eq!(broken.seq, target);
    assert!(broken.reason.starts_with("rewritten"), "{}", broken.reason);
    // The hourly check raises it.
    assert!(env.core.check_audit_chain().await.unwrap());

    // Another console: the events after the anchor passed off as written before the chain was
    // keyed (so the unkeyed formula would do). The anchor says where keying began.
    let env = TestEnv::start().await;
    some_events(&env, 6).await;
    let anchor = env.core.write_audit_anchor().await.unwrap().unwrap();
    some_events(&env, 3).await;
    sqlx::query("UPDATE audit_head SET keyed_from = seq + 1 WHERE id = 1").execute(env.core.db().pool()).await.unwrap();
    common::rewrite_chain_unkeyed(&env.core, anchor.seq + 1, None).await;
    let broken = env.core.verify_audit_chain().await.unwrap().first_broken.expect("the moved boundary shows");
    assert!(broken.reason.starts_with("rewritten") && broken.reason.contains("anchor"), "{}", broken.reason);
}

#[tokio::test]
async fn attack_a_database_writer_cuts_the_tail_and_silences_the_rules() {
    let env = TestEnv::start().await;
    some_events(&env, 8).await;
    env.core.evaluate_rules().await.unwrap();
    env.core.write_audit_anchor().await.unwrap().expect("an anchor");
    let pool = env.core.db().pool();
    let keep = head(&env).await - 3;
    sqlx::query("DELETE FROM audit_events WHERE seq > $1").bind(keep).execute(pool).await.unwrap();
    let (hash,): (String,) =
        sqlx::query_as("SELECT hash FROM audit_events WHERE seq = $1").bind(keep).fetch_one(pool).await.unwrap();
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(keep)
        .bind(&hash)
        .execute(pool)
        .await
        .unwrap();
    // The links are whole; the anchor on the backup target names the cut.
    let broken = env.core.verify_audit_chain().await.unwrap().first_broken.expect("the cut shows");
    assert_eq!(broken.seq, keep + 1);
    assert!(broken.reason.starts_with("truncated"), "{}", broken.reason);
    // The rules had read past the new head: they say so instead of going quiet.
    env.core.evaluate_rules().await.unwrap();
    let (kind, details): (String, String) =
        sqlx::query_as("SELECT kind, details FROM alerts WHERE kind = 'audit_chain_broken'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(kind, "audit_chain_broken");
    assert!(details.contains("truncated"), "{details}");
    // The chain grows past the old anchor again: the console does not anchor the cut chain
    // (which would launder it), and the old anchor still shows the difference.
    some_events(&env, 6).await;
    assert!(matches!(env.core.write_audit_anchor().await, Err(Error::AuditChain(_))));
    let broken = env.core.verify_audit_chain().await.unwrap().first_broken.expect("still shows");
    assert!(broken.reason.starts_with("rewritten"), "{}", broken.reason);
}

#[tokio::test]
async fn attack_a_bucket_writer_forges_an_anchor() {
    let env = TestEnv::start().await;
    some_events(&env, 4).await;
    let genuine = env.core.write_audit_anchor().await.unwrap().unwrap();
    // An anchor claiming fewer events (to excuse a cut), without the keyring's MAC.
    let mut forged = genuine.clone();
    forged.seq += 50;
    forged.mac = "00".repeat(32);
    let dir = env.dir.path().join("backups/audit-anchors");
    std::fs::write(dir.join(format!("{:020}.json", forged.seq)), serde_json::to_vec(&forged).unwrap()).unwrap();
    assert_eq!(env.core.latest_audit_anchor().await.unwrap(), Some(genuine));
    assert_eq!(env.core.verify_audit_chain().await.unwrap().first_broken, None);
}

// Finding 8 (in part): a caller's request id does not reach the audit trail.

#[tokio::test]
async fn attack_a_forged_request_id_lands_in_the_audit_trail() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let token = env.token(&[Scope::CredentialsWrite]).await;
    let response = reqwest::Client::new()
        .put(format!("{base}/api/v1/tenants/acme/smtp-credentials"))
        .bearer_auth(&token)
        .header("x-request-id", "forged-correlation-id")
        .json(&credential_body("Request-Id-Pass-1", "tok"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(answered, "forged-correlation-id");
    let (hits,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE request_id = 'forged-correlation-id'")
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
    assert_eq!(hits, 0);
}

// Finding 8 (in part): the subject of an alert silences it.

#[tokio::test]
async fn attack_an_admin_acknowledges_the_alert_about_themselves() {
    let env = TestEnv::start().await;
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    // Alice adds a passkey: security is alerted about her.
    alice.step_up(&env.core).await;
    let options = env.core.begin_add_passkey(&alice.actor, &alice.session).await.unwrap();
    let mut extra = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
    let credential = common::passkeys::register(&mut extra, &options);
    env.core.finish_add_passkey(&alice.actor, &alice.session, &alice.client(), &credential, "extra").await.unwrap();
    let alerts = env.core.list_alerts(&Actor::operator(), 10).await.unwrap();
    let about_alice = alerts.iter().find(|a| a.kind == "passkey_added" && a.audience == "security").unwrap();
    let refused = env.core.acknowledge_alert(&alice.actor, &alice.client(), &about_alice.alert_id).await;
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    assert!(events(&env, "alert_acknowledged").await.is_empty());
    env.core.acknowledge_alert(&bob.actor, &bob.client(), &about_alice.alert_id).await.unwrap();
    assert_eq!(events(&env, "alert_acknowledged").await.len(), 1);
}

#[tokio::test]
async fn attack_a_write_token_repoints_an_existing_tenant_by_storing_over_it() {
    let (env, mail, _) = provisioned().await;
    let base = env.serve().await;
    let writer = env.token(&[Scope::CredentialsWrite]).await;
    let mut body = credential_body("Attacker-Known-Pass-1", "attacker-token");
    body["mailu_api_url"] = "https://mail.attacker.example/api/v1".into();
    let before = common::db_fingerprint(&env.core).await;
    let url = format!("{base}/api/v1/tenants/acme/smtp-credentials");
    let response = reqwest::Client::new().put(&url).bearer_auth(&writer).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 403, "{}", response.text().await.unwrap());
    assert_eq!(common::db_fingerprint(&env.core).await, before);
    assert_eq!(stored_url(&env).await, mail.api_url);
    // With the scope it is allowed, and recorded as a change of destination.
    let redirect = env.token(&[Scope::CredentialsWrite, Scope::TenantsRedirect]).await;
    let response = reqwest::Client::new().put(&url).bearer_auth(&redirect).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(events(&env, "mailu_destination_changed").await.len(), 1);
}

// Finding 8 (in part): secrets on a command line are visible to every local user.

#[test]
fn attack_secrets_on_the_command_line_show_in_the_process_list() {
    for args in [
        vec!["--vault-token", "hvs.secret-in-ps", "backup", "list"],
        vec!["backup", "list", "--vault-secret-id=secret-in-ps"],
        vec![
            "recover",
            "--tenant",
            "acme",
            "--new-vps-ip",
            "192.0.2.1",
            "--mailu-api-url",
            "https://m",
            "--mailu-api-token",
            "secret-in-ps",
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtp-vault")).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains("process list") && err.contains("set "), "{err}");
        assert!(!err.contains("secret-in-ps"), "the refusal does not echo the secret: {err}");
    }
    // The variables work (help lists them nowhere as flags).
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_smtp-vault")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("--vault-token") && !help.contains("--vault-secret-id"), "{help}");
}

// Finding 8 (in part): two platform admins demote each other at the same moment.

#[tokio::test]
async fn attack_two_admins_demote_each_other_at_once() {
    let env = TestEnv::start().await;
    let mut alice = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    let bob = TestAdmin::enroll(&env.core, "bob@example.com", Role::PlatformAdmin).await;
    let id = |a: &TestAdmin| match &a.actor {
        Actor::Admin { admin_id, .. } => admin_id.clone(),
        _ => unreachable!(),
    };
    let (alice_id, bob_id) = (id(&alice), id(&bob));
    alice.step_up(&env.core).await;
    let count = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM admins WHERE role = 'platform_admin' AND active = 1")
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
        n
    };
    if !env.db.is_postgres() {
        // SQLite runs write transactions one at a time: the second demotion sees the first.
        env.core.change_role(&alice.actor, &alice.client(), &bob_id, Role::SecurityReviewer).await.unwrap();
        let refused =
            env.core.change_role(&Actor::operator(), &ClientInfo::local(), &alice_id, Role::SecurityReviewer).await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{refused:?}");
        assert_eq!(count().await, 1);
        return;
    }
    // Bob's demotion of Alice is in flight (uncommitted) on its own connection...
    let mut bobs = env.core.db().pool().begin().await.unwrap();
    sqlx::query("UPDATE admins SET role = 'security_reviewer' WHERE admin_id = $1")
        .bind(&alice_id)
        .execute(&mut *bobs)
        .await
        .unwrap();
    // ...while Alice demotes Bob.
    let core = env.core.clone();
    let (actor, client) = (alice.actor.clone(), alice.client());
    let target = bob_id.clone();
    let alices = tokio::spawn(async move { core.change_role(&actor, &client, &target, Role::SecurityReviewer).await });
    // Bob's commits once Alice's is either done or waiting for his rows.
    let pool = env.core.db().pool().clone();
    common::wait_until("Alice's demotion to finish or wait on a lock", Duration::from_secs(20), || {
        let pool = pool.clone();
        let finished = alices.is_finished();
        async move {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            finished || waiting > 0
        }
    })
    .await;
    bobs.commit().await.unwrap();
    let outcome = alices.await.unwrap();
    assert!(matches!(outcome, Err(Error::InvalidInput(_))), "{outcome:?}");
    assert_eq!(count().await, 1, "one platform admin remains");
}

// Finding 8 (in part): anonymous probes turn into database and Vault calls.

#[tokio::test]
async fn attack_a_flood_of_anonymous_probes_queries_the_database_and_vault_each_time() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let http = reqwest::Client::new();
    let probes = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("smtp_vault_readiness_probes_total "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let before = probes(&http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap());
    let calls = (0..100).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let path = if i % 2 == 0 { "readyz" } else { "metrics" };
            http.get(format!("{base}/{path}")).send().await.unwrap().status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = probes(&http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap());
    // A hundred anonymous calls share a handful of probes (one per moment), not one each.
    assert!(after - before < 10.0, "{before} -> {after}");
}

// Review finding 10: whoever can write Vault re-points a tenant (the sealed token and password
// are bound to tenant and field, not to where they go).

#[tokio::test]
async fn attack_a_vault_writer_repoints_a_tenant_at_its_own_listener() {
    let (env, mail, password) = provisioned().await;
    let listener = Listener::mailu_like().await;
    let (status, current) = env.vault_root(reqwest::Method::GET, "smtp/data/acme/admin", None).await;
    assert_eq!(status, 200, "{current}");
    let mut document = current["data"]["data"].clone();
    document["mailu_api_url"] = listener.url.clone().into();
    let version = current["data"]["metadata"]["version"].as_u64().unwrap();
    let (status, body) = env
        .vault_root(
            reqwest::Method::POST,
            "smtp/data/acme/admin",
            Some(serde_json::json!({"data": document, "options": {"cas": version}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A rotation, the daily heartbeat and a consumer's read all refuse to follow it.
    let rotated = env.core.rotate_credential(&Actor::operator(), &ClientInfo::local(), &acme(), "manual").await;
    assert!(matches!(rotated, Err(Error::DestinationMismatch)), "{rotated:?}");
    env.core.heartbeat().await.unwrap();
    assert_eq!(listener.requests(), 0, "nothing reached the listener: {}", listener.seen());
    assert!(!listener.seen().contains(password.expose_secret()));
    let (alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'mailu_destination_mismatch'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(alerts, 1, "alerted once");
    drop(mail);
}

/// docs/security.md row 13: a Vault writer flips the tenant's TLS mode, which would silence its
/// heartbeat (every check "could not tell") and tell consumers another mode than the page.
#[tokio::test]
async fn attack_a_vault_writer_flips_the_tls_mode_to_silence_the_heartbeat() {
    let (env, mail, _) = provisioned().await;
    let (status, current) = env.vault_root(reqwest::Method::GET, "smtp/data/acme/admin", None).await;
    assert_eq!(status, 200, "{current}");
    let mut document = current["data"]["data"].clone();
    assert_eq!(document["smtp_tls"], "starttls");
    document["smtp_tls"] = "implicit".into();
    let version = current["data"]["metadata"]["version"].as_u64().unwrap();
    let body = serde_json::json!({"data": document, "options": {"cas": version}});
    let (status, body) = env.vault_root(reqwest::Method::POST, "smtp/data/acme/admin", Some(body)).await;
    assert_eq!(status, 200, "{body}");
    env.core.heartbeat().await.unwrap();
    let (alerts,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'mailu_destination_mismatch'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(alerts, 1, "alerted, not a quiet \"could not check\"");
    drop(mail);
}

// Review finding 9: a restore or journal replay brings back an older Mailu API URL silently.

#[tokio::test]
async fn attack_a_restore_brings_back_an_old_destination_without_a_trace() {
    let (env, mail, _) = provisioned().await;
    smtp_vault::core::generate_backup_key(&env.config).unwrap();
    let core = smtp_vault::core::Core::connect(&env.config, smtp_vault::core::Needs::ALL, None).await.unwrap();
    let backup = core.run_backup(&Actor::operator(), &mut |_, _| {}).await.unwrap();
    // Later the tenant moves to another Mailu (a second stand-in), recorded as it should be.
    let moved = MailStandIn::start();
    let mut admin = TestAdmin::enroll(&core, "alice@example.com", Role::PlatformAdmin).await;
    admin.step_up(&core).await;
    let settings = smtp_vault::model::TenantSettingsInput {
        rotation_period_days: 90,
        contact_email: None,
        mailu_api_url: moved.api_url.clone(),
        mailu_api_token: Some(SecretString::from(API_TOKEN)),
        rotate_after_reveal: false,
        reveal_approval: None,
        password_policy: None,
        reveal_notice: None,
    };
    core.update_tenant_settings(&admin.actor, &admin.client(), &acme(), settings).await.unwrap();
    let changes_before = events(&env, "mailu_destination_changed").await.len();
    // The backup from before the move is restored over it.
    let options = smtp_vault::core::backup::RestoreOptions { force: true, skip_journal: true, ..Default::default() };
    core.restore_backup(&Actor::operator(), &backup.manifest.id, &options, &mut |_, _| {}).await.unwrap();
    let changes = events(&env, "mailu_destination_changed").await;
    assert_eq!(changes.len(), changes_before + 1, "the restore's re-pointing is recorded");
    assert!(changes.last().unwrap().contains("\"via\":\"restore\""), "{changes:?}");
    // The console's record follows, so the restored tenant keeps working (and the Vault-writer
    // check above does not mistake the restore for an attack).
    assert_eq!(stored_url(&env).await, mail.api_url);
    let rotated = core.rotate_credential(&Actor::operator(), &ClientInfo::local(), &acme(), "manual").await;
    assert!(rotated.is_ok(), "{rotated:?}");
}

// Finding 8 (in part): a cloned authenticator is only a generic failure.

#[tokio::test]
async fn attack_a_cloned_passkey_is_used_beside_the_original() {
    let env = TestEnv::start().await;
    let mut admin = TestAdmin::enroll(&env.core, "alice@example.com", Role::PlatformAdmin).await;
    admin.step_up(&env.core).await;
    admin.step_up(&env.core).await;
    // The original has signed far more often than this copy (the console saw counter 100;
    // the copy is at 3): what a copy used beside its original looks like.
    let pool = env.core.db().pool();
    let (stored,): (String,) = sqlx::query_as("SELECT passkey FROM passkeys").fetch_one(pool).await.unwrap();
    let mut passkey: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(passkey["cred"]["counter"], 2, "the counter the console keeps");
    passkey["cred"]["counter"] = 100.into();
    sqlx::query("UPDATE passkeys SET passkey = $1").bind(passkey.to_string()).execute(pool).await.unwrap();
    let options = env.core.begin_confirm(&admin.actor, &admin.session).await.unwrap();
    let credential = admin.assert(&options);
    let refused = env.core.finish_confirm(&admin.actor, &admin.session, &admin.client(), &credential).await;
    assert!(matches!(refused, Err(Error::Unauthenticated)), "{refused:?}");
    assert!(events(&env, "reauth_failed").await.iter().any(|d| d.contains("counter_regressed")));
    let (alerts,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM alerts WHERE kind = 'passkey_counter_regressed' AND severity = 'critical'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(alerts, 1);
}

// Review finding 1e: the alert relay's name resolves inside (lettre would resolve it itself).

#[tokio::test]
async fn attack_the_alert_relay_name_points_at_an_internal_address() {
    use smtp_vault::core::alerting::channels::{Channels, Notice};
    use smtp_vault::core::outbound::OutboundPolicy;
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let connections = Arc::new(Mutex::new(0usize));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = socket.accept().await {
            *counted.lock().unwrap() += 1;
        }
    });
    // A name (not a literal address, which start-up refuses) that resolves to loopback, under
    // a policy that allows no internal network.
    let url = SecretString::from(format!("smtp://localhost:{port}?tls=none"));
    let policy = OutboundPolicy::new(true, Vec::new());
    let channels = Channels::new(
        Some(&url),
        &"console@example.com".parse().unwrap(),
        &["sec@example.com".parse().unwrap()],
        None,
        None,
        &policy,
    )
    .expect("a name passes at start-up");
    let email = channels.email.as_ref().unwrap();
    let notice = Notice {
        id: "n1".into(),
        subject: "s".into(),
        body: "b".into(),
        severity: "critical".into(),
        fields: Vec::new(),
    };
    let refused = email.send(&channels.security_recipients, &notice).await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("outbound policy")), "{refused:?}");
    assert_eq!(*connections.lock().unwrap(), 0, "no connection reached the internal address");
}

/// docs/security.md row 13: a hostile mail server that offers no STARTTLS (or a Vault writer who
/// flips the mode, hoping for a plaintext fallback) gets no AUTH: STARTTLS is required, never
/// opportunistic.
#[tokio::test]
async fn attack_a_mail_server_without_starttls_is_sent_the_password_in_the_clear() {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(String::new()));
    let heard = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = server.accept().await {
            let heard = heard.clone();
            tokio::spawn(async move {
                // A server that speaks plain SMTP and offers AUTH, but no STARTTLS.
                let _ = socket.write_all(b"220 mail.acme.example ESMTP\r\n").await;
                let mut buffer = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buffer[..n]).to_string();
                    heard.lock().unwrap().push_str(&text);
                    let reply: &[u8] = if text.starts_with("EHLO") {
                        b"250-mail.acme.example\r\n250 AUTH PLAIN LOGIN\r\n"
                    } else if text.starts_with("AUTH") {
                        b"235 2.7.0 Logged in\r\n"
                    } else {
                        b"250 OK\r\n"
                    };
                    let _ = socket.write_all(reply).await;
                }
            });
        }
    });
    let mailu = Mailu::new(Duration::from_secs(5), None, common::lab_policy()).unwrap();
    let target = smtp_vault::core::mail::MailTarget {
        username: "admin@acme.example".into(),
        smtp_host: "localhost".into(),
        smtp_port: port,
        smtp_tls: smtp_vault::model::SmtpTls::Starttls,
        api_url: "http://127.0.0.1:1/api/v1".into(),
        api_token: SecretString::from("tok".to_owned()),
        tls_name: None,
        api_address: None,
    };
    let check = mailu.check_login(&target, &SecretString::from("Never-In-Clear-1".to_owned())).await;
    assert!(matches!(check, smtp_vault::core::mail::LoginCheck::Unknown(_)), "{check:?}");
    let heard = seen.lock().unwrap().clone();
    assert!(heard.contains("EHLO"), "the server was reached: {heard}");
    assert!(!heard.contains("AUTH"), "no AUTH without TLS: {heard}");
}
