//! The console's configuration, typed and checked: addresses, URLs, networks, mailboxes, cron
//! expressions and rule names arrive parsed (the CLI's `ConfigArgs::load` does it once, at
//! start), so a bad setting stops the start with its variable's name, never a job at 02:00.

use crate::core::alerting::AlertKind;
use crate::core::backup::BackupLocation;
use crate::core::monitor::AllowedHours;
use crate::core::{Error, Result};
use ipnet::IpNet;
use lettre::message::Mailbox;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use url::Url;

/// Everything the console can be configured with (each field's variable is in `cli/args.rs`).
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://path` or `postgres://…`.
    pub database_url: String,
    /// Vault's nodes: the console starts on the active one and fails over to another.
    pub vault_addrs: Vec<Url>,
    /// Vault token (used when set; otherwise AppRole).
    pub vault_token: Option<SecretString>,
    /// AppRole role id.
    pub vault_role_id: Option<String>,
    /// AppRole secret id.
    pub vault_secret_id: Option<SecretString>,
    /// KV v2 mount that holds the credentials.
    pub vault_mount: String,
    /// Mount path of the AppRole auth method.
    pub vault_approle_mount: String,
    /// Where the web server listens.
    pub site_addr: SocketAddr,
    /// The console's public URL: the WebAuthn origin, links in mail, `Secure` cookies and
    /// HSTS when https.
    pub public_url: Url,
    /// Keyring file.
    pub keyring_path: PathBuf,
    /// Backup encryption key file.
    pub backup_key_path: PathBuf,
    /// Where backups, the journal and audit anchors go.
    pub backup_target: BackupLocation,
    /// SMTP URL for security alerts (may hold a password).
    pub alert_smtp_url: Option<SecretString>,
    /// Recipients of security alerts.
    pub alert_email_to: Vec<Mailbox>,
    /// Sender of alert emails.
    pub alert_email_from: Mailbox,
    /// Attempts per alert and channel before it is dead-lettered.
    pub alert_max_attempts: u32,
    /// First delay between alert delivery attempts, in milliseconds.
    pub alert_retry_ms: u64,
    /// Hours an incident may stay unacknowledged.
    pub incident_ack_hours: u32,
    /// Slack incoming-webhook URL (a secret: whoever holds it can post).
    pub slack_webhook_url: Option<SecretString>,
    /// SIEM syslog receiver: `tcp://host:port` (plaintext: needs the outbound policy's
    /// plaintext switch) or `tls://host:port`.
    pub siem_syslog_url: Option<String>,
    /// Extra PEM roots the syslog receiver's certificate may chain to.
    pub siem_syslog_ca_file: Option<std::path::PathBuf>,
    /// SIEM webhook URL (a secret: it may carry a token).
    pub siem_webhook_url: Option<SecretString>,
    /// The webhook's signing secret, `whsec_` + base64 (Standard Webhooks).
    pub siem_webhook_secret: Option<SecretString>,
    /// When the daily backup runs.
    pub backup_cron: CronSchedule,
    /// Called after a recovery so DNS can follow the replacement server.
    pub dns_hook_url: Option<Url>,
    /// Called by `recover --provision` for a replacement server.
    pub provision_hook_url: Option<Url>,
    /// Bearer token sent to both hooks.
    pub hook_token: Option<SecretString>,
    /// Binary a DR drill starts as its scratch server.
    pub drill_bao: String,
    /// When the monthly DR drill runs.
    pub drill_cron: CronSchedule,
    /// RTO target of a drill, in seconds.
    pub drill_rto_secs: u64,
    /// RPO target of a drill, in seconds.
    pub drill_rpo_secs: u64,
    /// Reveals by one admin within the burst window that raise `reveal_burst`.
    pub rule_reveal_burst_count: u32,
    /// `reveal_burst` also beyond this many tenants in the window.
    pub rule_reveal_burst_tenants: u32,
    /// The reveal-burst window, in minutes.
    pub rule_reveal_burst_minutes: u32,
    /// When reveals are expected; `None`: any time.
    pub rule_reveal_hours: Option<AllowedHours>,
    /// Failed logins or re-auths in the window that alert.
    pub rule_failed_auth_count: u32,
    /// The failed-attempt window, in minutes.
    pub rule_failed_auth_minutes: u32,
    /// Hours without a new backup that raise `backup_overdue`.
    pub rule_backup_max_age_hours: u32,
    /// Rules switched off (each a kind that a rule raises).
    pub rules_off: Vec<AlertKind>,
    /// Bearer token `/metrics` requires; `None`: open.
    pub metrics_token: Option<SecretString>,
    /// Days between automatic rotations.
    pub rotation_period_days: u32,
    /// Length of a reveal window, in seconds.
    pub reveal_window_secs: u64,
    /// Extra CA certificate (PEM) trusted for TLS to tenants' mail servers.
    pub smtp_ca_file: Option<PathBuf>,
    /// Failed attempts before a rotation gives up.
    pub rotation_max_attempts: u32,
    /// First delay between rotation attempts, in milliseconds.
    pub rotation_retry_ms: u64,
    /// When the daily cycle runs.
    pub daily_cron: CronSchedule,
    /// Rotations run at once by the daily cycle.
    pub rotation_concurrency: usize,
    /// Plain-http URLs and alert email without TLS (demos and tests only).
    pub outbound_allow_plaintext: bool,
    /// Internal networks the console may call nonetheless.
    pub outbound_allow_networks: Vec<IpNet>,
    /// How often (seconds) an audit anchor is written when the chain grew.
    pub audit_anchor_secs: u64,
    /// Seconds after a first refused heartbeat login before it is called drift.
    pub heartbeat_recheck_secs: u64,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Per-request timeout in seconds.
    pub request_timeout_secs: u64,
}

