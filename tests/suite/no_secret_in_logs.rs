//! Captures every log line at every level (TRACE, all crates) while a full journey runs —
//! vault-setup, AppRole login, token creation, store, read, a failed decrypt, bad input, a
//! reveal, an invite's page and enrollment, and CLI commands at `RUST_LOG=trace` — and searches
//! the capture for each plaintext secret used. Its own test binary, because the
//! capturing subscriber is process-global.

use crate::common;

use crate::common::passkeys::server_fn;
use crate::common::{TestEnv, credential_body};
use secrecy::ExposeSecret;
use serde_json::json;
use smtp_vault::model::Scope;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line_at_any_level() {
    let capture = Capture::default();
    // Global, so lines from worker threads and SQLite's own thread are captured too.
    tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(capture.clone()).try_init().unwrap();
    run_journey_and_check(&capture).await;
}

async fn run_journey_and_check(capture: &Capture) {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let token = env.token(&[Scope::CredentialsWrite, Scope::CredentialsRead, Scope::CredentialsReadSecret]).await;
    let (password, api_token) = ("Log-Canary-Password-7f3a", "Log-Canary-MailuToken-91c2");
    let client = reqwest::Client::new();
    for tenant in ["acme", "globex"] {
        let response = client
            .put(format!("{base}/api/v1/tenants/{tenant}/smtp-credentials"))
            .bearer_auth(&token)
            .json(&credential_body(password, api_token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let secret: serde_json::Value = client
        .get(format!("{base}/api/v1/tenants/acme/smtp-credentials/secret"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(secret["password"], password);
    // A wrong-typed secret field and a failed decrypt also go through the logs.
    let bad = client
        .put(format!("{base}/api/v1/tenants/acme/smtp-credentials"))
        .bearer_auth(&token)
        .json(&json!({"password": 42424242, "username": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let (_, acme) = env.vault_root(reqwest::Method::GET, "smtp/data/acme/admin", None).await;
    let mut forged = acme["data"]["data"].clone();
    forged["password"] = json!("v1.k1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA");
    env.vault_root(
        reqwest::Method::POST,
        "smtp/data/globex/admin",
        Some(json!({"options": {"cas": 1}, "data": forged})),
    )
    .await;
    let failed = client
        .get(format!("{base}/api/v1/tenants/globex/smtp-credentials/secret"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    // A platform admin reveals through the UI's server functions (enrollment, step-up, reveal).
    let (browser, mut key) =
        common::passkeys::http_admin(&env, &base, "logs@example.com", smtp_vault::model::Role::PlatformAdmin).await;
    let (status, options) = server_fn(
        &browser,
        &base,
        "begin_reveal",
        &[("tenant_id", "acme"), ("reason", "log canary check"), ("category", "other")],
    )
    .await;
    assert_eq!(status, 200, "{options}");
    let assertion = common::passkeys::answer(&mut key, &options);
    let (status, _) =
        server_fn(&browser, &base, "finish_reveal", &[("tenant_id", "acme"), ("credential", &assertion)]).await;
    assert_eq!(status, 200);
    let (status, revealed) = server_fn(&browser, &base, "reveal_credential", &[("tenant_id", "acme")]).await;
    assert_eq!(status, 200);
    assert!(revealed.contains(password), "the reveal really happened");
    // An invite link: its page is requested (the request line is logged) and its enrollment
    // begun; a log reader must not be able to redeem it.
    let invite = env
        .core
        .create_invite(
            &smtp_vault::core::Actor::operator(),
            &smtp_vault::core::ClientInfo::local(),
            "invited@example.com",
            smtp_vault::model::Role::PlatformAdmin,
        )
        .await
        .unwrap();
    let invite_token = invite.link.rsplit_once('/').unwrap().1.to_owned();
    let page = client.get(format!("{base}/enroll/{invite_token}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let fresh = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let (status, _) =
        server_fn(&fresh, &base, "begin_enrollment", &[("token", &invite_token), ("display_name", "Invited")]).await;
    assert_eq!(status, 200);
    let wrong = client.get(format!("{base}/api/v1/tenants")).bearer_auth(format!("{token}x")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    // The CLI, at the most verbose level: what it logs (standard error) must hold no secret,
    // including the ones it prints on standard output once by design (a new token, an invite
    // link) and the credentials it runs with.
    let cli = |args: &[&str]| {
        let out = common::console_command(&env)
            .args(args)
            .env("RUST_LOG", "trace")
            .env("SMTP_VAULT_BACKUP_TARGET", env.config.backup_target.to_string())
            .env("SMTP_VAULT_BACKUP_KEY", env.dir.path().join("keys/backup.key"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        (String::from_utf8_lossy(&out.stdout).trim().to_owned(), stderr)
    };
    std::fs::create_dir_all(env.dir.path().join("keys")).unwrap();
    let mut cli_logs = String::new();
    let (cli_token, err) = cli(&["token", "create", "--name", "canary", "--scope", "credentials:read"]);
    cli_logs.push_str(&err);
    let (cli_link, err) =
        cli(&["admin", "invite", "--email", "cli-invited@example.com", "--role", "security_reviewer"]);
    cli_logs.push_str(&err);
    for args in [
        &["keys", "generate", "--backup"][..],
        &["backup", "run"],
        &["backup", "list"],
        &["audit", "verify"],
        &["token", "list"],
        &["admin", "invites"],
    ] {
        let (out, err) = cli(args);
        cli_logs.push_str(&out);
        cli_logs.push_str(&err);
    }
    assert!(cli_logs.contains("TRACE") || cli_logs.contains("DEBUG"), "the CLI logged at the verbose levels");
    let cli_secrets = [
        ("CLI-created token secret", common::token_secret(&cli_token).to_owned()),
        ("CLI invite token", cli_link.rsplit_once('/').unwrap().1.to_owned()),
        ("AppRole secret id", env.secret_id.expose_secret().to_owned()),
        ("SMTP password", password.to_owned()),
        ("Mailu API token", api_token.to_owned()),
    ];
    for (what, value) in cli_secrets {
        assert!(!cli_logs.contains(&value), "the {what} appeared in the CLI's logs");
    }

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.len() > 1000, "the capture must actually hold the journey's logs ({} bytes)", logs.len());
    assert!(logs.contains("smtp_vault") || logs.contains("request"), "expected log lines from the console");
    let token_secret = common::token_secret(&token).to_owned();
    let secrets = [
        ("SMTP password", password.to_owned()),
        ("Mailu API token", api_token.to_owned()),
        ("service token secret", token_secret),
        ("Vault root token", env.bao.root_token.expose_secret().to_owned()),
        ("AppRole secret id", env.secret_id.expose_secret().to_owned()),
        ("invite token", invite_token),
    ];
    for (what, value) in secrets {
        assert!(!logs.contains(&value), "the {what} appeared in the logs");
    }
}
