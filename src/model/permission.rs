//! Who may do what: every permission the console checks and the one table that grants it to
//! roles, token scopes, the operator at the host and the scheduler, with the step-up an admin
//! owes first. The core decides with this table (`core::access::authorize`); the UI reads the
//! same table only to hide what a role cannot do. Wasm-safe: no server types.

use super::{Role, Scope};
use serde::{Deserialize, Serialize};

/// An action the console guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// See tenants, their credential metadata, rotation state and settings.
    ReadCredentials,
    /// Store or provision a tenant's credential (the provisioning backend).
    WriteCredentials,
    /// Send a tenant's passwords somewhere new: another Mailu API URL (tenant settings, a store,
    /// a recovery). As sensitive as reading the password: whoever picks the URL receives it.
    RedirectTenant,
    /// Read a password over the API.
    ReadSecret,
    /// Reveal a password in the console.
    Reveal,
    /// Approve or deny another admin's request to reveal a four-eyes tenant's password.
    ApproveReveal,
    /// Switch a tenant's four-eyes reveals on or off.
    GuardReveals,
    /// Rotate a credential now.
    Rotate,
    /// Emergency reset: rotate now, close every reveal, alert security, tell the tenant. Also
    /// the exposure sweep (rotate what an admin or a token saw).
    EmergencyReset,
    /// Undo the last rotation: Vault's previous password, back through the staged protocol.
    Revert,
    /// Recover a tenant onto a replacement server.
    RecoverTenant,
    /// Change a tenant's settings; defer its rotation.
    ConfigureTenants,
    /// Vouch for an account with global admin rights on a tenant's Mailu (its alert stops).
    TrustMailuAdmins,
    /// See every admin, invite and open reveal window, and close anyone's reveal window.
    OverseeAdmins,
    /// Invite, re-role and disable admins; revoke invites.
    ManageAdmins,
    /// Add, rename and remove one's own passkeys.
    ManageOwnPasskeys,
    /// Create and revoke service tokens.
    ManageTokens,
    /// Read the audit trail.
    ReadAudit,
    /// See alerts, incidents, rules, backups, drills and a restore's progress.
    ViewOperations,
    /// Acknowledge an alert (in one's own name).
    AcknowledgeAlerts,
    /// Send a test alert; retry a dead-lettered delivery.
    ManageAlerts,
    /// Take a backup.
    RunBackups,
    /// Run a disaster-recovery drill.
    RunDrills,
    /// Restore a backup into Vault.
    RestoreBackup,
    /// Host-only maintenance: re-wrap keys, Vault Raft snapshots.
    HostMaintenance,
}

/// What a permitted admin still owes before the action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepUp {
    /// Nothing more.
    None,
    /// A passkey re-authentication for this very action (and tenant), with its reason or
    /// target confirmed in the ceremony: the action runs only when the ceremony finishes.
    Ceremony,
    /// A passkey confirmation of this browser session within the last few minutes.
    Window,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The token scope that grants it to a service token, if any does.
    pub scope: Option<Scope>,
    /// The admin roles it is granted to.
    pub roles: &'static [Role],
    /// What an admin owes first.
    pub step_up: StepUp,
    /// Granted to the operator at the host (the CLI: already holds the keyring and Vault).
    pub operator: bool,
    /// Granted to the console's own scheduled jobs.
    pub system: bool,
}

const ALL_ROLES: &[Role] = &[Role::PlatformAdmin, Role::IncidentResponder, Role::SecurityReviewer];
const PLATFORM: &[Role] = &[Role::PlatformAdmin];
const RESPONDERS: &[Role] = &[Role::PlatformAdmin, Role::IncidentResponder];
const REVIEWERS: &[Role] = &[Role::PlatformAdmin, Role::SecurityReviewer];
const NO_ROLE: &[Role] = &[];

const fn rule(scope: Option<Scope>, roles: &'static [Role], step_up: StepUp, operator: bool, system: bool) -> Rule {
    Rule { scope, roles, step_up, operator, system }
}