impl Config {
    /// Demo and test defaults, as if nothing were set (the same as the CLI's defaults).
    ///
    /// # Panics
    /// Never: every default below is a constant that parses (`the_defaults_parse`).
    #[must_use]
    pub fn defaults() -> Self {
        #[allow(clippy::expect_used, reason = "constants that parse, checked by a unit test")]
        fn parsed<T>(result: Result<T>) -> T {
            result.expect("a built-in default parses")
        }
        Self {
            database_url: "sqlite://data/smtp-vault.db".into(),
            vault_addrs: parsed(vault_addrs("http://127.0.0.1:8200")),
            vault_token: None,
            vault_role_id: None,
            vault_secret_id: None,
            vault_mount: "smtp".into(),
            vault_approle_mount: "approle".into(),
            site_addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            public_url: parsed(public_url("http://localhost:3000")),
            keyring_path: "data/keyring.json".into(),
            backup_key_path: "data/backup.key".into(),
            backup_target: BackupLocation::Dir("data/backups".into()),
            alert_smtp_url: None,
            alert_email_to: Vec::new(),
            slack_webhook_url: None,
            siem_syslog_url: None,
            siem_syslog_ca_file: None,
            siem_webhook_url: None,
            siem_webhook_secret: None,
            alert_email_from: parsed(mailbox("SMTP_VAULT_ALERT_EMAIL_FROM", "smtp-vault@localhost")),
            alert_max_attempts: 8,
            alert_retry_ms: 5000,
            incident_ack_hours: 24,
            backup_cron: parsed(CronSchedule::parse("SMTP_VAULT_BACKUP_CRON", "0 0 2 * * *")),
            dns_hook_url: None,
            provision_hook_url: None,
            hook_token: None,
            drill_bao: "bao".into(),
            drill_cron: parsed(CronSchedule::parse("SMTP_VAULT_DRILL_CRON", "0 0 3 1 * *")),
            drill_rto_secs: 1800,
            drill_rpo_secs: 3600,
            rule_reveal_burst_count: 5,
            rule_reveal_burst_tenants: 3,
            rule_reveal_burst_minutes: 10,
            rule_reveal_hours: None,
            rule_failed_auth_count: 5,
            rule_failed_auth_minutes: 15,
            rule_backup_max_age_hours: 26,
            rules_off: Vec::new(),
            metrics_token: None,
            rotation_period_days: 90,
            reveal_window_secs: 900,
            smtp_ca_file: None,
            rotation_max_attempts: 3,
            rotation_retry_ms: 2000,
            daily_cron: parsed(CronSchedule::parse("SMTP_VAULT_DAILY_CRON", "0 0 2 * * *")),
            rotation_concurrency: 4,
            outbound_allow_plaintext: false,
            outbound_allow_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            audit_anchor_secs: 300,
            heartbeat_recheck_secs: 900,
            max_body_bytes: 65_536,
            request_timeout_secs: 30,
        }
    }

    /// The Vault addresses as `VAULT_ADDR` spells them (comma-separated), for a child process.
    #[must_use]
    pub fn vault_addr_text(&self) -> String {
        self.vault_addrs.iter().map(|a| a.as_str().trim_end_matches('/')).collect::<Vec<_>>().join(",")
    }
}

/// A cron expression with seconds (UTC), checked with the scheduler's own parser settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule(String);

impl CronSchedule {
    /// Checks `text` as the scheduler will read it: six fields, seconds first.
    ///
    /// # Errors
    /// [`Error::Config`] naming `variable` and the expected form.
    pub fn parse(variable: &str, text: &str) -> Result<Self> {
        let text = text.trim();
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(text)
            .map_err(|e| {
                Error::Config(format!(
                    "{variable}: `{text}` is not a cron expression with seconds ({e}), e.g. `0 0 2 * * *`"
                ))
            })?;
        Ok(Self(text.to_owned()))
    }

