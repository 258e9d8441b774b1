//! The HTTP edge as browsers and callers meet it: an authorization matrix over every server
//! function (checked against the registry, so a new one without a row fails), every API route
//! and every page, for anonymous callers, each admin role and service tokens; sessions that
//! survive a restart and end when the admin is disabled; CSRF refusals; security headers.

use crate::common;

use crate::common::matrix::{SERVER_FNS, STEP_UP_FNS};
use crate::common::passkeys::server_fn;
use crate::common::{TestEnv, credential_body};
use reqwest::{Client, Method};
use smtp_vault::core::{Actor, ClientInfo};
use smtp_vault::model::{Role, Scope, StoreCredentialRequest, TenantId};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const SECRET: &str = "Matrix-Plaintext-Never-Leaks-1";

/// Who makes the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    Reviewer,
    Responder,
    Platform,
}

const EVERYONE: [Who; 4] = [Who::Anonymous, Who::Reviewer, Who::Responder, Who::Platform];

async fn browser_for(env: &TestEnv, base: &str, email: &str, role: Role) -> (Client, SoftPasskey) {
    common::passkeys::http_admin(env, base, email, role).await
}

fn provision_body() -> serde_json::Value {
    let mut body = credential_body("unused", "tok");
    body.as_object_mut().unwrap().remove("password");
    body
}

fn reset_body() -> serde_json::Value {
    serde_json::json!({"incident_id": "INC-1", "reason": "matrix check"})
}

