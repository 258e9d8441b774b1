//! The tenants' mail servers: Mailu's admin API v1 (create user, set password with
//! `raw_password`, read user) and a real SMTP AUTH login check (lettre, STARTTLS or implicit TLS,
//! one fresh connection per check, the whole check bounded by a timeout). Behind [`MailServer`]
//! so rotation logic can be tested against a stand-in; secrets never appear in errors. Every
//! call goes through the outbound policy ([`OutboundPolicy`]): no redirects, TLS, no internal
//! address unless allowed; a tenant's server is not trusted, so its answers must have Mailu's
//! shape and its text never reaches a caller.

use crate::core::outbound::{OutboundPolicy, Refused};
use crate::model::SmtpTls;
use async_trait::async_trait;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::time::Duration;

/// Where and as whom to reach one tenant's mail server.
pub struct MailTarget {
    /// The admin user (an email address).
    pub username: String,
    /// SMTP submission host.
    pub smtp_host: String,
    /// SMTP submission port.
    pub smtp_port: u16,
    /// TLS mode on that port, as stored with the credential.
    pub smtp_tls: SmtpTls,
    /// Mailu admin API base, e.g. `https://mail.example.com/api/v1`.
    pub api_url: String,
    /// Mailu API token.
    pub api_token: SecretString,
    /// The name the server's certificate must carry when `smtp_host` is an address (a
    /// replacement server reached by IP before DNS points at it); `None`: `smtp_host`.
    pub tls_name: Option<String>,
    /// Where the API's host name is reached instead of what DNS says (a replacement server
    /// before DNS points at it); its certificate must still name the host in `api_url`.
    pub api_address: Option<std::net::IpAddr>,
}

impl std::fmt::Debug for MailTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailTarget")
            .field("username", &self.username)
            .field("smtp", &format!("{}:{} ({})", self.smtp_host, self.smtp_port, self.smtp_tls.as_str()))
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

/// What the Mailu API answered when it did not do what was asked. Carries no text of the
/// server's: a hostile server could otherwise use it to send a caller anything (or to make the
/// console an oracle for what answers at an address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// 401: no or malformed token.
    #[error("Mailu API refused the request: no valid token (401)")]
    Unauthorized,
    /// 403: wrong token.
    #[error("Mailu API refused the token (403)")]
    Forbidden,
    /// 404: user or domain missing.
    #[error("Mailu API: not found (404)")]
    NotFound,
    /// 409: already exists / too many users.
    #[error("Mailu API: conflict (409)")]
    Conflict,
    /// 429: rate-limited.
    #[error(
        "Mailu rate-limits the console's address (API answered 429): add it to AUTH_RATELIMIT_EXEMPTION in mailu.env"
    )]
    RateLimited,
    /// 400: invalid input (the user name, a field). Mailu has no password policy, so another
    /// password would be refused the same way: a person must look.
    #[error("Mailu API refused the request as invalid input (400): check the tenant's user name")]
    Rejected,
    /// A redirect, or a success that is not Mailu's JSON: Mailu with `API=false` (its default)
    /// or a URL that is not the API's base answers 302 to its web UI, whose page is HTML.
    #[error(
        "the URL does not answer like Mailu's API: set API=true in mailu.env, and give the API base (https://<host>/api/v1)"
    )]
    Malformed,
    /// The outbound policy refused the destination; nothing was sent.
    #[error("the Mailu API URL {0}")]
    Destination(Refused),
    /// 5xx.
    #[error("Mailu API failed (HTTP {0})")]
    Server(u16),
    /// No answer.
    #[error("Mailu API unreachable: {0}")]
    Unreachable(String),
}

impl MailError {
    /// Worth retrying later (the server may recover); otherwise a person must act.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, MailError::RateLimited | MailError::Server(_) | MailError::Unreachable(_))
    }
}

