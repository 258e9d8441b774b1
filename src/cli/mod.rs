//! The `smtp-vault` command tree (ARCHITECTURE §3.4). Each command: build the core it needs,
//! make one core call, print the result. Exit 0 on success, otherwise non-zero with one line.

pub mod args;
mod config_file;

use crate::core::audit::ChainReport;
use crate::core::config::Config;
use crate::core::vault::RoleSettings;
use crate::core::{self, Actor, Core, Error, ErrorKind, Needs};
use crate::model::Scope;
use args::{ConfigArgs, LogFormat};
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use std::path::PathBuf;
use std::process::ExitCode;

/// smtp-vault: keeps tenants' Mailu admin SMTP credentials encrypted in Vault.
#[derive(Debug, Parser)]
#[command(name = "smtp-vault", version, args_override_self = true, propagate_version = true)]
pub struct Cli {
    /// TOML file with settings; keys are the environment variable names (e.g. DATABASE_URL).
    /// Flags and environment variables win over it.
    #[arg(long = "config", env = "SMTP_VAULT_CONFIG", global = true, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    #[command(flatten)]
    pub config: ConfigArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the console and its API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Preflight: configuration, key files, database, Vault and the token's capabilities,
    /// public URL, alert channels, clock; one line each, non-zero exit on any failure.
    Doctor {
        /// Print only what fails or warns.
        #[arg(long)]
        quiet: bool,
        /// As systemd's ExecStartPre: what `serve` fixes or retries by itself (migrations, no
        /// SQLite file yet, an alert channel down) warns instead of failing.
        #[arg(long)]
        preflight: bool,
    },
    /// Every setting: a commented TOML example, or the reference docs/configuration.md holds.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Configure Vault: KV v2 mount, policies, AppRole and the console's role (needs a privileged
    /// VAULT_TOKEN). Prints the role id and a new secret id.
    VaultSetup {
        /// TTL of the console's tokens.
        #[arg(long, default_value = "1h")]
        token_ttl: String,
        /// Maximum TTL of the console's tokens (then it logs in again).
        #[arg(long, default_value = "24h")]
        token_max_ttl: String,
        /// TTL of secret ids (0 = no expiry).
        #[arg(long, default_value = "0")]
        secret_id_ttl: String,
    },
    /// Manage the keyring of master keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Rotate one tenant's password now, or every tenant that is due.
    Rotate {
        /// The tenant to rotate.
        #[arg(long, conflicts_with = "due", required_unless_present = "due")]
        tenant: Option<crate::model::TenantId>,
        /// Rotate every tenant whose rotation is due.
        #[arg(long)]
        due: bool,
        /// Rotations run at once with --due.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Compromise response when the web tier is down (break-glass): rotate now, revoke every
    /// reveal window for the tenant, alert security (email + Slack), notify the tenant, open an
    /// incident. Delivers the alerts itself before it exits.
    EmergencyReset {
        /// The tenant whose credential is compromised.
        #[arg(long)]
        tenant: crate::model::TenantId,
        /// Your incident id (e.g. INC-2041).
        #[arg(long)]
        incident: String,
        /// Why (recorded, sent to security; never to the tenant).
        #[arg(long)]
        reason: String,
    },
    /// Undo the last rotation: Vault's previous password goes back through the staged protocol
    /// (pending → Mailu → SMTP login → promoted as a new version). Refused after an emergency
    /// reset or a sweep (that password was retired as exposed).
    Revert {
        /// The tenant.
        #[arg(long)]
        tenant: crate::model::TenantId,
        /// Why (recorded, sent to security).
        #[arg(long)]
        reason: String,
    },
    /// Rogue Mailu admins: the accounts with global admin rights on each tenant's Mailu.
    MailuAdmins {
        #[command(subcommand)]
        command: MailuAdminsCommand,
    },
    /// Exposure sweep ("rotate what they saw"): rotate every tenant whose current password an
    /// admin could reveal, or a (revoked) service token read, under one incident; security is
    /// alerted. --dry-run lists them and changes nothing.
    #[command(group(clap::ArgGroup::new("subject").required(true).args(["admin", "token"])))]
    Sweep {
        /// The admin's login email.
        #[arg(long)]
        admin: Option<String>,
        /// The service token's id (revoke it first: a working token would read the new passwords).
        #[arg(long)]
        token: Option<String>,
        /// Count only exposure from this date (2026-12-01) or time (RFC 3339) on.
        #[arg(long, default_value = "")]
        since: String,
        /// List the exposed tenants; rotate nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (recorded, sent to security).
        #[arg(long, default_value = "")]
        reason: String,
        /// Your incident id (e.g. INC-2041); one is made up when absent.
        #[arg(long)]
        incident: Option<String>,
    },
    /// Encrypted backups of every tenant's secret: run, list, prune, restore.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Recover a tenant onto a replacement mail server (VPS failure): set the stored password
    /// on the new Mailu, prove an SMTP login there, record it and call the DNS hook.
    Recover {
        /// The tenant.
        #[arg(long)]
        tenant: crate::model::TenantId,
        /// The replacement server's address.
        #[arg(long, required_unless_present = "provision", conflicts_with = "provision")]
        new_vps_ip: Option<String>,
        /// Its Mailu admin API base URL.
        #[arg(long, required_unless_present = "provision", conflicts_with = "provision")]
        mailu_api_url: Option<String>,
        /// Its Mailu API token (default: the stored one). From SMTP_VAULT_RECOVER_MAILU_TOKEN
        /// only: a flag would show it in the process list.
        #[arg(long, env = "SMTP_VAULT_RECOVER_MAILU_TOKEN", hide_env_values = true, hide = true)]
        mailu_api_token: Option<String>,
        /// Its SMTP submission port (default: the stored one).
        #[arg(long)]
        smtp_port: Option<u16>,
        /// Its SMTP TLS mode, `implicit` or `starttls` (default: the stored one).
        #[arg(long, value_parser = parse_smtp_tls)]
        smtp_tls: Option<crate::model::SmtpTls>,
        /// Ask the provisioning hook (SMTP_VAULT_PROVISION_HOOK_URL) for the replacement server.
        #[arg(long)]
        provision: bool,
    },
    /// Disaster-recovery drills.
    Dr {
        #[command(subcommand)]
        command: DrCommand,
    },
    /// Manage console admins.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Tenants: the paged list, and a tenant's settings from the host (also `tenants`).
    #[command(visible_alias = "tenants")]
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Four-eyes reveals: the requests, and the tenant setting.
    Reveals {
        #[command(subcommand)]
        command: RevealsCommand,
    },
    /// Manage service tokens for the JSON API.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Inspect the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The SIEM export (SMTP_VAULT_SIEM_SYSLOG_URL, SMTP_VAULT_SIEM_WEBHOOK_URL).
    Siem {
        #[command(subcommand)]
        command: SiemCommand,
    },
}

/// `config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a TOML config file with every setting at its default, commented out.
    Example,
    /// Print the configuration reference (Markdown; docs/configuration.md is this).
    Reference,
}

