//! mailu-sim: a stand-in for Mailu's admin API v1 (domains and users, bearer token, Mailu's
//! status codes and bodies), the `/internal/auth/email` callback Dovecot's Lua passdb asks on
//! every SMTP login, a minimal SMTP relay sink for Dovecot's submission service, and fault
//! injection (`POST /_sim/fault`). `POST /_sim/config` switches what differs between real
//! deployments: `{"api": false}` is Mailu with `API=false`, its default (every API call is a
//! 302 to the web UI), `{"flavor": "2.0"}` is Mailu 2.0 (a duplicate user is a 500 from the
//! database, not 2024.06's 409; a rate-limited login a temporary failure, not 535); see
//! ../shared/reference/mail-standin.md. With `--tls-cert`/`--tls-key` the same API (same state)
//! is also served over HTTPS, as a real Mailu serves it; `--realistic` makes password hashing
//! cost what Mailu's does (for the benchmark). For tests and the demo only: passwords are kept
//! as salted SHA-256 (iterated in realistic mode), never logged.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

#[derive(Default)]
struct Sim {
    token: String,
    domains: BTreeSet<String>,
    users: BTreeMap<String, (String, String)>,
    /// Users with `global_admin` (Mailu's flag: every domain, every setting, every user).
    global_admins: BTreeSet<String>,
    fault: Fault,
    password_sets: u64,
    /// Mailu's `API` setting: false makes the front send `/api` to the web UI.
    api_off: bool,
    /// "2024.06" (default) or "2.0".
    flavor: String,
    limits: Limiter,
    /// Set in realistic mode: passwords cost what Mailu's bcrypt costs.
    cost: Option<Arc<Cost>>,
    /// Mailu's credential cache (`User.check_password`, `core/admin/mailu/models.py`): after a
    /// password verified the slow way, a cheap hash of it per user, keyed on the stored hash's
    /// salt, so a password change (new salt) makes the next login slow again. A login whose
    /// user has a current entry is answered from it, right or wrong, without bcrypt.
    login_cache: BTreeMap<String, (String, String)>,
}

/// Mailu hashes with passlib's `bcrypt_sha256` at `CREDENTIAL_ROUNDS=12`
/// (../shared/reference/mail-standin.md) on every password set and every login the credential
/// cache cannot answer. That is about a quarter second of one core (bcrypt's usual cost at 12
/// rounds; not measured on a Mailu): the benchmark should pay it, tests need not. Iterated
/// SHA-256 stands in for bcrypt, its count calibrated at start to take that long here.
struct Cost {
    rounds: u64,
    /// Mailu's admin runs one gunicorn worker with `--threads os.cpu_count()`
    /// (`core/admin/start.py`) and bcrypt hashes outside Python's GIL, so at most as many
    /// hashes run at once as the host has cores; further ones queue.
    workers: tokio::sync::Semaphore,
    /// Slow hashes computed, for `GET /_sim/stats`.
    computed: AtomicU64,
}

const BCRYPT_12_COST: Duration = Duration::from_millis(250);

impl Cost {
    fn calibrated() -> Self {
        let probe = Duration::from_millis(100);
        let start = std::time::Instant::now();
        let mut rounds = 0u64;
        while start.elapsed() < probe {
            std::hint::black_box(stretch("calibration", "salt", 10_000));
            rounds += 10_000;
        }
        let per_round = start.elapsed().as_secs_f64() / rounds as f64;
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        Cost {
            rounds: (BCRYPT_12_COST.as_secs_f64() / per_round) as u64,
            workers: tokio::sync::Semaphore::new(workers),
            computed: AtomicU64::new(0),
        }
    }

    /// The slow hash, on a blocking thread so it really takes a core, as a gunicorn thread's
    /// bcrypt does.
    async fn hash(&self, password: &str, salt: &str) -> String {
        let Ok(_worker) = self.workers.acquire().await else { return String::new() };
        let (password, salt, rounds) = (password.to_owned(), salt.to_owned(), self.rounds);
        let hashed = tokio::task::spawn_blocking(move || stretch(&password, &salt, rounds)).await.unwrap_or_default();
        self.computed.fetch_add(1, Ordering::Relaxed);
        hashed
    }
}

fn stretch(password: &str, salt: &str, rounds: u64) -> String {
    let mut state = Sha256::digest(format!("{salt}:{password}").as_bytes());
    for _ in 0..rounds {
        state = Sha256::digest(state);
    }
    hex::encode(state)
}