/// The outcome of an SMTP login check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// 235: the server accepted the password.
    Accepted,
    /// 535 (or another permanent AUTH reply): the server refused it.
    Rejected,
    /// Could not tell (network, TLS, timeout, 4xx).
    Unknown(String),
}

/// One tenant's mail server, as rotation sees it.
#[async_trait]
pub trait MailServer: Send + Sync {
    /// Sets the user's password.
    async fn set_password(&self, target: &MailTarget, password: &SecretString) -> Result<(), MailError>;
    /// Creates the user with a password (the domain is created when missing).
    async fn create_user(&self, target: &MailTarget, password: &SecretString) -> Result<(), MailError>;
    /// Whether the user exists.
    async fn user_exists(&self, target: &MailTarget) -> Result<bool, MailError>;
    /// Logs in over SMTP with the password.
    async fn check_login(&self, target: &MailTarget, password: &SecretString) -> LoginCheck;
    /// The accounts with global admin rights on the tenant's Mailu (`GET /user` lists every
    /// user of that Mailu with its `global_admin` flag).
    async fn global_admins(&self, target: &MailTarget) -> Result<Vec<MailuAccount>, MailError>;
}

/// An account on a tenant's Mailu, as the admin inventory keeps it: never its password hash,
/// which Mailu's list includes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MailuAccount {
    /// Its login.
    pub email: String,
    /// Whether it may log in (`enabled`; Mailu's default is true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

const fn enabled_by_default() -> bool {
    true
}

/// The most a user list may weigh: far above any real Mailu, small enough that a hostile
/// server cannot make the console hold much.
const MAX_USER_LIST_BYTES: usize = 8 * 1024 * 1024;

/// The global admins in a Mailu `GET /user` answer. Pure, so it can be fuzzed: a mail server
/// is not trusted to answer well.
///
/// # Errors
/// [`MailError::Malformed`] for anything but a JSON list of objects with an `email` string.
pub fn parse_global_admins(body: &[u8]) -> Result<Vec<MailuAccount>, MailError> {
    #[derive(serde::Deserialize)]
    struct Listed {
        email: String,
        #[serde(default)]
        global_admin: bool,
        #[serde(default = "enabled_by_default")]
        enabled: bool,
    }
    if body.len() > MAX_USER_LIST_BYTES {
        return Err(MailError::Malformed);
    }
    let listed: Vec<Listed> = serde_json::from_slice(body).map_err(|_| MailError::Malformed)?;
    let mut admins: Vec<MailuAccount> = listed
        .into_iter()
        .filter(|u| u.global_admin)
        .map(|u| MailuAccount { email: u.email.trim().to_lowercase(), enabled: u.enabled })
        .filter(|a| a.email.len() <= 320 && a.email.contains('@') && !a.email.chars().any(char::is_control))
        .collect();
    admins.sort_by(|a, b| a.email.cmp(&b.email));
    admins.dedup_by(|a, b| a.email == b.email);
    Ok(admins)
}

/// What a Mailu API answer means: its body on success (Mailu answers a JSON object to every
/// call the console makes; anything else is [`MailError::Malformed`]), else the error its
/// status names. Pure, so it can be fuzzed: a mail server is not trusted to answer well.
///
/// # Errors
/// The [`MailError`] the status stands for.
pub fn classify_response(status: u16, body: &[u8]) -> Result<serde_json::Value, MailError> {
    match status {
        200..=299 => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(object @ serde_json::Value::Object(_)) => Ok(object),
            _ => Err(MailError::Malformed),
        },
        401 => Err(MailError::Unauthorized),
        403 => Err(MailError::Forbidden),
        404 => Err(MailError::NotFound),
        409 => Err(MailError::Conflict),
        429 => Err(MailError::RateLimited),
        400..=499 => Err(MailError::Rejected),
        // A redirect is never followed (it could re-send a password to another host); from
        // Mailu it means the API is off or the URL is not its base.
        300..=399 => Err(MailError::Malformed),
        other => Err(MailError::Server(other)),
    }
}