/// `siem …`
#[derive(Debug, Subcommand)]
pub enum SiemCommand {
    /// Where each configured sink stands: the last event handed over, how far behind the
    /// trail's head, webhook deliveries waiting and dead.
    Status,
    /// Queue the dead-lettered webhook deliveries again (after the receiver is fixed).
    Redrive,
}

/// `keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the keyring with one key (never overwrites an existing keyring).
    Generate {
        /// Create the backup key (SMTP_VAULT_BACKUP_KEY) instead; keep it apart from the
        /// backups and from Vault.
        #[arg(long, conflicts_with = "add")]
        backup: bool,
        /// Add a new active key to the existing keyring instead (old keys stay for decryption;
        /// run `keys rewrap` afterwards).
        #[arg(long)]
        add: bool,
    },
    /// Re-encrypt every stored secret under the active key.
    Rewrap,
}

/// `backup …`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up every tenant now (then apply retention).
    Run {
        /// Also save Vault's raft snapshot (needs VAULT_TOKEN allowed sys/storage/raft/snapshot;
        /// restorable only with the original cluster's unseal keys).
        #[arg(long)]
        raft_snapshot: bool,
    },
    /// Write the decrypted raft snapshot of a backup to a file, for
    /// `bao operator raft snapshot restore -force FILE`.
    RaftExport {
        /// The backup id.
        id: String,
        /// Output file (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// List backups, newest first.
    List,
    /// Apply retention: keep 30 daily and 12 monthly backups.
    Prune,
    /// Restore a backup (and the journal after it) into Vault; verifies every tenant.
    Restore {
        /// The backup id (a date, see `backup list`). Restore into another Vault with the
        /// global `--vault-addr` (and VAULT_TOKEN or AppRole for it).
        id: String,
        /// Check and plan only; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite tenants whose stored secret differs from the backup.
        #[arg(long)]
        force: bool,
        /// Replay the journal only up to this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Restore the backup alone, without the journal.
        #[arg(long, conflicts_with = "until")]
        no_journal: bool,
    },
}

/// `dr …`
#[derive(Debug, Subcommand)]
pub enum DrCommand {
    /// Restore the newest backup plus the journal into a scratch OpenBao (or --vault-addr with
    /// VAULT_TOKEN), verify every tenant, measure RTO and RPO, keep the report.
    Drill {
        /// Use this Vault as the scratch target instead of starting one (it must be empty or
        /// disposable).
        #[arg(long, requires = "scratch_token")]
        scratch_addr: Option<String>,
        /// Token for --scratch-addr.
        #[arg(long, env = "SMTP_VAULT_SCRATCH_TOKEN", hide_env_values = true)]
        scratch_token: Option<String>,
    },
}

/// `admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print a one-time enrollment link (valid 24 hours) for a new admin; this is how a fresh
    /// install gets its first platform admin.
    Invite {
        /// The admin's email (their login name).
        #[arg(long)]
        email: String,
        /// platform_admin, incident_responder or security_reviewer.
        #[arg(long)]
        role: crate::model::Role,
    },
    /// List the invites that still work (the links themselves are never shown again).
    Invites,
    /// Revoke an unused invite: its link stops working at once.
    RevokeInvite {
        /// The invite's id (from `admin invites` or `admin invite`).
        #[arg(long)]
        invite_id: String,
    },
}

/// `tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// List tenants (tab-separated: id, state, version, next rotation), a page at a time or
    /// --all; the total that match goes to stderr.
    List {
        /// One state: active, rotating, needs_reconcile, drifted or rate_limited.
        #[arg(long, value_parser = ["active", "rotating", "needs_reconcile", "drifted", "rate_limited"])]
        state: Option<String>,
        /// Next rotation due within this many days.
        #[arg(long)]
        due_within: Option<u32>,
        /// Text in the tenant id.
        #[arg(long)]
        search: Option<String>,
        /// Tenants per page (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue from a cursor an earlier page printed.
        #[arg(long, conflicts_with = "all")]
        cursor: Option<String>,
        /// Every page, one after the other.
        #[arg(long)]
        all: bool,
    },
    /// Set how the passwords generated for a tenant look (provisioning, rotation, emergency
    /// reset); the next rotation uses it.
    PasswordPolicy {
        /// The tenant.
        #[arg(long)]
        tenant: crate::model::TenantId,
        /// Characters (20 to 128).
        #[arg(long, default_value_t = 32)]
        length: u16,
        /// alphanumeric (letters and digits, safe everywhere) or alphanumeric_symbols (also -_.~!*+=).
        #[arg(long, default_value = "alphanumeric", value_parser = ["alphanumeric", "alphanumeric_symbols"])]
        alphabet: String,
    },
    /// Tell the tenant's contact when its password is revealed: off, category (when, the role,
    /// the reason's category) or reason (also the reason as written).
    RevealNotice {
        /// The tenant.
        #[arg(long)]
        tenant: crate::model::TenantId,
        /// off, category or reason.
        #[arg(value_parser = ["off", "category", "reason"])]
        notice: String,
        /// The contact's email (kept when absent).
        #[arg(long)]
        contact: Option<String>,
    },
}

