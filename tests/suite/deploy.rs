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
