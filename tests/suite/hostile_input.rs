//! Hostile input against the running router: thousands of generated malformed requests over
//! every API route and every server function, sent with full rights (a token holding every
//! scope, a signed-in platform admin), must each get a clear 4xx (the lenient tenant search may
//! answer): no 5xx, no dropped connection (a panic), and no write anywhere (every table's row count, the audit chain's head
//! and the stored credential's Vault version stay as they were).

use crate::common;

use crate::common::matrix::SERVER_FNS;
use crate::common::{TestEnv, credential_body};
use reqwest::{Client, Method};
use smtp_vault::core::{Actor, ClientInfo, Core};
use smtp_vault::model::{Role, Scope, StoreCredentialRequest, TenantId};
use std::collections::BTreeMap;

/// A small deterministic generator (xorshift64*): the same run every time, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Path segments no tenant id may be (each percent-encoded as a client would send it).
const BAD_TENANTS: &[&str] = &[
    "ACME",
    "a%20b",
    "..",
    "%2e%2e",
    "-acme",
    "acme-",
    "acme%00",
    "%C3%A4cme",
    "acme;drop",
    "a_b",
    "x%2Fy",
    "%FF%FE",
    "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
];

/// Values no text field may accept: control characters, broken encodings, absurd sizes.
const BAD_VALUES: &[&str] =
    &["\u{0}", "abc\u{0}def", "\u{1b}[31mred", "line\rbreak", "\u{7f}\u{8}", "tab\u{b}vertical", "\u{202e}\u{0}"];

/// One request and the rule it breaks (for the failure message).
struct Case {
    why: String,
    method: Method,
    url: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    token: Option<String>,
    session: bool,
    /// Bad input must be refused (4xx); a lenient reader (the tenant search, which drops what
    /// cannot be in a tenant id) may answer, but still never 5xx and never write.
    must_refuse: bool,
}

/// Bytes that are invalid anywhere in a JSON text (not whitespace, raw control characters).
fn poison(rng: &mut Rng) -> u8 {
    *rng.pick(&[0x00, 0x01, 0x02, 0x07, 0x08, 0x0b, 0x0c, 0x0e, 0x1b, 0x1f])
}

/// A valid JSON body made invalid: cut short, or a raw control byte put in somewhere.
fn garble_json(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    let at = rng.below(bytes.len());
    if rng.below(2) == 0 {
        bytes.truncate(at);
    } else {
        bytes.insert(at, poison(rng));
    }
    assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_err());
    bytes
}

/// A valid JSON object with one field made wrong: a control character, a wrong type, removed.
fn wrong_field(rng: &mut Rng, valid: &serde_json::Value) -> (String, Vec<u8>) {
    let mut body = valid.clone();
    let object = body.as_object_mut().unwrap();
    let keys: Vec<String> = object.keys().cloned().collect();
    let key = rng.pick(&keys).clone();
    let why = match rng.below(4) {
        0 => {
            object.insert(key.clone(), serde_json::Value::String((*rng.pick(BAD_VALUES)).to_owned()));
            format!("{key} holds a control character")
        }
        1 => {
            object.insert(key.clone(), serde_json::json!({"nested": [1, 2, 3]}));
            format!("{key} is an object")
        }
        2 => {
            object.remove(&key);
            format!("{key} is missing")
        }
        _ => {
            object.insert(key.clone(), serde_json::Value::String("x".repeat(70_000)));
            format!("{key} is 70,000 characters")
        }
    };
    (why, serde_json::to_vec(&body).unwrap())
}

fn reset_body() -> serde_json::Value {
    serde_json::json!({"incident_id": "INC-1", "reason": "hostile input check"})
}

fn recover_body() -> serde_json::Value {
    serde_json::json!({"new_vps_ip": "127.0.0.1", "mailu_api_url": "https://mail.acme.example/api/v1"})
}