/// `mailu-admins …`
#[derive(Debug, Subcommand)]
pub enum MailuAdminsCommand {
    /// Ask each tenant's Mailu (or one's) now, as the daily cycle does; unknown accounts are
    /// alerted once (mailu_unknown_admin).
    Check {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<crate::model::TenantId>,
    },
    /// A tenant's global admins as last inventoried.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: crate::model::TenantId,
    },
    /// Vouch for an account the inventory found unknown (audited; its alert stops).
    Trust {
        /// The tenant.
        #[arg(long)]
        tenant: crate::model::TenantId,
        /// The account's login.
        #[arg(long)]
        email: String,
        /// Why it is legitimate.
        #[arg(long)]
        note: String,
    },
}

/// `reveals …`
#[derive(Debug, Subcommand)]
pub enum RevealsCommand {
    /// List reveal requests of four-eyes tenants (the latest 100, or the pending ones): who
    /// asked, for which tenant, why, and who decided. Deciding needs a platform admin's passkey,
    /// in the console's Approvals page.
    Requests {
        /// Only the requests still waiting for a second platform admin.
        #[arg(long)]
        pending: bool,
    },
    /// Switch a tenant's four-eyes reveals on or off (off alerts security).
    FourEyes {
        /// The tenant.
        #[arg(long)]
        tenant: crate::model::TenantId,
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// `token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token. The token is printed once on standard output; it cannot be shown again.
    Create {
        /// A name that says who uses it.
        #[arg(long)]
        name: String,
        /// A scope to grant (repeat for several): credentials:write, credentials:read,
        /// credentials:read-secret, credentials:rotate, credentials:reset, tenants:recover,
        /// audit:read.
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// Lifetime such as 30d, 12h or 90m (default: no expiry).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<chrono::Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token id (from `token list`).
        token_id: String,
    },
}

/// `audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; names the first broken event. With `--export`, checks an
    /// exported copy instead (a SIEM's syslog file, a CSV or JSON lines export, saved webhook
    /// payloads), offline: only the keyring is needed.
    Verify {
        /// The exported copy to check.
        #[arg(long, value_name = "FILE")]
        export: Option<std::path::PathBuf>,
        /// The first event sealed with the keyring's MAC (`audit verify` prints it; 1 for a
        /// console installed with a keyed chain). Earlier events carry a plain SHA-256.
        #[arg(long, default_value_t = 1, requires = "export", value_name = "SEQ")]
        keyed_from: i64,
    },
    /// Write events as JSON Lines on standard output, oldest first.
    Export {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<crate::model::TenantId>,
        /// Only this event type (e.g. emergency_reset).
        #[arg(long)]
        event: Option<String>,
        /// Only this severity (info, warning, critical).
        #[arg(long)]
        severity: Option<String>,
        /// At or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long, value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
}

fn parse_smtp_tls(text: &str) -> Result<crate::model::SmtpTls, String> {
    crate::model::SmtpTls::from_name(text).ok_or_else(|| "must be implicit or starttls".to_owned())
}

fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("`{text}` is not an RFC 3339 time like 2026-12-01T00:00:00Z"))
}

