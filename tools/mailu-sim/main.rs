//! mailu-sim: a stand-in for Mailu's admin API v1 (domains and users, bearer token, Mailu's
//! status codes and bodies), the `/internal/auth/email` callback Dovecot's Lua passdb asks on
//! every SMTP login, a minimal SMTP relay sink for Dovecot's submission service, and fault
//! injection (`POST /_sim/fault`). `POST /_sim/config` switches what differs between real
//! deployments: `{"api": false}` is Mailu with `API=false`, its default (every API call is a
//! 302 to the web UI), `{"flavor": "2.0"}` is Mailu 2.0 (a duplicate user is a 500 from the
//! database, not 2024.06's 409); see ../shared/reference/mail-standin.md. For tests and the demo
//! only: passwords are kept as salted SHA-256, never logged.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
struct Sim {
    token: String,
    domains: BTreeSet<String>,
    users: BTreeMap<String, (String, String)>,
    fault: Fault,
    password_sets: u64,
    /// Mailu's `API` setting: false makes the front send `/api` to the web UI.
    api_off: bool,
    /// "2024.06" (default) or "2.0".
    flavor: String,
    limits: Limiter,
}

/// Mailu's authentication rate limits (`core/admin/mailu/limiter.py`, `internal/views.py`,
/// `utils.py`; ../shared/reference/mail-standin.md): failed logins and bad API tokens count
/// against the client's network — 5 per hour per /24 (IPv4) or /48 (IPv6),
/// `AUTH_RATELIMIT_IP`, identical failures counted once — and wrong passwords against the user,
/// 50 distinct per day (`AUTH_RATELIMIT_USER`). The check comes before the token's, so a
/// limited address gets 429 even with the right token; a limited login gets `Auth-Status:
/// Temporary authentication failure (rate-limit)`, which 2024.06's Dovecot front turns into a
/// password mismatch (535). A successful login on any port but 25 exempts that exact address
/// for 24 hours. In memory, as Mailu's: `POST /_sim/config {"restart": true}` forgets it all.
#[derive(Default)]
struct Limiter {
    /// Per network: the distinct failures in the window, with when each happened.
    networks: BTreeMap<String, BTreeMap<String, std::time::Instant>>,
    /// Per user: distinct wrong passwords today.
    users: BTreeMap<String, BTreeMap<String, std::time::Instant>>,
    /// Exempt addresses, until when.
    exempt: BTreeMap<String, std::time::Instant>,
}

const IP_LIMIT: usize = 5;
const IP_WINDOW: Duration = Duration::from_secs(3600);
const USER_LIMIT: usize = 50;
const USER_WINDOW: Duration = Duration::from_secs(86_400);
const EXEMPTION: Duration = Duration::from_secs(86_400);

/// Mailu's `extract_network_from_ip`: the /24 of an IPv4 address, the /48 of an IPv6 one.
fn network_of(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => ip.to_owned(),
    }
}

impl Limiter {
    fn exempt(&self, ip: &str) -> bool {
        self.exempt.get(ip).is_some_and(|until| *until > std::time::Instant::now())
    }

    fn ip_limited(&mut self, ip: &str) -> bool {
        if self.exempt(ip) {
            return false;
        }
        let now = std::time::Instant::now();
        let hits = self.networks.entry(network_of(ip)).or_default();
        hits.retain(|_, at| now.duration_since(*at) < IP_WINDOW);
        hits.len() >= IP_LIMIT
    }

    fn user_limited(&mut self, user: &str) -> bool {
        let now = std::time::Instant::now();
        let wrong = self.users.entry(user.to_owned()).or_default();
        wrong.retain(|_, at| now.duration_since(*at) < USER_WINDOW);
        wrong.len() >= USER_LIMIT
    }

    /// A failure, under a key identical failures share.
    fn hit_ip(&mut self, ip: &str, key: &str) {
        self.networks.entry(network_of(ip)).or_default().entry(key.to_owned()).or_insert_with(std::time::Instant::now);
    }

    fn hit_user(&mut self, user: &str, password_key: &str) {
        self.users
            .entry(user.to_owned())
            .or_default()
            .entry(password_key.to_owned())
            .or_insert_with(std::time::Instant::now);
    }
}

#[derive(Default, Clone)]
struct Fault {
    mode: String,
    remaining: u64,
}

type Shared = Arc<Mutex<Sim>>;

fn hash(password: &str, salt: &str) -> String {
    hex::encode(Sha256::digest(format!("{salt}:{password}").as_bytes()))
}

fn new_salt() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

/// Mailu validates addresses (`validators.email`) before anything else: a 400.
fn valid_email(email: &str) -> bool {
    email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.starts_with('.'))
}

fn mailu_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"code": status.as_u16(), "message": message}))).into_response()
}

