//! What the trail records: each event's type and severity, bound from these enums (never a
//! string at the call site), and the new event callers append.

use crate::model::TenantId;
use serde_json::Value;

/// Hash the first event links to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How much an event matters to a reviewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Routine.
    Info,
    /// Worth a look.
    Warning,
    /// Needs a person now.
    Critical,
}

impl Severity {
    /// Stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Every kind of audited event. The names are what reviewers filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A credential was stored through the API.
    CredentialStored,
    /// A plaintext credential was returned to a caller.
    CredentialSecretRead,
    /// A stored ciphertext failed its integrity check.
    CredentialIntegrityFailed,
    /// A secret was re-encrypted under the active key.
    CredentialRewrapped,
    /// A service token was created.
    ServiceTokenCreated,
    /// A service token was revoked.
    ServiceTokenRevoked,
    /// A key was added to the keyring.
    KeyringKeyAdded,
    /// `vault-setup` configured Vault.
    VaultSetupCompleted,
    /// An enrollment invite was created.
    AdminInvited,
    /// An admin enrolled their first passkey.
    AdminEnrolled,
    /// An admin's role changed.
    AdminRoleChanged,
    /// An admin was disabled.
    AdminDisabled,
    /// A passkey was registered.
    PasskeyAdded,
    /// A passkey was renamed.
    PasskeyRenamed,
    /// A passkey was removed.
    PasskeyRemoved,
    /// A passkey login succeeded.
    LoginSucceeded,
    /// A login attempt failed.
    LoginFailed,
    /// An admin signed out.
    LoggedOut,
    /// A step-up re-authentication succeeded.
    ReauthSucceeded,
    /// A step-up re-authentication failed.
    ReauthFailed,
    /// A reveal window was opened.
    RevealGranted,
    /// A reveal was refused (role, or no open window).
    RevealRefused,
    /// A plaintext credential was sent to an admin.
    CredentialRevealed,
    /// A reveal window was closed early.
    RevealRevoked,
    /// A reveal window closed by time.
    RevealExpired,
    /// A reveal of a four-eyes tenant waits for a second platform admin.
    RevealRequested,
    /// A second platform admin approved a reveal request (the requester's window opened).
    RevealApproved,
    /// A second platform admin denied a reveal request.
    RevealDenied,
    /// A reveal request lapsed undecided.
    RevealRequestExpired,
    /// A pending reveal request ended with the requester's session, passkey or role, or a reset.
    RevealRequestWithdrawn,
    /// A rotation began (pending password stored).
    RotationStarted,
    /// A rotation finished: the new password is current.
    CredentialRotated,
    /// A rotation gave up (`needs_reconcile`).
    RotationFailed,
    /// An interrupted rotation was settled by keeping the current password.
    RotationRolledBack,
    /// A rotation was deferred.
    RotationDeferred,
    /// A 7-day rotation notice was queued.
    RotationNoticeQueued,
    /// The heartbeat found the stored password refused.
    HeartbeatDrifted,
    /// A scheduled job ran.
    JobRan,
    /// A tenant's settings changed.
    TenantSettingsChanged,
    /// An emergency reset began: grants revoked, incident opened, security alerted.
    EmergencyReset,
    /// An emergency reset's rotation finished (or failed); the incident records the outcome.
    EmergencyResetFinished,
    /// A second admin acknowledged an incident.
    IncidentAcknowledged,
    /// An acknowledgment was refused (the resetting admin tried to acknowledge their own reset).
    IncidentAckRefused,
    /// An incident stayed unacknowledged past the limit; an alert was raised.
    IncidentOverdue,
    /// An alert reached a channel.
    AlertDelivered,
    /// An alert gave up on a channel after the last attempt (dead letter).
    AlertDeliveryFailed,
    /// A dead-lettered alert was queued again.
    AlertRetried,
    /// An admin acknowledged an alert.
    AlertAcknowledged,
    /// A test alert was sent.
    TestAlertRaised,
    /// A backup was written.
    BackupCreated,
    /// Retention deleted backups.
    BackupsPruned,
    /// A backup was restored into Vault.
    BackupRestored,
    /// A tenant was recovered onto a replacement server.
    CredentialsRecovered,
    /// A disaster-recovery drill ran.
    DrDrillRan,
    /// A tenant's Mailu API URL (where its passwords are sent) changed; committed before the
    /// first byte goes to the new host.
    MailuDestinationChanged,
    /// A recovery onto a replacement server failed (nothing recorded as recovered).
    RecoveryFailed,
    /// An invite was revoked before it was used.
    InviteRevoked,
    /// An exposure sweep began: incident opened, the subject's windows closed, security alerted.
    ExposureSweep,
    /// An exposure sweep ended; the incident records each tenant's outcome.
    ExposureSweepFinished,
    /// Someone listed the tenants a sweep would rotate (a dry run).
    ExposureSweepListed,
    /// A credential was reverted to Vault's previous version through the staged protocol.
    CredentialReverted,
    /// A revert was refused (the previous password was exposed, or superseded by a reset).
    RevertRefused,
    /// A tenant's Mailu lists a global admin the console did not create and nobody vouched for.
    MailuUnknownAdminFound,
    /// A platform admin vouched for a Mailu global admin account.
    MailuAdminMarkedKnown,
    /// The incremental reconciliation found Vault and the database disagreeing about a tenant.
    ReconcileDifference,
    /// A secret read recorded while Vault answered was not answered (an error came after).
    CredentialSecretReadVoided,
}

