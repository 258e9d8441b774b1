//! The one typed configuration, loaded in `main` and passed down (ARCHITECTURE §3.5).
//! Precedence: command-line flag, then environment, then the optional TOML file (same keys as
//! the environment variables), then the defaults below, which make the demo run.

use clap::Args;
use secrecy::SecretString;
use std::path::PathBuf;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the console can be configured with.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Database: `sqlite://path` (created when missing) or `postgres://user:pass@host/db`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/smtp-vault.db", global = true)]
    pub database_url: String,

    /// Vault (or OpenBao) address; for a raft cluster, every node's address, comma-separated
    /// (`http://10.0.0.1:8200,http://10.0.0.2:8200,http://10.0.0.3:8200`): the console starts on
    /// the active node and fails over to another when its node stops serving.
    #[arg(long, env = "VAULT_ADDR", default_value = "http://127.0.0.1:8200", global = true)]
    pub vault_addr: String,

    /// Vault token (used when set; otherwise AppRole). From VAULT_TOKEN or the config file only:
    /// a flag would show it in the process list.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, hide = true, value_parser = secret, global = true)]
    pub vault_token: Option<SecretString>,

    /// AppRole role id (with VAULT_SECRET_ID, when no token is given).
    #[arg(long, env = "VAULT_ROLE_ID", global = true)]
    pub vault_role_id: Option<String>,

    /// AppRole secret id. From VAULT_SECRET_ID or the config file only (see `vault_token`).
    #[arg(long, env = "VAULT_SECRET_ID", hide_env_values = true, hide = true, value_parser = secret, global = true)]
    pub vault_secret_id: Option<SecretString>,

    /// KV v2 mount that holds the credentials.
    #[arg(long, env = "SMTP_VAULT_MOUNT", default_value = "smtp", global = true)]
    pub vault_mount: String,

    /// Mount path of the AppRole auth method.
    #[arg(long, env = "SMTP_VAULT_APPROLE_MOUNT", default_value = "approle", global = true)]
    pub vault_approle_mount: String,

    /// Address the web server listens on.
    #[arg(long, env = "LEPTOS_SITE_ADDR", default_value = "127.0.0.1:3000", global = true)]
    pub site_addr: String,

    /// Public URL of the console (the WebAuthn origin; https in production).
    #[arg(long, env = "SMTP_VAULT_PUBLIC_URL", default_value = "http://localhost:3000", global = true)]
    pub public_url: String,

    /// Keyring file (mode 0600, kept out of backups and out of Vault).
    #[arg(long, env = "SMTP_VAULT_KEYRING", default_value = "data/keyring.json", global = true)]
    pub keyring_path: PathBuf,

    /// Backup encryption key file (kept apart from the backups and from Vault).
    #[arg(long, env = "SMTP_VAULT_BACKUP_KEY", default_value = "data/backup.key", global = true)]
    pub backup_key_path: PathBuf,

    /// Backup target: `file:///dir` or `s3://bucket/prefix` (with the usual AWS_* variables).
    #[arg(long, env = "SMTP_VAULT_BACKUP_TARGET", default_value = "file://data/backups", global = true)]
    pub backup_target: String,

    /// SMTP URL for security alerts, e.g. `smtp://user:pass@host:587?tls=required`.
    #[arg(long, env = "SMTP_VAULT_ALERT_SMTP_URL", hide_env_values = true, value_parser = secret, global = true)]
    pub alert_smtp_url: Option<SecretString>,

    /// Recipients of security alerts (comma-separated).
    #[arg(long, env = "SMTP_VAULT_ALERT_EMAIL_TO", value_delimiter = ',', global = true)]
    pub alert_email_to: Vec<String>,

    /// Sender address of alert emails.
    #[arg(long, env = "SMTP_VAULT_ALERT_EMAIL_FROM", default_value = "smtp-vault@localhost", global = true)]
    pub alert_email_from: String,

    /// Attempts per alert and channel before it is dead-lettered.
    #[arg(long, env = "SMTP_VAULT_ALERT_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=50), global = true)]
    pub alert_max_attempts: u32,

    /// First delay between alert delivery attempts, in milliseconds (doubles each time, at
    /// most an hour).
    #[arg(long, env = "SMTP_VAULT_ALERT_RETRY_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000), global = true)]
    pub alert_retry_ms: u64,

    /// Hours an incident may stay unacknowledged before an alert is raised.
    #[arg(long, env = "SMTP_VAULT_INCIDENT_ACK_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=720), global = true)]
    pub incident_ack_hours: u32,

    /// Slack incoming-webhook URL for security alerts.
    #[arg(long, env = "SMTP_VAULT_SLACK_WEBHOOK_URL", hide_env_values = true, value_parser = secret, global = true)]
    pub slack_webhook_url: Option<SecretString>,

    /// When the daily backup runs (cron with seconds, UTC).
    #[arg(long, env = "SMTP_VAULT_BACKUP_CRON", default_value = "0 0 2 * * *", global = true)]
    pub backup_cron: String,

    /// URL the console POSTs `{tenant_id, hostname, old_ip, new_ip}` to after a recovery, so
    /// DNS can follow the replacement server.
    #[arg(long, env = "SMTP_VAULT_DNS_HOOK_URL", global = true)]
    pub dns_hook_url: Option<String>,

    /// URL the console POSTs `{tenant_id, hostname}` to for `recover --provision`; it answers
    /// `{new_vps_ip, mailu_api_url, mailu_api_token?, smtp_port?}`.
    #[arg(long, env = "SMTP_VAULT_PROVISION_HOOK_URL", global = true)]
    pub provision_hook_url: Option<String>,

    /// Bearer token sent to both hooks.
    #[arg(long, env = "SMTP_VAULT_HOOK_TOKEN", hide_env_values = true, value_parser = secret, global = true)]
    pub hook_token: Option<SecretString>,

    /// OpenBao/Vault binary a DR drill starts as its scratch server (dev mode, loopback).
    #[arg(long, env = "SMTP_VAULT_DRILL_BAO", default_value = "bao", global = true)]
    pub drill_bao: String,

    /// When the monthly DR drill runs (cron with seconds, UTC).
    #[arg(long, env = "SMTP_VAULT_DRILL_CRON", default_value = "0 0 3 1 * *", global = true)]
    pub drill_cron: String,

    /// RTO target of a drill, in seconds (a slower restore raises an alert).
    #[arg(long, env = "SMTP_VAULT_DRILL_RTO_SECS", default_value_t = 1800, global = true)]
    pub drill_rto_secs: u64,

    /// RPO target of a drill, in seconds (older lost changes raise an alert).
    #[arg(long, env = "SMTP_VAULT_DRILL_RPO_SECS", default_value_t = 3600, global = true)]
    pub drill_rpo_secs: u64,

    /// Reveals by one admin within the burst window that raise `reveal_burst`.
    #[arg(long, env = "SMTP_VAULT_RULE_REVEAL_BURST_COUNT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub rule_reveal_burst_count: u32,

    /// `reveal_burst` also when one admin reveals more than this many tenants in the window.
    #[arg(long, env = "SMTP_VAULT_RULE_REVEAL_BURST_TENANTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub rule_reveal_burst_tenants: u32,

    /// The reveal-burst window, in minutes.
    #[arg(long, env = "SMTP_VAULT_RULE_REVEAL_BURST_MINUTES", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1440), global = true)]
    pub rule_reveal_burst_minutes: u32,

    /// When reveals are expected (UTC), e.g. `mon-fri 07:00-19:00`; others raise
    /// `reveal_outside_hours`. Unset: any time.
    #[arg(long, env = "SMTP_VAULT_RULE_REVEAL_HOURS", global = true)]
    pub rule_reveal_hours: Option<String>,

    /// Failed logins (per email or address) or re-auths (per admin) in the window that alert.
    #[arg(long, env = "SMTP_VAULT_RULE_FAILED_AUTH_COUNT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub rule_failed_auth_count: u32,

    /// The failed-attempt window, in minutes.
    #[arg(long, env = "SMTP_VAULT_RULE_FAILED_AUTH_MINUTES", default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=1440), global = true)]
    pub rule_failed_auth_minutes: u32,

    /// Hours without a new backup that raise `backup_overdue`.
    #[arg(long, env = "SMTP_VAULT_RULE_BACKUP_MAX_AGE_HOURS", default_value_t = 26, value_parser = clap::value_parser!(u32).range(1..=8760), global = true)]
    pub rule_backup_max_age_hours: u32,

    /// Rules switched off, by alert kind (comma-separated), e.g. `login_new_ip`.
    #[arg(long, env = "SMTP_VAULT_RULES_OFF", value_delimiter = ',', global = true)]
    pub rules_off: Vec<String>,

    /// Bearer token `/metrics` requires; unset: `/metrics` is open (bind it to a private
    /// network).
    #[arg(long, env = "SMTP_VAULT_METRICS_TOKEN", hide_env_values = true, value_parser = secret, global = true)]
    pub metrics_token: Option<SecretString>,

    /// Days between automatic rotations.
    #[arg(long, env = "SMTP_VAULT_ROTATION_PERIOD_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650), global = true)]
    pub rotation_period_days: u32,

    /// Length of a reveal window, in seconds.
    #[arg(long, env = "SMTP_VAULT_REVEAL_WINDOW_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(10..=86_400), global = true)]
    pub reveal_window_secs: u64,

    /// Extra CA certificate (PEM) trusted for SMTP TLS to tenants' mail servers.
    #[arg(long, env = "SMTP_VAULT_SMTP_CA_FILE", global = true)]
    pub smtp_ca_file: Option<PathBuf>,

    /// Failed attempts before a rotation gives up (`needs_reconcile` + alert).
    #[arg(long, env = "SMTP_VAULT_ROTATION_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20), global = true)]
    pub rotation_max_attempts: u32,

    /// First delay between rotation attempts, in milliseconds (doubles each time).
    #[arg(long, env = "SMTP_VAULT_ROTATION_RETRY_MS", default_value_t = 2000, global = true)]
    pub rotation_retry_ms: u64,

    /// When the daily cycle runs (cron with seconds, UTC): rotate due, notices, heartbeat, repair.
    #[arg(long, env = "SMTP_VAULT_DAILY_CRON", default_value = "0 0 2 * * *", global = true)]
    pub daily_cron: String,

    /// Rotations run at once by the daily cycle.
    #[arg(long, env = "SMTP_VAULT_ROTATION_CONCURRENCY", default_value_t = 4, global = true)]
    pub rotation_concurrency: usize,

    /// Lets the console call plain-http URLs (Mailu API, hooks, Slack) and send alert email
    /// without TLS. For demos and tests on one machine; never in production.
    #[arg(long, env = "SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT", action = clap::ArgAction::Set, default_value_t = false, global = true)]
    pub outbound_allow_plaintext: bool,

    /// Internal networks (comma-separated, e.g. `10.20.0.0/16`) the console may call although
    /// they are loopback, private or link-local; every other such destination is refused.
    #[arg(long, env = "SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", value_delimiter = ',', global = true)]
    pub outbound_allow_networks: Vec<String>,

    /// How often (seconds) the console writes an anchor of the audit chain (its length and head
    /// hash, MACed) to the backup target, when the chain grew. Events appended since the last
    /// anchor are what a database writer could cut unnoticed.
    #[arg(long, env = "SMTP_VAULT_AUDIT_ANCHOR_SECS", default_value_t = 300, global = true)]
    pub audit_anchor_secs: u64,

    /// How long (seconds) after the heartbeat's first refused login it logs in again before
    /// it calls the tenant drifted and raises the critical alert: a refusal can be a rate
    /// limit in disguise (Mailu 2024.06 answers a limited login with 535). 0 alarms at once.
    #[arg(long, env = "SMTP_VAULT_HEARTBEAT_RECHECK_SECS", default_value_t = 900, global = true)]
    pub heartbeat_recheck_secs: u64,

    /// Reverse proxies (comma-separated networks, e.g. `10.0.0.5/32`) whose `X-Forwarded-For`
    /// names the client: rate limits and the audit trail's client address follow it. Nothing
    /// is trusted by default: the peer address is the client.
    #[arg(long, env = "SMTP_VAULT_TRUSTED_PROXIES", value_delimiter = ',', global = true)]
    pub trusted_proxies: Vec<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SMTP_VAULT_MAX_BODY_BYTES", default_value_t = 65_536, global = true)]
    pub max_body_bytes: usize,

    /// Per-request timeout in seconds.
    #[arg(long, env = "SMTP_VAULT_REQUEST_TIMEOUT_SECS", default_value_t = 30, global = true)]
    pub request_timeout_secs: u64,

    /// Log format.
    #[arg(long, env = "SMTP_VAULT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax).
    // vaultrs and rustify log every Vault 404 (an absent secret, a normal answer) as an error;
    // the console maps and logs Vault errors itself.
    #[arg(long, env = "RUST_LOG", default_value = "info,rustify=off,vaultrs=off", global = true)]
    pub log: String,
}

