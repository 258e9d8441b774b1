//! The console as a process, killed: rotations through the API while `smtp-vault serve` is
//! killed with SIGKILL at random moments and started again (issue 15, point 6). Afterwards
//! every tenant's handed-out password logs in over SMTP, none is left rotating, Vault's version
//! is the console's, and the audit chain verifies. The in-process fault injection
//! (`tests/rotation.rs`) stops at each step; this one stops wherever the kernel does.

use crate::common;

use crate::common::TestEnv;
use crate::common::mail::{API_TOKEN, MailStandIn};
use smtp_vault::core::mail::{LoginCheck, MailServer, Mailu};
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{ProvisionCredentialRequest, Scope, TenantId};
use std::process::{Child, Stdio};
use std::time::Duration;

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];
const KILLS: usize = 20;

fn serve(env: &TestEnv, ca: &std::path::Path, port: u16) -> Child {
    common::console_command(env)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .env("SMTP_VAULT_BACKUP_TARGET", env.config.backup_target.to_string())
        .env("SMTP_VAULT_SMTP_CA_FILE", ca)
        .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
        .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8,::1/128")
        .env("SMTP_VAULT_ROTATION_RETRY_MS", "10")
        // No scheduled job fires during the test (a cron on 1 January).
        .env("SMTP_VAULT_DAILY_CRON", "0 0 2 1 1 *")
        .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    common::wait_until("the console to answer /readyz", Duration::from_secs(60), || {
        let url = format!("{base}/readyz");
        let http = http.clone();
        async move { http.get(url).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_survive_the_console_being_killed_at_random_moments() {
    let mail = MailStandIn::start();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &mail.ca_pem).unwrap();
    let env = TestEnv::builder().config(|c| c.smtp_ca_file = Some(ca.path().to_owned())).start().await;
    for tenant in TENANTS {
        let mut body = common::credential_body("unused", API_TOKEN);
        body.as_object_mut().unwrap().remove("password");
        body["username"] = format!("admin@{tenant}.example").into();
        body["smtp_host"] = "localhost".into();
        body["smtp_port"] = mail.smtp_port.into();
        body["mailu_api_url"] = mail.api_url.clone().into();
        let request = ProvisionCredentialRequest::from_json(body).unwrap();
        let id = TenantId::parse(tenant).unwrap();
        env.core.provision_credential(&Actor::operator(), &ClientInfo::local(), &id, request).await.unwrap();
    }
    let token = env.token(&[Scope::CredentialsRotate]).await;
    let seed =
        std::env::var("CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| getrandom::u64().unwrap() | 1);
    println!("CRASH_SEED={seed}");
    let mut rng = common::Rng(seed);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut answered = 0usize;
    for _ in 0..KILLS {
        let mut child = serve(&env, ca.path(), port);
        wait_ready(&base).await;
        // Rotations in flight, one per tenant, through the API as the platform would ask.
        let calls: Vec<_> = TENANTS
            .iter()
            .map(|tenant| {
                let (http, url, token) =
                    (http.clone(), format!("{base}/api/v1/tenants/{tenant}/smtp-credentials/rotate"), token.clone());
                tokio::spawn(async move { http.post(url).bearer_auth(token).send().await.map(|r| r.status()) })
            })
            .collect();
        // The kill lands anywhere in the first 150 ms of the work (the design of the
        // experiment, not a wait for something).
        tokio::time::sleep(Duration::from_millis(rng.next(150))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for call in calls {
            if call.await.unwrap().is_ok_and(|s| s.is_success()) {
                answered += 1;
            }
        }
    }
    println!("{answered} rotations answered before their process died");
    // The last start repairs what the kills left, by itself.
    let mut child = serve(&env, ca.path(), port);
    wait_ready(&base).await;
    // Settled means both sides: a kill between the pending write and the database's
    // `rotating` leaves a tenant `active` with a pending record, which the repair resumes later.
    let pool = env.core.db().pool().clone();
    let env_ref = &env;
    common::wait_until("start-up repair to settle every tenant", Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let (unsettled,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE state <> 'active'").fetch_one(&pool).await.unwrap();
            let mut pending = 0;
            for tenant in TENANTS {
                let path = format!("smtp/data/{tenant}/pending");
                if env_ref.vault_root(reqwest::Method::GET, &path, None).await.0 != 404 {
                    pending += 1;
                }
            }
            unsettled == 0 && pending == 0
        }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mailu = Mailu::new(Duration::from_secs(5), Some(mail.ca_pem.clone()), common::lab_policy()).unwrap();
    for tenant in TENANTS {
        let id = TenantId::parse(tenant).unwrap();
        let (status, pending) =
            env.vault_root(reqwest::Method::GET, &format!("smtp/data/{tenant}/pending"), None).await;
        assert_eq!(status, 404, "{tenant}: a pending record was left: {pending}");
        let (_, metadata) = env.vault_root(reqwest::Method::GET, &format!("smtp/metadata/{tenant}/admin"), None).await;
        let in_vault = metadata["data"]["current_version"].as_u64().unwrap();
        let recorded = env.core.credential_metadata(&Actor::operator(), &id).await.unwrap();
        assert_eq!(recorded.version, in_vault, "{tenant}: the console's version is Vault's (seed {seed})");
        let secret = env.core.read_credential_secret(&Actor::operator(), &ClientInfo::local(), &id).await.unwrap();
        let check = mailu.check_login(&mail.target(&secret.username), &secret.password).await;
        assert_eq!(check, LoginCheck::Accepted, "{tenant}: the handed-out password logs in (seed {seed})");
    }
    let report = env.core.verify_audit_chain().await.unwrap();
    assert_eq!(report.first_broken, None);
}