/// Mailu's authentication rate limits (`core/admin/mailu/limiter.py`, `internal/views.py`,
/// `utils.py`; ../shared/reference/mail-standin.md): failed logins and bad API tokens count
/// against the client's network — 5 per hour per /24 (IPv4) or /48 (IPv6),
/// `AUTH_RATELIMIT_IP`, a user name's failed logins counted once an hour
/// (`dedup-{network}-{username}`), every bad token counted — and wrong passwords against the
/// user, 50 distinct per day (`AUTH_RATELIMIT_USER`). An exempt address is subject to neither
/// limit and counts toward neither (`is_subject_to_rate_limits`). The check comes before the token's, so a
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

    fn user_limited(&mut self, user: &str, ip: &str) -> bool {
        if self.exempt(ip) {
            return false;
        }
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

/// A new password's stored form: slow in realistic mode, as Mailu's `User.set_password`.
async fn stored_hash(cost: Option<Arc<Cost>>, password: &str) -> (String, String) {
    let salt = new_salt();
    let hashed = match cost {
        Some(cost) => cost.hash(password, &salt).await,
        None => hash(password, &salt),
    };
    (salt, hashed)
}

/// Whether `password` is `user`'s, as Mailu's `User.check_password` decides it: from the
/// credential cache when it holds the current salt, else the slow way (caching a success).
async fn password_matches(sim: &Shared, user: &str, password: &str) -> bool {
    // Refused before any hash: `if password == '': return False`.
    if password.is_empty() {
        return false;
    }
    let (salt, stored, cost) = {
        let Ok(s) = sim.lock() else { return false };
        // An unknown user never reaches a hash (`check_credentials`, `internal/nginx.py`).
        let Some((salt, stored)) = s.users.get(user).cloned() else { return false };
        let Some(cost) = s.cost.clone() else { return hash(password, &salt) == stored };
        if let Some((cached_salt, cached)) = s.login_cache.get(user)
            && *cached_salt == salt
        {
            return hash(password, &format!("cache:{salt}")) == *cached;
        }
        (salt, stored, cost)
    };
    let ok = cost.hash(password, &salt).await == stored;
    if ok && let Ok(mut s) = sim.lock() {
        s.login_cache.insert(user.to_owned(), (salt.clone(), hash(password, &format!("cache:{salt}"))));
    }
    ok
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
        if presented.is_some_and(|p| p != s.token) && !s.limits.exempt(&ip) {
            // A wrong token counts against the address, every time (only a user name's failed
            // logins are counted once), unless the address is exempt (`is_subject_to_rate_limits`).
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
    let cost = {
        let Ok(s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        if let Some(refused) = refuse_new_user(&s, &email, &domain) {
            return refused;
        }
        s.cost.clone()
    };
    // Hashed only once the checks passed, as Mailu's `post` in `api/v1/user.py`.
    let (salt, h) = stored_hash(cost, password).await;
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    // Another request may have created it while this one hashed.
    if let Some(refused) = refuse_new_user(&s, &email, &domain) {
        return refused;
    }
    s.users.insert(email.clone(), (salt, h));
    if body["global_admin"].as_bool() == Some(true) {
        s.global_admins.insert(email.clone());
    }
    s.password_sets += 1;
    Json(json!({"code": 200, "message": format!("User {email} has been created")})).into_response()
}

/// Why `email` cannot be created now, if it cannot.
fn refuse_new_user(s: &Sim, email: &str, domain: &str) -> Option<Response> {
    if !s.domains.contains(domain) {
        return Some(mailu_error(StatusCode::NOT_FOUND, &format!("Domain {domain} does not exist")));
    }
    if s.users.contains_key(email) {
        if s.flavor == "2.0" {
            // 2.0 has no duplicate check: the insert fails on the primary key (IntegrityError),
            // which Flask answers with its HTML 500 page.
            return Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "text/html; charset=utf-8")],
                    "<!doctype html><title>500 Internal Server Error</title><h1>Internal Server Error</h1>",
                )
                    .into_response(),
            );
        }
        return Some(mailu_error(StatusCode::CONFLICT, &format!("User {email} already exists")));
    }
    None
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