fn provision_body() -> serde_json::Value {
    let mut body = credential_body("unused", "tok");
    body.as_object_mut().unwrap().remove("password");
    body
}

/// The API's cases: bad tenant ids, bad bodies, bad queries, wrong methods, bad tokens.
fn api_cases(rng: &mut Rng, base: &str, token: &str, count: usize) -> Vec<Case> {
    let tenant_routes: [(Method, &str, Option<serde_json::Value>); 7] = [
        (Method::GET, "smtp-credentials", None),
        (Method::PUT, "smtp-credentials", Some(credential_body("Hostile-Pass-1", "tok"))),
        (Method::GET, "smtp-credentials/secret", None),
        (Method::POST, "smtp-credentials/rotate", None),
        (Method::POST, "smtp-credentials/provision", Some(provision_body())),
        (Method::POST, "smtp-credentials/emergency-reset", Some(reset_body())),
        (Method::POST, "recover", Some(recover_body())),
    ];
    let audit_queries = [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=100000",
        "cursor=-5",
        "cursor=abc",
        "cursor=%00",
        "since=yesterday",
        "until=2026-13-45T00:00:00Z",
        "severity=bogus",
        "tenant=BAD!",
        "tenant=%FF",
        "unknown=1",
        "limit=1&limit=2",
        "q=%FF%FE",
        "q=%00",
        "actor=%1B%5B31m",
        "event=%0D%0A",
        "since=%00",
    ];
    let mut cases = Vec::with_capacity(count);
    while cases.len() < count {
        let token = Some(token.to_owned());
        let case = match rng.below(7) {
            0 => {
                let (method, tail, body) = rng.pick(&tenant_routes).clone();
                let tenant = *rng.pick(BAD_TENANTS);
                Case {
                    why: format!("bad tenant id {tenant:?}"),
                    method,
                    url: format!("{base}/api/v1/tenants/{tenant}/{tail}"),
                    content_type: body.is_some().then_some("application/json"),
                    body: body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default(),
                    token,
                    session: false,
                    must_refuse: true,
                }
            }
            1 | 2 => {
                let with_body: Vec<_> = tenant_routes.iter().filter(|r| r.2.is_some()).collect();
                let (method, tail, body) = (*rng.pick(&with_body)).clone();
                let body = body.unwrap();
                let (why, bytes) = if rng.below(2) == 0 {
                    ("garbled JSON".to_owned(), garble_json(rng, &serde_json::to_vec(&body).unwrap()))
                } else {
                    wrong_field(rng, &body)
                };
                Case {
                    why,
                    method,
                    url: format!("{base}/api/v1/tenants/acme/{tail}"),
                    content_type: Some("application/json"),
                    body: bytes,
                    token,
                    session: false,
                    must_refuse: true,
                }
            }
            3 => {
                let with_body: Vec<_> = tenant_routes.iter().filter(|r| r.2.is_some()).collect();
                let (method, tail, body) = (*rng.pick(&with_body)).clone();
                let content_type = *rng.pick(&["text/plain", "application/x-www-form-urlencoded", "application/jsonx"]);
                Case {
                    why: format!("content type {content_type}"),
                    method,
                    url: format!("{base}/api/v1/tenants/acme/{tail}"),
                    content_type: Some(content_type),
                    body: serde_json::to_vec(&body.unwrap()).unwrap(),
                    token,
                    session: false,
                    must_refuse: true,
                }
            }
            4 => {
                let path = *rng.pick(&["audit", "audit/export.csv", "audit/export.jsonl"]);
                let query = *rng.pick(&audit_queries);
                Case {
                    why: format!("audit query {query}"),
                    method: Method::GET,
                    url: format!("{base}/api/v1/{path}?{query}"),
                    content_type: None,
                    body: Vec::new(),
                    token,
                    session: false,
                    must_refuse: true,
                }
            }
            5 => {
                let (_, tail, _) = rng.pick(&tenant_routes).clone();
                let method = rng.pick(&[Method::DELETE, Method::PATCH, Method::OPTIONS]).clone();
                let url = if rng.below(2) == 0 {
                    format!("{base}/api/v1/tenants/acme/{tail}")
                } else {
                    format!("{base}/api/v1/no/such/route/{}", rng.next())
                };
                Case {
                    why: format!("method {method}"),
                    method,
                    url,
                    content_type: None,
                    body: Vec::new(),
                    token,
                    session: false,
                    must_refuse: true,
                }
            }
            _ => {
                let (method, tail, body) = rng.pick(&tenant_routes).clone();
                let bad = rng
                    .pick(&["", "Bearer", "Bearer ", "Basic YTpi", "Bearer svt_nope", "Bearer %00", "bearer  x y"])
                    .to_string();
                Case {
                    why: format!("authorization {bad:?}"),
                    method,
                    url: format!("{base}/api/v1/tenants/acme/{tail}"),
                    content_type: body.is_some().then_some("application/json"),
                    body: body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default(),
                    token: Some(format!("raw:{bad}")),
                    session: false,
                    must_refuse: true,
                }
            }
        };
        cases.push(case);
    }
    cases
}

