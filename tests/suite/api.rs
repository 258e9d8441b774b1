//! The JSON API against a real OpenBao and database: storing, reading, the Vault layout, the
//! error-body contract for bad input, token life cycle and the console's Vault policy.

use crate::common;

use crate::common::{TestEnv, credential_body, db_fingerprint, vault_call};
use reqwest::Method;
use serde_json::{Value, json};
use smtp_vault::core::crypto::CryptoError;
use smtp_vault::core::{ClientInfo, Error};
use smtp_vault::model::{Scope, TenantId};

/// (path tenant segment, bearer token, body, expected status, expected code)
type Case<'a> = (&'a str, Option<&'a str>, Option<Value>, u16, &'a str);

const ALL_CREDENTIAL_SCOPES: [Scope; 3] =
    [Scope::CredentialsWrite, Scope::CredentialsRead, Scope::CredentialsReadSecret];

async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn stored_credentials_are_envelopes_in_vault_and_plaintext_only_through_the_secret_route() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let token = env.token(&ALL_CREDENTIAL_SCOPES).await;
    let url = format!("{base}/api/v1/tenants/acme/smtp-credentials");

    let (status, _, body) =
        call(Method::PUT, &url, Some(&token), Some(credential_body("Pl41n-Acme-Pass", "mailu-tok-acme"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);

    // Straight from Vault: envelopes, never the plaintext.
    let (status, raw) = env.vault_root(Method::GET, "smtp/data/acme/admin", None).await;
    assert_eq!(status, 200);
    let data = &raw["data"]["data"];
    for field in ["password", "mailu_api_token"] {
        let text = data[field].as_str().unwrap();
        assert!(text.starts_with("v1."), "{field} is not an envelope: {text}");
    }
    let raw_text = raw.to_string();
    assert!(!raw_text.contains("Pl41n-Acme-Pass") && !raw_text.contains("mailu-tok-acme"));
    assert_eq!(data["username"], "admin@acme.example");
    assert_eq!(data["smtp_port"], 587);

    let (status, _, meta) = call(Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!((meta["version"].as_u64(), meta["state"].as_str()), (Some(1), Some("active")));
    assert!(meta.get("password").is_none() && !meta.to_string().contains("Pl41n"));
    assert!(meta["next_rotation_at"].is_string());

    let (status, headers, secret) = call(Method::GET, &format!("{url}/secret"), Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(secret["password"], "Pl41n-Acme-Pass");
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");

    // A second store makes version 2; the first stays in Vault's history.
    let (status, _, body) =
        call(Method::PUT, &url, Some(&token), Some(credential_body("Second-Pass-9", "mailu-tok-2"))).await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(2)));
    let (_, list_body) = {
        let (s, _, b) = call(Method::GET, &format!("{base}/api/v1/tenants"), Some(&token), None).await;
        (s, b)
    };
    assert_eq!(list_body["tenants"][0]["tenant_id"], "acme");
    assert_eq!(list_body["tenants"][0]["version"], 2);
    assert_eq!((list_body["total"].as_u64(), list_body["next_cursor"].as_str()), (Some(1), None));
    // Filters and paging in the query string; a typo or a bad value is a 400, not everything.
    let (status, _, drifted) =
        call(Method::GET, &format!("{base}/api/v1/tenants?state=drifted&limit=10"), Some(&token), None).await;
    assert_eq!((status, drifted["total"].as_u64()), (200, Some(0)));
    for bad in ["?state=gone", "?limit=0", "?limit=501", "?cursor=acme", "?stat=active", "?due_before=tomorrow"] {
        let (status, _, body) = call(Method::GET, &format!("{base}/api/v1/tenants{bad}"), Some(&token), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Every change and the read are in the chain, in order, and the chain verifies.
    let events: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT event_type, tenant_id FROM audit_events WHERE event_type LIKE 'credential%' ORDER BY seq",
    )
    .fetch_all(env.core.db().pool())
    .await
    .unwrap();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["credential_stored", "credential_secret_read", "credential_stored"]);
    assert!(env.core.verify_audit_chain().await.unwrap().first_broken.is_none());
}

#[tokio::test]
async fn a_store_follows_vault_when_it_moved_on_without_the_database() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let token = env.token(&ALL_CREDENTIAL_SCOPES).await;
    let store = |tenant: &str, password: &str| {
        let (url, token, body) =
            (format!("{base}/api/v1/tenants/{tenant}/smtp-credentials"), token.clone(), credential_body(password, "t"));
        async move { call(Method::PUT, &url, Some(&token), Some(body)).await }
    };
    let (status, _, body) = store("acme", "First-Pass-1").await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(1)), "{body}");
    // Vault moves on behind the console's back: a known tenant written directly, and a path the
    // database has never seen that already has history.
    let (_, raw) = env.vault_root(Method::GET, "smtp/data/acme/admin", None).await;
    for (tenant, cas) in [("acme", 1), ("globex", 0)] {
        let copy = json!({"data": raw["data"]["data"].clone(), "options": {"cas": cas}});
        let (status, answer) = env.vault_root(Method::POST, &format!("smtp/data/{tenant}/admin"), Some(copy)).await;
        assert_eq!(status, 200, "{answer}");
    }
    // A secret read meanwhile: its event (committed while Vault answered) names the version
    // the database recorded; Vault answered another, so a correction naming the version handed
    // out is on the trail before the answer.
    for (tenant, first, then) in [("acme", Some(1), 2)] {
        let (status, _, secret) =
            call(Method::GET, &format!("{base}/api/v1/tenants/{tenant}/smtp-credentials/secret"), Some(&token), None)
                .await;
        assert_eq!((status, secret["version"].as_u64()), (200, Some(then)), "{tenant}: {secret}");
        let reads: Vec<(String,)> = sqlx::query_as(
            "SELECT details FROM audit_events WHERE event_type = 'credential_secret_read' AND tenant_id = $1 ORDER BY seq",
        )
        .bind(tenant)
        .fetch_all(env.core.db().pool())
        .await
        .unwrap();
        let reads: Vec<serde_json::Value> = reads.iter().map(|(d,)| serde_json::from_str(d).unwrap()).collect();
        let mut want = Vec::new();
        if let Some(first) = first {
            want.push(json!({"version": first, "field": "password"}));
        }
        want.push(json!({"version": then, "field": "password", "corrects_version": first}));
        assert_eq!(reads, want, "{tenant}");
    }

    for (tenant, want) in [("acme", 3u64), ("globex", 2)] {
        let (status, _, body) = store(tenant, "Next-Pass-2").await;
        assert_eq!((status, body["version"].as_u64()), (200, Some(want)), "{tenant}: {body}");
        let (_, meta) = env.vault_root(Method::GET, &format!("smtp/metadata/{tenant}/admin"), None).await;
        assert_eq!(meta["data"]["current_version"], want);
        let (recorded,): (i64,) = sqlx::query_as("SELECT version FROM tenants WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
        assert_eq!(u64::try_from(recorded).unwrap(), want);
        let (status, _, secret) =
            call(Method::GET, &format!("{base}/api/v1/tenants/{tenant}/smtp-credentials/secret"), Some(&token), None)
                .await;
        assert_eq!((status, secret["password"].as_str()), (200, Some("Next-Pass-2")));
    }
    // The attempt that conflicted left nothing behind: one stored event per store.
    let (stored,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_stored'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(stored, 3);
    assert!(env.core.verify_audit_chain().await.unwrap().first_broken.is_none());
}

#[tokio::test]
async fn connections_the_database_cut_while_idle_are_replaced_before_use() {
    let env = TestEnv::start().await;
    if !env.db.is_postgres() {
        eprintln!("skipped: a SQLite connection is a file handle nobody else can cut");
        return;
    }
    let base = env.serve().await;
    let token = env.token(&ALL_CREDENTIAL_SCOPES).await;
    let secret_url = format!("{base}/api/v1/tenants/acme/smtp-credentials/secret");
    let (status, _, _) = call(
        Method::PUT,
        &format!("{base}/api/v1/tenants/acme/smtp-credentials"),
        Some(&token),
        Some(credential_body("Kept-Pass-1", "t")),
    )
    .await;
    assert_eq!(status, 200);
    // Several pooled connections in use at once, then all cut, as a database restart would.
    let reads =
        futures_util::future::join_all((0..6).map(|_| call(Method::GET, &secret_url, Some(&token), None))).await;
    assert!(reads.iter().all(|(status, _, _)| *status == 200));
    assert!(env.db.cut_connections().await >= 2);
    // The pool checks only connections that sat unused for a second (one in steady use is as
    // good as its last query); this is that quiet second passing, not a wait for an event.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let reads =
        futures_util::future::join_all((0..6).map(|_| call(Method::GET, &secret_url, Some(&token), None))).await;
    for (status, _, body) in reads {
        assert_eq!((status, body["password"].as_str()), (200, Some("Kept-Pass-1")), "{body}");
    }
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_tenant_fails_to_decrypt_with_a_clear_error() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let token = env.token(&ALL_CREDENTIAL_SCOPES).await;
    for (tenant, password) in [("acme", "Acme-Secret-1"), ("globex", "Globex-Secret-1")] {
        let url = format!("{base}/api/v1/tenants/{tenant}/smtp-credentials");
        let (status, _, _) = call(Method::PUT, &url, Some(&token), Some(credential_body(password, "tok"))).await;
        assert_eq!(status, 200);
    }
    // An attacker with Vault write access copies acme's ciphertext into globex's secret.
    let (_, acme) = env.vault_root(Method::GET, "smtp/data/acme/admin", None).await;
    let (_, globex) = env.vault_root(Method::GET, "smtp/data/globex/admin", None).await;
    let mut forged = globex["data"]["data"].clone();
    forged["password"] = acme["data"]["data"]["password"].clone();
    let (status, _) = env
        .vault_root(Method::POST, "smtp/data/globex/admin", Some(json!({"options": {"cas": 1}, "data": forged})))
        .await;
    assert_eq!(status, 200);

    let (status, headers, body) =
        call(Method::GET, &format!("{base}/api/v1/tenants/globex/smtp-credentials/secret"), Some(&token), None).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "credential_integrity_error");
    assert!(!body.to_string().contains("acme"), "the caller learns nothing about other tenants: {body}");
    assert!(!body.to_string().contains("Acme-Secret-1"));
    assert!(headers.get("cache-control").is_none_or(|v| v == "no-store"));

    // The core names the cause precisely for the operator.
    let globex_id = TenantId::parse("globex").unwrap();
    let actor = env.core.authenticate_token(&token).await.unwrap();
    let err = env.core.read_credential_secret(&actor, &ClientInfo::local(), &globex_id).await.unwrap_err();
    match err {
        Error::Crypto(CryptoError::WrongTenant { expected, actual }) => {
            assert_eq!((expected.as_str(), actual.as_str()), ("globex", "acme"));
        }
        other => panic!("expected WrongTenant, got {other:?}"),
    }
    let (critical,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_integrity_failed' AND severity = 'critical' AND tenant_id = 'globex'",
    )
    .fetch_one(env.core.db().pool())
    .await
    .unwrap();
    assert_eq!(critical, 2);
    let (reads,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM audit_events WHERE event_type = 'credential_secret_read' AND tenant_id = 'globex'",
    )
    .fetch_one(env.core.db().pool())
    .await
    .unwrap();
    // Each read was recorded while Vault answered, and voided once the check failed: nothing
    // was handed out, and the trail says so next to the critical event.
    let voided: Vec<(String,)> = sqlx::query_as(
        "SELECT details FROM audit_events WHERE event_type = 'credential_secret_read_voided' AND tenant_id = 'globex' ORDER BY seq",
    )
    .fetch_all(env.core.db().pool())
    .await
    .unwrap();
    assert_eq!((reads, voided.len()), (2, 2), "every early read is voided");
    for (details,) in voided {
        let details: serde_json::Value = serde_json::from_str(&details).unwrap();
        assert_eq!(details["error"], "credential_integrity_error", "{details}");
        let (read,): (String,) = sqlx::query_as("SELECT event_type FROM audit_events WHERE seq = $1")
            .bind(details["voids_seq"].as_i64().unwrap())
            .fetch_one(env.core.db().pool())
            .await
            .unwrap();
        assert_eq!(read, "credential_secret_read");
    }
}