/// Mailu's auth order (the rate limit, then the token), then an injected fault if one is armed.
async fn gate(sim: &Shared, headers: &HeaderMap) -> Option<Response> {
    // Mailu takes the client from X-Real-IP (set by its front), else the peer: here always
    // loopback, so the header lets a test speak for another address.
    let ip = headers.get("x-real-ip").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1").to_owned();
    let (fault, token) = {
        let Ok(mut s) = sim.lock() else { return Some(mailu_error(StatusCode::INTERNAL_SERVER_ERROR, "poisoned")) };
        if s.api_off {
            // With API=false the front does not proxy WEB_API: the request reaches the admin
            // UI, which redirects to its login page before any token is looked at.
            return Some((StatusCode::FOUND, [("location", "/sso/login?url=/admin/")], "").into_response());
        }
        if s.limits.ip_limited(&ip) {
            return Some(mailu_error(StatusCode::TOO_MANY_REQUESTS, "Too many attempts from your IP (rate-limit)"));
        }
        let presented =
            headers.get("authorization").and_then(|v| v.to_str().ok()).map(|h| h.trim_start_matches("Bearer "));
        if presented.is_some_and(|p| p != s.token) {
            // A wrong token counts against the address, every time (only failed logins with the
            // same password are counted once).
            let key = format!("api-token:{}", new_salt());
            s.limits.hit_ip(&ip, &key);
        }
        let fault = s.fault.clone();
        if s.fault.remaining > 0 {
            s.fault.remaining -= 1;
            if s.fault.remaining == 0 {
                s.fault.mode.clear();
            }
        }
        (fault, s.token.clone())
    };
    let Some(header) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Some(mailu_error(StatusCode::UNAUTHORIZED, "A valid Authorization header is mandatory"));
    };
    if header.trim_start_matches("Bearer ") != token {
        return Some(mailu_error(StatusCode::FORBIDDEN, "Invalid API token"));
    }
    if fault.remaining == 0 {
        return None;
    }
    match fault.mode.as_str() {
        "down" => Some((StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response()),
        "500" => Some(mailu_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")),
        "429" => Some(mailu_error(StatusCode::TOO_MANY_REQUESTS, "Too many attempts from your IP (rate-limit)")),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            None
        }
        _ => None,
    }
}

async fn create_domain(State(sim): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = gate(&sim, &headers).await {
        return r;
    }
    let name = body["name"].as_str().unwrap_or_default().to_lowercase();
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if !s.domains.insert(name.clone()) {
        return mailu_error(StatusCode::CONFLICT, &format!("Duplicate domain name {name}"));
    }
    Json(json!({"code": 200, "message": format!("Domain {name} has been created")})).into_response()
}

async fn create_user(State(sim): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = gate(&sim, &headers).await {
        return r;
    }
    let (Some(email), Some(password)) = (body["email"].as_str(), body["raw_password"].as_str()) else {
        return mailu_error(StatusCode::BAD_REQUEST, "Input payload validation failed");
    };
    let email = email.to_lowercase();
    if !valid_email(&email) {
        return mailu_error(
            StatusCode::BAD_REQUEST,
            &format!("Provided email address {email} is not a valid email address"),
        );
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d.to_owned()).unwrap_or_default();
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if !s.domains.contains(&domain) {
        return mailu_error(StatusCode::NOT_FOUND, &format!("Domain {domain} does not exist"));
    }
    if s.users.contains_key(&email) {
        if s.flavor == "2.0" {
            // 2.0 has no duplicate check: the insert fails on the primary key (IntegrityError),
            // which Flask answers with its HTML 500 page.
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "text/html; charset=utf-8")],
                "<!doctype html><title>500 Internal Server Error</title><h1>Internal Server Error</h1>",
            )
                .into_response();
        }
        return mailu_error(StatusCode::CONFLICT, &format!("User {email} already exists"));
    }
    let salt = new_salt();
    let h = hash(password, &salt);
    s.users.insert(email.clone(), (salt, h));
    s.password_sets += 1;
    Json(json!({"code": 200, "message": format!("User {email} has been created")})).into_response()
}

