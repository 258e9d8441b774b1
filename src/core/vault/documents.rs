//! What the console keeps in Vault: the credential document (password and Mailu token sealed by
//! the console), the pending record of a rotation, and a document with its KV version.

use crate::model::SmtpTls;
use serde::{Deserialize, Serialize};

/// The Vault document for one tenant (the contract's field names). Secret fields hold
/// `v1.` envelopes.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialDocument {
    /// SMTP login.
    pub username: String,
    /// Envelope of the password.
    pub password: String,
    /// SMTP host.
    pub smtp_host: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// TLS mode on that port; absent in documents stored before modes were recorded (see
    /// [`CredentialDocument::tls`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_tls: Option<SmtpTls>,
    /// Webmail URL.
    pub webmail_url: String,
    /// Mailu API URL.
    pub mailu_api_url: String,
    /// Envelope of the Mailu API token.
    pub mailu_api_token: String,
}

impl CredentialDocument {
    /// The TLS mode to speak: the stored one, or for an older document what the console did
    /// when it was stored.
    #[must_use]
    pub fn tls(&self) -> SmtpTls {
        self.smtp_tls.unwrap_or(SmtpTls::default_for_port(self.smtp_port))
    }
}

impl std::fmt::Debug for CredentialDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialDocument").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Where an in-flight rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingPhase {
    /// Stored in Vault; the mail server may or may not have it yet.
    Staged,
    /// The mail server confirmed the change; not yet promoted to current.
    Applied,
}

/// The in-flight rotation at `{mount}/{tenant}/pending`: the new password is here (sealed)
/// before the mail server is touched, so it can never be lost.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingDocument {
    /// Identifies this rotation in audit events and alerts.
    pub rotation_id: String,
    /// Envelope of the new password.
    pub password: String,
    /// Where it stands.
    pub phase: PendingPhase,
    /// Failed attempts so far.
    pub attempts: u32,
    /// What started it (`scheduled`, `manual`, `reveal`, `emergency`).
    pub trigger: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When this password first existed, if not at `started_at` (RFC 3339): a revert brings
    /// back an older one. Exposure sweeps count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_since: Option<String>,
}

impl std::fmt::Debug for PendingDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDocument")
            .field("rotation_id", &self.rotation_id)
            .field("phase", &self.phase)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// A document with the KV v2 version it was read at.
#[derive(Debug, Clone)]
pub struct VersionedDocument {
    /// The data.
    pub document: CredentialDocument,
    /// KV v2 version.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_from_before_tls_modes_means_what_the_console_did_then() {
        let stored = |port: u16, tls: Option<&str>| {
            let mut doc = json!({"username": "u", "password": "p", "smtp_host": "h", "smtp_port": port,
                "webmail_url": "w", "mailu_api_url": "a", "mailu_api_token": "t"});
            if let Some(tls) = tls {
                doc["smtp_tls"] = tls.into();
            }
            serde_json::from_value::<CredentialDocument>(doc).map(|d| d.tls()).ok()
        };
        assert_eq!(stored(465, None), Some(SmtpTls::Implicit));
        assert_eq!(stored(587, None), Some(SmtpTls::Starttls));
        assert_eq!(stored(465, Some("starttls")), Some(SmtpTls::Starttls));
        assert_eq!(stored(2465, Some("implicit")), Some(SmtpTls::Implicit));
    }
}