impl Permission {
    /// Every permission, in the order of the table.
    pub const ALL: [Permission; 25] = [
        Permission::ReadCredentials,
        Permission::WriteCredentials,
        Permission::RedirectTenant,
        Permission::ReadSecret,
        Permission::Reveal,
        Permission::ApproveReveal,
        Permission::GuardReveals,
        Permission::Rotate,
        Permission::EmergencyReset,
        Permission::Revert,
        Permission::RecoverTenant,
        Permission::ConfigureTenants,
        Permission::TrustMailuAdmins,
        Permission::OverseeAdmins,
        Permission::ManageAdmins,
        Permission::ManageOwnPasskeys,
        Permission::ManageTokens,
        Permission::ReadAudit,
        Permission::ViewOperations,
        Permission::AcknowledgeAlerts,
        Permission::ManageAlerts,
        Permission::RunBackups,
        Permission::RunDrills,
        Permission::RestoreBackup,
        Permission::HostMaintenance,
    ];

    /// The table: who is granted this permission, and the step-up an admin owes.
    #[must_use]
    pub const fn rule(self) -> Rule {
        use StepUp::{Ceremony, None as Free, Window};
        match self {
            Permission::ReadCredentials => rule(Some(Scope::CredentialsRead), ALL_ROLES, Free, true, true),
            Permission::WriteCredentials => rule(Some(Scope::CredentialsWrite), NO_ROLE, Free, true, true),
            // An admin re-points a tenant in its settings (a confirmed session) or in a recovery
            // (whose ceremony names the URL).
            Permission::RedirectTenant => rule(Some(Scope::TenantsRedirect), PLATFORM, Window, true, true),
            // Admins read plaintext only through a reveal window, never by scope.
            Permission::ReadSecret => rule(Some(Scope::CredentialsReadSecret), NO_ROLE, Free, true, true),
            Permission::Reveal => rule(None, PLATFORM, Ceremony, false, false),
            // A second person, with their own passkey: never a token, the operator or a job
            // (the core also refuses the requester themselves).
            Permission::ApproveReveal => rule(None, PLATFORM, Ceremony, false, false),
            // Whoever could switch the second pair of eyes off could reveal alone: a confirmed
            // session, and switching off alerts security.
            Permission::GuardReveals => rule(None, PLATFORM, Window, true, false),
            Permission::Rotate => rule(Some(Scope::CredentialsRotate), PLATFORM, Ceremony, true, true),
            Permission::EmergencyReset => rule(Some(Scope::CredentialsReset), RESPONDERS, Ceremony, true, true),
            // Brings an older password back into use: as deliberate as a rotation, never a job.
            Permission::Revert => rule(Some(Scope::CredentialsRevert), PLATFORM, Ceremony, true, false),
            Permission::RecoverTenant => rule(Some(Scope::TenantsRecover), RESPONDERS, Ceremony, true, true),
            Permission::ConfigureTenants => rule(None, PLATFORM, Free, true, false),
            // Vouching for an account silences the alert about a possible backdoor: a confirmed
            // session, as for the other decisions about who may act on a tenant.
            Permission::TrustMailuAdmins => rule(None, PLATFORM, Window, true, false),
            Permission::OverseeAdmins => rule(None, PLATFORM, Free, true, false),
            Permission::ManageAdmins => rule(None, PLATFORM, Window, true, false),
            Permission::ManageOwnPasskeys => rule(None, ALL_ROLES, Window, false, false),
            Permission::ManageTokens => rule(None, NO_ROLE, Free, true, false),
            Permission::ReadAudit => rule(Some(Scope::AuditRead), REVIEWERS, Free, true, true),
            Permission::ViewOperations => rule(None, ALL_ROLES, Free, true, false),
            Permission::AcknowledgeAlerts => rule(None, ALL_ROLES, Free, false, false),
            Permission::ManageAlerts => rule(None, PLATFORM, Free, true, false),
            Permission::RunBackups => rule(None, NO_ROLE, Free, true, true),
            Permission::RunDrills => rule(None, NO_ROLE, Free, true, true),
            Permission::RestoreBackup => rule(None, PLATFORM, Ceremony, true, true),
            Permission::HostMaintenance => rule(None, NO_ROLE, Free, true, false),
        }
    }