fn form(fields: &[(&str, String)]) -> Vec<u8> {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        serializer.append_pair(key, value);
    }
    serializer.finish().into_bytes()
}

/// The server functions' cases, sent by a signed-in platform admin: a field garbled or
/// missing, a broken form encoding, a body past the limit, the wrong method.
fn server_fn_cases(rng: &mut Rng, base: &str, count: usize) -> Vec<Case> {
    // Sign-out and a test alert are valid with any fields (they take none); they get only the
    // method and size cases.
    let mut cases = Vec::with_capacity(count);
    while cases.len() < count {
        let (name, sample, _) = rng.pick(&SERVER_FNS);
        let url = format!("{base}/_app/{name}");
        let strategy = if sample.is_empty() { 3 + rng.below(2) } else { rng.below(5) };
        let (why, method, content_type, body) = match strategy {
            0 => {
                let bad = (*rng.pick(BAD_VALUES)).to_owned();
                let fields: Vec<(&str, String)> = sample.iter().map(|(k, _)| (*k, bad.clone())).collect();
                (format!("every field is {bad:?}"), Method::POST, "application/x-www-form-urlencoded", form(&fields))
            }
            1 => {
                let missing = rng.below(sample.len());
                let fields: Vec<(&str, String)> = sample
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != missing)
                    .map(|(_, (k, v))| (*k, (*v).to_owned()))
                    .collect();
                (
                    format!("{} is missing", sample[missing].0),
                    Method::POST,
                    "application/x-www-form-urlencoded",
                    form(&fields),
                )
            }
            2 => {
                let mut body = String::new();
                for (i, (key, _)) in sample.iter().enumerate() {
                    if i > 0 {
                        body.push('&');
                    }
                    body.push_str(&format!("{key}=%FF%FE%{:02X}", rng.below(256)));
                }
                (
                    "broken percent-encoding".to_owned(),
                    Method::POST,
                    "application/x-www-form-urlencoded",
                    body.into_bytes(),
                )
            }
            3 => {
                let mut fields: Vec<(&str, String)> = sample.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
                fields.push(("padding", "x".repeat(70_000)));
                ("a body past the limit".to_owned(), Method::POST, "application/x-www-form-urlencoded", form(&fields))
            }
            _ => {
                let method = rng.pick(&[Method::PUT, Method::DELETE, Method::PATCH]).clone();
                (format!("method {method}"), method, "application/x-www-form-urlencoded", Vec::new())
            }
        };
        let must_refuse = *name != "list_tenants";
        cases.push(Case {
            why,
            method,
            url,
            content_type: Some(content_type),
            body,
            token: None,
            session: true,
            must_refuse,
        });
    }
    cases
}