/// The real thing: Mailu API over HTTPS and SMTP AUTH with lettre.
pub struct Mailu {
    http: reqwest::Client,
    smtp_timeout: Duration,
    extra_root: Option<Vec<u8>>,
    policy: OutboundPolicy,
    /// What the console knows of each mail server's limiter about itself.
    budgets: std::sync::Mutex<std::collections::HashMap<String, Budget>>,
}

/// One mail server's count of the console's failures, as Mailu keeps it.
#[derive(Default)]
struct Budget {
    /// Users whose login it refused within the hour, and when first.
    refused: std::collections::HashMap<String, std::time::Instant>,
    /// Until when a successful login exempts the console (Mailu: 24 h from a success on any
    /// port but 25, for that address; forgotten when Mailu restarts, which the API's 429 tells).
    exempt_until: Option<std::time::Instant>,
}

/// Users whose refused logins the console allows itself per mail server and hour. Mailu counts
/// failed logins against the client's /24 (or /48), one per user name and hour (it
/// de-duplicates `dedup-{network}-{username}`), and answers every login from there, right
/// password included, as refused once 5 are counted (`AUTH_RATELIMIT_IP=5/hour`,
/// `core/admin/mailu/limiter.py`): with at most 4 the console never trips it by itself, and
/// a user already counted costs nothing more.
pub const LOGIN_BUDGET: usize = 4;

/// What [`LoginCheck::Unknown`] says when the console has spent its refusals on a server.
pub const BUDGET_SPENT: &str = "this mail server refused the console's logins for 4 users within the hour: it checks no other user there until the hour is over, so that it never trips Mailu's rate limit itself";

impl std::fmt::Debug for Mailu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailu")
    }
}

impl Mailu {
    /// A client with request timeouts under `policy`; `extra_root_pem` adds trusted CAs for
    /// SMTP and the API alike (a private CA, tests).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(timeout: Duration, extra_root_pem: Option<Vec<u8>>, policy: OutboundPolicy) -> Result<Self, String> {
        let http = http_client(&policy, timeout, extra_root_pem.as_deref(), None)?;
        Ok(Self { http, smtp_timeout: timeout, extra_root: extra_root_pem, policy, budgets: Default::default() })
    }

    /// The client for `target`'s API: the shared one, or for a target reached at a given
    /// address one that connects there and still checks the certificate against the URL's
    /// host name (Mailu's certificates name hosts, not addresses). Rare (recoveries), so
    /// built per call.
    fn http_for(
        &self,
        target: &MailTarget,
        url: &url::Url,
    ) -> Result<std::borrow::Cow<'_, reqwest::Client>, MailError> {
        let (Some(address), Some(url::Host::Domain(host))) = (target.api_address, url.host()) else {
            return Ok(std::borrow::Cow::Borrowed(&self.http));
        };
        if !self.policy.allows_ip(address) {
            return Err(MailError::Destination(Refused::InternalAddress));
        }
        http_client(&self.policy, self.smtp_timeout, self.extra_root.as_deref(), Some((host, address)))
            .map(std::borrow::Cow::Owned)
            .map_err(MailError::Unreachable)
    }

    /// `api_url` + path segments, each percent-encoded (a user name is an email address and
    /// must stay one segment), after the policy has accepted the URL.
    fn url(&self, target: &MailTarget, segments: &[&str]) -> Result<url::Url, MailError> {
        let mut url = self.policy.check_url(&target.api_url).map_err(MailError::Destination)?;
        url.path_segments_mut()
            .map_err(|()| MailError::Destination(Refused::NotHttpUrl))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        target: &MailTarget,
    ) -> Result<serde_json::Value, MailError> {
        let response = request.bearer_auth(target.api_token.expose_secret()).send().await.map_err(|e| {
            MailError::Unreachable(if e.is_timeout() { "timeout".into() } else { "connection failed".into() })
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        classify_response(status, &body)
    }

    fn tls(&self, host: &str) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(host.to_owned());
        for pem in self.extra_root.as_deref().map(pem_certificates).unwrap_or_default() {
            builder = builder.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| e.to_string())?);
        }
        builder.build_rustls().map_err(|e| e.to_string())
    }
}