#[tokio::test]
async fn bad_input_gets_the_documented_error_and_changes_nothing() {
    let clock = common::ManualClock::new();
    let env = TestEnv::builder().clock(clock.clone()).start().await;
    let base = env.serve().await;
    let writer = env.token(&ALL_CREDENTIAL_SCOPES).await;
    let reader = env.token(&[Scope::CredentialsRead]).await;
    let expiring = {
        use secrecy::ExposeSecret;
        let created = env
            .core
            .create_token(
                &smtp_vault::core::Actor::operator(),
                "short",
                &ALL_CREDENTIAL_SCOPES,
                Some(chrono::Duration::hours(1)),
            )
            .await
            .unwrap();
        created.token.expose_secret().to_owned()
    };
    let revoked = {
        use secrecy::ExposeSecret;
        let created = env
            .core
            .create_token(&smtp_vault::core::Actor::operator(), "gone", &ALL_CREDENTIAL_SCOPES, None)
            .await
            .unwrap();
        env.core.revoke_token(&smtp_vault::core::Actor::operator(), &created.summary.token_id).await.unwrap();
        created.token.expose_secret().to_owned()
    };
    clock.advance(chrono::Duration::hours(2));
    let before = db_fingerprint(&env.core).await;

    let good = credential_body("Never-Stored-Pass", "never-stored-token");
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let creds = "smtp-credentials";
    // (path tenant segment, token, body, expected status, expected code)
    let cases: Vec<Case<'_>> = vec![
        ("", Some(&writer), Some(good.clone()), 400, "invalid_tenant_id"),
        ("..%2Fx", Some(&writer), Some(good.clone()), 400, "invalid_tenant_id"),
        ("A", Some(&writer), Some(good.clone()), 400, "invalid_tenant_id"),
        ("a_b", Some(&writer), Some(good.clone()), 400, "invalid_tenant_id"),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            Some(&writer),
            Some(good.clone()),
            400,
            "invalid_tenant_id",
        ),
        ("%C3%A9", Some(&writer), Some(good.clone()), 400, "invalid_tenant_id"),
        ("-acme", Some(&writer), Some(good.clone()), 400, "invalid_tenant_id"),
        ("acme", Some(&writer), Some(without("password")), 422, "invalid_field"),
        ("acme", Some(&writer), Some(with("password", json!(1234567))), 422, "invalid_field"),
        ("acme", Some(&writer), Some(with("smtp_port", json!("587"))), 422, "invalid_field"),
        ("acme", Some(&writer), Some(with("smtp_port", json!(0))), 422, "invalid_field"),
        ("acme", Some(&writer), Some(with("password", json!("x".repeat(2000)))), 422, "invalid_field"),
        ("acme", Some(&writer), Some(with("smtp_host", json!(["a"]))), 422, "invalid_field"),
        ("acme", Some(&writer), Some(with("extra", json!(true))), 422, "invalid_field"),
        ("acme", Some(&writer), Some(json!([1, 2, 3])), 422, "invalid_field"),
        ("acme", None, Some(good.clone()), 401, "unauthenticated"),
        ("acme", Some("svt_000000000000_wrongwrongwrong"), Some(good.clone()), 401, "unauthenticated"),
        ("acme", Some("not-even-a-token"), Some(good.clone()), 401, "unauthenticated"),
        ("acme", Some(&reader), Some(good.clone()), 403, "insufficient_scope"),
        ("acme", Some(&expiring), Some(good.clone()), 401, "unauthenticated"),
        ("acme", Some(&revoked), Some(good.clone()), 401, "unauthenticated"),
    ];
    for (tenant, token, body, status, code) in cases {
        let url = format!("{base}/api/v1/tenants/{tenant}/{creds}");
        let (got, headers, answer) = call(Method::PUT, &url, token, body).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "PUT {tenant}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty() && !message.contains("Never-Stored") && !message.contains("1234567"), "{message}");
        if status == 401 {
            assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
        }
    }

    // Raw bodies: malformed JSON, wrong content type, oversized.
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/tenants/acme/{creds}");
    let raw_cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (Some("application/json"), b"{\"username\": ".to_vec(), 400, "malformed_json"),
        (Some("application/json"), b"not json".to_vec(), 400, "malformed_json"),
        (Some("text/plain"), serde_json::to_vec(&good).unwrap(), 415, "unsupported_media_type"),
        (None, serde_json::to_vec(&good).unwrap(), 415, "unsupported_media_type"),
        (
            Some("application/json"),
            serde_json::to_vec(&with("webmail_url", json!("x".repeat(70_000)))).unwrap(),
            413,
            "payload_too_large",
        ),
    ];
    for (content_type, bytes, status, code) in raw_cases {
        let mut request = client.put(&url).bearer_auth(&writer).body(bytes);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{answer}");
    }

    // Reads of unknown tenants and unknown routes.
    let (status, _, answer) =
        call(Method::GET, &format!("{base}/api/v1/tenants/nobody/{creds}/secret"), Some(&writer), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _, answer) = call(Method::GET, &format!("{base}/api/v1/nothing-here"), Some(&writer), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, _, answer) = call(Method::DELETE, &url, Some(&writer), None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (405, Some("method_not_allowed")));

    // Nothing was written: no tenant, no audit event, no token; Vault holds no secret.
    assert_eq!(db_fingerprint(&env.core).await, before);
    let (status, _) = env.vault_root(Method::from_bytes(b"LIST").unwrap(), "smtp/metadata", None).await;
    assert_eq!(status, 404, "the mount must still be empty");
}