async fn store_tenants(env: &TestEnv) {
    for tenant in ["acme", "globex"] {
        let request = StoreCredentialRequest::from_json(credential_body(SECRET, "tok")).unwrap();
        env.core
            .store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse(tenant).unwrap(), request)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn authorization_matrix_covers_every_server_function_api_route_and_page() {
    let env = TestEnv::start().await;
    store_tenants(&env).await;
    let base = env.serve().await;

    // 100% coverage: every registered server function has a row, and no row is stale.
    let mut registered: Vec<String> = leptos::server_fn::axum::server_fn_paths()
        .map(|(path, _)| path.trim_start_matches("/_app/").to_owned())
        .collect();
    registered.sort();
    let mut covered: Vec<String> = SERVER_FNS.iter().map(|(name, _, _)| (*name).to_owned()).collect();
    covered.sort();
    assert_eq!(registered, covered, "every server function needs a row in the matrix");

    let mut keys = Vec::new();
    let mut clients = vec![Client::builder().cookie_store(true).build().unwrap()];
    for (email, role) in [
        ("rev@example.com", Role::SecurityReviewer),
        ("resp@example.com", Role::IncidentResponder),
        ("plat@example.com", Role::PlatformAdmin),
    ] {
        let (client, key) = browser_for(&env, &base, email, role).await;
        clients.push(client);
        keys.push(key);
    }

    // Pages: all render, and none carries a secret; anonymous pages carry no tenant data.
    let pages = [
        "/",
        "/login",
        "/enroll/some-token",
        "/tenants/acme",
        "/approvals",
        "/audit",
        "/incidents",
        "/alerts",
        "/backups",
        "/admins",
    ];
    for (who, client) in EVERYONE.iter().zip(&clients) {
        for page in pages {
            let response = client.get(format!("{base}{page}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{who:?} GET {page}");
            let html = response.text().await.unwrap();
            assert!(!html.contains(SECRET), "{who:?} GET {page} leaked the password");
            if *who == Who::Anonymous {
                assert!(!html.contains("admin@acme.example"), "anonymous GET {page} shows tenant data");
            }
        }
    }

    // API routes for admin sessions (service tokens below).
    let api: [(Method, &str, [u16; 4]); 15] = [
        (Method::GET, "/api/v1/tenants", [401, 200, 200, 200]),
        (Method::GET, "/api/v1/tenants/acme/smtp-credentials", [401, 200, 200, 200]),
        (Method::PUT, "/api/v1/tenants/acme/smtp-credentials", [401, 403, 403, 403]),
        (Method::GET, "/api/v1/tenants/acme/smtp-credentials/secret", [401, 403, 403, 403]),
        (Method::POST, "/api/v1/tenants/acme/smtp-credentials/rotate", [401, 403, 403, 403]),
        (Method::POST, "/api/v1/tenants/acme/smtp-credentials/provision", [401, 403, 403, 403]),
        (Method::POST, "/api/v1/tenants/acme/smtp-credentials/emergency-reset", [401, 403, 403, 403]),
        (Method::POST, "/api/v1/tenants/acme/recover", [401, 403, 403, 403]),
        (Method::GET, "/api/v1/reveal-requests?pending=true", [401, 200, 403, 200]),
        (Method::GET, "/api/v1/audit?limit=5", [401, 200, 403, 200]),
        (Method::GET, "/api/v1/audit/export.csv", [401, 200, 403, 200]),
        (Method::GET, "/api/v1/audit/export.jsonl?tenant=acme", [401, 200, 403, 200]),
        (Method::POST, "/api/v1/sweeps", [401, 403, 403, 403]),
        (Method::POST, "/api/v1/tenants/acme/smtp-credentials/revert", [401, 403, 403, 403]),
        (Method::GET, "/api/v1/tenants/acme/mailu-admins", [401, 200, 200, 200]),
    ];
    // Every operation of the OpenAPI document has a row, and no row is undocumented.
    let documented = crate::openapi::operations(&serde_json::to_value(smtp_vault::web::openapi::document()).unwrap());
    let rows: std::collections::BTreeSet<(String, String)> = api
        .iter()
        .map(|(method, path, _)| {
            let path = path.trim_start_matches("/api/v1").split('?').next().unwrap().replace("/acme", "/{id}");
            (method.to_string(), path)
        })
        .collect();
    assert_eq!(rows, documented, "the matrix's API rows vs /api/v1/openapi.json");
    for (i, (who, client)) in EVERYONE.iter().zip(&clients).enumerate() {
        for (method, path, expected) in &api {
            let mut request = client.request(method.clone(), format!("{base}{path}"));
            if path.ends_with("/provision") {
                request = request.json(&provision_body());
            } else if path.ends_with("/emergency-reset") {
                request = request.json(&reset_body());
            } else if path.ends_with("/recover") {
                request = request.json(&serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": "https://mail.acme.example/api/v1"}));
            } else if path.ends_with("/sweeps") {
                request = request.json(&serde_json::json!({"admin_email": "plat@example.com", "dry_run": true}));
            } else if path.ends_with("/revert") {
                request = request.json(&serde_json::json!({"reason": "matrix check"}));
            } else if *method == Method::PUT {
                request = request.json(&credential_body("x-new-password", "t"));
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert_eq!(status, expected[i], "{who:?} {method} {path}: {body}");
            assert!(!body.contains(SECRET));
        }
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(client.get(format!("{base}{path}")).send().await.unwrap().status(), 200);
        }
        // Server functions, in order.
        for (name, form, expected) in &SERVER_FNS {
            let (status, body) = server_fn(client, &base, name, form).await;
            assert_eq!(status, expected[i], "{who:?} {name}: {body}");
            assert!(!body.contains(SECRET), "{who:?} {name} leaked the password");
        }
    }

    // The step-up dimension: every sensitive change is refused to every role until the session
    // has confirmed a passkey; then the role and the domain decide.
    // (The matrix ended with `logout`: each admin signs in again, in a new session.)
    let emails = ["rev@example.com", "resp@example.com", "plat@example.com"];
    for (i, key) in keys.iter_mut().enumerate() {
        let (client, _) = common::passkeys::http_login(&env, &base, emails[i], key).await;
        let client = &client;
        let who = EVERYONE[i + 1];
        for (name, form, before, _) in &STEP_UP_FNS {
            let (status, body) = server_fn(client, &base, name, form).await;
            assert_eq!(status, before[i], "{who:?} {name} without a step-up: {body}");
        }
        let (status, options) = server_fn(client, &base, "begin_confirm", &[]).await;
        assert_eq!(status, 200, "{options}");
        let credential = common::passkeys::answer(key, &options);
        let (status, body) = server_fn(client, &base, "finish_confirm", &[("credential", &credential)]).await;
        assert_eq!(status, 200, "{body}");
        for (name, form, _, after) in &STEP_UP_FNS {
            let (status, body) = server_fn(client, &base, name, form).await;
            assert_eq!(status, after[i], "{who:?} {name} after a step-up: {body}");
        }
    }
    // Another session of the same admin (a stolen cookie, say) has no step-up of its own.
    let (thief, _) = common::passkeys::http_login(&env, &base, "plat@example.com", &mut keys[2]).await;
    let (status, body) =
        server_fn(&thief, &base, "change_role", &[("admin_id", "nobody"), ("role", "security_reviewer")]).await;
    assert_eq!(status, 403, "a second session used the first one's step-up: {body}");
    assert!(body.contains("step_up_required"), "{body}");

    // Service tokens on the API: exactly their scopes.
    let plain = Client::new();
    // (Rotate, provision and reset reach the domain with the right scope: acme exists, so
    // provision answers 400; rotating needs a mail server this test does not run, so 502.)
    let scopes: [(Scope, [u16; 15]); 9] = [
        (Scope::CredentialsRead, [200, 200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 200]),
        (Scope::CredentialsWrite, [403, 403, 200, 403, 403, 400, 403, 403, 403, 403, 403, 403, 403, 403, 403]),
        (Scope::CredentialsReadSecret, [403, 403, 403, 200, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403]),
        (Scope::CredentialsRotate, [403, 403, 403, 403, 502, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403]),
        (Scope::CredentialsReset, [403, 403, 403, 403, 403, 403, 502, 403, 403, 403, 403, 403, 200, 403, 403]),
        // acme was only stored: a revert reaches the domain, which has nothing to revert (409).
        (Scope::CredentialsRevert, [403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 409, 403]),
        (Scope::TenantsRecover, [403, 403, 403, 403, 403, 403, 403, 502, 403, 403, 403, 403, 403, 403, 403]),
        (Scope::AuditRead, [403, 403, 403, 403, 403, 403, 403, 403, 200, 200, 200, 200, 403, 403, 403]),
        // Redirecting is an addition to recovering, never a way in by itself.
        (Scope::TenantsRedirect, [403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403, 403]),
    ];
    for (scope, expected) in scopes {
        let token = env.token(&[scope]).await;
        for ((method, path, _), want) in api.iter().zip(expected) {
            let mut request = plain.request(method.clone(), format!("{base}{path}")).bearer_auth(&token);
            if path.ends_with("/provision") {
                request = request.json(&provision_body());
            } else if path.ends_with("/emergency-reset") {
                request = request.json(&reset_body());
            } else if path.ends_with("/recover") {
                request = request.json(&serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": "https://mail.acme.example/api/v1"}));
            } else if path.ends_with("/sweeps") {
                request = request.json(&serde_json::json!({"admin_email": "plat@example.com", "dry_run": true}));
            } else if path.ends_with("/revert") {
                request = request.json(&serde_json::json!({"reason": "matrix check"}));
            } else if *method == Method::PUT {
                request = request.json(&credential_body(SECRET, "t"));
            }
            assert_eq!(request.send().await.unwrap().status().as_u16(), want, "{scope} {method} {path}");
        }
    }
}

#[tokio::test]
async fn sessions_survive_a_restart_and_end_when_the_admin_is_disabled() {
    let env = TestEnv::start().await;
    store_tenants(&env).await;
    let base = env.serve().await;
    let (browser, _) = browser_for(&env, &base, "rev@example.com", Role::SecurityReviewer).await;
    let (status, body) = server_fn(&browser, &base, "current_admin", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("rev@example.com"));

    // A second console process on the same database (a restart) knows the session.
    let restarted = env.serve().await;
    let (status, body) = server_fn(
        &browser,
        &restarted,
        "list_tenants",
        &[("state", ""), ("due_days", ""), ("search", ""), ("cursor", "")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("acme"));

    // Disabled: the very next request is refused.
    let admins: Vec<(String,)> = sqlx::query_as("SELECT admin_id FROM admins WHERE email = 'rev@example.com'")
        .fetch_all(env.core.db().pool())
        .await
        .unwrap();
    env.core.disable_admin(&Actor::operator(), &ClientInfo::local(), &admins[0].0).await.unwrap();
    let (status, _) = server_fn(
        &browser,
        &restarted,
        "list_tenants",
        &[("state", ""), ("due_days", ""), ("search", ""), ("cursor", "")],
    )
    .await;
    assert_eq!(status, 401);
    let (_, body) = server_fn(&browser, &base, "current_admin", &[]).await;
    assert_eq!(body.trim(), "null");
}

#[tokio::test]
async fn cross_site_requests_are_refused_and_security_headers_are_set() {
    let env = TestEnv::start().await;
    store_tenants(&env).await;
    let base = env.serve().await;
    let client = Client::builder().cookie_store(true).build().unwrap();

    // CSRF: a forged origin or a cross-site fetch is refused before anything runs.
    for (header, value) in
        [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site"), ("sec-fetch-site", "same-site")]
    {
        let response = client
            .post(format!("{base}/_app/begin_login"))
            .header(header, value)
            .form(&[("email", "a@b.co")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{header}: {value}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "csrf_rejected");
    }
    let token = env.token(&[Scope::CredentialsWrite]).await;
    let response = client
        .put(format!("{base}/api/v1/tenants/acme/smtp-credentials"))
        .bearer_auth(&token)
        .header("origin", "http://evil.example")
        .json(&credential_body("x", "y"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // Same origin is fine.
    let response = client
        .post(format!("{base}/_app/readiness"))
        .header("origin", "http://localhost:3000")
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Pages: CSP with this response's nonce (no unsafe-inline), framing denied, no referrer.
    let response = client.get(format!("{base}/")).send().await.unwrap();
    let headers = response.headers().clone();
    let csp = headers.get("content-security-policy").unwrap().to_str().unwrap().to_owned();
    let html = response.text().await.unwrap();
    let nonce = csp.split("'nonce-").nth(1).and_then(|rest| rest.split('\'').next()).unwrap().to_owned();
    assert!(html.contains(&format!("nonce=\"{nonce}\"")), "the hydration script carries the CSP nonce");
    assert!(!csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers.get("x-frame-options").unwrap(), "DENY");
    assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
    assert_eq!(headers.get("referrer-policy").unwrap(), "no-referrer");
    let second = client.get(format!("{base}/")).send().await.unwrap();
    assert_ne!(
        second.headers().get("content-security-policy").unwrap().to_str().unwrap(),
        csp,
        "a fresh nonce per page"
    );

    // The session cookie: HttpOnly, SameSite=Strict, and a new id at sign-in.
    let fresh = Client::builder().cookie_store(true).build().unwrap();
    let before =
        fresh.post(format!("{base}/_app/begin_login")).form(&[("email", "nobody@example.com")]).send().await.unwrap();
    assert!(before.headers().get("set-cookie").is_none(), "an anonymous call that leads nowhere starts no session");
    let invite = env
        .core
        .create_invite(&Actor::operator(), &ClientInfo::local(), "pa@example.com", Role::PlatformAdmin)
        .await
        .unwrap();
    let token = invite.link.rsplit_once('/').unwrap().1.to_owned();
    let begun = fresh
        .post(format!("{base}/_app/begin_enrollment"))
        .form(&[("token", token.as_str()), ("display_name", "P")])
        .send()
        .await
        .unwrap();
    let cookie = begun.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let id_before = cookie.split(';').next().unwrap().to_owned();
    let options: String = serde_json::from_str(&begun.text().await.unwrap()).unwrap();
    let credential = common::passkeys::register(&mut SoftPasskey::new(true), &options);
    let signed_in = fresh
        .post(format!("{base}/_app/finish_enrollment"))
        .form(&[("token", token.as_str()), ("credential", credential.as_str()), ("passkey_name", "k")])
        .send()
        .await
        .unwrap();
    let after = signed_in.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(!after.is_empty() && after.split(';').next().unwrap() != id_before, "session id cycled at sign-in");

    // A reveal answer is never cacheable.
    let response =
        client.post(format!("{base}/_app/reveal_credential")).form(&[("tenant_id", "acme")]).send().await.unwrap();
    assert_eq!(response.headers().get("cache-control").unwrap(), "no-store");
}
