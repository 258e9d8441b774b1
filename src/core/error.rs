//! The core's one error type. Edges (API, UI, CLI) map [`ErrorKind`] to a safe answer and log the
//! internals once; nothing outside the core looks inside the message text.

use crate::core::crypto::CryptoError;
use crate::model::{ErrorCode, FieldError, Scope};

/// Broad class of an error, for the edges to map to a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller sent something invalid.
    InvalidInput,
    /// No valid credentials were presented.
    Unauthenticated,
    /// Authenticated but not allowed.
    Forbidden,
    /// The thing asked for does not exist.
    NotFound,
    /// A concurrent change won; retry.
    Conflict,
    /// Stored data failed an integrity check.
    Integrity,
    /// Vault or the database cannot be reached or refuses service.
    Unavailable,
    /// Configuration or setup problem an operator must fix.
    Configuration,
    /// Too many attempts.
    RateLimited,
    /// A tenant's mail server failed or refused.
    Upstream,
    /// A bug or an unexpected answer.
    Internal,
}

/// Every way a core operation fails.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field failed validation.
    #[error(transparent)]
    InvalidField(#[from] FieldError),
    /// Other invalid input, with a message safe to show.
    #[error("{0}")]
    InvalidInput(String),
    /// No token, an unknown one, an expired or a revoked one.
    // SECURITY: one variant for all four so callers cannot probe which tokens exist.
    #[error("missing, invalid, expired or revoked credentials")]
    Unauthenticated,
    /// The actor lacks the scope or role.
    #[error("this action needs the `{0}` scope")]
    MissingScope(Scope),
    /// The actor may not do this.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// A sensitive change needs a passkey confirmation in this session first.
    #[error("confirm with your passkey first: this change needs a step-up in this session within the last 5 minutes")]
    StepUpRequired,
    /// No such thing.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Another writer changed the credential first.
    #[error("the credential changed concurrently; retry")]
    Conflict,
    /// What the request acts on has moved on (decided, lapsed, no longer allowed): says what.
    #[error("{0}")]
    Stale(&'static str),
    /// Envelope encryption or decryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The stored secret is not in the expected shape.
    #[error("stored secret at {path} is malformed: {problem}")]
    MalformedSecret {
        /// Vault path.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Vault answered with an error or could not be reached.
    #[error("vault: {0}")]
    Vault(String),
    /// A fresh KV mount is still upgrading to version 2 (it answers writes 400 for a moment).
    #[error("vault: the secrets mount is still upgrading to KV version 2; retry in a moment")]
    VaultMountUpgrading,
    /// Vault is sealed or not initialised.
    #[error("vault is sealed or not ready")]
    VaultSealed,
    /// No Vault node could serve the call: unreachable, or answering 5xx (a standby that lost
    /// its leader), after failing over between the configured nodes.
    #[error("vault: {0}")]
    VaultUnreachable(String),
    /// Database error.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// Migration error.
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Local file problem (keyring, config).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The audit chain is broken; writes are refused until an operator looks.
    #[error("audit chain: {0}")]
    AuditChain(String),
    /// A tenant's mail server failed or refused (message safe to show: no secrets).
    #[error("mail server: {0}")]
    MailServer(String),
    /// A rotation of this tenant is already running.
    #[error("a rotation of this tenant is already running")]
    RotationBusy,
    /// The backup target failed (message names the object and the target, no secrets).
    #[error("backup store: {0}")]
    Backup(String),
    /// A SIEM receiver (syslog, webhook) failed or could not be reached (no secrets).
    #[error("SIEM export: {0}")]
    Siem(String),
    /// A backup or journal file is not usable: damaged, truncated, altered or sealed with
    /// another key.
    #[error("backup rejected: {0}")]
    BackupInvalid(&'static str),
    /// Too many attempts; try again later.
    #[error("too many attempts; wait a few minutes and try again")]
    RateLimited,
    /// The mail server named in Vault is not the one the console recorded: nothing is sent.
    #[error(
        "the Mailu destination stored in Vault differs from the console's record; nothing was sent (was Vault written outside the console?)"
    )]
    DestinationMismatch,
    /// Should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The class of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidField(_) | Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Unauthenticated => ErrorKind::Unauthenticated,
            Error::MissingScope(_) | Error::Forbidden(_) | Error::StepUpRequired => ErrorKind::Forbidden,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict | Error::Stale(_) => ErrorKind::Conflict,
            Error::RateLimited => ErrorKind::RateLimited,
            Error::MailServer(_) => ErrorKind::Upstream,
            Error::RotationBusy => ErrorKind::Conflict,
            Error::Crypto(e) if e.is_configuration() => ErrorKind::Configuration,
            Error::Crypto(_) | Error::MalformedSecret { .. } | Error::BackupInvalid(_) | Error::DestinationMismatch => {
                ErrorKind::Integrity
            }
            Error::Backup(_) | Error::Siem(_) => ErrorKind::Unavailable,
            Error::Vault(_)
            | Error::VaultSealed
            | Error::VaultUnreachable(_)
            | Error::VaultMountUpgrading
            | Error::Database(_) => ErrorKind::Unavailable,
            Error::Config(_) | Error::Io { .. } => ErrorKind::Configuration,
            Error::Migration(_) | Error::AuditChain(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The code every edge answers with (the API's body, the UI's error): one mapping, here.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match (self, self.kind()) {
            (Error::InvalidField(_), _) => ErrorCode::InvalidField,
            (_, ErrorKind::InvalidInput) => ErrorCode::InvalidInput,
            (_, ErrorKind::Unauthenticated) => ErrorCode::Unauthenticated,
            (Error::MissingScope(_), _) => ErrorCode::InsufficientScope,
            (Error::StepUpRequired, _) => ErrorCode::StepUpRequired,
            (_, ErrorKind::Forbidden) => ErrorCode::Forbidden,
            (_, ErrorKind::RateLimited) => ErrorCode::RateLimited,
            (_, ErrorKind::NotFound) => ErrorCode::NotFound,
            (Error::RotationBusy, _) => ErrorCode::RotationInProgress,
            (_, ErrorKind::Conflict) => ErrorCode::Conflict,
            (_, ErrorKind::Upstream) => ErrorCode::MailServerError,
            (_, ErrorKind::Integrity) => ErrorCode::CredentialIntegrityError,
            (_, ErrorKind::Unavailable) => ErrorCode::ServiceUnavailable,
            (_, ErrorKind::Configuration | ErrorKind::Internal) => ErrorCode::InternalError,
        }
    }

    /// Vault could not serve at all (as opposed to refusing this request): work stopped by it
    /// can resume once a node is back.
    #[must_use]
    pub fn is_vault_outage(&self) -> bool {
        matches!(self, Error::VaultUnreachable(_) | Error::VaultSealed)
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        // PostgreSQL refuses a NUL character in text (SQLite stores it): the caller's input,
        // not an outage, so both databases answer the same clear 4xx.
        if let sqlx::Error::Database(db) = &error
            && matches!(db.code().as_deref(), Some("22021" | "22P05"))
        {
            return Error::InvalidInput("text must not contain NUL or unencodable characters".into());
        }
        Error::Database(error)
    }
}

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
