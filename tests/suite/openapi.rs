//! The OpenAPI document of `/api/v1` against its peers: served without a token, valid for
//! openapi-spec-validator, and fuzzed by schemathesis against a live console with a token of
//! every scope — no 5xx but the documented 502, every answer matching its documented status,
//! content type, headers and schema, and nothing written by a refused request.

use crate::common::mail::{API_TOKEN, MailStandIn};
use crate::common::{TestEnv, credential_body};
use serde_json::Value;
use smtp_vault::core::mail::{MailServer, Mailu};
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{Scope, StoreCredentialRequest, TenantId};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;

/// The API tools' venv (scripts/ensure-tools.sh test installs it).
fn api_tool(name: &str) -> PathBuf {
    let root = std::env::var("SMTP_VAULT_TOOLS").unwrap_or_else(|_| "/opt/smtp-vault-tools".into());
    let tool = PathBuf::from(root).join("api-venv/bin").join(name);
    assert!(tool.exists(), "{} is missing: run scripts/ensure-tools.sh test", tool.display());
    tool
}

/// Every operation in the document, as (METHOD, path under /api/v1).
pub fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// Events that record a refusal or a failure, not a change: all a refused request may leave.
fn records_a_refusal(event: &str) -> bool {
    event.ends_with("_refused") || event.ends_with("_denied") || event.ends_with("_failed")
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_schemathesis_finds_nothing_against_a_live_console() {
    // `acme` (the document's example id) lives on the mail stand-in, so rotations, resets and
    // reverts of it reach the mail server instead of all ending in 404.
    let mail = MailStandIn::start();
    let env = TestEnv::builder().config(|c| c.smtp_ca_file = Some(mail.ca_path())).start().await;
    let login = "admin@acme.example";
    let mailu =
        Mailu::new(std::time::Duration::from_secs(5), Some(mail.ca_pem.clone()), crate::common::lab_policy()).unwrap();
    mailu.create_user(&mail.target(login), &secrecy::SecretString::from("Fuzz-First-Pass-1".to_owned())).await.unwrap();
    let mut body = credential_body("Fuzz-First-Pass-1", API_TOKEN);
    body["username"] = login.into();
    body["smtp_host"] = "localhost".into();
    body["smtp_port"] = mail.smtp_port.into();
    body["mailu_api_url"] = mail.api_url.clone().into();
    let seeded = TenantId::parse("acme").unwrap();
    let request = StoreCredentialRequest::from_json(body).unwrap();
    env.core.store_credential(&Actor::operator(), &ClientInfo::local(), &seeded, request).await.unwrap();
    let base = env.serve().await;
    let token = env.token(&Scope::ALL).await;

    let response = reqwest::get(format!("{base}/api/v1/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200, "the document needs no token");
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1."), "{}", document["openapi"]);
    let file = env.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    let validated = Command::new(api_tool("openapi-spec-validator")).arg(&file).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&validated.stdout), String::from_utf8_lossy(&validated.stderr));
    assert!(validated.status.success(), "openapi-spec-validator: {}", said.chars().take(2000).collect::<String>());

    let log = env.dir.path().join("fuzz.jsonl");
    let hooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api-fuzz");
    let fuzz = tokio::process::Command::new(api_tool("st"))
        .args([
            "run",
            &format!("{base}/api/v1/openapi.json"),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "console_answers,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            "20261207",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &hooks)
        .env("SMTP_VAULT_FUZZ_LOG", &log)
        .current_dir(env.dir.path())
        .output()
        .await
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&fuzz.stdout), String::from_utf8_lossy(&fuzz.stderr));
    assert!(fuzz.status.success(), "schemathesis found problems:\n{report}");

    // It reached every operation, and each answered at least once as documented.
    let answers: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let reached: BTreeSet<(String, String)> = answers
        .iter()
        .map(|a| (a["method"].as_str().unwrap().to_owned(), a["path"].as_str().unwrap().to_owned()))
        .collect();
    let mut tally: std::collections::BTreeMap<String, std::collections::BTreeMap<u64, usize>> = Default::default();
    for a in &answers {
        let operation = format!("{} {}", a["method"].as_str().unwrap(), a["path"].as_str().unwrap());
        *tally.entry(operation).or_default().entry(a["status"].as_u64().unwrap()).or_default() += 1;
    }
    for (operation, statuses) in &tally {
        eprintln!("{operation}: {statuses:?}");
    }
    let documented = operations(&document);
    let missing: Vec<_> = documented.difference(&reached).collect();
    assert!(missing.is_empty(), "schemathesis never called {missing:?}:\n{report}");
    assert!(answers.iter().any(|a| a["status"] == 200), "no request succeeded:\n{report}");

    // Nothing written by a refused request: every write is audited with the request id it came
    // from, so a refused (4xx) request may have left only a record of its refusal. And every
    // tenant that exists was written by a request that succeeded.
    let status_of: HashMap<String, u64> =
        answers.iter().filter_map(|a| Some((a["request_id"].as_str()?.to_owned(), a["status"].as_u64()?))).collect();
    let events: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT event_type, request_id, tenant_id FROM audit_events")
            .fetch_all(env.core.db().pool())
            .await
            .unwrap();
    for (event, request_id, tenant) in &events {
        let Some(status) = request_id.as_ref().and_then(|id| status_of.get(id)) else { continue };
        assert!(
            *status < 400 || *status >= 500 || records_a_refusal(event),
            "a refused request ({status}) wrote `{event}` for {tenant:?}"
        );
    }
    let tenants: Vec<(String,)> =
        sqlx::query_as("SELECT tenant_id FROM tenants").fetch_all(env.core.db().pool()).await.unwrap();
    for (tenant,) in tenants.iter().filter(|(t,)| t != seeded.as_str()) {
        let written_by_success = events.iter().any(|(event, request_id, t)| {
            t.as_deref() == Some(tenant.as_str())
                && event == "credential_stored"
                && request_id.as_ref().and_then(|id| status_of.get(id)).is_some_and(|s| *s == 200)
        });
        assert!(written_by_success, "tenant {tenant} exists without a successful request that stored it");
    }
}

/// The README's API table lists exactly the documented operations.
#[tokio::test]
async fn the_readme_lists_exactly_the_documented_operations() {
    let document = serde_json::to_value(smtp_vault::web::openapi::document()).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## JSON API").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut listed = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        // A cell holds one or more "`METHOD /path?query (note)`", comma-separated.
        let cell = row.split('|').nth(1).unwrap();
        for item in cell.split("`, `") {
            let item = item.trim().trim_matches('`');
            let Some((method, rest)) = item.split_once(' ') else { continue };
            let path = rest.split(['?', ' ', '`']).next().unwrap();
            // Health checks live at the root, outside /api/v1.
            let health = matches!(path, "/healthz" | "/readyz");
            if matches!(method, "GET" | "PUT" | "POST" | "DELETE" | "PATCH") && !health {
                listed.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    assert_eq!(listed, operations(&document), "README's JSON API table vs /api/v1/openapi.json");
}
