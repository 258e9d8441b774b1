//! Service-token scopes of the JSON API (ARCHITECTURE §3.3).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a service token may do. The wire names are part of the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Store or provision a credential.
    #[serde(rename = "credentials:write")]
    CredentialsWrite,
    /// Read metadata and list tenants.
    #[serde(rename = "credentials:read")]
    CredentialsRead,
    /// Read the plaintext password (audited).
    #[serde(rename = "credentials:read-secret")]
    CredentialsReadSecret,
    /// Rotate now.
    #[serde(rename = "credentials:rotate")]
    CredentialsRotate,
    /// Emergency reset; exposure sweeps.
    #[serde(rename = "credentials:reset")]
    CredentialsReset,
    /// Revert to the previous password (Vault's previous version, through the staged protocol).
    #[serde(rename = "credentials:revert")]
    CredentialsRevert,
    /// VPS-failure recovery onto the tenant's current Mailu API URL.
    #[serde(rename = "tenants:recover")]
    TenantsRecover,
    /// Change where a tenant's passwords are sent (a new Mailu API URL, in a recovery). As
    /// sensitive as `credentials:read-secret`: whoever picks the URL receives every password
    /// sent to it.
    #[serde(rename = "tenants:redirect")]
    TenantsRedirect,
    /// Read the audit trail.
    #[serde(rename = "audit:read")]
    AuditRead,
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope `{0}`; known scopes: credentials:write, credentials:read, credentials:read-secret, credentials:rotate, credentials:reset, credentials:revert, tenants:recover, tenants:redirect, audit:read"
)]
pub struct UnknownScope(pub String);

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 9] = [
        Scope::CredentialsWrite,
        Scope::CredentialsRead,
        Scope::CredentialsReadSecret,
        Scope::CredentialsRotate,
        Scope::CredentialsReset,
        Scope::CredentialsRevert,
        Scope::TenantsRecover,
        Scope::TenantsRedirect,
        Scope::AuditRead,
    ];

    /// The contract name, e.g. `credentials:read-secret`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::CredentialsWrite => "credentials:write",
            Scope::CredentialsRead => "credentials:read",
            Scope::CredentialsReadSecret => "credentials:read-secret",
            Scope::CredentialsRotate => "credentials:rotate",
            Scope::CredentialsReset => "credentials:reset",
            Scope::CredentialsRevert => "credentials:revert",
            Scope::TenantsRecover => "tenants:recover",
            Scope::TenantsRedirect => "tenants:redirect",
            Scope::AuditRead => "audit:read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(serde_json::to_string(&scope).ok(), Some(format!("\"{scope}\"")));
        }
        assert!("credentials:*".parse::<Scope>().is_err());
    }
}
