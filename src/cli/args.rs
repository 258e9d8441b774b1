//! The command line's view of the configuration: every flag with its environment variable and
//! default. [`ConfigArgs::load`] checks and parses it once into the core's typed
//! [`Config`]; nothing past this file sees a setting as text.
//! Precedence: command-line flag, then environment, then the optional TOML file (same keys as
//! the environment variables), then the defaults below, which make the demo run.

use crate::core::config::Config;
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

/// Every setting as given: flag, environment variable or config-file key, not yet checked.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
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

    /// SIEM export over syslog (RFC 5424, octet-counted TCP): `tls://host:port`, or
    /// `tcp://host:port` where plaintext is allowed (SMTP_VAULT_OUTBOUND_ALLOW_PLAINTEXT).
    #[arg(long, env = "SMTP_VAULT_SIEM_SYSLOG_URL", global = true)]
    pub siem_syslog_url: Option<String>,

    /// Extra PEM roots for the syslog receiver's certificate.
    #[arg(long, env = "SMTP_VAULT_SIEM_SYSLOG_CA_FILE", global = true)]
    pub siem_syslog_ca_file: Option<std::path::PathBuf>,

    /// SIEM export over signed webhooks (Standard Webhooks): where each audit event is POSTed.
    #[arg(long, env = "SMTP_VAULT_SIEM_WEBHOOK_URL", hide_env_values = true, value_parser = secret, global = true, requires = "siem_webhook_secret")]
    pub siem_webhook_url: Option<SecretString>,

    /// The webhook signing secret, `whsec_` followed by base64 (at least 24 bytes).
    #[arg(long, env = "SMTP_VAULT_SIEM_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret, global = true)]
    pub siem_webhook_secret: Option<SecretString>,

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

fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(text.to_owned()))
}