impl EventType {
    /// Stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::CredentialStored => "credential_stored",
            EventType::CredentialSecretRead => "credential_secret_read",
            EventType::CredentialIntegrityFailed => "credential_integrity_failed",
            EventType::CredentialRewrapped => "credential_rewrapped",
            EventType::ServiceTokenCreated => "service_token_created",
            EventType::ServiceTokenRevoked => "service_token_revoked",
            EventType::KeyringKeyAdded => "keyring_key_added",
            EventType::VaultSetupCompleted => "vault_setup_completed",
            EventType::AdminInvited => "admin_invited",
            EventType::AdminEnrolled => "admin_enrolled",
            EventType::AdminRoleChanged => "admin_role_changed",
            EventType::AdminDisabled => "admin_disabled",
            EventType::PasskeyAdded => "passkey_added",
            EventType::PasskeyRenamed => "passkey_renamed",
            EventType::PasskeyRemoved => "passkey_removed",
            EventType::LoginSucceeded => "login_succeeded",
            EventType::LoginFailed => "login_failed",
            EventType::LoggedOut => "logged_out",
            EventType::ReauthSucceeded => "reauth_succeeded",
            EventType::ReauthFailed => "reauth_failed",
            EventType::RevealGranted => "reveal_granted",
            EventType::RevealRefused => "reveal_refused",
            EventType::CredentialRevealed => "credential_revealed",
            EventType::RevealRevoked => "reveal_revoked",
            EventType::RevealExpired => "reveal_expired",
            EventType::RevealRequested => "reveal_requested",
            EventType::RevealApproved => "reveal_approved",
            EventType::RevealDenied => "reveal_denied",
            EventType::RevealRequestExpired => "reveal_request_expired",
            EventType::RevealRequestWithdrawn => "reveal_request_withdrawn",
            EventType::RotationStarted => "rotation_started",
            EventType::CredentialRotated => "credential_rotated",
            EventType::RotationFailed => "rotation_failed",
            EventType::RotationRolledBack => "rotation_rolled_back",
            EventType::RotationDeferred => "rotation_deferred",
            EventType::RotationNoticeQueued => "rotation_notice_queued",
            EventType::HeartbeatDrifted => "heartbeat_drifted",
            EventType::JobRan => "job_ran",
            EventType::TenantSettingsChanged => "tenant_settings_changed",
            EventType::EmergencyReset => "emergency_reset",
            EventType::EmergencyResetFinished => "emergency_reset_finished",
            EventType::IncidentAcknowledged => "incident_acknowledged",
            EventType::IncidentAckRefused => "incident_ack_refused",
            EventType::IncidentOverdue => "incident_overdue",
            EventType::AlertDelivered => "alert_delivered",
            EventType::AlertDeliveryFailed => "alert_delivery_failed",
            EventType::AlertRetried => "alert_retried",
            EventType::AlertAcknowledged => "alert_acknowledged",
            EventType::TestAlertRaised => "test_alert_raised",
            EventType::BackupCreated => "backup_created",
            EventType::BackupsPruned => "backups_pruned",
            EventType::BackupRestored => "backup_restored",
            EventType::CredentialsRecovered => "smtp_credentials_recovered",
            EventType::DrDrillRan => "dr_drill_ran",
            EventType::MailuDestinationChanged => "mailu_destination_changed",
            EventType::RecoveryFailed => "recovery_failed",
            EventType::InviteRevoked => "invite_revoked",
            EventType::ExposureSweep => "exposure_sweep",
            EventType::ExposureSweepFinished => "exposure_sweep_finished",
            EventType::ExposureSweepListed => "exposure_sweep_listed",
            EventType::CredentialReverted => "credential_reverted",
            EventType::RevertRefused => "revert_refused",
            EventType::MailuUnknownAdminFound => "mailu_unknown_admin_found",
            EventType::MailuAdminMarkedKnown => "mailu_admin_marked_known",
            EventType::ReconcileDifference => "reconcile_difference",
            EventType::CredentialSecretReadVoided => "credential_secret_read_voided",
        }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What happened.
    pub event_type: EventType,
    /// How much it matters.
    pub severity: Severity,
    /// The tenant concerned, if any.
    pub tenant: Option<TenantId>,
    /// Non-secret details (ids, versions, reasons).
    pub details: Value,
}

impl NewEvent {
    /// An info event with details.
    #[must_use]
    pub fn info(event_type: EventType, tenant: Option<&TenantId>, details: Value) -> Self {
        Self { event_type, severity: Severity::Info, tenant: tenant.cloned(), details }
    }

    /// Same event with another severity.
    #[must_use]
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}