async fn read_user(State(sim): State<Shared>, headers: HeaderMap, Path(email): Path<String>) -> Response {
    if let Some(r) = gate(&sim, &headers).await {
        return r;
    }
    let Ok(s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    match s.users.get(&email.to_lowercase()) {
        Some((salt, h)) => {
            Json(json!({"email": email, "password": format!("$sim${salt}${h}"), "enabled": true})).into_response()
        }
        None => mailu_error(StatusCode::NOT_FOUND, &format!("User {email} cannot be found")),
    }
}

async fn update_user(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path(email): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = gate(&sim, &headers).await {
        return r;
    }
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let ignore = s.fault.mode == "ignore_password" && s.fault.remaining > 0;
    let email = email.to_lowercase();
    if !s.users.contains_key(&email) {
        return mailu_error(StatusCode::NOT_FOUND, &format!("User {email} cannot be found"));
    }
    if let Some(password) = body["raw_password"].as_str() {
        if ignore {
            s.fault.remaining -= 1;
        } else {
            let salt = new_salt();
            let h = hash(password, &salt);
            s.users.insert(email.clone(), (salt, h));
            s.password_sets += 1;
        }
    }
    Json(json!({"code": 200, "message": format!("User {email} has been updated")})).into_response()
}

/// Dovecot's Lua passdb asks here on every login, like Mailu's admin service.
async fn auth_email(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    let decode =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(urlencoding_decode).unwrap_or_default();
    let (user, pass) = (decode("Auth-User").to_lowercase(), decode("Auth-Pass"));
    let (ip, port) = (decode("Client-Ip"), decode("Auth-Port"));
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let limited = s.limits.ip_limited(&ip) || s.limits.user_limited(&user);
    let ok = !limited && s.users.get(&user).is_some_and(|(salt, h)| hash(&pass, salt) == *h);
    if ok && port != "25" {
        s.limits.exempt.insert(ip.clone(), std::time::Instant::now() + EXEMPTION);
    } else if !ok && !limited {
        let password_key = hash(&pass, "failure");
        s.limits.hit_ip(&ip, &format!("login:{user}:{password_key}"));
        s.limits.hit_user(&user, &password_key);
    }
    drop(s);
    let mut response = StatusCode::OK.into_response();
    let status = if limited {
        "Temporary authentication failure (rate-limit)"
    } else if ok {
        "OK"
    } else {
        "Authentication credentials invalid"
    };
    if let Ok(v) = status.parse() {
        response.headers_mut().insert("Auth-Status", v);
    }
    let code = if limited { "451 4.3.2" } else { "535 5.7.8" };
    if !ok && let Ok(v) = code.parse() {
        response.headers_mut().insert("Auth-Error-Code", v);
    }
    response
}

fn urlencoding_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hexpair =
                    std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hexpair {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn set_fault(State(sim): State<Shared>, Json(body): Json<Value>) -> Response {
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    s.fault = Fault {
        mode: body["mode"].as_str().unwrap_or_default().to_owned(),
        remaining: body["count"].as_u64().unwrap_or(u64::MAX),
    };
    Json(json!({"mode": s.fault.mode, "count": s.fault.remaining})).into_response()
}

async fn set_config(State(sim): State<Shared>, Json(body): Json<Value>) -> Response {
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if let Some(api) = body["api"].as_bool() {
        s.api_off = !api;
    }
    if let Some(flavor) = body["flavor"].as_str() {
        s.flavor = flavor.to_owned();
    }
    if body["restart"].as_bool() == Some(true) {
        // What a restarted Mailu remembers of its limiter: nothing.
        s.limits = Limiter::default();
    }
    Json(json!({"api": !s.api_off, "flavor": s.flavor})).into_response()
}

async fn stats(State(sim): State<Shared>) -> Response {
    let Ok(s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    Json(json!({"users": s.users.len(), "password_sets": s.password_sets, "fault": s.fault.mode})).into_response()
}

/// Accepts whatever Dovecot's submission service relays; keeps nothing.
async fn relay_sink(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"220 sink ESMTP\r\n").await;
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                let reply: &[u8] = if in_data {
                    if line == "." {
                        in_data = false;
                        b"250 OK\r\n"
                    } else {
                        continue;
                    }
                } else {
                    match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                        Some("EHLO") => b"250-sink\r\n250 8BITMIME\r\n",
                        Some("DATA") => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        Some("QUIT") => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    }
                };
                if write.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
    };
    let token = arg("--token", "");
    if token.len() < 4 {
        eprintln!("mailu-sim: --token of at least 4 characters is required (as Mailu)");
        std::process::exit(2);
    }
    let sim: Shared = Arc::new(Mutex::new(Sim { token, ..Sim::default() }));
    let api = TcpListener::bind(format!("127.0.0.1:{}", arg("--api-port", "0"))).await?;
    let relay = TcpListener::bind(format!("127.0.0.1:{}", arg("--relay-port", "0"))).await?;
    // Tests read these two lines to learn the ports.
    println!("api_port={}", api.local_addr()?.port());
    println!("relay_port={}", relay.local_addr()?.port());
    tokio::spawn(relay_sink(relay));
    let app = Router::new()
        .route("/api/v1/domain", post(create_domain))
        .route("/api/v1/user", post(create_user))
        .route("/api/v1/user/{email}", get(read_user).patch(update_user))
        .route("/internal/auth/email", get(auth_email))
        .route("/_sim/fault", post(set_fault))
        .route("/_sim/config", post(set_config))
        // Anything else is not the API: the front hands it to the admin UI, which redirects
        // to its login page (a wrong API base URL looks like this).
        .fallback(|| async { (StatusCode::FOUND, [("location", "/sso/login?url=/admin/")], "").into_response() })
        .route("/_sim/stats", get(stats))
        .with_state(sim);
    axum::serve(api, app).await
}