impl ConfigArgs {
    /// Checks every setting once and builds the core's typed configuration; the first bad
    /// setting stops the start, named by its environment variable.
    ///
    /// # Errors
    /// [`crate::core::Error::Config`] naming the setting and what is wrong with it.
    pub fn load(&self) -> crate::core::Result<Config> {
        use crate::core::config::{self as c, CronSchedule};
        let optional_url = |variable: &str, text: &Option<String>| {
            text.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(|t| c::http_url(variable, t)).transpose()
        };
        Ok(Config {
            database_url: self.database_url.clone(),
            vault_addrs: c::vault_addrs(&self.vault_addr)?,
            vault_token: self.vault_token.clone(),
            vault_role_id: self.vault_role_id.clone(),
            vault_secret_id: self.vault_secret_id.clone(),
            vault_mount: self.vault_mount.clone(),
            vault_approle_mount: self.vault_approle_mount.clone(),
            site_addr: self.site_addr.trim().parse().map_err(|_| {
                crate::core::Error::Config(format!(
                    "LEPTOS_SITE_ADDR: `{}` is not an address like 127.0.0.1:3000",
                    self.site_addr
                ))
            })?,
            public_url: c::public_url(&self.public_url)?,
            keyring_path: self.keyring_path.clone(),
            backup_key_path: self.backup_key_path.clone(),
            backup_target: crate::core::backup::BackupLocation::parse(&self.backup_target)?,
            alert_smtp_url: self.alert_smtp_url.clone(),
            alert_email_to: self
                .alert_email_to
                .iter()
                .filter(|a| !a.trim().is_empty())
                .map(|a| c::mailbox("SMTP_VAULT_ALERT_EMAIL_TO", a))
                .collect::<crate::core::Result<_>>()?,
            alert_email_from: c::mailbox("SMTP_VAULT_ALERT_EMAIL_FROM", &self.alert_email_from)?,
            alert_max_attempts: self.alert_max_attempts,
            alert_retry_ms: self.alert_retry_ms,
            incident_ack_hours: self.incident_ack_hours,
            slack_webhook_url: self.slack_webhook_url.clone(),
            siem_syslog_url: self.siem_syslog_url.clone().filter(|u| !u.trim().is_empty()),
            siem_syslog_ca_file: self.siem_syslog_ca_file.clone(),
            siem_webhook_url: self.siem_webhook_url.clone(),
            siem_webhook_secret: self.siem_webhook_secret.clone(),
            backup_cron: CronSchedule::parse("SMTP_VAULT_BACKUP_CRON", &self.backup_cron)?,
            dns_hook_url: optional_url("SMTP_VAULT_DNS_HOOK_URL", &self.dns_hook_url)?,
            provision_hook_url: optional_url("SMTP_VAULT_PROVISION_HOOK_URL", &self.provision_hook_url)?,
            hook_token: self.hook_token.clone(),
            drill_bao: self.drill_bao.clone(),
            drill_cron: CronSchedule::parse("SMTP_VAULT_DRILL_CRON", &self.drill_cron)?,
            drill_rto_secs: self.drill_rto_secs,
            drill_rpo_secs: self.drill_rpo_secs,
            rule_reveal_burst_count: self.rule_reveal_burst_count,
            rule_reveal_burst_tenants: self.rule_reveal_burst_tenants,
            rule_reveal_burst_minutes: self.rule_reveal_burst_minutes,
            rule_reveal_hours: crate::core::monitor::reveal_hours(self.rule_reveal_hours.as_deref())?,
            rule_failed_auth_count: self.rule_failed_auth_count,
            rule_failed_auth_minutes: self.rule_failed_auth_minutes,
            rule_backup_max_age_hours: self.rule_backup_max_age_hours,
            rules_off: crate::core::monitor::rules_off(&self.rules_off)?,
            metrics_token: self.metrics_token.clone(),
            rotation_period_days: self.rotation_period_days,
            reveal_window_secs: self.reveal_window_secs,
            smtp_ca_file: self.smtp_ca_file.clone(),
            rotation_max_attempts: self.rotation_max_attempts,
            rotation_retry_ms: self.rotation_retry_ms,
            daily_cron: CronSchedule::parse("SMTP_VAULT_DAILY_CRON", &self.daily_cron)?,
            rotation_concurrency: self.rotation_concurrency,
            outbound_allow_plaintext: self.outbound_allow_plaintext,
            outbound_allow_networks: c::networks("SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS", &self.outbound_allow_networks)?,
            audit_anchor_secs: self.audit_anchor_secs,
            heartbeat_recheck_secs: self.heartbeat_recheck_secs,
            trusted_proxies: c::networks("SMTP_VAULT_TRUSTED_PROXIES", &self.trusted_proxies)?,
            max_body_bytes: self.max_body_bytes,
            request_timeout_secs: self.request_timeout_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        config: ConfigArgs,
    }

    fn load(args: &[&str]) -> crate::core::Result<Config> {
        let mut argv = vec!["smtp-vault"];
        argv.extend_from_slice(args);
        Probe::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")).config.load()
    }

    #[test]
    fn each_bad_setting_stops_the_start_with_its_variable_named() {
        for (flag, variable) in [
            ("--daily-cron=0 2 * * *", "SMTP_VAULT_DAILY_CRON"),
            ("--backup-cron=nightly", "SMTP_VAULT_BACKUP_CRON"),
            ("--drill-cron=", "SMTP_VAULT_DRILL_CRON"),
            ("--vault-addr=127.0.0.1:8200", "VAULT_ADDR"),
            ("--public-url=console.example", "SMTP_VAULT_PUBLIC_URL"),
            ("--site-addr=localhost", "LEPTOS_SITE_ADDR"),
            ("--backup-target=/var/backups", "SMTP_VAULT_BACKUP_TARGET"),
            ("--alert-email-to=ops@example.com,not an address", "SMTP_VAULT_ALERT_EMAIL_TO"),
            ("--dns-hook-url=ftp://dns.example/update", "SMTP_VAULT_DNS_HOOK_URL"),
            ("--provision-hook-url=not a url", "SMTP_VAULT_PROVISION_HOOK_URL"),
            ("--rules-off=login_new_ip,nope", "SMTP_VAULT_RULES_OFF"),
            ("--rule-reveal-hours=9 to 5", "SMTP_VAULT_RULE_REVEAL_HOURS"),
            ("--trusted-proxies=10.0.0.0/33", "SMTP_VAULT_TRUSTED_PROXIES"),
            ("--outbound-allow-networks=intranet", "SMTP_VAULT_OUTBOUND_ALLOW_NETWORKS"),
        ] {
            match load(&[flag]) {
                Ok(_) => panic!("{flag} was accepted"),
                Err(error) => assert!(error.to_string().contains(variable), "{flag}: {error}"),
            }
        }
    }

    #[test]
    fn settings_arrive_parsed() {
        let config = load(&[
            "--vault-addr=http://10.0.0.1:8200, http://10.0.0.2:8200",
            "--backup-target=s3://bucket/console/",
            "--rules-off=login_new_ip",
            "--trusted-proxies=10.0.0.5",
            "--public-url=https://console.example",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.vault_addrs.len(), 2);
        assert_eq!(config.vault_addr_text(), "http://10.0.0.1:8200,http://10.0.0.2:8200");
        assert_eq!(
            config.backup_target,
            crate::core::backup::BackupLocation::S3 { bucket: "bucket".into(), prefix: "console".into() }
        );
        assert_eq!(config.rules_off, vec![crate::core::alerting::AlertKind::LoginNewIp]);
        assert_eq!(config.trusted_proxies.len(), 1);
        assert_eq!(config.public_url.scheme(), "https");
    }
}
