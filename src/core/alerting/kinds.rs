//! Every kind of alert the console raises. Call sites, the rules, the outbox and the Alerts page
//! name a kind only through this enum; docs/monitoring.md says what each means and what to do
//! (a test keeps the two together).

/// A kind of alert; its name is stored with the alert and shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// `audit_chain_broken`.
    AuditChainBroken,
    /// `backup_overdue`.
    BackupOverdue,
    /// `dns_hook_failed`.
    DnsHookFailed,
    /// `dr_drill_failed`.
    DrDrillFailed,
    /// `emergency_reset`.
    EmergencyReset,
    /// `emergency_reset_failed`.
    EmergencyResetFailed,
    /// `emergency_reset_interrupted`.
    EmergencyResetInterrupted,
    /// `exposure_sweep`.
    ExposureSweep,
    /// `exposure_sweep_failed`.
    ExposureSweepFailed,
    /// `exposure_sweep_interrupted`.
    ExposureSweepInterrupted,
    /// `credential_reverted`.
    CredentialReverted,
    /// `failed_logins`.
    FailedLogins,
    /// `failed_reauths`.
    FailedReauths,
    /// `heartbeat_drift`.
    HeartbeatDrift,
    /// `incident_unacknowledged`.
    IncidentUnacknowledged,
    /// `job_failed`.
    JobFailed,
    /// `journal_write_failed`.
    JournalWriteFailed,
    /// `login_new_ip`.
    LoginNewIp,
    /// `login_new_passkey`.
    LoginNewPasskey,
    /// `mailu_destination_changed`.
    MailuDestinationChanged,
    /// `mailu_destination_mismatch`.
    MailuDestinationMismatch,
    /// `mailu_rate_limited`.
    MailuRateLimited,
    /// `mailu_unknown_admin`.
    MailuUnknownAdmin,
    /// `new_passkey_step_up`.
    NewPasskeyStepUp,
    /// `passkey_added`.
    PasskeyAdded,
    /// `passkey_counter_regressed`.
    PasskeyCounterRegressed,
    /// `reveal_burst`.
    RevealBurst,
    /// `reveal_outside_hours`.
    RevealOutsideHours,
    /// `rotation_needs_reconcile`.
    RotationNeedsReconcile,
    /// `reveal_approval_requested`.
    RevealApprovalRequested,
    /// `reveal_approval_switched_off`.
    RevealApprovalSwitchedOff,
    /// `rotation_notice`.
    RotationNotice,
    /// `tenant_credential_reset`.
    TenantCredentialReset,
    /// `tenant_reveal_notice`.
    TenantRevealNotice,
    /// `test_alert`.
    TestAlert,
    /// `vault_sealed`.
    VaultSealed,
    /// `vault_unreachable`.
    VaultUnreachable,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 37] = [
        AlertKind::AuditChainBroken,
        AlertKind::BackupOverdue,
        AlertKind::DnsHookFailed,
        AlertKind::DrDrillFailed,
        AlertKind::EmergencyReset,
        AlertKind::EmergencyResetFailed,
        AlertKind::EmergencyResetInterrupted,
        AlertKind::ExposureSweep,
        AlertKind::ExposureSweepFailed,
        AlertKind::ExposureSweepInterrupted,
        AlertKind::CredentialReverted,
        AlertKind::FailedLogins,
        AlertKind::FailedReauths,
        AlertKind::HeartbeatDrift,
        AlertKind::IncidentUnacknowledged,
        AlertKind::JobFailed,
        AlertKind::JournalWriteFailed,
        AlertKind::LoginNewIp,
        AlertKind::LoginNewPasskey,
        AlertKind::MailuDestinationChanged,
        AlertKind::MailuDestinationMismatch,
        AlertKind::MailuRateLimited,
        AlertKind::MailuUnknownAdmin,
        AlertKind::NewPasskeyStepUp,
        AlertKind::PasskeyAdded,
        AlertKind::PasskeyCounterRegressed,
        AlertKind::RevealBurst,
        AlertKind::RevealOutsideHours,
        AlertKind::RevealApprovalRequested,
        AlertKind::RevealApprovalSwitchedOff,
        AlertKind::RotationNeedsReconcile,
        AlertKind::RotationNotice,
        AlertKind::TenantCredentialReset,
        AlertKind::TenantRevealNotice,
        AlertKind::TestAlert,
        AlertKind::VaultSealed,
        AlertKind::VaultUnreachable,
    ];

    /// The stored and shown name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::AuditChainBroken => "audit_chain_broken",
            AlertKind::BackupOverdue => "backup_overdue",
            AlertKind::DnsHookFailed => "dns_hook_failed",
            AlertKind::DrDrillFailed => "dr_drill_failed",
            AlertKind::EmergencyReset => "emergency_reset",
            AlertKind::EmergencyResetFailed => "emergency_reset_failed",
            AlertKind::EmergencyResetInterrupted => "emergency_reset_interrupted",
            AlertKind::ExposureSweep => "exposure_sweep",
            AlertKind::ExposureSweepFailed => "exposure_sweep_failed",
            AlertKind::ExposureSweepInterrupted => "exposure_sweep_interrupted",
            AlertKind::CredentialReverted => "credential_reverted",
            AlertKind::FailedLogins => "failed_logins",
            AlertKind::FailedReauths => "failed_reauths",
            AlertKind::HeartbeatDrift => "heartbeat_drift",
            AlertKind::IncidentUnacknowledged => "incident_unacknowledged",
            AlertKind::JobFailed => "job_failed",
            AlertKind::JournalWriteFailed => "journal_write_failed",
            AlertKind::LoginNewIp => "login_new_ip",
            AlertKind::LoginNewPasskey => "login_new_passkey",
            AlertKind::MailuDestinationChanged => "mailu_destination_changed",
            AlertKind::MailuDestinationMismatch => "mailu_destination_mismatch",
            AlertKind::MailuRateLimited => "mailu_rate_limited",
            AlertKind::MailuUnknownAdmin => "mailu_unknown_admin",
            AlertKind::NewPasskeyStepUp => "new_passkey_step_up",
            AlertKind::PasskeyAdded => "passkey_added",
            AlertKind::PasskeyCounterRegressed => "passkey_counter_regressed",
            AlertKind::RevealBurst => "reveal_burst",
            AlertKind::RevealOutsideHours => "reveal_outside_hours",
            AlertKind::RevealApprovalRequested => "reveal_approval_requested",
            AlertKind::RevealApprovalSwitchedOff => "reveal_approval_switched_off",
            AlertKind::RotationNeedsReconcile => "rotation_needs_reconcile",
            AlertKind::RotationNotice => "rotation_notice",
            AlertKind::TenantCredentialReset => "tenant_credential_reset",
            AlertKind::TenantRevealNotice => "tenant_reveal_notice",
            AlertKind::TestAlert => "test_alert",
            AlertKind::VaultSealed => "vault_sealed",
            AlertKind::VaultUnreachable => "vault_unreachable",
        }
    }

    /// The kind of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_explained_in_the_monitoring_guide() {
        let guide = include_str!("../../../docs/monitoring.md");
        let missing: Vec<_> = AlertKind::ALL.into_iter().filter(|k| !guide.contains(k.as_str())).collect();
        assert!(missing.is_empty(), "docs/monitoring.md does not explain {missing:?}");
    }
}
