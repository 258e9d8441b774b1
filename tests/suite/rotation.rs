//! Rotation against real OpenBao, the database and the mail stand-in (Dovecot + mailu-sim):
//! the staged protocol, ≥ 200 randomized crash trials with repair, Mailu faults with bounded
//! retries ending in `needs_reconcile` + an alert, and zero downtime for a re-reading consumer.

use crate::common;

use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::{TestEnv, credential_body};
use secrecy::{ExposeSecret, SecretString};
use smtp_vault::core::mail::{LoginCheck, MailServer, Mailu};
use smtp_vault::core::rotation::{RotationResult, RotationStep};
use smtp_vault::core::{Actor, ClientInfo, Core};
use smtp_vault::model::{Scope, StoreCredentialRequest, TenantId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

struct Setup {
    env: TestEnv,
    mail: MailStandIn,
    mailu: Mailu,
}

async fn setup(tenants: &[&str]) -> Setup {
    setup_with(tenants, None).await
}

async fn setup_with(tenants: &[&str], clock: Option<smtp_vault::core::clock::SharedClock>) -> Setup {
    let mail = MailStandIn::start();
    let ca = mail.ca_path();
    let env = TestEnv::builder()
        .maybe_clock(clock)
        .config(|c| {
            c.smtp_ca_file = Some(ca);
            c.rotation_retry_ms = 10;
        })
        .start()
        .await;
    let mailu = Mailu::new(Duration::from_secs(5), Some(mail.ca_pem.clone()), common::lab_policy()).unwrap();
    for tenant in tenants {
        let email = format!("admin@{tenant}.example");
        let password = format!("Initial-{tenant}-Pass");
        mailu.create_user(&mail.target(&email), &SecretString::from(password.clone())).await.unwrap();
        let mut body = credential_body(&password, API_TOKEN);
        body["username"] = email.into();
        body["smtp_host"] = "localhost".into();
        body["smtp_port"] = mail.smtp_port.into();
        body["mailu_api_url"] = mail.api_url.clone().into();
        let request = StoreCredentialRequest::from_json(body).unwrap();
        env.core
            .store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap(), request)
            .await
            .unwrap();
    }
    Setup { env, mail, mailu }
}

fn system() -> Actor {
    Actor::System { job: "test" }
}

/// The password a consumer gets from the console right now, and whether it logs in.
async fn consumer_view(s: &Setup, core: &Core, tenant: &str) -> (String, LoginCheck) {
    let id = TenantId::parse(tenant).unwrap();
    let secret = core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &id).await.unwrap();
    let check = s.mailu.check_login(&s.mail.target(&secret.username), &secret.password).await;
    (secret.password.expose_secret().to_owned(), check)
}

async fn pending_exists(s: &Setup, tenant: &str) -> bool {
    let (status, _) = s.env.vault_root(reqwest::Method::GET, &format!("smtp/data/{tenant}/pending"), None).await;
    status == 200
}

