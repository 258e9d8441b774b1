//! Admin-facing wire types: roles, admins and their passkeys, invites, reveal grants and the
//! revealed credential (the one view with a plaintext, redacted in `Debug`).

use super::{ErrorCode, TenantId};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// What an admin may do; decided in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages admins and reveals credentials.
    PlatformAdmin,
    /// Responds to incidents (emergency reset).
    IncidentResponder,
    /// Reads the audit trail and metadata; never a secret.
    SecurityReviewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::PlatformAdmin, Role::IncidentResponder, Role::SecurityReviewer];

    /// The stored and wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::IncidentResponder => "incident_responder",
            Role::SecurityReviewer => "security_reviewer",
        }
    }

    /// A human label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "Platform admin",
            Role::IncidentResponder => "Incident responder",
            Role::SecurityReviewer => "Security reviewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`; roles: platform_admin, incident_responder, security_reviewer"))
    }
}

/// A passkey as listed (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyView {
    /// Id.
    pub passkey_id: String,
    /// The admin's name for it.
    pub name: String,
    /// Registered at.
    pub created_at: DateTime<Utc>,
    /// Last used for a login or re-authentication.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// An admin as shown to themself or a platform admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminView {
    /// Id.
    pub admin_id: String,
    /// Login name.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// False once disabled.
    pub active: bool,
    /// Passkeys.
    pub passkeys: Vec<PasskeyView>,
}

/// A created invite: the link is shown once. `Debug` leaves the link out (it is the secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCreatedView {
    /// Its id (to revoke it).
    pub invite_id: String,
    /// Who it is for.
    pub email: String,
    /// Their role once enrolled.
    pub role: Role,
    /// One-time enrollment link.
    pub link: String,
    /// It stops working then.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for InviteCreatedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteCreatedView")
            .field("invite_id", &self.invite_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("link", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An invite not used, revoked or expired yet (the link itself is never shown again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteView {
    /// Its id.
    pub invite_id: String,
    /// Who it is for.
    pub email: String,
    /// Their role once enrolled.
    pub role: Role,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// It stops working then.
    pub expires_at: DateTime<Utc>,
}

/// A reveal grant (15-minute window for one admin and one tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    /// Id.
    pub grant_id: String,
    /// Whose.
    pub admin_email: String,
    /// For which tenant.
    pub tenant_id: TenantId,
    /// Why.
    pub reason: String,
    /// Opened at.
    pub created_at: DateTime<Utc>,
    /// Closes at.
    pub expires_at: DateTime<Utc>,
}

/// Where a four-eyes reveal request stands.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevealRequestStatus {
    /// Waiting for another platform admin.
    Pending,
    /// Approved: the requester's reveal window opened.
    Approved,
    /// Denied.
    Denied,
    /// Nobody decided within 30 minutes.
    Expired,
    /// Ended before a decision: the requester's session, passkey or role ended, or the tenant
    /// was reset.
    Withdrawn,
}

impl RevealRequestStatus {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Withdrawn => "withdrawn",
        }
    }

    /// The status of a stored name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Expired, Self::Withdrawn]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A request to reveal a four-eyes tenant's password: who, what, why, and its decision.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealRequestView {
    /// Id.
    pub request_id: String,
    /// The tenant whose password it is.
    pub tenant_id: TenantId,
    /// Who asks.
    pub requester_email: String,
    /// Why they ask.
    pub reason: String,
    /// Where it stands.
    pub status: RevealRequestStatus,
    /// Asked at.
    pub created_at: DateTime<Utc>,
    /// Lapses at, unless decided.
    pub expires_at: DateTime<Utc>,
    /// Who approved or denied it.
    pub decided_by_email: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
}

/// What a finished reveal step-up led to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RevealStep {
    /// The window is open.
    Granted(GrantView),
    /// The tenant needs a second platform admin: the request waits for one.
    AwaitingApproval(RevealRequestView),
}

/// The plaintext credential inside an active reveal window. `Debug` is redacted.
#[derive(Serialize, Deserialize, Clone)]
pub struct RevealedCredentialView {
    /// The tenant.
    pub tenant_id: TenantId,
    /// SMTP login.
    pub username: String,
    /// The password.
    #[serde(serialize_with = "expose")]
    pub password: SecretString,
    /// The grant this reveal used.
    pub grant_id: String,
    /// When the window closes.
    pub expires_at: DateTime<Utc>,
    /// Seconds left in the window when this was sent (the browser counts down from it, so a
    /// skewed client clock does not matter).
    pub expires_in_secs: i64,
}

impl fmt::Debug for RevealedCredentialView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevealedCredentialView")
            .field("tenant_id", &self.tenant_id)
            .field("password", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl PartialEq for RevealedCredentialView {
    fn eq(&self, other: &Self) -> bool {
        self.tenant_id == other.tenant_id
            && self.grant_id == other.grant_id
            && self.password.expose_secret() == other.password.expose_secret()
    }
}

fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// The error server functions return to the UI: a stable code and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct UiError {
    /// Same codes as the API error body.
    pub code: ErrorCode,
    /// Human text.
    pub message: String,
}

impl UiError {
    /// Builds an error.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn a_created_invite_never_prints_its_link() {
        let view = InviteCreatedView {
            invite_id: "i1".into(),
            email: "a@example.com".into(),
            role: Role::PlatformAdmin,
            link: "https://console.example/enroll/SECRET-LINK-TOKEN".into(),
            expires_at: DateTime::<Utc>::default(),
        };
        let shown = format!("{view:?}");
        assert!(!shown.contains("SECRET-LINK-TOKEN") && shown.contains("a@example.com"), "{shown}");
    }
}