/// An API client under `policy` that also trusts `roots` and, when `pin` is given, reaches
/// that host at that address (the URL's port still applies).
fn http_client(
    policy: &OutboundPolicy,
    timeout: Duration,
    roots: Option<&[u8]>,
    pin: Option<(&str, std::net::IpAddr)>,
) -> Result<reqwest::Client, String> {
    let mut builder = policy.http_client_builder(timeout);
    for pem in roots.map(pem_certificates).unwrap_or_default() {
        let root = reqwest::Certificate::from_pem(&pem).map_err(|_| "the extra CA file is not PEM".to_owned())?;
        builder = builder.add_root_certificate(root);
    }
    if let Some((host, address)) = pin {
        builder = builder.resolve(host, std::net::SocketAddr::new(address, 0));
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

#[async_trait]
impl MailServer for Mailu {
    async fn set_password(&self, target: &MailTarget, password: &SecretString) -> Result<(), MailError> {
        let url = self.url(target, &["user", &target.username])?;
        let body = json!({"raw_password": password.expose_secret()});
        self.send(self.http_for(target, &url)?.patch(url).json(&body), target).await.map(|_| ())
    }

    async fn create_user(&self, target: &MailTarget, password: &SecretString) -> Result<(), MailError> {
        let domain = target.username.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        let url = self.url(target, &["domain"])?;
        let http = self.http_for(target, &url)?;
        match self.send(http.post(url).json(&json!({"name": domain})), target).await {
            Ok(_) | Err(MailError::Conflict) => {}
            Err(e) => return Err(e),
        }
        let body = json!({"email": target.username, "raw_password": password.expose_secret(), "global_admin": true});
        match self.send(http.post(self.url(target, &["user"])?).json(&body), target).await {
            Ok(_) => Ok(()),
            // The user exists after all (created meanwhile, or by an earlier attempt that lost
            // its answer): Mailu 2024.06 says 409, Mailu 2.0 fails its unique key with a 500.
            // Read it, and set the password if it is there.
            Err(error @ (MailError::Conflict | MailError::Server(500))) => match self.user_exists(target).await {
                Ok(true) => self.set_password(target, password).await,
                _ => Err(error),
            },
            Err(e) => Err(e),
        }
    }

    async fn global_admins(&self, target: &MailTarget) -> Result<Vec<MailuAccount>, MailError> {
        let url = self.url(target, &["user"])?;
        let response =
            self.http_for(target, &url)?.get(url).bearer_auth(target.api_token.expose_secret()).send().await.map_err(
                |e| MailError::Unreachable(if e.is_timeout() { "timeout".into() } else { "connection failed".into() }),
            )?;
        let status = response.status().as_u16();
        if response.content_length().is_some_and(|n| n > MAX_USER_LIST_BYTES as u64) {
            return Err(MailError::Malformed);
        }
        let body = response.bytes().await.unwrap_or_default();
        match status {
            200..=299 => parse_global_admins(&body),
            // Errors come as Mailu's JSON object; classify them as every other call does.
            other => classify_response(other, &body).and(Err(MailError::Malformed)),
        }
    }

    async fn user_exists(&self, target: &MailTarget) -> Result<bool, MailError> {
        let url = self.url(target, &["user", &target.username])?;
        match self.send(self.http_for(target, &url)?.get(url), target).await {
            // Mailu answers the user it was asked for; anything else is not Mailu.
            Ok(user) if user["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(&target.username)) => Ok(true),
            Ok(_) => Err(MailError::Malformed),
            Err(MailError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn check_login(&self, target: &MailTarget, password: &SecretString) -> LoginCheck {
        if !self.budget_left(&target.smtp_host, &target.username) {
            return LoginCheck::Unknown(BUDGET_SPENT.into());
        }
        let tls = match self.tls(target.tls_name.as_deref().unwrap_or(&target.smtp_host)) {
            Ok(tls) => tls,
            Err(e) => return LoginCheck::Unknown(format!("TLS setup: {e}")),
        };
        let tls = match target.smtp_tls {
            SmtpTls::Implicit => Tls::Wrapper(tls),
            SmtpTls::Starttls => Tls::Required(tls),
        };
        // The address is resolved and checked here and connected to as an address, so the
        // policy sees exactly where the password goes; TLS still checks the host's name.
        let address = match self.policy.resolve(&target.smtp_host, target.smtp_port).await {
            Ok(addresses) => addresses.first().map(|a| a.ip().to_string()).unwrap_or_default(),
            Err(refused) => return LoginCheck::Unknown(format!("the SMTP host {refused}")),
        };
        // A new transport per check (no pool), so every check is a fresh login.
        let transport: AsyncSmtpTransport<Tokio1Executor> =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&address)
                .port(target.smtp_port)
                .tls(tls)
                .credentials(Credentials::new(target.username.clone(), password.expose_secret().to_owned()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login])
                .timeout(Some(self.smtp_timeout))
                .build();
        // lettre's own timeout bounds only the connect; this bounds the whole conversation.
        match tokio::time::timeout(self.smtp_timeout, transport.test_connection()).await {
            Ok(Ok(true)) => {
                self.note_success(&target.smtp_host, target.smtp_port);
                LoginCheck::Accepted
            }
            Ok(Ok(false)) => LoginCheck::Unknown("the server closed the session after AUTH".into()),
            Ok(Err(e)) if e.is_permanent() && e.status().is_some_and(|c| u16::from(c) == 535) => {
                self.spend_budget(&target.smtp_host, &target.username);
                self.confirm_rejection(target).await
            }
            Ok(Err(e)) => LoginCheck::Unknown(match e.status() {
                Some(code) => format!("SMTP reply {}", u16::from(code)),
                None => format!("connection or TLS failure ({})", tls_hint(target)),
            }),
            // STARTTLS against an implicit-TLS port waits for a greeting that never comes.
            Err(_) => LoginCheck::Unknown(format!("timed out ({})", tls_hint(target))),
        }
    }
}

impl Mailu {
    /// Whether the console may risk a refused login for `user` at `host` now: it is exempt,
    /// the user is counted already, or fewer than [`LOGIN_BUDGET`] users are.
    fn budget_left(&self, host: &str, user: &str) -> bool {
        let Ok(mut budgets) = self.budgets.lock() else { return true };
        // Only this server's entry is aged (every check runs this: sweeping the whole map would
        // make a heartbeat over many tenants quadratic); a server never asked again keeps a
        // few bytes.
        let Some(budget) = budgets.get_mut(host) else { return true };
        let now = std::time::Instant::now();
        budget.refused.retain(|_, first| now.duration_since(*first) < Duration::from_secs(3600));
        budget.exempt_until = budget.exempt_until.filter(|until| *until > now);
        let left = budget.exempt_until.is_some()
            || budget.refused.contains_key(&user.to_lowercase())
            || budget.refused.len() < LOGIN_BUDGET;
        if budget.refused.is_empty() && budget.exempt_until.is_none() {
            budgets.remove(host);
        }
        left
    }

    fn spend_budget(&self, host: &str, user: &str) {
        if let Ok(mut budgets) = self.budgets.lock() {
            let budget = budgets.entry(host.to_owned()).or_default();
            budget.refused.entry(user.to_lowercase()).or_insert_with(std::time::Instant::now);
        }
    }

    fn note_success(&self, host: &str, port: u16) {
        if port == 25 {
            return;
        }
        if let Ok(mut budgets) = self.budgets.lock() {
            let until = std::time::Instant::now() + Duration::from_secs(86_400);
            budgets.entry(host.to_owned()).or_default().exempt_until = Some(until);
        }
    }

    /// A 535 from Mailu 2024.06 is not proof of a wrong password: its Dovecot front turns every
    /// answer but OK into a mismatch, rate-limited logins included. Mailu's limiter runs before
    /// its token check, so a call with the right token tells: a 429 means the console's address
    /// is limited and the login said nothing about the password. (A per-user limit, 50 distinct
    /// wrong passwords a day, does not show here; the heartbeat re-checks before it alarms.)
    async fn confirm_rejection(&self, target: &MailTarget) -> LoginCheck {
        match self.user_exists(target).await {
            Err(MailError::RateLimited) => {
                // Limited, so no longer exempt (Mailu restarted and forgot, or it lapsed).
                if let Ok(mut budgets) = self.budgets.lock() {
                    budgets.entry(target.smtp_host.clone()).or_default().exempt_until = None;
                }
                LoginCheck::Unknown(RATE_LIMITED.into())
            }
            _ => LoginCheck::Rejected,
        }
    }
}

/// The usual cause of a failure before AUTH: the port speaks the other TLS mode.
fn tls_hint(target: &MailTarget) -> String {
    format!("the console speaks {} to port {}: check the tenant's smtp_tls", target.smtp_tls.label(), target.smtp_port)
}

/// What [`LoginCheck::Unknown`] says when Mailu rate-limits the console's address.
pub const RATE_LIMITED: &str =
    "Mailu rate-limits the console's address: add it to AUTH_RATELIMIT_EXEMPTION in mailu.env";

/// The certificates of a PEM bundle, one PEM each (lettre reads one certificate per call).
#[must_use]
pub fn pem_certificates(bundle: &[u8]) -> Vec<Vec<u8>> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(bundle);
    text.split_inclusive(END)
        .filter_map(|part| part.find("-----BEGIN CERTIFICATE-----").map(|start| part.as_bytes()[start..].to_vec()))
        .filter(|pem| pem.ends_with(END.as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bundle_splits_into_its_certificates() {
        let one = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----";
        let bundle = format!("junk\n{one}\n{one}\ntrailing");
        assert_eq!(super::pem_certificates(bundle.as_bytes()).len(), 2);
        assert!(super::pem_certificates(b"nothing").is_empty());
    }

    #[test]
    fn mailu_answers_are_classified_whatever_their_body() {
        use super::{MailError, classify_response};
        assert_eq!(classify_response(200, br#"{"ok":1}"#).ok(), Some(serde_json::json!({"ok": 1})));
        assert_eq!(classify_response(204, b"").err(), Some(MailError::Malformed));
        assert_eq!(classify_response(200, b"<html>captive portal</html>").err(), Some(MailError::Malformed));
        assert_eq!(classify_response(200, b"[1]").err(), Some(MailError::Malformed));
        assert_eq!(classify_response(404, br#"{"message":"no such user"}"#).err(), Some(MailError::NotFound));
        assert_eq!(classify_response(400, b"\xff\xfe not json").err(), Some(MailError::Rejected));
        assert_eq!(classify_response(302, b"").err(), Some(MailError::Malformed));
        assert!(!MailError::Malformed.is_transient() && !MailError::Rejected.is_transient());
        // The server's text never travels on: a caller sees the status's meaning only.
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(5000));
        assert_eq!(classify_response(409, long.as_bytes()).err().map(|e| e.to_string().len() < 100), Some(true));
        assert_eq!(classify_response(503, b"{").err(), Some(MailError::Server(503)));
        assert_eq!(classify_response(307, b"").err(), Some(MailError::Malformed));
    }
}