/// `GET /api/v1/user`: every user of this Mailu, as `marshal_with(user_fields_get, as_list=True,
/// skip_none=True)` in Mailu's `api/v1/user.py` answers it: each with its email, its password
/// hash and its flags (`global_admin` false included; only null fields are left out).
async fn list_users(State(sim): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&sim, &headers).await {
        return r;
    }
    let Ok(s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    let users: Vec<Value> = s
        .users
        .iter()
        .map(|(email, (salt, h))| {
            json!({
                "email": email, "password": format!("$sim${salt}${h}"), "quota_bytes": 1_000_000_000,
                "global_admin": s.global_admins.contains(email), "enabled": true, "change_pw_next_login": false,
                "enable_imap": true, "enable_pop": true, "allow_spoofing": false, "forward_enabled": false,
                "forward_destination": [], "forward_keep": true, "reply_enabled": false, "displayed_name": "",
                "spam_enabled": true, "spam_mark_as_read": true, "spam_threshold": 80,
            })
        })
        .collect();
    Json(users).into_response()
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
    let email = email.to_lowercase();
    let (ignore, cost) = {
        let Ok(s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        if !s.users.contains_key(&email) {
            return mailu_error(StatusCode::NOT_FOUND, &format!("User {email} cannot be found"));
        }
        (s.fault.mode == "ignore_password" && s.fault.remaining > 0, s.cost.clone())
    };
    if let Some(admin) = body["global_admin"].as_bool() {
        let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        if admin {
            s.global_admins.insert(email.clone());
        } else {
            s.global_admins.remove(&email);
        }
    }
    if let Some(password) = body["raw_password"].as_str() {
        let hashed = if ignore { None } else { Some(stored_hash(cost, password).await) };
        let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        match hashed {
            None => s.fault.remaining = s.fault.remaining.saturating_sub(1),
            Some(stored) => {
                s.users.insert(email.clone(), stored);
                s.password_sets += 1;
            }
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
    let (limited, flavor) = {
        let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
        (s.limits.ip_limited(&ip) || s.limits.user_limited(&user, &ip), s.flavor.clone())
    };
    // The limiter is asked first: a limited login costs no hash.
    let ok = !limited && password_matches(&sim, &user, &pass).await;
    let Ok(mut s) = sim.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    if ok && port != "25" {
        s.limits.exempt.insert(ip.clone(), std::time::Instant::now() + EXEMPTION);
    } else if !ok && !limited && !s.limits.exempt(&ip) {
        let password_key = hash(&pass, "failure");
        s.limits.hit_ip(&ip, &format!("login:{user}"));
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
    // What the SMTP client is told depends on the front, which the Lua passdb cannot know:
    // Mailu 2.0's nginx mail proxy replies with `Auth-Error-Code` itself, so a rate-limited
    // login is `451 4.3.2` (`core/admin/mailu/internal/nginx.py` STATUSES), a temporary
    // failure; 2024.06's Dovecot front (`core/nginx/dovecot/login.lua`) maps every status but
    // OK to a password mismatch, 535 (../shared/reference/mail-standin.md, "Verified by running
    // Mailu's real admin app"). Only in 2.0 does this header tell the stand-in's Lua to pass a
    // 4xx on as a temporary failure.
    if flavor == "2.0" {
        response.headers_mut().insert("Sim-Front", axum::http::HeaderValue::from_static("nginx"));
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
    let slow_hashes = s.cost.as_ref().map(|c| c.computed.load(Ordering::Relaxed));
    Json(json!({
        "users": s.users.len(),
        "password_sets": s.password_sets,
        "fault": s.fault.mode,
        "realistic": s.cost.is_some(),
        "slow_hashes": slow_hashes.unwrap_or(0),
    }))
    .into_response()
}

/// The API over TLS, as Mailu's front serves it (`https://<host>/api/v1`), with the stand-in's
/// leaf certificate; handshakes run apart from each other so a stalled client holds up no one.
struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl TlsListener {
    fn start(listener: TcpListener, cert: &str, key: &str) -> std::io::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(std::io::Error::other)?;
        // Explicit, because the tree builds both of rustls' providers (no process default).
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let local = listener.local_addr()?;
        let (sender, accepted) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else { continue };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    if let Ok(Ok(tls)) = handshake.await {
                        let _ = sender.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
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
    let cost = args.iter().any(|a| a == "--realistic").then(|| Arc::new(Cost::calibrated()));
    let sim: Shared = Arc::new(Mutex::new(Sim { token, cost, ..Sim::default() }));
    let api = TcpListener::bind(format!("127.0.0.1:{}", arg("--api-port", "0"))).await?;
    let relay = TcpListener::bind(format!("127.0.0.1:{}", arg("--relay-port", "0"))).await?;
    let (cert, key) = (arg("--tls-cert", ""), arg("--tls-key", ""));
    let https = if cert.is_empty() || key.is_empty() {
        None
    } else {
        let listener = TcpListener::bind(format!("127.0.0.1:{}", arg("--api-https-port", "0"))).await?;
        Some(TlsListener::start(listener, &cert, &key)?)
    };
    // scripts/mail-standin.sh reads these lines to learn the ports.
    println!("api_port={}", api.local_addr()?.port());
    println!("relay_port={}", relay.local_addr()?.port());
    if let Some(https) = &https {
        println!("api_https_port={}", https.local.port());
    }
    tokio::spawn(relay_sink(relay));
    let app = Router::new()
        .route("/api/v1/domain", post(create_domain))
        .route("/api/v1/user", post(create_user).get(list_users))
        .route("/api/v1/user/{email}", get(read_user).patch(update_user))
        .route("/internal/auth/email", get(auth_email))
        .route("/_sim/fault", post(set_fault))
        .route("/_sim/config", post(set_config))
        // Anything else is not the API: the front hands it to the admin UI, which redirects
        // to its login page (a wrong API base URL looks like this).
        .fallback(|| async { (StatusCode::FOUND, [("location", "/sso/login?url=/admin/")], "").into_response() })
        .route("/_sim/stats", get(stats))
        .with_state(sim);
    if let Some(https) = https {
        let app = app.clone();
        tokio::spawn(async move { axum::serve(https, app).await });
    }
    axum::serve(api, app).await
}