#[tokio::test]
async fn health_and_readiness_reflect_dependencies() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let (status, _, body) = call(Method::GET, &format!("{base}/healthz"), None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _, body) = call(Method::GET, &format!("{base}/readyz"), None, None).await;
    assert_eq!((status, body["vault"].as_str(), body["database"].as_bool()), (200, Some("active"), Some(true)));
    // Seal Vault: readiness must say so.
    let (status, _) = env.vault_root(Method::PUT, "sys/seal", None).await;
    assert_eq!(status, 204);
    // Probes are shared for a moment (a flood of callers is one probe), so poll.
    let url = format!("{base}/readyz");
    common::wait_until("readiness to report the sealed Vault", std::time::Duration::from_secs(10), || async {
        let (status, _, body) = call(Method::GET, &url, None, None).await;
        (status, body["vault"].as_str()) == (503, Some("sealed"))
    })
    .await;
}

#[tokio::test]
async fn the_console_policy_denies_everything_outside_its_mount() {
    let env = TestEnv::start().await;
    use secrecy::ExposeSecret;
    let (status, login) = vault_call(
        &env.bao.addr,
        "",
        Method::POST,
        "auth/approle/login",
        Some(json!({"role_id": env.role_id, "secret_id": env.secret_id.expose_secret()})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = login["auth"]["client_token"].as_str().unwrap().to_owned();
    let policies: Vec<&str> = login["auth"]["policies"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(policies.contains(&"smtp-vault-console"));

    let doc = json!({"data": {"username": "u"}, "options": {"cas": 0}});
    let allowed =
        vault_call(&env.bao.addr, &token, Method::POST, "smtp/data/policy-probe/admin", Some(doc.clone())).await;
    assert_eq!(allowed.0, 200, "inside its mount the console may write: {}", allowed.1);
    let read = vault_call(&env.bao.addr, &token, Method::GET, "smtp/data/policy-probe/admin", None).await;
    assert_eq!(read.0, 200);

    let outside: [(Method, &str, Option<Value>); 8] = [
        (Method::POST, "secret/data/x", Some(doc.clone())),
        (Method::GET, "secret/data/x", None),
        (Method::GET, "sys/policies/acl/smtp-vault-console", None),
        (
            Method::PUT,
            "sys/policies/acl/smtp-vault-console",
            Some(json!({"policy": "path \"*\" {capabilities=[\"sudo\"]}"})),
        ),
        (Method::POST, "sys/mounts/other", Some(json!({"type": "kv"}))),
        (Method::POST, "auth/token/create", Some(json!({"policies": ["root"]}))),
        (Method::GET, "auth/approle/role/smtp-vault-console/role-id", None),
        (Method::POST, "smtp/config", Some(json!({"cas_required": false}))),
    ];
    for (method, path, body) in outside {
        let (status, answer) = vault_call(&env.bao.addr, &token, method.clone(), path, body).await;
        assert_eq!(status, 403, "{method} {path} must be denied: {answer}");
    }
}

#[tokio::test]
async fn service_tokens_are_hashed_and_listed_without_secrets() {
    let env = TestEnv::start().await;
    use secrecy::ExposeSecret;
    let operator = smtp_vault::core::Actor::operator();
    let created = env.core.create_token(&operator, "provisioner", &[Scope::CredentialsWrite], None).await.unwrap();
    let token = created.token.expose_secret().to_owned();
    let secret_part = common::token_secret(&token).to_owned();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT token_id, secret_hash FROM service_tokens")
        .fetch_all(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].1.contains(&secret_part) && rows[0].1.len() == 64, "stored hashed");
    let listed = env.core.list_tokens(&operator).await.unwrap();
    assert!(!format!("{listed:?}").contains(&secret_part));
    // A service token cannot mint or list tokens.
    let actor = env.core.authenticate_token(&token).await.unwrap();
    assert!(matches!(env.core.create_token(&actor, "x", &[Scope::AuditRead], None).await, Err(Error::Forbidden(_))));
    assert!(matches!(env.core.list_tokens(&actor).await, Err(Error::Forbidden(_))));
    assert!(env.core.revoke_token(&operator, &created.summary.token_id).await.unwrap());
    assert!(!env.core.revoke_token(&operator, &created.summary.token_id).await.unwrap(), "second revoke is a no-op");
    assert!(matches!(env.core.authenticate_token(&token).await, Err(Error::Unauthenticated)));
    assert!(matches!(env.core.revoke_token(&operator, "ffffffffffff").await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn the_console_keeps_its_approle_token_alive_past_the_max_ttl() {
    use smtp_vault::core::vault::{RoleSettings, Vault, VaultAuth, VaultSettings};
    use std::sync::Arc;
    let env = TestEnv::start().await;
    // Re-run vault-setup with very short token lifetimes, as an operator might.
    let mut admin_config = env.config.clone();
    admin_config.vault_token = Some(env.bao.root_token.clone());
    let admin =
        smtp_vault::core::Core::connect(&admin_config, smtp_vault::core::Needs { vault: true, keyring: false }, None)
            .await
            .unwrap();
    let short = RoleSettings { token_ttl: "2s".into(), token_max_ttl: "4s".into(), secret_id_ttl: "0".into() };
    let report = admin.setup_vault(&smtp_vault::core::Actor::operator(), &short).await.unwrap();
    let vault = Arc::new(
        Vault::connect(VaultSettings {
            addrs: vec![env.bao.addr.clone()],
            mount: "smtp".into(),
            approle_mount: "approle".into(),
            auth: VaultAuth::AppRole { role_id: report.role_id, secret_id: report.secret_id },
            timeout: std::time::Duration::from_secs(5),
        })
        .await
        .unwrap(),
    );
    tokio::spawn(Arc::clone(&vault).maintain_token());
    // Four refreshes span more than the 4 s maximum TTL of the first token.
    common::wait_until("token refreshes", std::time::Duration::from_secs(30), || {
        let v = Arc::clone(&vault);
        async move { v.token_refreshes() >= 4 }
    })
    .await;
    let tenant = TenantId::parse("renewal-probe").unwrap();
    assert!(vault.read_credential(&tenant).await.unwrap().is_none(), "the current token still works");
}

#[tokio::test]
async fn when_the_audit_log_cannot_be_written_nothing_is_stored_or_revealed() {
    let env = TestEnv::start().await;
    let base = env.serve().await;
    let token = env.token(&ALL_CREDENTIAL_SCOPES).await;
    let url = format!("{base}/api/v1/tenants/acme/smtp-credentials");
    let (status, _, _) =
        call(Method::PUT, &url, Some(&token), Some(credential_body("Fail-Closed-Pass-1", "tok"))).await;
    assert_eq!(status, 200);
    // Break the audit log: its chain head disappears.
    sqlx::query("DELETE FROM audit_head").execute(env.core.db().pool()).await.unwrap();

    let (status, _, body) = call(Method::GET, &format!("{url}/secret"), Some(&token), None).await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.to_string().contains("Fail-Closed-Pass-1"), "no plaintext without its audit event");

    let (status, _, body) =
        call(Method::PUT, &url, Some(&token), Some(credential_body("Fail-Closed-Pass-2", "tok"))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (500, Some("internal_error")));
    let (_, raw) = env.vault_root(Method::GET, "smtp/metadata/acme/admin", None).await;
    assert_eq!(raw["data"]["current_version"], 1, "Vault was not written");
    let (version,): (i64,) = sqlx::query_as("SELECT version FROM tenants WHERE tenant_id = 'acme'")
        .fetch_one(env.core.db().pool())
        .await
        .unwrap();
    assert_eq!(version, 1);
}