fn parse_duration(text: &str) -> Result<chrono::Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 30d, 12h, 90m"))?;
    match unit {
        "d" => Ok(chrono::Duration::days(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "m" => Ok(chrono::Duration::minutes(n)),
        "s" => Ok(chrono::Duration::seconds(n)),
        _ => Err(format!("`{text}` is not a duration like 30d, 12h, 90m")),
    }
    .and_then(|d| if d > chrono::Duration::zero() { Ok(d) } else { Err("the duration must be positive".into()) })
}

/// Parses the command line (with the optional TOML file underneath).
///
/// # Errors
/// A message for an unreadable or invalid config file; clap exits by itself on bad flags.
pub fn parse() -> Result<Cli, String> {
    let given: Vec<std::ffi::OsString> = std::env::args_os().collect();
    refuse_secret_flags(&given)?;
    let args = config_file::args_with_file(given)?;
    Ok(Cli::parse_from(args))
}

/// Secrets the command line must not carry: every local user sees a process's arguments
/// (`ps`, `/proc/*/cmdline`), and shells keep them in their history. Each is taken from its
/// environment variable (or the config file) instead.
const SECRET_FLAGS: [(&str, &str); 3] = [
    ("--vault-token", "VAULT_TOKEN"),
    ("--vault-secret-id", "VAULT_SECRET_ID"),
    ("--mailu-api-token", "SMTP_VAULT_RECOVER_MAILU_TOKEN"),
];

/// Refuses a secret given as a flag, naming the variable to use.
///
/// # Errors
/// The message for the first secret flag found.
pub fn refuse_secret_flags(args: &[std::ffi::OsString]) -> Result<(), String> {
    for arg in args.iter().filter_map(|a| a.to_str()) {
        let flag = arg.split('=').next().unwrap_or(arg);
        if let Some((_, variable)) = SECRET_FLAGS.iter().find(|(name, _)| *name == flag) {
            return Err(format!(
                "{flag} would show the secret to every local user in the process list; set {variable} in the \
                 environment (or the config file) instead"
            ));
        }
    }
    Ok(())
}

/// Sets up `tracing` on standard error, as text or JSON.
pub fn init_logging(config: &ConfigArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Why a command failed; its exit status says which kind of failure it was (README,
/// "Exit status").
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The core refused or failed.
    #[error(transparent)]
    Core(#[from] Error),
    /// The command line or the work it asked for is unusable.
    #[error("{0}")]
    Usage(String),
    /// The work ran but part of it failed (some tenants, a drill).
    #[error("{0}")]
    Incomplete(String),
    /// The keyring could not be made or read.
    #[error(transparent)]
    Keyring(#[from] core::crypto::KeyringError),
    /// The server could not listen or serve.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Usage(message)
    }
}

impl CliError {
    /// The exit status (sysexits.h), from the core's error kind: scripts can tell a refusal
    /// from an outage from a bug without reading the message.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 64,
            CliError::Incomplete(_) => 1,
            CliError::Keyring(_) => 78,
            CliError::Io(_) => 74,
            CliError::Core(error) => match error.kind() {
                ErrorKind::InvalidInput | ErrorKind::Integrity => 65,
                ErrorKind::NotFound => 66,
                ErrorKind::Unavailable => 69,
                ErrorKind::Internal => 70,
                ErrorKind::Conflict | ErrorKind::RateLimited => 75,
                ErrorKind::Upstream => 76,
                ErrorKind::Unauthenticated | ErrorKind::Forbidden => 77,
                ErrorKind::Configuration => 78,
            },
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    match run_command(cli).await {
        Ok(code) => code,
        Err(error) => {
            // The whole chain of causes, once: the edge is where a failure is reported.
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message = format!("{message}: {cause}");
                }
                source = cause_of(source);
            }
            eprintln!("error: {message}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn cause_of<'a>(error: Option<&'a (dyn std::error::Error + 'static)>) -> Option<&'a (dyn std::error::Error + 'static)> {
    error.and_then(std::error::Error::source)
}

async fn connect(config: &Config, needs: Needs) -> Result<Core, Error> {
    Core::connect(config, needs, None).await
}

async fn run_command(cli: Cli) -> Result<ExitCode, CliError> {
    // Before the settings are checked: a broken setting must not hide the reference.
    if let Some(Command::Config { command }) = &cli.command {
        match command {
            ConfigCommand::Example => print!("{}", config_file::example_toml()),
            ConfigCommand::Reference => print!("{}", config_file::reference_markdown()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::Doctor { quiet, preflight }) = &cli.command {
        return Ok(doctor(cli.config.load(), *quiet, *preflight).await);
    }
    let config = cli.config.load()?;
    let operator = Actor::operator();
    match cli.command.unwrap_or(Command::Serve) {
        // Answered above, before the settings were loaded.
        Command::Config { .. } | Command::Doctor { .. } => {}
        Command::Serve => {
            let core = connect(&config, Needs::ALL).await?;
            crate::web::serve(core, &config).await?;
        }
        Command::Migrate => {
            connect(&config, Needs::DB).await?;
            eprintln!("database is up to date");
        }
        Command::VaultSetup { token_ttl, token_max_ttl, secret_id_ttl } => {
            let core = connect(&config, Needs { vault: true, keyring: false }).await?;
            let role = RoleSettings { token_ttl, token_max_ttl, secret_id_ttl };
            let report = core.setup_vault(&operator, &role).await?;
            let created = if report.mount_created { "created" } else { "already present" };
            eprintln!("KV v2 mount `{}/`: {created}", report.mount);
            eprintln!("policies written: {}", report.policies.join(", "));
            eprintln!("AppRole role `{}` configured; the secret id below is shown once", report.role_name);
            println!("VAULT_ROLE_ID={}", report.role_id);
            println!("VAULT_SECRET_ID={}", report.secret_id.expose_secret());
        }
        Command::Keys { command: KeysCommand::Generate { backup: true, .. } } => {
            let key_id = core::generate_backup_key(&config)?;
            eprintln!("backup key {}: key `{key_id}`", config.backup_key_path.display());
            eprintln!("keep a copy apart from the backups and from Vault: without it no backup can be restored");
        }
        Command::Keys { command: KeysCommand::Generate { add, .. } } => {
            let key_id = if add { core::add_keyring_key(&config) } else { core::generate_keyring(&config) }?;
            core::record_keyring_change(&config, &operator, &key_id, !add).await?;
            eprintln!("keyring {}: active key `{key_id}`", config.keyring_path.display());
            if add {
                eprintln!("run `smtp-vault keys rewrap` to re-encrypt stored secrets under it");
            } else {
                eprintln!("back this file up somewhere safe and separate: without it no credential can be decrypted");
            }
        }
        Command::Keys { command: KeysCommand::Rewrap } => {
            let core = connect(&config, Needs::ALL).await?;
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tenants {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let mut progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let report = core.rewrap_keys(&operator, &mut progress).await?;
            bar.finish_and_clear();
            eprintln!(
                "{} tenants: {} rewrapped, {} already under the active key",
                report.tenants, report.rewrapped, report.already_current
            );
        }
        Command::Token { command } => return token_command(&config, &operator, command).await,
        Command::Siem { command } => {
            let core = connect(&config, Needs::DB).await?;
            match command {
                SiemCommand::Status => {
                    let sinks = core.siem_status().await?;
                    if sinks.is_empty() {
                        println!("no SIEM sink configured (SMTP_VAULT_SIEM_SYSLOG_URL, SMTP_VAULT_SIEM_WEBHOOK_URL)");
                    }
                    for (sink, cursor, behind, pending, dead) in sinks {
                        println!(
                            "{sink}: handed over up to event {cursor}, {behind} behind; {pending} waiting, {dead} dead"
                        );
                    }
                }
                SiemCommand::Redrive => {
                    println!("{} dead deliveries queued again", core.redrive_siem_dead_letters().await?)
                }
            }
        }
        Command::Rotate { tenant: Some(tenant), .. } => {
            let core = connect(&config, Needs::ALL).await?;
            let done = core.rotate_now(&operator, &crate::core::ClientInfo::local(), &tenant).await?;
            println!("{}: rotated, version {}", done.tenant_id, done.version);
        }
        Command::Rotate { tenant: None, concurrency, .. } => {
            let core = connect(&config, Needs::ALL).await?;
            let outcomes = core.rotate_due(&operator, concurrency).await?;
            let mut failed = 0;
            for (tenant, outcome) in &outcomes {
                match outcome {
                    Ok(crate::core::rotation::RotationResult::Rotated { version }) => {
                        println!("{tenant}: rotated, version {version}")
                    }
                    Ok(other) => {
                        failed += 1;
                        println!("{tenant}: {other:?}");
                    }
                    Err(e) => {
                        failed += 1;
                        println!("{tenant}: error: {e}");
                    }
                }
            }
            eprintln!("{} due, {} rotated, {failed} not", outcomes.len(), outcomes.len() - failed);
            if failed > 0 {
                return Err(CliError::Incomplete(format!("{failed} rotation(s) did not complete")));
            }
        }
        Command::Admin { command: AdminCommand::Invite { email, role } } => {
            let core = connect(&config, Needs::DB).await?;
            let client = crate::core::ClientInfo::local();
            let invite = core.create_invite(&operator, &client, &email, role).await?;
            eprintln!(
                "invite {} for {} ({}) valid until {}; it works once (revoke: smtp-vault admin revoke-invite --invite-id {})",
                invite.invite_id,
                invite.email,
                invite.role.label(),
                invite.expires_at.to_rfc3339(),
                invite.invite_id,
            );
            println!("{}", invite.link);
        }
        Command::Admin { command: AdminCommand::Invites } => {
            let core = connect(&config, Needs::DB).await?;
            for invite in core.list_invites(&operator).await? {
                println!(
                    "{}\t{}\t{}\tcreated by {} at {}\tvalid until {}",
                    invite.invite_id,
                    invite.email,
                    invite.role.as_str(),
                    invite.created_by,
                    invite.created_at.to_rfc3339(),
                    invite.expires_at.to_rfc3339()
                );
            }
        }
        Command::Admin { command: AdminCommand::RevokeInvite { invite_id } } => {
            let core = connect(&config, Needs::DB).await?;
            let client = crate::core::ClientInfo::local();
            core.revoke_invite(&operator, &client, &invite_id).await?;
            eprintln!("invite {invite_id} revoked");
        }
        Command::Reveals { command: RevealsCommand::Requests { pending } } => {
            let core = connect(&config, Needs::DB).await?;
            for r in core.list_reveal_requests(&operator, pending).await? {
                let decided = match (&r.decided_by_email, r.decided_at) {
                    (Some(who), Some(at)) => format!("by {who} at {}", at.to_rfc3339()),
                    _ => format!("until {}", r.expires_at.to_rfc3339()),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{decided}\t{}",
                    r.request_id,
                    r.tenant_id,
                    r.requester_email,
                    r.status.as_str(),
                    r.created_at.to_rfc3339(),
                    r.reason.replace(['\t', '\n'], " "),
                );
            }
        }
        Command::Reveals { command: RevealsCommand::FourEyes { tenant, state } } => {
            let core = connect(&config, Needs::ALL).await?;
            let client = crate::core::ClientInfo::local();
            let input = crate::model::TenantSettingsInput {
                reveal_approval: Some(state == "on"),
                ..core.tenant_settings(&operator, &tenant).await?.unchanged()
            };
            let now = core.update_tenant_settings(&operator, &client, &tenant, input).await?;
            let said = if now.reveal_approval { "need a second platform admin" } else { "need one platform admin" };
            eprintln!("{tenant}: reveals {said}");
        }
        Command::Tenant { command: TenantCommand::List { state, due_within, search, limit, cursor, all } } => {
            let core = connect(&config, Needs::DB).await?;
            let mut query = crate::model::TenantQuery {
                state: state.as_deref().and_then(crate::model::TenantFilter::from_name),
                due_before: due_within.map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d))),
                search,
                cursor,
                limit: Some(limit),
            };
            loop {
                let page = core.tenant_page(&operator, &query).await?;
                for t in &page.tenants {
                    let next = t.next_rotation_at.map_or_else(|| "-".to_owned(), |n| n.to_rfc3339());
                    println!("{}\t{}\t{}\t{next}", t.tenant_id, t.state.as_str(), t.version);
                }
                match page.next_cursor {
                    Some(next) if all => query.cursor = Some(next),
                    Some(next) => {
                        eprintln!("{} tenant(s) match; more with --cursor {next}", page.total);
                        break;
                    }
                    None => {
                        eprintln!("{} tenant(s) match", page.total);
                        break;
                    }
                }
            }
        }
        Command::Tenant { command: TenantCommand::PasswordPolicy { tenant, length, alphabet } } => {
            let core = connect(&config, Needs::ALL).await?;
            let client = crate::core::ClientInfo::local();
            let alphabet = crate::model::PasswordAlphabet::from_name(&alphabet)
                .ok_or_else(|| CliError::Usage(format!("unknown alphabet {alphabet}")))?;
            let input = crate::model::TenantSettingsInput {
                password_policy: Some(crate::model::PasswordPolicy { length, alphabet }),
                ..core.tenant_settings(&operator, &tenant).await?.unchanged()
            };
            let now = core.update_tenant_settings(&operator, &client, &tenant, input).await?;
            let policy = now.password_policy;
            eprintln!("{tenant}: generated passwords are {} characters, {}", policy.length, policy.alphabet.as_str());
        }
        Command::Tenant { command: TenantCommand::RevealNotice { tenant, notice, contact } } => {
            let core = connect(&config, Needs::ALL).await?;
            let client = crate::core::ClientInfo::local();
            let current = core.tenant_settings(&operator, &tenant).await?;
            let input = crate::model::TenantSettingsInput {
                reveal_notice: crate::model::RevealNotice::from_name(&notice),
                contact_email: contact.or_else(|| current.contact_email.clone()),
                ..current.unchanged()
            };
            let now = core.update_tenant_settings(&operator, &client, &tenant, input).await?;
            let to = now.contact_email.as_deref().unwrap_or("nobody (set a contact: --contact EMAIL)");
            eprintln!("{tenant}: reveal notices {} to {to}", now.reveal_notice.as_str());
        }
        Command::MailuAdmins { command } => {
            let core = connect(&config, Needs::ALL).await?;
            let client = crate::core::ClientInfo::local();
            let print = |a: &crate::model::MailuAdminView| {
                let gone = a.gone_at.map(|t| format!("\tgone since {}", t.to_rfc3339())).unwrap_or_default();
                let note = a.note.as_deref().map(|n| format!("\t{n}")).unwrap_or_default();
                println!("{}\t{}\t{}{gone}{note}", a.email, a.status, if a.enabled { "enabled" } else { "disabled" });
            };
            match command {
                MailuAdminsCommand::Check { tenant } => {
                    let found = core.check_mailu_admins(&operator, tenant.as_ref()).await?;
                    for unknown in &found.unknown {
                        println!("UNKNOWN global admin: {unknown}");
                    }
                    for (t, e) in &found.failed {
                        eprintln!("{t}: could not ask its Mailu: {e}");
                    }
                    eprintln!("{} tenant(s) checked, {} unknown admin(s) found", found.checked, found.unknown.len());
                    core.flush_alerts(std::time::Duration::from_secs(20)).await?;
                    if !found.failed.is_empty() {
                        return Err(CliError::Incomplete(format!("{} tenant(s) not checked", found.failed.len())));
                    }
                }
                MailuAdminsCommand::List { tenant } => {
                    for admin in core.mailu_admins(&operator, &tenant).await? {
                        print(&admin);
                    }
                }
                MailuAdminsCommand::Trust { tenant, email, note } => {
                    print(&core.trust_mailu_admin(&operator, &client, &tenant, &email, &note).await?);
                }
            }
        }
        Command::Backup { command } => return backup_command(config, &operator, command).await,
        Command::Recover { tenant, new_vps_ip, mailu_api_url, mailu_api_token, smtp_port, smtp_tls, provision } => {
            let core = connect(&config, Needs::ALL).await?;
            let client = crate::core::ClientInfo::local();
            let done = if provision {
                core.recover_tenant_provisioned(&operator, &client, &tenant).await
            } else {
                let request = crate::model::RecoverTenantRequest::new(
                    new_vps_ip.as_deref().unwrap_or_default(),
                    mailu_api_url.as_deref().unwrap_or_default(),
                    mailu_api_token,
                    smtp_port,
                )
                .map_err(Error::from)?
                .with_tls(smtp_tls);
                core.recover_tenant(&operator, &client, &tenant, &request).await
            }?;
            println!(
                "{}: recovered onto {} (was {}); user {}; version {}; DNS hook {}; {} ms",
                done.tenant_id,
                done.new_address,
                done.old_address.as_deref().unwrap_or("unknown"),
                if done.created_user { "created" } else { "updated" },
                done.version,
                done.dns_hook,
                done.duration_ms
            );
        }
        Command::Dr { command: DrCommand::Drill { scratch_addr, scratch_token } } => {
            let core = connect(&config, Needs::ALL).await?;
            let given = scratch_addr.zip(scratch_token.map(secrecy::SecretString::from));
            let bar = progress_bar("tenants verified");
            let mut progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let report = core.run_dr_drill(&operator, given, &mut progress).await?;
            bar.finish_and_clear();
            println!(
                "drill {}: backup {} + {} journal record(s); {}/{} tenants verified; RTO {} ms; RPO {}",
                report.drill_id,
                report.backup_id.as_deref().unwrap_or("none"),
                report.journal_records,
                report.verified,
                report.tenants,
                report.rto_ms,
                report.rpo_ms.map_or_else(
                    || "unknown".to_owned(),
                    |r| format!("{r} ms ({} lost change(s))", report.lost_changes)
                ),
            );
            if !report.ok {
                return Err(CliError::Incomplete(format!("the drill failed: {}", report.problems.join("; "))));
            }
        }
        Command::EmergencyReset { tenant, incident, reason } => {
            return emergency_reset(&config, &operator, &tenant, &incident, &reason).await;
        }
        Command::Revert { tenant, reason } => {
            let request = crate::model::RevertRequest::new(&reason).map_err(Error::from)?;
            let core = connect(&config, Needs::ALL).await?;
            eprintln!(
                "reverting {tenant}: staging the previous password, applying it on Mailu, proving an SMTP login…"
            );
            let done = core.revert_credential(&operator, &crate::core::ClientInfo::local(), &tenant, &request).await?;
            println!(
                "{}: reverted to the password of version {} (now version {})",
                done.tenant_id, done.reverted_to, done.version
            );
            let flushed = core.flush_alerts(std::time::Duration::from_secs(20)).await?;
            if flushed.retrying > 0 {
                eprintln!("{} alert deliveries still failing; `serve` retries them when it runs", flushed.retrying);
            }
        }
        Command::Sweep { admin, token, since, dry_run, reason, incident } => {
            use crate::model::{SweepRequest, SweepSubject};
            let subject = match (admin, token) {
                (Some(email), _) => SweepSubject::Admin(email),
                (None, Some(id)) => SweepSubject::Token(id),
                (None, None) => return Err(CliError::Usage("give --admin EMAIL or --token ID".into())),
            };
            let since = SweepRequest::parse_since(&since).map_err(Error::from)?;
            let request =
                SweepRequest::new(subject, since, incident.as_deref(), &reason, dry_run).map_err(Error::from)?;
            return sweep(&config, &operator, &request).await;
        }
        Command::Audit { command: AuditCommand::Export { tenant, event, severity, since, until } } => {
            let core = connect(&config, Needs::DB).await?;
            let query = crate::model::AuditQuery {
                tenant: tenant.map(|t| t.to_string()),
                event,
                severity,
                since,
                until,
                ..Default::default()
            };
            core.check_audit_query(&operator, &query)?;
            let (tx, mut rx) = tokio::sync::mpsc::channel(256);
            let streaming = {
                let (core, operator) = (core.clone(), operator.clone());
                tokio::spawn(async move { core.stream_audit(&operator, &query, tx).await })
            };
            let mut out = std::io::BufWriter::new(std::io::stdout());
            let mut count = 0u64;
            while let Some(event) = rx.recv().await {
                use std::io::Write as _;
                serde_json::to_writer(&mut out, &event).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                count += 1;
            }
            std::io::Write::flush(&mut out)?;
            streaming.await.map_err(|e| Error::Internal(format!("audit export: {e}")))??;
            eprintln!("{count} events");
        }
        Command::Audit { command: AuditCommand::Verify { export: Some(file), keyed_from } } => {
            let check = crate::core::audit::verify_export_file(&file, &config.keyring_path, keyed_from)?;
            return Ok(print_export_check(&check));
        }
        Command::Audit { command: AuditCommand::Verify { export: None, .. } } => {
            let core = connect(&config, Needs::DB).await?;
            let report = core.verify_audit_chain().await?;
            return Ok(print_chain_report(&report));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with mode 0600, refusing to replace an existing file.
fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

fn progress_bar(what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}}"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

async fn backup_command(config: Config, operator: &Actor, command: BackupCommand) -> Result<ExitCode, CliError> {
    let core = connect(&config, Needs::ALL).await?;
    match command {
        BackupCommand::RaftExport { id, out } => {
            let snapshot = core.export_raft_snapshot(operator, &id).await?;
            write_new_private(&out, &snapshot).map_err(|e| format!("{}: {e}", out.display()))?;
            println!(
                "{}: {} bytes; restore with `bao operator raft snapshot restore -force {}` and the ORIGINAL unseal keys",
                out.display(),
                snapshot.len(),
                out.display()
            );
        }
        BackupCommand::Run { raft_snapshot } => {
            let bar = progress_bar("tenants exported");
            let mut progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let report = core.run_backup(operator, &mut progress).await?;
            bar.finish_and_clear();
            let m = &report.manifest;
            println!(
                "backup {}: {} tenants ({} in-flight rotations), {} bytes, sha256 {}, key {} -> {}",
                m.id, m.tenants, m.pending, m.size, m.sha256, m.key_id, report.location
            );
            println!("export {} ms, total {} ms; pruned: {}", report.export_ms, report.total_ms, report.pruned.len());
            if raft_snapshot {
                let bytes = core.save_raft_snapshot(operator, &m.id, config.vault_token.as_ref()).await?;
                println!(
                    "raft snapshot: {bytes} bytes sealed beside it (restorable only with the original unseal keys)"
                );
            }
        }
        BackupCommand::List => {
            println!("{:<12} {:<22} {:>8} {:>10} KEY", "ID", "CREATED", "TENANTS", "BYTES");
            for entry in core.list_backups(operator).await? {
                match (entry.created_at, entry.tenants, entry.size, entry.key_id) {
                    (Some(created), Some(tenants), Some(size), Some(key)) => println!(
                        "{:<12} {:<22} {:>8} {:>10} {key}",
                        entry.id,
                        created.format("%Y-%m-%d %H:%M:%S"),
                        tenants,
                        size
                    ),
                    _ => println!("{:<12} (manifest missing or unreadable)", entry.id),
                }
            }
        }
        BackupCommand::Prune => {
            let pruned = core.prune_backups(operator).await?;
            println!(
                "{} backup(s) deleted{}",
                pruned.len(),
                if pruned.is_empty() { String::new() } else { format!(": {}", pruned.join(", ")) }
            );
        }
        BackupCommand::Restore { id, dry_run, force, until, no_journal, .. } => {
            let options = crate::core::backup::RestoreOptions { dry_run, force, until, skip_journal: no_journal };
            let bar = progress_bar("tenants");
            let mut progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let report = core.restore_backup(operator, &id, &options, &mut progress).await?;
            bar.finish_and_clear();
            println!(
                "{}backup {} + {} journal record(s), up to {}: {} tenants; {} written, {} unchanged, {} skipped, {} failed; {} verified",
                if report.dry_run { "dry run: " } else { "" },
                report.backup_id,
                report.journal_records,
                report.restored_up_to.map_or_else(String::new, |t| t.to_rfc3339()),
                report.tenants,
                report.written,
                report.unchanged,
                report.skipped.len(),
                report.failed.len(),
                report.verified
            );
            println!("fetch {} ms, write+verify {} ms, total {} ms", report.fetch_ms, report.write_ms, report.total_ms);
            for (tenant, why) in &report.skipped {
                println!("  skipped {tenant}: {why}");
            }
            for (tenant, why) in &report.failed {
                println!("  FAILED {tenant}: {why}");
            }
            if !report.failed.is_empty() {
                return Err(CliError::Incomplete(format!("{} tenant(s) failed to restore", report.failed.len())));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn sweep(config: &Config, operator: &Actor, request: &crate::model::SweepRequest) -> Result<ExitCode, CliError> {
    let core = connect(config, if request.dry_run { Needs::DB } else { Needs::ALL }).await?;
    let bar = progress_bar("tenants rotated");
    let progress: Option<crate::core::SweepProgress> = (!request.dry_run).then(|| {
        let bar = bar.clone();
        std::sync::Arc::new(move |done: usize, total: usize| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }) as crate::core::SweepProgress
    });
    let view = core.exposure_sweep(operator, &crate::core::ClientInfo::local(), request, progress).await?;
    bar.finish_and_clear();
    for t in &view.tenants {
        let extra = match (&t.new_version, &t.error) {
            (Some(v), _) => format!(" (version {v})"),
            (None, Some(e)) => format!(" ({e})"),
            (None, None) => String::new(),
        };
        println!("{}\t{}\texposed {}{extra}", t.tenant_id, t.outcome, t.exposed_at.format("%Y-%m-%d %H:%M UTC"));
    }
    match (&view.incident, view.dry_run) {
        (_, true) => {
            println!("{}: {} tenant(s) would be rotated (dry run: nothing changed)", view.subject, view.tenants.len())
        }
        (None, false) => println!("{}: nothing exposed since the last rotations; nothing to do", view.subject),
        (Some(incident), false) => {
            println!(
                "{}: {} rotated, {} failed (incident record {incident}; a second admin acknowledges it)",
                view.subject, view.rotated, view.failed
            );
            eprintln!("delivering alerts…");
            let flushed = core.flush_alerts(std::time::Duration::from_secs(20)).await?;
            if flushed.retrying > 0 {
                eprintln!("{} alert deliveries still failing; `serve` retries them when it runs", flushed.retrying);
            }
        }
    }
    if view.failed > 0 {
        return Err(CliError::Incomplete(format!("{} tenant(s) could not be rotated", view.failed)));
    }
    Ok(ExitCode::SUCCESS)
}

async fn emergency_reset(
    config: &Config,
    operator: &Actor,
    tenant: &crate::model::TenantId,
    incident: &str,
    reason: &str,
) -> Result<ExitCode, CliError> {
    let request = crate::model::EmergencyResetRequest::new(incident, reason).map_err(Error::from)?;
    let core = connect(config, Needs::ALL).await?;
    eprintln!("resetting {tenant}: revoking reveal windows, alerting security, rotating…");
    let receipt = core.emergency_reset(operator, &crate::core::ClientInfo::local(), tenant, &request).await?;
    println!(
        "{}: rotated to version {} (incident {}, record {}); {} reveal window(s) revoked; {} ms",
        receipt.tenant_id,
        receipt.new_version,
        receipt.incident_id,
        receipt.incident,
        receipt.grants_revoked,
        receipt.timings.total_ms
    );
    // The web tier may be down, so nobody else would send the alerts now: send them here, a
    // few passes within a short deadline; what is left is retried by `serve` later.
    eprintln!("delivering alerts…");
    let flushed = core.flush_alerts(std::time::Duration::from_secs(20)).await?;
    if flushed.retrying > 0 {
        eprintln!("{} alert deliveries still failing; `serve` retries them when it runs", flushed.retrying);
    }
    let alerts = core.list_alerts(operator, 50).await?;
    for alert in alerts.iter().filter(|a| a.tenant_id.as_deref() == Some(tenant.as_str())).take(2) {
        for d in &alert.deliveries {
            let extra = d.last_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
            println!("  {} via {} to {}: {}{extra}", alert.kind, d.channel, d.recipient, d.state);
        }
    }
    if receipt.notified.iter().any(|d| d.state == "no_recipient") {
        println!("  tenant notification: no contact email on record");
    }
    Ok(ExitCode::SUCCESS)
}

async fn token_command(config: &Config, operator: &Actor, command: TokenCommand) -> Result<ExitCode, CliError> {
    let core = connect(config, Needs::DB).await?;
    match command {
        TokenCommand::Create { name, scopes, expires_in } => {
            let created = core.create_token(operator, &name, &scopes, expires_in).await?;
            let scopes: Vec<&str> = created.summary.scopes.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "token `{}` ({}) created with {}",
                created.summary.token_id,
                created.summary.name,
                scopes.join(", ")
            );
            match created.summary.expires_at {
                Some(t) => eprintln!("expires {}", t.to_rfc3339()),
                None => {
                    eprintln!("does not expire; revoke with `smtp-vault token revoke {}`", created.summary.token_id)
                }
            }
            eprintln!("store it now: it is not shown again");
            println!("{}", created.token.expose_secret());
        }
        TokenCommand::List => {
            let tokens = core.list_tokens(operator).await?;
            println!("{:<14} {:<24} {:<9} {:<20} SCOPES", "ID", "NAME", "STATE", "LAST USED");
            for t in tokens {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                    "expired"
                } else {
                    "active"
                };
                let used =
                    t.last_used_at.map_or_else(|| "never".to_owned(), |u| u.format("%Y-%m-%d %H:%M").to_string());
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                println!("{:<14} {:<24} {:<9} {:<20} {}", t.token_id, t.name, state, used, scopes.join(","));
            }
        }
        TokenCommand::Revoke { token_id } => {
            let revoked = core.revoke_token(operator, &token_id).await?;
            eprintln!("{}", if revoked { "token revoked" } else { "token was already revoked" });
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn doctor(config: Result<Config, Error>, quiet: bool, preflight: bool) -> ExitCode {
    use crate::core::doctor::Outcome;
    let checks = match config {
        Ok(config) => crate::core::doctor::run(&config, preflight).await,
        Err(e) => {
            vec![crate::core::doctor::Check { name: "configuration", outcome: Outcome::Fail, detail: e.to_string() }]
        }
    };
    let failed = checks.iter().filter(|c| c.outcome == Outcome::Fail).count();
    for c in &checks {
        let mark = match c.outcome {
            Outcome::Pass => "ok  ",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
            Outcome::Warn => "warn",
        };
        if !quiet || matches!(c.outcome, Outcome::Fail | Outcome::Warn) {
            println!("{mark} {:<14} {}", c.name, c.detail);
        }
    }
    if failed > 0 {
        println!("{failed} of {} checks failed", checks.len());
        ExitCode::from(1)
    } else {
        if !quiet {
            println!("all checks passed");
        }
        ExitCode::SUCCESS
    }
}

fn print_export_check(check: &crate::core::audit::ExportCheck) -> ExitCode {
    let Some((first, last)) = check.range else {
        println!("the export holds no audit event ({} other lines)", check.skipped_lines);
        return ExitCode::from(2);
    };
    let extras = format!("{} repeated deliveries ignored, {} other lines", check.duplicates, check.skipped_lines);
    if check.first_broken.is_none() && check.mac_checked == 0 {
        // Plain SHA-256 links anyone can recompute: nothing here is vouched for by the keyring.
        println!(
            "export UNVERIFIED: events {first}–{last} are all below --keyed-from, so none carries the keyring's MAC \
             ({extras})"
        );
        return ExitCode::from(2);
    }
    match &check.first_broken {
        None => {
            println!(
                "export intact: events {first}–{last} ({} events), every MAC and link verifies; head {} ({extras})",
                check.events, check.head_hash
            );
            if check.hash_only > 0 {
                println!(
                    "{} of them predate the keyed chain (plain SHA-256, pinned by the first keyed event after them)",
                    check.hash_only
                );
            }
            if check.skipped_lines > 0 {
                println!(
                    "{} lines are not events: expected in a syslog file; in a JSON lines or webhook export, find out why",
                    check.skipped_lines
                );
            }
            if first > 1 {
                println!("it starts at event {first}: events before it are not in this copy");
            }
            println!("compare the head with `smtp-vault audit verify` on the console to see whether it is complete");
            ExitCode::SUCCESS
        }
        Some(broken) => {
            println!("export BROKEN at event {}: {} ({extras})", broken.seq, broken.reason);
            ExitCode::from(2)
        }
    }
}

fn print_chain_report(report: &ChainReport) -> ExitCode {
    match &report.first_broken {
        None => {
            println!("audit chain intact: {} events, head {}", report.events, report.head_hash);
            match report.anchor {
                Some((seq, at)) => {
                    println!("checked against the anchor of {} ({seq} events)", at.format("%Y-%m-%d %H:%M:%S UTC"));
                }
                None => println!(
                    "no anchor on the backup target to check against: a cut tail would not show (the console \
                     writes one every SMTP_VAULT_AUDIT_ANCHOR_SECS and after each backup)"
                ),
            }
            ExitCode::SUCCESS
        }
        Some(broken) => {
            println!(
                "audit chain BROKEN at event {}: {} ({} events before it verified)",
                broken.seq, broken.reason, report.events
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_follows_the_error_kind() {
        let cases = [
            (CliError::Core(Error::Forbidden("no")), 77),
            (CliError::Core(Error::Unauthenticated), 77),
            (CliError::Core(Error::VaultSealed), 69),
            (CliError::Core(Error::NotFound("credential")), 66),
            (CliError::Core(Error::RotationBusy), 75),
            (CliError::Core(Error::MailServer("down".into())), 76),
            (CliError::Core(Error::Config("bad".into())), 78),
            (CliError::Core(Error::Internal("bug".into())), 70),
            (CliError::Usage("bad time".into()), 64),
            (CliError::Incomplete("2 rotation(s) did not complete".into()), 1),
        ];
        for (error, status) in cases {
            assert_eq!(error.exit_code(), status, "{error}");
        }
    }
}
