//! `GET /api/v1/audit` against a real database and OpenBao: every filter returns exactly the
//! matching events, keyset pagination walks the whole trail newest first without gaps or
//! repeats, the search text is data (never a pattern), bad input is a clear 400, and only
//! `audit:read` (security reviewers, platform admins) may read it.

use crate::common::{TestEnv, credential_body};
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{Scope, StoreCredentialRequest, TenantId};

async fn get(base: &str, token: &str, query: &str) -> (u16, serde_json::Value) {
    let response =
        reqwest::Client::new().get(format!("{base}/api/v1/audit{query}")).bearer_auth(token).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(serde_json::Value::Null))
}

fn seqs(page: &serde_json::Value) -> Vec<i64> {
    page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn every_filter_and_the_pagination_return_exactly_the_matching_events() {
    let env = TestEnv::start().await;
    for (tenant, times) in [("acme", 3), ("globex", 2)] {
        for i in 0..times {
            let request =
                StoreCredentialRequest::from_json(credential_body(&format!("Audit-{tenant}-{i}"), "tok")).unwrap();
            env.core
                .store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap(), request)
                .await
                .unwrap();
        }
    }
    let reader = env.token(&[Scope::AuditRead]).await;
    let other = env.token(&[Scope::CredentialsRead]).await;
    let base = env.serve().await;
    let (all_status, all) = get(&base, &reader, "?limit=500").await;
    assert_eq!(all_status, 200);
    let everything = seqs(&all);
    let (total,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events").fetch_one(env.core.db().pool()).await.unwrap();
    assert_eq!(everything.len(), usize::try_from(total).unwrap());
    assert!(everything.windows(2).all(|w| w[0] > w[1]), "newest first");

    let (_, acme) = get(&base, &reader, "?tenant=acme&event=credential_stored").await;
    assert_eq!(seqs(&acme).len(), 3);
    assert!(acme["events"].as_array().unwrap().iter().all(|e| e["tenant_id"] == "acme"));
    let (_, stored) = get(&base, &reader, "?event=credential_stored").await;
    assert_eq!(seqs(&stored).len(), 5);
    let (_, by_cli) = get(&base, &reader, "?actor=cli:&event=credential_stored").await;
    assert_eq!(seqs(&by_cli).len(), 5);
    let (_, nobody) = get(&base, &reader, "?actor=nobody-at-all").await;
    assert!(seqs(&nobody).is_empty());
    let (_, literal) = get(&base, &reader, "?q=%25").await;
    assert!(seqs(&literal).is_empty(), "% is searched for, not a wildcard: {literal}");
    let (_, found) = get(&base, &reader, "?q=mail.acme.example&tenant=globex").await;
    assert!(seqs(&found).is_empty() || found["events"].as_array().unwrap().iter().all(|e| e["tenant_id"] == "globex"));
    let (_, info) = get(&base, &reader, "?severity=info&limit=500").await;
    let expected: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["severity"] == "info")
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(seqs(&info), expected);
    let (_, future) = get(&base, &reader, "?since=2999-01-01T00:00:00Z").await;
    assert!(seqs(&future).is_empty());
    let (_, past) = get(&base, &reader, "?until=2000-01-01T00:00:00Z").await;
    assert!(seqs(&past).is_empty());

    // Keyset pagination: pages of 2, following the cursor, cover everything exactly once.
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let query = if cursor.is_empty() { "?limit=2".to_owned() } else { format!("?limit=2&cursor={cursor}") };
        let (status, page) = get(&base, &reader, &query).await;
        assert_eq!(status, 200);
        walked.extend(seqs(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(walked, everything);

    // Bad input: a clear 400 with the error body; no scope: 403; nobody: 401.
    for (query, code) in [
        ("?cursor=abc", "invalid_input"),
        ("?severity=loud", "invalid_input"),
        ("?tenant=Not_A_Tenant", "invalid_input"),
        ("?since=yesterday", "invalid_query"),
        ("?limit=-1", "invalid_query"),
        ("?tenantt=acme", "invalid_query"),
    ] {
        let (status, body) = get(&base, &reader, query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }
    assert_eq!(get(&base, &other, "").await.0, 403);
    assert_eq!(get(&base, "svt_nope_nope", "").await.0, 401);
}

#[tokio::test]
async fn exports_stream_csv_and_json_lines_with_the_same_filters() {
    let env = TestEnv::start().await;
    for tenant in ["acme", "globex"] {
        let mut body = credential_body("Export-Pass", "tok");
        // A value a spreadsheet would run as a formula, to prove it is neutralised.
        body["webmail_url"] = "https://mail.example/=cmd".into();
        let request = StoreCredentialRequest::from_json(body).unwrap();
        env.core
            .store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap(), request)
            .await
            .unwrap();
    }
    let reader = env.token(&[Scope::AuditRead]).await;
    let base = env.serve().await;
    let http = reqwest::Client::new();
    let response =
        http.get(format!("{base}/api/v1/audit/export.csv?tenant=acme")).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("seq,occurred_at,event"));
    assert!(lines.len() >= 2);
    assert!(lines[1..].iter().all(|l| l.contains(",acme,")), "{csv}");
    assert!(!csv.contains("Export-Pass"), "no secret in the trail");

    let response = http.get(format!("{base}/api/v1/audit/export.jsonl")).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (total,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events").fetch_one(env.core.db().pool()).await.unwrap();
    assert_eq!(events.len(), usize::try_from(total).unwrap(), "everything, oldest first");
    assert!(events.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));

    let response =
        http.get(format!("{base}/api/v1/audit/export.csv?severity=loud")).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let other = env.token(&[Scope::CredentialsRead]).await;
    assert_eq!(
        http.get(format!("{base}/api/v1/audit/export.csv")).bearer_auth(&other).send().await.unwrap().status(),
        403
    );
    assert_eq!(http.get(format!("{base}/api/v1/audit/export.jsonl")).send().await.unwrap().status(), 401);
}