    /// Why someone without it is refused (shown to them).
    #[must_use]
    pub const fn refusal(self) -> &'static str {
        match self {
            Permission::ReadCredentials => "you may not see credentials",
            Permission::WriteCredentials => "only the provisioning backend and the operator store credentials",
            Permission::RedirectTenant => "only platform admins send a tenant's passwords to a new Mailu API URL",
            Permission::ReadSecret => "only tokens with credentials:read-secret read passwords",
            Permission::Reveal => "only platform admins reveal credentials, after a passkey step-up",
            Permission::ApproveReveal => {
                "only another platform admin approves a reveal, after their own passkey step-up"
            }
            Permission::GuardReveals => "only platform admins switch four-eyes reveals, in a confirmed session",
            Permission::Rotate => "only platform admins rotate from the console, after a passkey step-up",
            Permission::EmergencyReset => "only platform admins and incident responders press the emergency reset",
            Permission::Revert => "only platform admins revert a credential, after a passkey step-up",
            Permission::RecoverTenant => "only platform admins and incident responders recover tenants",
            Permission::ConfigureTenants => "only platform admins change tenant settings",
            Permission::TrustMailuAdmins => {
                "only platform admins vouch for a Mailu admin account, in a confirmed session"
            }
            Permission::OverseeAdmins | Permission::ManageAdmins => "only platform admins manage admins",
            Permission::ManageOwnPasskeys => "only a signed-in admin manages their passkeys",
            Permission::ManageTokens => "service tokens are managed at the console host (smtp-vault token)",
            Permission::ReadAudit => "only platform admins and security reviewers read the audit trail",
            Permission::ViewOperations => "only admins see the console's operations",
            Permission::AcknowledgeAlerts => "only a signed-in admin acknowledges alerts, in their own name",
            Permission::ManageAlerts => "only platform admins test and retry alert delivery",
            Permission::RunBackups => "backups run on schedule or from the console host",
            Permission::RunDrills => "drills run on schedule or from the console host",
            Permission::RestoreBackup => "only platform admins restore backups, after a passkey step-up",
            Permission::HostMaintenance => "only the operator at the console host does this",
        }
    }
}

impl Role {
    /// Whether this role is granted `permission` (perhaps after a step-up). The UI hides what
    /// this says no to; the core decides.
    #[must_use]
    pub fn may(self, permission: Permission) -> bool {
        permission.rule().roles.contains(&self)
    }
}

impl Scope {
    /// Whether this scope grants `permission` to a service token.
    #[must_use]
    pub fn grants(self, permission: Permission) -> bool {
        permission.rule().scope == Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_grants_exactly_one_permission() {
        for scope in Scope::ALL {
            let granted: Vec<_> = Permission::ALL.into_iter().filter(|p| scope.grants(*p)).collect();
            assert_eq!(granted.len(), 1, "{scope:?} grants {granted:?}");
        }
    }

    #[test]
    fn passwords_leave_only_through_a_ceremony_or_a_scope_never_a_role_alone() {
        for permission in [Permission::ReadSecret, Permission::Reveal] {
            let rule = permission.rule();
            assert!(rule.roles.is_empty() || rule.step_up == StepUp::Ceremony, "{permission:?}");
        }
        for permission in [Permission::Rotate, Permission::EmergencyReset, Permission::RecoverTenant] {
            assert_eq!(permission.rule().step_up, StepUp::Ceremony, "{permission:?}");
        }
        assert!(!Permission::Reveal.rule().operator && !Permission::Reveal.rule().system);
    }

    #[test]
    fn reviewers_read_but_change_nothing() {
        let reviewer: Vec<_> = Permission::ALL.into_iter().filter(|p| Role::SecurityReviewer.may(*p)).collect();
        assert_eq!(
            reviewer,
            [
                Permission::ReadCredentials,
                Permission::ManageOwnPasskeys,
                Permission::ReadAudit,
                Permission::ViewOperations,
                Permission::AcknowledgeAlerts
            ]
        );
    }
}