/// Row counts of every table (sessions aside), the audit head and the credential's version.
async fn fingerprint(core: &Core, env: &TestEnv) -> BTreeMap<String, String> {
    let pool = core.db().pool();
    let tables: Vec<(String,)> = if env.db.is_postgres() {
        sqlx::query_as("SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(pool)
            .await
            .unwrap()
    } else {
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .fetch_all(pool)
            .await
            .unwrap()
    };
    let mut print = BTreeMap::new();
    for (table,) in tables {
        if table.contains("session") || table.starts_with("_sqlx") {
            continue;
        }
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(pool).await.unwrap();
        print.insert(table, n.to_string());
    }
    let (head,): (String,) = sqlx::query_as("SELECT hash FROM audit_head WHERE id = 1").fetch_one(pool).await.unwrap();
    print.insert("audit head".into(), head);
    let meta = core.credential_metadata(&Actor::operator(), &TenantId::parse("acme").unwrap()).await.unwrap();
    print.insert("acme version".into(), format!("{:?}", meta.version));
    print
}

#[tokio::test]
async fn five_thousand_malformed_requests_get_clear_refusals_and_change_nothing() {
    let env = TestEnv::start().await;
    let request = StoreCredentialRequest::from_json(credential_body("Hostile-Input-Stays-1", "tok")).unwrap();
    env.core
        .store_credential(&Actor::operator(), &ClientInfo::local(), &TenantId::parse("acme").unwrap(), request)
        .await
        .unwrap();
    let base = env.serve().await;
    let every_scope = [
        Scope::CredentialsRead,
        Scope::CredentialsWrite,
        Scope::CredentialsReadSecret,
        Scope::CredentialsRotate,
        Scope::CredentialsReset,
        Scope::TenantsRecover,
        Scope::AuditRead,
    ];
    let token = env.token(&every_scope).await;
    let (admin, _key) = common::passkeys::http_admin(&env, &base, "hostile@example.com", Role::PlatformAdmin).await;
    let plain = Client::new();
    let before = fingerprint(&env.core, &env).await;

    let mut rng = Rng(0x5EED_CAFE_F00D_D00D);
    let mut cases = api_cases(&mut rng, &base, &token, 2600);
    cases.extend(server_fn_cases(&mut rng, &base, 2600));
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for case in &cases {
        let client = if case.session { &admin } else { &plain };
        let mut request = client.request(case.method.clone(), &case.url).body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        match case.token.as_deref() {
            Some(raw) if raw.starts_with("raw:") => {
                let value = &raw[4..];
                if !value.is_empty() {
                    request = request.header("authorization", value);
                }
            }
            Some(token) => request = request.bearer_auth(token),
            None => {}
        }
        let response =
            request.send().await.unwrap_or_else(|e| panic!("{} {} ({}): {e}", case.method, case.url, case.why));
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert!(
            if case.must_refuse { (400..500).contains(&status) } else { status < 500 },
            "{} {} ({}) answered {status}: {}",
            case.method,
            case.url.chars().take(200).collect::<String>(),
            case.why,
            body.chars().take(300).collect::<String>()
        );
        *by_status.entry(status).or_default() += 1;
    }
    assert!(cases.len() >= 5000);
    eprintln!("{} malformed requests, by status: {by_status:?}", cases.len());
    let after = fingerprint(&env.core, &env).await;
    if after != before {
        let written: Vec<(String, String)> =
            sqlx::query_as("SELECT event_type, details FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT 20")
                .bind(before["audit_events"].parse::<i64>().unwrap())
                .fetch_all(env.core.db().pool())
                .await
                .unwrap();
        panic!("malformed requests changed something: {before:?} → {after:?}; events: {written:?}");
    }
    // The console still works for a well-formed call.
    let ok =
        plain.get(format!("{base}/api/v1/tenants/acme/smtp-credentials")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}