#[tokio::test]
async fn a_rotation_changes_the_password_on_the_server_and_in_vault() {
    let s = setup(&["acme"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let (before, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
    let result = s.env.core.rotate_credential(&system(), &ClientInfo::local(), &acme, "manual").await.unwrap();
    assert_eq!(result, RotationResult::Rotated { version: 2 });
    let (after, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
    assert_ne!(before, after);
    let old = s.mailu.check_login(&s.mail.target("admin@acme.example"), &SecretString::from(before)).await;
    assert_eq!(old, LoginCheck::Rejected, "the old password no longer works");
    assert!(!pending_exists(&s, "acme").await);
    let meta = s.env.core.credential_metadata(&Actor::operator(), &acme).await.unwrap();
    assert_eq!((meta.version, meta.state.as_str()), (2, "active"));
    assert!(meta.rotated_at.is_some());
    let (raw_status, raw) = s.env.vault_root(reqwest::Method::GET, "smtp/data/acme/admin", None).await;
    assert_eq!(raw_status, 200);
    assert!(!raw.to_string().contains(&after), "Vault holds the envelope, not the plaintext");
}

#[tokio::test]
async fn crashes_at_any_step_are_repaired_and_never_lose_a_credential() {
    let tenants = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"];
    let s = setup(&tenants).await;
    let seed = std::env::var("ROTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| getrandom::u64().unwrap() | 1);
    println!("ROTATION_SEED={seed}");
    let mut rng = common::Rng(seed);
    let trials = 200;
    let (mut crashed, mut clean) = (0, 0);
    for trial in 0..trials {
        let tenant = tenants[rng.next(tenants.len() as u64) as usize];
        let id = TenantId::parse(tenant).unwrap();
        // One in six trials runs without a crash; the rest stop after a random step.
        let pick = rng.next(RotationStep::ALL.len() as u64 + 1) as usize;
        let step = RotationStep::ALL.get(pick).copied();
        let fired = Arc::new(AtomicBool::new(false));
        let core = {
            let (fired, target_tenant) = (fired.clone(), id.clone());
            s.env.core.clone().with_fault_injector(Arc::new(move |t: &TenantId, at: RotationStep| {
                Some(at) == step && *t == target_tenant && !fired.swap(true, Ordering::SeqCst)
            }))
        };
        let outcome = core.rotate_credential(&system(), &ClientInfo::local(), &id, "scheduled").await;
        match (step, &outcome) {
            (None, Ok(RotationResult::Rotated { .. })) => clean += 1,
            (Some(_), Err(_)) => crashed += 1,
            other => panic!("trial {trial} (seed {seed}): unexpected {other:?}"),
        }
        // Right after the "crash", before any repair, what Vault hands out logs in.
        let (_, check) = consumer_view(&s, &s.env.core, tenant).await;
        assert_eq!(check, LoginCheck::Accepted, "trial {trial} (seed {seed}, {tenant}, {step:?}): credential lost");
        // "Restart": a core without the fault settles it.
        let repaired = s.env.core.repair_rotation(&system(), &ClientInfo::local(), &id).await.unwrap();
        assert!(matches!(repaired, RotationResult::Rotated { .. }), "trial {trial}: {repaired:?}");
        assert!(!pending_exists(&s, tenant).await, "trial {trial}: pending left behind");
        let (_, check) = consumer_view(&s, &s.env.core, tenant).await;
        assert_eq!(check, LoginCheck::Accepted, "trial {trial}: after repair");
    }
    assert_eq!(crashed + clean, trials);
    assert!(crashed > 100 && clean > 10, "both kinds ran: {crashed} crashed, {clean} clean");
    let (states,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE state <> 'active'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(states, 0);
    assert!(s.env.core.verify_audit_chain().await.unwrap().first_broken.is_none());
}

#[tokio::test]
async fn mailu_faults_are_retried_a_bounded_number_of_times_then_need_reconcile_with_an_alert() {
    let s = setup(&["acme"]).await;
    let acme = TenantId::parse("acme").unwrap();
    // (A 429 is handed to the next cycle instead: see a_rate_limited_rotation_is_handed_to_the_next_cycle_without_an_alarm.)
    for mode in ["500", "down"] {
        let (before, _) = consumer_view(&s, &s.env.core, "acme").await;
        s.mail.fault(mode, 1000).await;
        let result = s.env.core.rotate_credential(&system(), &ClientInfo::local(), &acme, "scheduled").await.unwrap();
        assert!(matches!(result, RotationResult::NeedsReconcile { .. }), "{mode}: {result:?}");
        s.mail.fault("", 0).await;
        // The server never got a password Vault does not have: the current one still works.
        let still =
            s.mailu.check_login(&s.mail.target("admin@acme.example"), &SecretString::from(before.clone())).await;
        assert_eq!(still, LoginCheck::Accepted, "{mode}");
        let meta = s.env.core.credential_metadata(&Actor::operator(), &acme).await.unwrap();
        assert_eq!(meta.state.as_str(), "needs_reconcile");
        let (attempts,): (i64,) = sqlx::query_as("SELECT rotation_attempts FROM tenants WHERE tenant_id = 'acme'")
            .fetch_one(s.env.core.db().pool())
            .await
            .unwrap();
        assert_eq!(attempts, 3, "{mode}: bounded retries");
        // The reconcile settles it (rolled back: the server kept the current password).
        let settled = s.env.core.repair_rotation(&system(), &ClientInfo::local(), &acme).await.unwrap();
        assert!(matches!(settled, RotationResult::Rotated { .. }));
        assert!(!pending_exists(&s, "acme").await);
    }
    let (alerts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'rotation_needs_reconcile' AND tenant_id = 'acme'")
            .fetch_one(s.env.core.db().pool())
            .await
            .unwrap();
    assert_eq!(alerts, 2, "one alert per failed rotation");
    let listed = s.env.core.list_alerts(&Actor::operator(), 100).await.unwrap();
    assert_eq!(listed.iter().filter(|a| a.kind == "rotation_needs_reconcile" && a.severity == "critical").count(), 2);
    // A change the server silently ignores is noticed by the SMTP check and retried with a new
    // password; the rotation still completes.
    s.mail.fault("ignore_password", 1).await;
    let result = s.env.core.rotate_credential(&system(), &ClientInfo::local(), &acme, "manual").await.unwrap();
    assert!(matches!(result, RotationResult::Rotated { .. }), "{result:?}");
    let (_, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
}

#[tokio::test]
async fn a_consumer_that_re_reads_once_never_fails_during_100_rotations() {
    const TENANTS: [&str; 5] = ["z0", "z1", "z2", "z3", "z4"];
    let s = Arc::new(setup(&TENANTS).await);
    // Consumers that read just before a switch fail a login by design (then re-read); from one
    // address, five such users before any success would trip Mailu's limit, as a deployment
    // whose console and consumers share an address without an exemption would. A successful
    // login first exempts the address, as in steady operation.
    let first = SecretString::from("Initial-z0-Pass".to_owned());
    assert_eq!(s.mailu.check_login(&s.mail.target("admin@z0.example"), &first).await, LoginCheck::Accepted);
    let base = s.env.serve().await;
    let token = s.env.token(&[smtp_vault::model::Scope::CredentialsReadSecret]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let cycles: Arc<Vec<AtomicU64>> = Arc::new(TENANTS.iter().map(|_| AtomicU64::new(0)).collect());
    // One consumer per tenant: read through the API, log in, and on failure read once more.
    let consumers: Vec<_> = TENANTS
        .iter()
        .enumerate()
        .map(|(i, tenant)| {
            let (s, stop, failures, cycles, base, token) =
                (s.clone(), stop.clone(), failures.clone(), cycles.clone(), base.clone(), token.clone());
            let tenant = (*tenant).to_owned();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let url = format!("{base}/api/v1/tenants/{tenant}/smtp-credentials/secret");
                let read = || {
                    let request = http.get(&url).bearer_auth(&token).send();
                    async move {
                        let body: serde_json::Value = request.await.unwrap().json().await.unwrap();
                        (
                            body["username"].as_str().unwrap().to_owned(),
                            SecretString::from(body["password"].as_str().unwrap().to_owned()),
                        )
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    let (user, password) = read().await;
                    let t = s.mail.target(&user);
                    if s.mailu.check_login(&t, &password).await != LoginCheck::Accepted {
                        let (_, again) = read().await;
                        if s.mailu.check_login(&t, &again).await != LoginCheck::Accepted {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    cycles[i].fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // 20 rotations per tenant, 100 in all; each waits until its consumer has completed two
    // more cycles, so every rotation happens while the consumer is logging in.
    let rotators: Vec<_> = TENANTS
        .iter()
        .enumerate()
        .map(|(i, tenant)| {
            let (s, cycles) = (s.clone(), cycles.clone());
            let id = TenantId::parse(tenant).unwrap();
            tokio::spawn(async move {
                for _ in 0..20 {
                    let result =
                        s.env.core.rotate_credential(&system(), &ClientInfo::local(), &id, "scheduled").await.unwrap();
                    assert!(matches!(result, RotationResult::Rotated { .. }), "{result:?}");
                    // Counted after the rotation: the next one starts only once a whole consumer
                    // cycle began after this one ended, so each cycle spans at most one switch.
                    let seen = cycles[i].load(Ordering::SeqCst);
                    common::wait_until("the consumer to log in twice more", Duration::from_secs(30), || {
                        let cycles = cycles.clone();
                        async move { cycles[i].load(Ordering::SeqCst) >= seen + 2 }
                    })
                    .await;
                }
            })
        })
        .collect();
    for rotator in rotators {
        rotator.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for consumer in consumers {
        consumer.await.unwrap();
    }
    let (rotated,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_rotated'")
            .fetch_one(s.env.core.db().pool())
            .await
            .unwrap();
    assert_eq!(rotated, 100);
    assert_eq!(failures.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn provisioning_and_rotation_through_the_api_and_the_cli() {
    let s = setup(&[]).await;
    let base = s.env.serve().await;
    let token =
        s.env.token(&[smtp_vault::model::Scope::CredentialsWrite, smtp_vault::model::Scope::CredentialsRotate]).await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "username": "admin@newco.example", "smtp_host": "localhost", "smtp_port": s.mail.smtp_port,
        "webmail_url": "https://mail.newco.example/", "mailu_api_url": s.mail.api_url, "mailu_api_token": API_TOKEN,
    });
    let url = format!("{base}/api/v1/tenants/newco/smtp-credentials/provision");
    let response = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    // The generated password is in Vault and logs in; the Mailu user was created for it.
    let (_, check) = consumer_view(&s, &s.env.core, "newco").await;
    assert_eq!(check, LoginCheck::Accepted);
    // Provisioning twice is refused: rotate instead.
    let again = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(again.status(), 400);

    let rotated: serde_json::Value = http
        .post(format!("{base}/api/v1/tenants/newco/smtp-credentials/rotate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((rotated["result"].as_str(), rotated["version"].as_u64()), (Some("rotated"), Some(2)));

    // A failing mail server during provisioning leaves a clear error and the tenant flagged.
    s.mail.fault("500", 100).await;
    let mut broken = body.clone();
    broken["username"] = "admin@broken.example".into();
    let failed = http
        .post(format!("{base}/api/v1/tenants/broken/smtp-credentials/provision"))
        .bearer_auth(&token)
        .json(&broken)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    let answer: serde_json::Value = failed.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "mail_server_error");
    s.mail.fault("", 0).await;

    // The CLI rotates a tenant, then everything due (nothing else is due yet).
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_smtp-vault"))
            .args(args)
            .env("DATABASE_URL", &s.env.db.url)
            .env("VAULT_ADDR", &s.env.bao.addr)
            .env("VAULT_ROLE_ID", &s.env.role_id)
            .env("VAULT_SECRET_ID", s.env.secret_id.expose_secret())
            .env("SMTP_VAULT_KEYRING", &s.env.config.keyring_path)
            .env("SMTP_VAULT_SMTP_CA_FILE", s.mail.ca_path())
            .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
            .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
            .output()
            .unwrap()
    };
    let out = cli(&["rotate", "--tenant", "newco"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("newco: rotated, version 3"));
    let out = cli(&["rotate", "--due"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 due"));
    let (_, check) = consumer_view(&s, &s.env.core, "newco").await;
    assert_eq!(check, LoginCheck::Accepted);
}

/// Issue 15, point 3: the TLS mode is stored with the credential, not guessed from the port:
/// implicit TLS on a port that is not 465 provisions, shows, rotates and reaches consumers; a
/// mode the port does not speak fails with the setting to check.
#[tokio::test]
async fn each_tenant_s_tls_mode_is_stored_and_used_whatever_its_port() {
    let s = setup(&[]).await;
    let base = s.env.serve().await;
    let token = s
        .env
        .token(&[
            Scope::CredentialsWrite,
            Scope::CredentialsRotate,
            Scope::CredentialsRead,
            Scope::CredentialsReadSecret,
        ])
        .await;
    let http = reqwest::Client::new();
    let provision = |tenant: &str, port: u16, tls: Option<&str>| {
        let mut body = serde_json::json!({
            "username": format!("admin@{tenant}.example"), "smtp_host": "localhost", "smtp_port": port,
            "webmail_url": "https://mail.example/", "mailu_api_url": s.mail.api_url, "mailu_api_token": API_TOKEN,
        });
        if let Some(tls) = tls {
            body["smtp_tls"] = tls.into();
        }
        http.post(format!("{base}/api/v1/tenants/{tenant}/smtp-credentials/provision"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    assert_ne!(s.mail.smtps_port, 465);
    let answer = provision("wrapped", s.mail.smtps_port, Some("implicit")).await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let get = |path: String| http.get(format!("{base}/api/v1/tenants/{path}")).bearer_auth(&token).send();
    let metadata: serde_json::Value = get("wrapped/smtp-credentials".into()).await.unwrap().json().await.unwrap();
    assert_eq!(metadata["smtp_tls"], "implicit");
    let rotated = http
        .post(format!("{base}/api/v1/tenants/wrapped/smtp-credentials/rotate"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200, "{}", rotated.text().await.unwrap());
    // A consumer learns how to connect, and that way the password logs in.
    let secret: serde_json::Value = get("wrapped/smtp-credentials/secret".into()).await.unwrap().json().await.unwrap();
    assert_eq!((secret["smtp_tls"].as_str(), secret["version"].as_u64()), (Some("implicit"), Some(2)));
    let target = smtp_vault::core::mail::MailTarget {
        smtp_port: s.mail.smtps_port,
        smtp_tls: smtp_vault::model::SmtpTls::Implicit,
        ..s.mail.target("admin@wrapped.example")
    };
    let password = SecretString::from(secret["password"].as_str().unwrap().to_owned());
    assert_eq!(s.mailu.check_login(&target, &password).await, LoginCheck::Accepted);

    // A request that names no mode gets the console's old default once, stored.
    let answer = provision("plain", s.mail.smtp_port, None).await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let metadata: serde_json::Value = get("plain/smtp-credentials".into()).await.unwrap().json().await.unwrap();
    assert_eq!(metadata["smtp_tls"], "starttls");

    // Implicit TLS against a STARTTLS port: refused with the setting to check.
    let answer = provision("mismatched", s.mail.smtp_port, Some("implicit")).await.unwrap();
    assert_eq!(answer.status(), 502);
    let error: serde_json::Value = answer.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("implicit TLS") && message.contains("smtp_tls"), "{error}");
    let bad = provision("typo", s.mail.smtp_port, Some("ssl")).await.unwrap();
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn the_daily_cycle_rotates_exactly_the_due_tenants_notices_once_and_respects_a_deferral() {
    let clock = common::ManualClock::new();
    let s = setup_with(&["due", "soon", "later", "frozen"], Some(clock.clone())).await;
    let core = &s.env.core;
    let t0 = smtp_vault::core::clock::Clock::now(clock.as_ref());
    let pool = core.db().pool().clone();
    let set_next = |tenant: &'static str, at: chrono::DateTime<chrono::Utc>| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE tenants SET next_rotation_at_ms = $1 WHERE tenant_id = $2")
                .bind(at.timestamp_millis())
                .bind(tenant)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    set_next("due", t0 - chrono::Duration::hours(1)).await;
    set_next("frozen", t0 - chrono::Duration::hours(1)).await;
    set_next("soon", t0 + chrono::Duration::days(3)).await;
    set_next("later", t0 + chrono::Duration::days(10)).await;
    let frozen = TenantId::parse("frozen").unwrap();
    let until =
        core.defer_rotation(&Actor::operator(), &ClientInfo::local(), &frozen, 5, "change freeze").await.unwrap();
    assert!(
        core.defer_rotation(&Actor::operator(), &ClientInfo::local(), &frozen, 2, "again").await.is_err(),
        "once only"
    );
    let names = |list: &[TenantId]| {
        let mut v: Vec<String> = list.iter().map(ToString::to_string).collect();
        v.sort();
        v
    };

    let first = core.run_daily_cycle("console-a", 2).await.unwrap();
    assert!(first.ran);
    assert_eq!(names(&first.rotated), ["due"]);
    assert_eq!(names(&first.noticed), ["frozen", "soon"], "due within 7 days (frozen on its new date)");
    assert!(first.failed.is_empty() && first.differences.is_empty(), "{first:?}");
    // The same cycle never runs twice, on this console or another one on the same database.
    assert!(!core.run_daily_cycle("console-a", 2).await.unwrap().ran);
    let other = Core::connect(&s.env.config, smtp_vault::core::Needs::ALL, Some(clock.clone())).await.unwrap();
    assert!(!other.run_daily_cycle("console-b", 2).await.unwrap().ran);

    clock.advance(chrono::Duration::days(1));
    let second = core.run_daily_cycle("console-a", 2).await.unwrap();
    assert!(second.ran && second.rotated.is_empty() && second.noticed.is_empty(), "{second:?}");

    // Six days in: the deferred date and "soon" have passed; "later" is now within 7 days.
    clock.advance(chrono::Duration::days(5));
    assert!(smtp_vault::core::clock::Clock::now(clock.as_ref()) > until);
    let third = core.run_daily_cycle("console-a", 2).await.unwrap();
    assert_eq!(names(&third.rotated), ["frozen", "soon"]);
    assert_eq!(names(&third.noticed), ["later"]);
    let (notices,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'rotation_notice'")
        .fetch_one(core.db().pool())
        .await
        .unwrap();
    assert_eq!(notices, 3, "one notice per tenant and date");
    let (runs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'job_ran'")
        .fetch_one(core.db().pool())
        .await
        .unwrap();
    assert_eq!(runs, 3, "every run audited");
}

#[tokio::test]
async fn two_consoles_firing_at_once_run_the_cycle_once_and_the_heartbeat_spots_drift() {
    let s = setup(&["acme", "globex"]).await;
    let other = Core::connect(&s.env.config, smtp_vault::core::Needs::ALL, None).await.unwrap();
    let (a, b) = tokio::join!(s.env.core.run_daily_cycle("console-a", 2), other.run_daily_cycle("console-b", 2));
    assert_eq!([a.unwrap().ran, b.unwrap().ran].iter().filter(|ran| **ran).count(), 1);

    // Someone changes globex's password on the mail server behind the console's back.
    s.mailu
        .set_password(&s.mail.target("admin@globex.example"), &SecretString::from("Changed-By-Hand-1".to_owned()))
        .await
        .unwrap();
    let drifted = s.env.core.heartbeat().await.unwrap();
    assert_eq!(drifted, [TenantId::parse("globex").unwrap()]);
    let meta = s.env.core.credential_metadata(&Actor::operator(), &TenantId::parse("globex").unwrap()).await.unwrap();
    assert_eq!(meta.state.as_str(), "drifted");
    let (alerts,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'heartbeat_drift' AND tenant_id = 'globex'")
            .fetch_one(s.env.core.db().pool())
            .await
            .unwrap();
    assert_eq!(alerts, 1);
}

/// Issue 15, point 1: a refused heartbeat login is logged in again before the critical drift
/// alarm (Mailu 2024.06 answers a rate-limited login with the same 535): the first refusal
/// only notes it; the monitor's re-check a quarter of an hour later alarms if it holds, and
/// clears it if the password logs in again.
#[tokio::test]
async fn a_refused_heartbeat_is_logged_in_again_before_the_drift_alarm() {
    let clock = common::ManualClock::new();
    let s = setup_with(&["acme", "globex"], Some(clock.clone())).await;
    let mut config = s.env.config.clone();
    config.heartbeat_recheck_secs = 900;
    let clock_dyn: smtp_vault::core::clock::SharedClock = clock.clone();
    let core = Core::connect(&config, smtp_vault::core::Needs::ALL, Some(clock_dyn)).await.unwrap();
    let pool = core.db().pool().clone();
    let row = |tenant: &'static str| {
        let pool = pool.clone();
        async move {
            let (state, error): (String, Option<String>) =
                sqlx::query_as("SELECT state, last_error FROM tenants WHERE tenant_id = $1")
                    .bind(tenant)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            let (alerts,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'heartbeat_drift' AND tenant_id = $1")
                    .bind(tenant)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (state, error, alerts)
        }
    };
    // Both refused: globex's password really changed; acme's comes back (as a limit lifts).
    let by_hand = SecretString::from("Changed-By-Hand-1".to_owned());
    for tenant in ["acme", "globex"] {
        s.mailu.set_password(&s.mail.target(&format!("admin@{tenant}.example")), &by_hand).await.unwrap();
    }
    assert!(core.heartbeat().await.unwrap().is_empty(), "a first refusal is no drift yet");
    let once = smtp_vault::core::rotation::schedule::REFUSED_ONCE.to_owned();
    assert_eq!(row("globex").await, ("active".to_owned(), Some(once.clone()), 0));
    core.run_state_checks().await.unwrap();
    assert_eq!(row("globex").await.2, 0, "not re-checked before its time");

    let acme_password = SecretString::from("Initial-acme-Pass".to_owned());
    s.mailu.set_password(&s.mail.target("admin@acme.example"), &acme_password).await.unwrap();
    clock.advance(chrono::Duration::minutes(16));
    core.run_state_checks().await.unwrap();
    assert_eq!(row("globex").await, ("drifted".to_owned(), Some(once), 1));
    assert_eq!(row("acme").await, ("active".to_owned(), None, 0), "a refusal that did not hold is forgotten");
    let (refused_at,): (Option<i64>,) =
        sqlx::query_as("SELECT heartbeat_refused_at_ms FROM tenants WHERE tenant_id = 'acme'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(refused_at, None);
}

/// Issue 15, point 1: while no successful login exempts it, the console budgets its own refused
/// logins per mail server (4 users an hour, as Mailu counts them), so it never trips Mailu's
/// limit (5 an hour from its network), which would make every login from its address, right
/// passwords included, look refused. (Without the exemption the crash and failover suites,
/// which refuse many users on one stand-in, stall: they are its test.)
#[tokio::test]
async fn the_console_never_trips_mailus_rate_limit_with_its_own_logins() {
    let tenants = ["d1", "d2", "d3", "d4", "d5"];
    let s = setup(&tenants).await;
    for (i, tenant) in tenants.iter().enumerate() {
        let by_hand = SecretString::from(format!("Changed-By-Hand-{i}"));
        s.mailu.set_password(&s.mail.target(&format!("admin@{tenant}.example")), &by_hand).await.unwrap();
    }
    let beat = s.env.core.heartbeat_all().await.unwrap();
    assert_eq!(beat.drifted.len(), smtp_vault::core::mail::LOGIN_BUDGET);
    let (unchecked,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE heartbeat_ok IS NULL")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(unchecked, 1, "the rest wait for the next hour");
    let last_error = |tenant: &'static str| {
        let pool = s.env.core.db().pool().clone();
        async move {
            let (error,): (Option<String>,) = sqlx::query_as("SELECT last_error FROM tenants WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap();
            error
        }
    };
    let spent =
        format!("{}{}", smtp_vault::core::rotation::schedule::COULD_NOT_CHECK, smtp_vault::core::mail::BUDGET_SPENT);
    assert_eq!(last_error("d5").await, Some(spent), "the page says why");
    // Mailu still answers the console's address: it is not limited.
    assert_eq!(s.mailu.user_exists(&s.mail.target("admin@d1.example")).await, Ok(true));
    // d1's password comes back: its login (a user already counted) succeeds, which exempts the
    // console, so d5 is checked again and its stale reason goes.
    let d1_id = TenantId::parse("d1").unwrap();
    let d1 = s.env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &d1_id).await.unwrap();
    s.mailu.set_password(&s.mail.target("admin@d1.example"), &d1.password).await.unwrap();
    let beat = s.env.core.heartbeat_all().await.unwrap();
    assert!(beat.drifted.iter().any(|t| t.as_str() == "d5"), "{:?}", beat.drifted);
    assert_eq!((last_error("d1").await, last_error("d5").await), (None, None));
}

#[tokio::test]
async fn rotate_now_from_the_console_needs_a_platform_admin_and_a_fresh_step_up() {
    use common::passkeys::TestAdmin;
    use smtp_vault::model::Role;
    let s = setup(&["acme"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let local = ClientInfo::local();
    let mut admin = TestAdmin::enroll(&s.env.core, "pa@example.com", Role::PlatformAdmin).await;
    let options = s.env.core.begin_rotation(&admin.actor, &admin.session, &acme).await.unwrap();
    let assertion = admin.assert(&options);
    let done = s.env.core.finish_rotation(&admin.actor, &admin.session, &local, &acme, &assertion).await.unwrap();
    assert_eq!(done.version, 2);
    // The same assertion cannot rotate twice.
    let again = s.env.core.finish_rotation(&admin.actor, &admin.session, &local, &acme, &assertion).await;
    assert!(matches!(again, Err(smtp_vault::core::Error::Unauthenticated)));
    let reviewer = TestAdmin::enroll(&s.env.core, "rev@example.com", Role::SecurityReviewer).await;
    assert!(matches!(
        s.env.core.begin_rotation(&reviewer.actor, &reviewer.session, &acme).await,
        Err(smtp_vault::core::Error::Forbidden(_))
    ));
    let status = s.env.core.rotation_status(&reviewer.actor, &acme).await.unwrap();
    assert_eq!(status.history.first().map(|e| e.event.as_str()), Some("credential_rotated"));
    let (_, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
}

#[tokio::test]
async fn rotate_after_reveal_rotates_once_the_window_closes_and_settings_are_audited() {
    use common::passkeys::TestAdmin;
    use smtp_vault::model::{Role, TenantSettingsInput};
    let clock = common::ManualClock::new();
    let s = setup_with(&["acme"], Some(clock.clone())).await;
    let core = &s.env.core;
    let acme = TenantId::parse("acme").unwrap();
    let local = ClientInfo::local();
    let mut admin = TestAdmin::enroll(core, "pa@example.com", Role::PlatformAdmin).await;
    let settings = TenantSettingsInput {
        rotation_period_days: 30,
        contact_email: Some("Ops@Acme.example".into()),
        mailu_api_url: s.mail.api_url.clone(),
        mailu_api_token: None,
        rotate_after_reveal: true,
        reveal_approval: None,
        password_policy: None,
        reveal_notice: None,
    };
    let view = core.update_tenant_settings(&admin.actor, &local, &acme, settings).await.unwrap();
    assert_eq!(
        (view.rotation_period_days, view.contact_email.as_deref(), view.rotate_after_reveal),
        (30, Some("ops@acme.example"), true)
    );
    let meta = core.credential_metadata(&admin.actor, &acme).await.unwrap();
    assert_eq!(
        meta.next_rotation_at.unwrap() - meta.stored_at,
        chrono::Duration::days(30),
        "next rotation follows the period"
    );
    let reviewer = TestAdmin::enroll(core, "rev@example.com", Role::SecurityReviewer).await;
    let denied = TenantSettingsInput {
        rotation_period_days: 1,
        contact_email: None,
        mailu_api_url: s.mail.api_url.clone(),
        mailu_api_token: None,
        rotate_after_reveal: false,
        reveal_approval: None,
        password_policy: None,
        reveal_notice: None,
    };
    assert!(core.update_tenant_settings(&reviewer.actor, &local, &acme, denied).await.is_err());

    // Reveal, then let the window close: the revealed password is rotated away.
    let options = core.begin_reveal(&admin.actor, &admin.session, &local, &acme, "one-time use").await.unwrap();
    let assertion = admin.assert(&options);
    core.finish_reveal(&admin.actor, &admin.session, &local, &acme, &assertion).await.unwrap();
    let revealed = core.reveal_credential(&admin.actor, &admin.client(), &acme).await.unwrap();
    clock.advance(chrono::Duration::minutes(16));
    assert_eq!(core.record_expired_grants().await.unwrap(), 1);
    let old = s.mailu.check_login(&s.mail.target("admin@acme.example"), &revealed.password).await;
    assert_eq!(old, LoginCheck::Rejected, "the revealed password no longer works");
    let (_, check) = consumer_view(&s, core, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
    let status = core.rotation_status(&admin.actor, &acme).await.unwrap();
    assert_eq!(status.history.first().map(|e| e.event.as_str()), Some("credential_rotated"));
    let (changes,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'tenant_settings_changed'")
            .fetch_one(core.db().pool())
            .await
            .unwrap();
    assert_eq!(changes, 1);
}

#[tokio::test]
async fn vault_lost_right_after_the_mail_change_leaves_the_password_in_vault_and_restart_repairs_it() {
    let s = setup(&["acme"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let (addr, root) = (s.env.bao.addr.clone(), s.env.bao.root_token.expose_secret().to_owned());
    // Right after Mailu took the new password, the console loses Vault: every token issued to
    // its AppRole is revoked, so its next Vault call is refused.
    let core = s.env.core.clone().with_fault_injector(Arc::new(move |_: &TenantId, step: RotationStep| {
        if step == RotationStep::MailApplied {
            let status = std::process::Command::new("curl")
                .args(["-fsS", "-o", "/dev/null", "-X", "PUT", "-H", &format!("X-Vault-Token: {root}")])
                .arg(format!("{addr}/v1/sys/leases/revoke-prefix/auth/approle/login"))
                .status()
                .unwrap();
            assert!(status.success());
        }
        false
    }));
    let failed = core.rotate_credential(&system(), &ClientInfo::local(), &acme, "scheduled").await;
    assert!(failed.is_err(), "{failed:?}");
    // The mail server now has the new password, and Vault has it too (pending, staged).
    let (status, pending) = s.env.vault_root(reqwest::Method::GET, "smtp/data/acme/pending", None).await;
    assert_eq!(status, 200);
    assert_eq!(pending["data"]["data"]["phase"], "staged");
    // A restarted console (new AppRole login) repairs it at start-up.
    let restarted = Core::connect(&s.env.config, smtp_vault::core::Needs::ALL, None).await.unwrap();
    assert_eq!(restarted.repair_interrupted_rotations().await.unwrap(), 1);
    assert!(!pending_exists(&s, "acme").await);
    let (_, check) = consumer_view(&s, &restarted, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
    let meta = restarted.credential_metadata(&Actor::operator(), &acme).await.unwrap();
    assert_eq!((meta.version, meta.state.as_str()), (2, "active"));
}

/// Issue 15, point 5: a rotation that finished in Vault (new version, pending record gone)
/// before the process died leaves the tenant `rotating` in the database with no pending record;
/// start-up repair and the daily cycle must settle it from the database's side too.
#[tokio::test]
async fn a_rotation_that_finished_in_vault_before_the_process_died_is_recorded_at_restart() {
    let s = setup(&["acme", "globex"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let crashed = s.env.core.clone().with_fault_injector(Arc::new(|t: &TenantId, at: RotationStep| {
        at == RotationStep::PendingDropped && t.as_str() == "acme"
    }));
    assert!(crashed.rotate_credential(&system(), &ClientInfo::local(), &acme, "scheduled").await.is_err());
    assert!(!pending_exists(&s, "acme").await, "Vault finished: no pending record");
    let meta = s.env.core.credential_metadata(&Actor::operator(), &acme).await.unwrap();
    assert_eq!((meta.version, meta.state.as_str()), (1, "rotating"), "the database did not");
    // A restarted console settles it at start-up.
    let restarted = Core::connect(&s.env.config, smtp_vault::core::Needs::ALL, None).await.unwrap();
    assert_eq!(restarted.repair_interrupted_rotations().await.unwrap(), 1);
    let meta = restarted.credential_metadata(&Actor::operator(), &acme).await.unwrap();
    assert_eq!((meta.version, meta.state.as_str()), (2, "active"));
    let (rotated,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_rotated' AND tenant_id = 'acme'",
    )
    .fetch_one(restarted.db().pool())
    .await
    .unwrap();
    assert_eq!(rotated, 1);
    let (_, check) = consumer_view(&s, &restarted, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
    assert!(restarted.verify_audit_chain().await.unwrap().first_broken.is_none());
}

/// Issue 15, point 5: one tenant's Vault or crypto failure does not stop the heartbeat for the
/// others (the full pass and the spread one), and is reported.
#[tokio::test]
async fn one_broken_tenant_does_not_stop_the_heartbeat_or_the_cycle_record() {
    let s = setup(&["acme", "globex"]).await;
    // acme's sealed password is damaged in Vault (a crypto error when it is opened).
    let (_, current) = s.env.vault_root(reqwest::Method::GET, "smtp/data/acme/admin", None).await;
    let mut document = current["data"]["data"].clone();
    document["password"] = "v1.k0.bm9uY2U.Z2FyYmFnZQ".into();
    let version = current["data"]["metadata"]["version"].as_u64().unwrap();
    let (status, _) = s
        .env
        .vault_root(
            reqwest::Method::POST,
            "smtp/data/acme/admin",
            Some(serde_json::json!({"data": document, "options": {"cas": version}})),
        )
        .await;
    assert_eq!(status, 200);
    let beat = s.env.core.heartbeat_all().await.unwrap();
    assert_eq!(beat.failed.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["acme"]);
    let (globex_beat,): (Option<i64>,) = sqlx::query_as("SELECT heartbeat_ok FROM tenants WHERE tenant_id = 'globex'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(globex_beat, Some(1), "globex was still checked");
    // The spread heartbeat too: both are due now; acme's failure is reported, globex is checked.
    sqlx::query("UPDATE tenants SET heartbeat_due_at_ms = 0").execute(s.env.core.db().pool()).await.unwrap();
    let beat = s.env.core.heartbeat_due().await.unwrap();
    assert_eq!(beat.failed.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["acme"]);
    assert_eq!(beat.checked.iter().map(TenantId::as_str).collect::<Vec<_>>(), ["globex"]);
    // acme is tried again in an hour, globex tomorrow.
    let due: Vec<(String, i64)> =
        sqlx::query_as("SELECT tenant_id, heartbeat_due_at_ms FROM tenants ORDER BY tenant_id")
            .fetch_all(s.env.core.db().pool())
            .await
            .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now + 3_500_000..=now + 3_600_000).contains(&due[0].1), "{due:?}");
    assert!(due[1].1 > now, "{due:?}");
}

/// Issue 15, point 2: a Mailu whose API is off (its default) is not "down": the rotation stops
/// at once (no retries, no second password) and says what to fix; the current password stays.
#[tokio::test]
async fn a_rotation_against_a_mailu_with_its_api_off_stops_at_once_and_says_why() {
    let s = setup(&["acme"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let (before, _) = consumer_view(&s, &s.env.core, "acme").await;
    s.mail.config(false, "2024.06").await;
    let result = s.env.core.rotate_credential(&system(), &ClientInfo::local(), &acme, "scheduled").await.unwrap();
    let RotationResult::NeedsReconcile { reason } = result else { panic!("{result:?}") };
    assert!(reason.contains("API=true"), "{reason}");
    let (attempts,): (i64,) = sqlx::query_as("SELECT rotation_attempts FROM tenants WHERE tenant_id = 'acme'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(attempts, 0, "not retried as if the server were down");
    s.mail.config(true, "2024.06").await;
    let still = s.mailu.check_login(&s.mail.target("admin@acme.example"), &SecretString::from(before)).await;
    assert_eq!(still, LoginCheck::Accepted);
}

/// Issue 15, point 1: after a Mailu restart (its limiter forgets the console's exemption) and
/// six calls with a bad API token from the console's address, the right password gets 535. The
/// console must not take that for a wrong password: no drift, no critical alert; the tenant
/// says what to do, once.
#[tokio::test]
async fn a_rate_limited_console_never_takes_the_right_password_for_a_wrong_one() {
    let s = setup(&["acme"]).await;
    let (right, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
    limit_the_console(&s).await;
    let check = s.mailu.check_login(&s.mail.target("admin@acme.example"), &SecretString::from(right.clone())).await;
    assert_eq!(check, LoginCheck::Unknown(smtp_vault::core::mail::RATE_LIMITED.into()), "{}", s.mail.log());
    for _ in 0..2 {
        assert!(s.env.core.heartbeat().await.unwrap().is_empty(), "no drift");
    }
    let acme = TenantId::parse("acme").unwrap();
    let meta = s.env.core.credential_metadata(&Actor::operator(), &acme).await.unwrap();
    assert_eq!(meta.state.as_str(), "active");
    let count = |kind: &'static str| {
        let pool = s.env.core.db().pool().clone();
        async move {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = $1")
                .bind(kind)
                .fetch_one(&pool)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(count("heartbeat_drift").await, 0);
    assert_eq!(count("mailu_rate_limited").await, 1, "one warning, however many checks");
    let (last_error,): (Option<String>,) = sqlx::query_as("SELECT last_error FROM tenants WHERE tenant_id = 'acme'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert!(last_error.is_some_and(|e| e.contains("AUTH_RATELIMIT_EXEMPTION")));
    let status = s.env.core.rotation_status(&Actor::operator(), &acme).await.unwrap();
    assert!(status.rate_limited, "the tenant page shows the state and what to do");
    // Once the limit lifts, the stored password logs in: it was right all along.
    s.mail.restart_limiter().await;
    assert!(s.env.core.heartbeat().await.unwrap().is_empty());
    assert!(!s.env.core.rotation_status(&Actor::operator(), &acme).await.unwrap().rate_limited);
    let (last_error,): (Option<String>,) = sqlx::query_as("SELECT last_error FROM tenants WHERE tenant_id = 'acme'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(last_error, None);
    let (_, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!(check, LoginCheck::Accepted);
}

/// Issue 15, point 2: a 429 from Mailu is not retried within milliseconds into the same limit,
/// nor does it end in needs_reconcile: the rotation, which sent nothing, is handed to the next
/// cycle (the tenant stays due), and the tenant says what to do.
#[tokio::test]
async fn a_rate_limited_rotation_is_handed_to_the_next_cycle_without_an_alarm() {
    let s = setup(&["acme"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let (before, _) = consumer_view(&s, &s.env.core, "acme").await;
    limit_the_console(&s).await;
    let refused = s.env.core.rotate_credential(&system(), &ClientInfo::local(), &acme, "scheduled").await;
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("AUTH_RATELIMIT_EXEMPTION")), "{refused:?}");
    assert!(!pending_exists(&s, "acme").await, "nothing half-done is left");
    let meta = s.env.core.credential_metadata(&Actor::operator(), &acme).await.unwrap();
    assert_eq!((meta.version, meta.state.as_str()), (1, "active"));
    let (reconcile,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'rotation_needs_reconcile'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(reconcile, 0);
    let (limited,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE kind = 'mailu_rate_limited'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(limited, 1);
    // Once the limit lifts, the password is the one it was, and the next rotation goes through.
    s.mail.restart_limiter().await;
    let (now, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!((now.as_str(), check), (before.as_str(), LoginCheck::Accepted));
    let rotated = s.env.core.rotate_credential(&system(), &ClientInfo::local(), &acme, "scheduled").await.unwrap();
    assert_eq!(rotated, RotationResult::Rotated { version: 2 });
}

/// What the issue measured on a real Mailu: it restarts (its limiter forgets the console's
/// exemption), then six calls with a bad API token come from the console's address.
async fn limit_the_console(s: &Setup) {
    s.mail.restart_limiter().await;
    let bad_token = smtp_vault::core::mail::MailTarget {
        api_token: SecretString::from("not-the-token".to_owned()),
        ..s.mail.target("admin@acme.example")
    };
    for _ in 0..6 {
        let _ = s.mailu.user_exists(&bad_token).await;
    }
}

#[tokio::test]
async fn generated_passwords_follow_each_tenant_s_policy_and_a_weakened_stored_policy_fails_closed() {
    use smtp_vault::model::{PasswordAlphabet, PasswordPolicy, TenantSettingsInput};
    let s = setup(&["acme"]).await;
    let acme = TenantId::parse("acme").unwrap();
    let operator = Actor::operator();
    let local = ClientInfo::local();
    let in_alphabet =
        |password: &str, alphabet: PasswordAlphabet| password.bytes().all(|b| alphabet.characters().contains(&b));
    // The default: 32 letters and digits.
    assert_eq!(s.env.core.tenant_settings(&operator, &acme).await.unwrap().password_policy, PasswordPolicy::default());
    s.env.core.rotate_credential(&system(), &local, &acme, "test").await.unwrap();
    let (password, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!((password.len(), check), (32, LoginCheck::Accepted));
    assert!(in_alphabet(&password, PasswordAlphabet::Alphanumeric), "{password}");

    // 48 with symbols, set in the settings: the next rotation follows it (Mailu and Dovecot take it).
    let settings = |policy: PasswordPolicy| TenantSettingsInput {
        rotation_period_days: 90,
        contact_email: None,
        mailu_api_url: s.mail.api_url.clone(),
        mailu_api_token: None,
        rotate_after_reveal: false,
        reveal_approval: None,
        password_policy: Some(policy),
        reveal_notice: None,
    };
    let wide = PasswordPolicy { length: 48, alphabet: PasswordAlphabet::AlphanumericSymbols };
    s.env.core.update_tenant_settings(&operator, &local, &acme, settings(wide)).await.unwrap();
    s.env.core.rotate_credential(&system(), &local, &acme, "test").await.unwrap();
    let (password, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!((password.len(), check), (48, LoginCheck::Accepted));
    assert!(in_alphabet(&password, PasswordAlphabet::AlphanumericSymbols), "{password}");

    // Too short is refused, naming the range; nothing changes.
    let short = PasswordPolicy { length: 19, alphabet: PasswordAlphabet::Alphanumeric };
    let refused = s.env.core.update_tenant_settings(&operator, &local, &acme, settings(short)).await;
    assert!(
        matches!(&refused, Err(smtp_vault::core::Error::InvalidInput(m)) if m.contains("20 to 128")),
        "{refused:?}"
    );
    assert_eq!(s.env.core.tenant_settings(&operator, &acme).await.unwrap().password_policy, wide);

    // Attack: a database writer weakens the stored policy to 4 characters. The rotation refuses
    // to generate (fails closed) and the working password stays.
    sqlx::query("UPDATE tenants SET password_length = 4 WHERE tenant_id = 'acme'")
        .execute(s.env.core.db().pool())
        .await
        .unwrap();
    let weakened = s.env.core.rotate_credential(&system(), &local, &acme, "test").await;
    assert!(weakened.is_err(), "{weakened:?}");
    let (after, check) = consumer_view(&s, &s.env.core, "acme").await;
    assert_eq!((after.as_str(), check), (password.as_str(), LoginCheck::Accepted));
}

#[tokio::test]
async fn provisioning_generates_the_password_its_request_s_policy_asks_for() {
    let s = setup(&[]).await;
    let body = serde_json::json!({
        "username": "admin@newco.example", "smtp_host": "localhost", "smtp_port": s.mail.smtp_port,
        "webmail_url": "https://mail.newco.example/", "mailu_api_url": s.mail.api_url, "mailu_api_token": API_TOKEN,
        "password_policy": {"length": 64},
    });
    let request = smtp_vault::model::ProvisionCredentialRequest::from_json(body.clone()).unwrap();
    let newco = TenantId::parse("newco").unwrap();
    s.env.core.provision_credential(&Actor::operator(), &ClientInfo::local(), &newco, request).await.unwrap();
    let (password, check) = consumer_view(&s, &s.env.core, "newco").await;
    assert_eq!((password.len(), check), (64, LoginCheck::Accepted));
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()), "{password}");
    // Kept for its rotations, and on record.
    let policy = s.env.core.tenant_settings(&Actor::operator(), &newco).await.unwrap().password_policy;
    assert_eq!(policy.length, 64);
    let (recorded,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'tenant_settings_changed' AND details LIKE '%provisioning%'",
    )
    .fetch_one(s.env.core.db().pool())
    .await
    .unwrap();
    assert_eq!(recorded, 1);
    // A policy the console would not generate is refused field by field.
    for bad in
        [serde_json::json!({"length": 8}), serde_json::json!({"alphabet": "emoji"}), serde_json::json!({"size": 30})]
    {
        let mut body = body.clone();
        body["password_policy"] = bad.clone();
        let error = smtp_vault::model::ProvisionCredentialRequest::from_json(body).err().unwrap();
        assert_eq!(error.field, "password_policy", "{bad}");
    }
}

/// Issue 18, point 3: start-up repair finds interrupted rotations by the database's states —
/// a start is recorded before its pending record is written, so a crash at every step is found
/// without reading every tenant's pending record — and a start with nothing staged behind it
/// is rolled back, not recorded as a rotation. A pending record the database never heard of
/// (written before that order, or by hand) is left to the incremental reconciliation, which
/// reports and settles it.
#[tokio::test]
async fn repair_finds_a_crash_at_every_step_from_the_database_and_the_reconciliation_finds_the_rest() {
    let tenants: [&'static str; 7] = ["r0", "r1", "r2", "r3", "r4", "r5", "quiet"];
    let s = setup(&tenants).await;
    for (tenant, step) in tenants.into_iter().zip(RotationStep::ALL) {
        let id = TenantId::parse(tenant).unwrap();
        let crashed =
            s.env.core.clone().with_fault_injector(Arc::new(move |t: &TenantId, at: RotationStep| {
                at == step && t.as_str() == tenant
            }));
        assert!(
            crashed.rotate_credential(&system(), &ClientInfo::local(), &id, "scheduled").await.is_err(),
            "{step:?}"
        );
        let meta = s.env.core.credential_metadata(&Actor::operator(), &id).await.unwrap();
        assert_eq!(meta.state.as_str(), "rotating", "{step:?}: the start is in the database");
    }
    let restarted = Core::connect(&s.env.config, smtp_vault::core::Needs::ALL, None).await.unwrap();
    let found = restarted.tenants_with_pending_rotation().await.unwrap();
    assert_eq!(found.iter().map(TenantId::as_str).collect::<Vec<_>>(), &tenants[..6]);
    assert_eq!(restarted.repair_interrupted_rotations().await.unwrap(), 6);
    for tenant in tenants {
        let id = TenantId::parse(tenant).unwrap();
        let meta = restarted.credential_metadata(&Actor::operator(), &id).await.unwrap();
        assert_eq!(meta.state.as_str(), "active", "{tenant}");
        assert!(!pending_exists(&s, tenant).await, "{tenant}");
        let (_, check) = consumer_view(&s, &restarted, tenant).await;
        assert_eq!(check, LoginCheck::Accepted, "{tenant}");
    }
    // The crash before anything was staged (r0) is a roll-back, not a rotation.
    let events: Vec<(String,)> = sqlx::query_as(
        "SELECT event_type FROM audit_events WHERE tenant_id = 'r0' AND event_type LIKE 'rotation%' ORDER BY seq",
    )
    .fetch_all(restarted.db().pool())
    .await
    .unwrap();
    let events: Vec<&str> = events.iter().map(|(e,)| e.as_str()).collect();
    assert_eq!(events, ["rotation_started", "rotation_rolled_back"]);
    let meta = restarted.credential_metadata(&Actor::operator(), &TenantId::parse("r0").unwrap()).await.unwrap();
    assert_eq!(meta.version, 1);

    // A pending record the database does not know of: start-up repair does not list Vault…
    let quiet = TenantId::parse("quiet").unwrap();
    let (_, current) = s.env.vault_root(reqwest::Method::GET, "smtp/data/quiet/admin", None).await;
    let pending = serde_json::json!({
        "rotation_id": "by-hand", "password": current["data"]["data"]["password"], "phase": "staged",
        "attempts": 0, "trigger": "manual", "started_at": "2026-12-01T00:00:00Z",
    });
    let (status, body) = s
        .env
        .vault_root(
            reqwest::Method::POST,
            "smtp/data/quiet/pending",
            Some(serde_json::json!({"data": pending, "options": {"cas": 0}})),
        )
        .await;
    assert!((200..300).contains(&status), "{body}");
    assert_eq!(restarted.repair_interrupted_rotations().await.unwrap(), 0);
    assert!(pending_exists(&s, "quiet").await);
    // …the reconciliation's slice does, reports it and settles it; a version Vault holds that
    // the database never recorded is reported too.
    let (_, r1) = s.env.vault_root(reqwest::Method::GET, "smtp/data/r1/admin", None).await;
    let v = r1["data"]["metadata"]["version"].as_u64().unwrap();
    let (status, _) = s
        .env
        .vault_root(
            reqwest::Method::POST,
            "smtp/data/r1/admin",
            Some(serde_json::json!({"data": r1["data"]["data"], "options": {"cas": v}})),
        )
        .await;
    assert!((200..300).contains(&status));
    let slice = restarted.reconcile_slice(&system()).await.unwrap();
    assert_eq!(slice.checked, tenants.len());
    assert!(slice.pass_finished);
    assert_eq!(slice.differences, ["quiet: unrecorded_pending", "r1: version_not_recorded"]);
    assert!(!pending_exists(&s, "quiet").await, "the stray pending record was settled");
    let (_, check) = consumer_view(&s, &restarted, "quiet").await;
    assert_eq!(check, LoginCheck::Accepted);
    let (reported,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'reconcile_difference'")
            .fetch_one(restarted.db().pool())
            .await
            .unwrap();
    assert_eq!(reported, 2);
    // The overview counts from the same rows: a heartbeat that logs in is its "last successful".
    assert_eq!(restarted.overview(&Actor::operator()).await.unwrap().never_heartbeat, 7);
    assert!(restarted.heartbeat().await.unwrap().is_empty());
    let overview = restarted.overview(&Actor::operator()).await.unwrap();
    assert_eq!((overview.never_heartbeat, overview.counts.active), (0, 7));
    assert!(overview.stalest_heartbeat.is_some());
    let _ = quiet;
}

/// Issue 18, point 4: the heartbeat is spread over the day. Each tenant is logged in with once
/// a day, at its own stable time: none at the moment its time is first given (no burst after
/// an upgrade), every one within the next 24 hours, exactly once, and again the day after.
#[tokio::test]
async fn the_spread_heartbeat_logs_in_to_every_tenant_once_a_day_at_its_own_time() {
    let tenants: [&str; 8] = ["h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7"];
    let start = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:00:30Z").unwrap().with_timezone(&chrono::Utc);
    let clock = common::ManualClock::at(start);
    let s = setup_with(&tenants, Some(clock.clone())).await;
    let first = s.env.core.heartbeat_due().await.unwrap();
    assert!(first.checked.is_empty() && first.failed.is_empty(), "{first:?}");
    for day in 0..2 {
        let mut seen: Vec<(String, i64)> = Vec::new();
        // Every 15 minutes for a day, as the monitor would every minute.
        for _ in 0..96 {
            clock.advance(chrono::Duration::minutes(15));
            let beat = s.env.core.heartbeat_due().await.unwrap();
            assert!(beat.failed.is_empty() && beat.drifted.is_empty(), "{beat:?}");
            let at = clock.now_ms();
            seen.extend(beat.checked.iter().map(|t| (t.to_string(), at)));
        }
        let mut names: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, tenants, "day {day}: each tenant exactly once");
        for (tenant, at) in &seen {
            // Checked in the first pass after its time of day.
            let slot = smtp_vault::core::rotation::schedule::heartbeat_slot(&TenantId::parse(tenant).unwrap());
            let into_day = at.rem_euclid(86_400_000);
            let waited = (into_day - slot).rem_euclid(86_400_000);
            assert!(waited < 15 * 60_000, "day {day}: {tenant} at {into_day} ms, its time {slot} ms");
        }
        let (ok,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE heartbeat_ok_at_ms >= $1 AND heartbeat_ok = 1")
                .bind(clock.now_ms() - 86_400_000)
                .fetch_one(s.env.core.db().pool())
                .await
                .unwrap();
        assert_eq!(ok, 8, "day {day}");
    }
}

/// Issue 18, point 3 (review): what leaves a pending record the database does not mark is
/// handled without the full scan — the first start after the upgrade looks through Vault once;
/// a store over a tenant mid-rotation drops the pending record it replaces; the reconciliation
/// reports a tenant it cannot read and carries on with the others.
#[tokio::test]
async fn leftovers_from_before_the_upgrade_a_store_mid_rotation_and_a_broken_record_are_settled() {
    let tenants: [&'static str; 3] = ["up", "mid", "bad"];
    let s = setup(&tenants).await;
    let pending_of = |password: &serde_json::Value| {
        serde_json::json!({"data": {
            "rotation_id": "old-console", "password": password, "phase": "staged",
            "attempts": 0, "trigger": "scheduled", "started_at": "2026-12-01T00:00:00Z",
        }, "options": {"cas": 0}})
    };
    // `up`: an older console staged a pending record and died before recording its start.
    let (_, up) = s.env.vault_root(reqwest::Method::GET, "smtp/data/up/admin", None).await;
    let body = pending_of(&up["data"]["data"]["password"]);
    let (status, _) = s.env.vault_root(reqwest::Method::POST, "smtp/data/up/pending", Some(body)).await;
    assert!((200..300).contains(&status));
    assert_eq!(s.env.core.repair_interrupted_rotations().await.unwrap(), 0, "no scan on a fresh install");
    // The upgrade's migration asks for one scan where tenants existed before it.
    sqlx::query("INSERT INTO fleet_cursors (name, position, updated_at_ms) VALUES ('legacy_pending_scan', '', 0)")
        .execute(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(s.env.core.repair_interrupted_rotations().await.unwrap(), 1);
    assert!(!pending_exists(&s, "up").await);
    let (asked,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM fleet_cursors WHERE name = 'legacy_pending_scan'")
        .fetch_one(s.env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(asked, 0, "once");

    // `mid`: a rotation stopped after staging; then the provisioning backend stores over it.
    let mid = TenantId::parse("mid").unwrap();
    let crashed = s.env.core.clone().with_fault_injector(Arc::new(|t: &TenantId, at: RotationStep| {
        at == RotationStep::PendingStaged && t.as_str() == "mid"
    }));
    assert!(crashed.rotate_credential(&system(), &ClientInfo::local(), &mid, "scheduled").await.is_err());
    assert!(pending_exists(&s, "mid").await);
    let mut body = credential_body("Initial-mid-Pass", API_TOKEN);
    body["username"] = "admin@mid.example".into();
    body["smtp_host"] = "localhost".into();
    body["smtp_port"] = s.mail.smtp_port.into();
    body["mailu_api_url"] = s.mail.api_url.clone().into();
    let request = StoreCredentialRequest::from_json(body).unwrap();
    s.env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &mid, request).await.unwrap();
    assert!(!pending_exists(&s, "mid").await, "the store dropped the pending record it replaced");
    let meta = s.env.core.credential_metadata(&Actor::operator(), &mid).await.unwrap();
    assert_eq!(meta.state.as_str(), "active");
    let (_, check) = consumer_view(&s, &s.env.core, "mid").await;
    assert_eq!(check, LoginCheck::Accepted);

    // `bad`: a pending record that is not one; the slice reports it and compares the rest.
    let (status, _) = s
        .env
        .vault_root(
            reqwest::Method::POST,
            "smtp/data/bad/pending",
            Some(serde_json::json!({"data": {"nonsense": true}, "options": {"cas": 0}})),
        )
        .await;
    assert!((200..300).contains(&status));
    let slice = s.env.core.reconcile_slice(&system()).await.unwrap();
    assert_eq!(slice.checked, 3);
    assert_eq!(slice.differences, ["bad: check_failed"]);
}