impl Config {
    /// Demo and test defaults, as if nothing were set.
    #[must_use]
    pub fn defaults() -> Self {
        Self {
            database_url: "sqlite://data/smtp-vault.db".into(),
            vault_addr: "http://127.0.0.1:8200".into(),
            vault_token: None,
            vault_role_id: None,
            vault_secret_id: None,
            vault_mount: "smtp".into(),
            vault_approle_mount: "approle".into(),
            site_addr: "127.0.0.1:3000".into(),
            public_url: "http://localhost:3000".into(),
            keyring_path: "data/keyring.json".into(),
            backup_key_path: "data/backup.key".into(),
            backup_target: "file://data/backups".into(),
            alert_smtp_url: None,
            alert_email_to: Vec::new(),
            slack_webhook_url: None,
            alert_email_from: "smtp-vault@localhost".into(),
            alert_max_attempts: 8,
            alert_retry_ms: 5000,
            incident_ack_hours: 24,
            backup_cron: "0 0 2 * * *".into(),
            dns_hook_url: None,
            provision_hook_url: None,
            hook_token: None,
            drill_bao: "bao".into(),
            drill_cron: "0 0 3 1 * *".into(),
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
            daily_cron: "0 0 2 * * *".into(),
            rotation_concurrency: 4,
            outbound_allow_plaintext: false,
            outbound_allow_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            audit_anchor_secs: 300,
            heartbeat_recheck_secs: 900,
            max_body_bytes: 65_536,
            request_timeout_secs: 30,
            log_format: LogFormat::Text,
            log: "info,rustify=off,vaultrs=off".into(),
        }
    }
}

fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text.to_owned()))
}
