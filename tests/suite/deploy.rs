//! What ships for operators, checked by the tools they will run it with: the Prometheus rules
//! (`promtool check rules`, and `promtool test rules` proving each fires on trouble and stays
//! quiet otherwise) and the console's `/metrics` (`promtool check metrics`).

use crate::common::{TestEnv, credential_body};
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{StoreCredentialRequest, TenantId};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/ensure-tools.sh test installs it)");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_prometheus_rules_are_valid_and_each_fires_on_the_trouble_it_names() {
    let (ok, said) = promtool(&["check", "rules", "alerts.yml"], None);
    assert!(ok, "{said}");
    let (ok, said) = promtool(&["test", "rules", "alerts.test.yml"], None);
    assert!(ok, "{said}");
    // Every rule has a unit test.
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/alerts.test.yml")).unwrap();
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {line}")), "{line} has no promtool test");
    }
}

#[tokio::test]
async fn the_metrics_endpoint_passes_promtool_and_has_every_series_the_rules_use() {
    let env = TestEnv::start().await;
    let request = StoreCredentialRequest::from_json(credential_body("Metrics-Pass-1", "tok")).unwrap();
    env.core
        .store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse("acme").unwrap(), request)
        .await
        .unwrap();
    let base = env.serve().await;
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let (ok, said) = promtool(&["check", "metrics"], Some(&metrics));
    assert!(ok, "promtool check metrics: {said}\n{metrics}");
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    for series in [
        "smtp_vault_vault_up",
        "smtp_vault_database_up",
        "smtp_vault_credentials",
        "smtp_vault_backup_age_seconds",
        "smtp_vault_alerts_open",
        "smtp_vault_outbox_depth",
    ] {
        assert!(rules.contains(series), "the rules no longer use {series}: update this list");
        assert!(metrics.lines().any(|l| l.starts_with(series)), "/metrics has no {series}:\n{metrics}");
    }
}

fn doctor(env: &TestEnv, extra: &[(&str, &str)], remove: &[&str]) -> (i32, String) {
    let mut command = crate::common::console_command(env);
    command
        .arg("doctor")
        .env("SMTP_VAULT_BACKUP_KEY", &env.config.backup_key_path)
        .env("SMTP_VAULT_BACKUP_TARGET", format!("file://{}", env.dir.path().join("backups").display()))
        .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
        .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8");
    for (k, v) in extra {
        command.env(k, v);
    }
    for k in remove {
        command.env_remove(k);
    }
    let out = command.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines().find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(check))).unwrap_or_default()
}

#[tokio::test]
async fn doctor_passes_a_sound_console_and_names_each_thing_that_is_wrong() {
    let env = TestEnv::start().await;
    if !env.config.backup_key_path.exists() {
        smtp_vault::core::generate_backup_key(&env.config).unwrap();
    }
    let (code, out) = doctor(&env, &[], &[]);
    assert_eq!(code, 0, "{out}");
    for name in ["configuration", "keyring", "backup key", "database", "vault", "vault token", "public URL", "clock"] {
        assert!(line(&out, name).starts_with("ok  "), "{name}: {out}");
    }
    assert!(line(&out, "alert email").starts_with("skip"), "{out}");

    // A keyring others can read.
    use std::os::unix::fs::PermissionsExt as _;
    let keyring = &env.config.keyring_path;
    std::fs::set_permissions(keyring, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = doctor(&env, &[], &[]);
    std::fs::set_permissions(keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "keyring").starts_with("FAIL") && line(&out, "keyring").contains("chmod 600"), "{out}");

    // The console logged in with a root token: more than its policy.
    let (code, out) = doctor(
        &env,
        &[("VAULT_TOKEN", secrecy::ExposeSecret::expose_secret(&env.bao.root_token))],
        &["VAULT_ROLE_ID", "VAULT_SECRET_ID"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "vault token").starts_with("FAIL"), "{out}");
    assert!(line(&out, "vault").starts_with("ok  "), "Vault itself is fine: {out}");

    // A public URL browsers refuse passkeys on, an alert server that does not answer, a
    // database not yet migrated.
    let dead = crate::common::alerts::unused_port();
    let fresh = format!("sqlite://{}/fresh.db", env.dir.path().display());
    let (code, out) = doctor(
        &env,
        &[
            ("SMTP_VAULT_PUBLIC_URL", "http://console.example.com"),
            ("SMTP_VAULT_ALERT_SMTP_URL", &format!("smtp://127.0.0.1:{dead}?tls=none")),
            ("DATABASE_URL", &fresh),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    for name in ["public URL", "alert email", "database"] {
        assert!(line(&out, name).starts_with("FAIL"), "{name}: {out}");
    }
    assert!(line(&out, "database").contains("smtp-vault migrate"), "{out}");
    assert!(!env.dir.path().join("fresh.db").exists(), "the doctor must not create the database");

    // As systemd's ExecStartPre after an upgrade or during a mail outage: what serve fixes or
    // retries by itself warns, so the console still starts.
    let (code, out) = doctor(
        &env,
        &[("SMTP_VAULT_ALERT_SMTP_URL", &format!("smtp://127.0.0.1:{dead}?tls=none")), ("DATABASE_URL", &fresh)],
        &[],
    );
    assert_eq!(code, 1, "without --preflight: {out}");
    let mut command = crate::common::console_command(&env);
    command
        .args(["doctor", "--preflight"])
        .env("SMTP_VAULT_BACKUP_KEY", &env.config.backup_key_path)
        .env("SMTP_VAULT_ALERT_SMTP_URL", format!("smtp://127.0.0.1:{dead}?tls=none"))
        .env("SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", "true")
        .env("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", "127.0.0.0/8")
        .env("DATABASE_URL", &fresh);
    let preflight = command.output().unwrap();
    let said = String::from_utf8_lossy(&preflight.stdout);
    assert_eq!(preflight.status.code(), Some(0), "{said}");
    assert!(line(&said, "database").starts_with("warn") && line(&said, "alert email").starts_with("warn"), "{said}");

    // A SIEM setting serve would refuse.
    let (code, out) = doctor(
        &env,
        &[
            ("SMTP_VAULT_SIEM_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
            ("SMTP_VAULT_SIEM_WEBHOOK_SECRET", "not-a-whsec"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "SIEM export").starts_with("FAIL"), "{out}");
    assert!(!out.contains("not-a-whsec"), "the doctor printed the secret");
    assert!(!out.contains(secrecy::ExposeSecret::expose_secret(&env.secret_id)), "the doctor printed a secret");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy("systemd/smtp-vault.service")).unwrap();
    // As installed: the binary where the unit expects it (here, this build's).
    let unit = unit.replace("/usr/local/bin/smtp-vault", env!("CARGO_BIN_EXE_smtp-vault"));
    for (setting, why) in [
        ("NoNewPrivileges=yes", "no privilege ever"),
        ("ProtectSystem=strict", "nothing writable but the state directory"),
        ("PrivateTmp=yes", "its own /tmp"),
        ("User=smtp-vault", "a dedicated user"),
        ("StateDirectoryMode=0700", "state readable by the console only"),
        ("Restart=on-failure", "restarted after a crash"),
        ("smtp-vault doctor --preflight", "the doctor before every start"),
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting} ({why})");
    }
    let path = dir.path().join("smtp-vault.service");
    std::fs::write(&path, unit).unwrap();
    let out =
        Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze (Debian's systemd)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