    /// The expression.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `VAULT_ADDR`: one or more comma-separated http(s) base URLs.
///
/// # Errors
/// [`Error::Config`] for an entry that is not one, or none at all.
pub fn vault_addrs(text: &str) -> Result<Vec<Url>> {
    let addrs = text
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| http_url("VAULT_ADDR", a))
        .collect::<Result<Vec<_>>>()?;
    if addrs.is_empty() {
        return Err(Error::Config("VAULT_ADDR names no address".into()));
    }
    Ok(addrs)
}

/// `SMTP_VAULT_PUBLIC_URL`: an http(s) origin with a host (WebAuthn binds passkeys to it).
///
/// # Errors
/// [`Error::Config`] when it is not one.
pub fn public_url(text: &str) -> Result<Url> {
    let url = http_url("SMTP_VAULT_PUBLIC_URL", text)?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config(format!("SMTP_VAULT_PUBLIC_URL: `{text}` has no host")));
    }
    Ok(url)
}

/// An http(s) URL named by `variable`. Which destinations may be called is decided per call by
/// the outbound policy; this only rejects what is not an http(s) URL at all.
///
/// # Errors
/// [`Error::Config`] naming the variable (never echoing the value: hook URLs may carry tokens).
pub fn http_url(variable: &str, text: &str) -> Result<Url> {
    let url = Url::parse(text.trim()).map_err(|e| Error::Config(format!("{variable}: not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Config(format!("{variable}: must be an http:// or https:// URL")));
    }
    Ok(url)
}

/// An email address named by `variable`.
///
/// # Errors
/// [`Error::Config`] naming the variable and the address.
pub fn mailbox(variable: &str, text: &str) -> Result<Mailbox> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|_| Error::Config(format!("{variable}: `{}` is not an email address", text.trim())))
}

/// Networks (`10.0.0.0/8`) or single addresses named by `variable`.
///
/// # Errors
/// [`Error::Config`] naming the entry that is neither.
pub fn networks(variable: &str, entries: &[String]) -> Result<Vec<IpNet>> {
    entries
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| Error::Config(format!("{variable}: `{n}` is not a network like 10.0.0.0/8")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T>(result: Result<T>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused<T: std::fmt::Debug>(result: Result<T>) -> String {
        match result {
            Ok(value) => panic!("accepted: {value:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_defaults_parse() {
        let config = Config::defaults();
        assert_eq!(config.vault_addr_text(), "http://127.0.0.1:8200");
        assert_eq!(config.backup_target.to_string(), "file://data/backups");
    }

    #[test]
    fn cron_expressions_need_their_seconds_field() {
        assert!(CronSchedule::parse("X", "0 0 2 * * *").is_ok());
        let five = refused(CronSchedule::parse("SMTP_VAULT_DAILY_CRON", "0 2 * * *"));
        assert!(five.contains("SMTP_VAULT_DAILY_CRON") && five.contains("0 2 * * *"), "{five}");
        assert!(CronSchedule::parse("X", "at two").is_err());
    }

    #[test]
    fn urls_must_be_http_and_the_public_one_needs_a_host() {
        assert_eq!(ok(vault_addrs(" http://a:8200 , http://b:8200,")).len(), 2);
        assert!(vault_addrs(" , ").is_err());
        assert!(vault_addrs("127.0.0.1:8200").is_err());
        assert!(public_url("https://console.example").is_ok());
        assert!(public_url("file:///tmp").is_err());
        let hook = refused(http_url("SMTP_VAULT_DNS_HOOK_URL", "ftp://user:token@host/x"));
        assert!(!hook.contains("token"), "a refused hook URL is not echoed: {hook}");
    }

    #[test]
    fn addresses_are_checked_and_named() {
        assert!(mailbox("X", " ops@example.com ").is_ok());
        let bad = refused(mailbox("SMTP_VAULT_ALERT_EMAIL_TO", "not an address"));
        assert!(bad.contains("SMTP_VAULT_ALERT_EMAIL_TO") && bad.contains("not an address"), "{bad}");
    }

    #[test]
    fn networks_accept_addresses_and_name_the_bad_entry() {
        let nets = ok(networks("X", &["10.0.0.0/8".into(), " ::1 ".into(), String::new()]));
        assert_eq!(nets.len(), 2);
        assert!(refused(networks("SMTP_VAULT_TRUSTED_PROXIES", &["10.0.0.0/33".into()])).contains("10.0.0.0/33"));
    }
}
