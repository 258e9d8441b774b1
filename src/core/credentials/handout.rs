//! The password a consumer gets now (current, or pending once the mail server has it) and the
//! mail server a stored credential may be sent to: the read path shared by reveals, API reads,
//! rotations and heartbeats.

use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::AlertKind;
use crate::core::crypto::SecretField;
use crate::core::error::{Error, Result};
use crate::core::mail::{LoginCheck, MailTarget};
use crate::core::rotation::state;
use crate::core::vault::{CredentialDocument, PendingPhase, VersionedDocument};
use crate::model::{CredentialState, TenantId};
use chrono::{DateTime, Utc};
use secrecy::SecretString;

impl Core {
    /// The mail server of a known tenant: its stored document's, provided it is the destination
    /// the console recorded. Whoever can write Vault but not the database cannot re-point a
    /// tenant (the sealed token and password are bound to tenant and field, not to where they
    /// go): the stored token and every new password would follow the document.
    ///
    /// # Errors
    /// [`Error::DestinationMismatch`] (alerted, once per destination), and those of
    /// [`Core::mail_target`].
    pub(crate) async fn recorded_mail_target(
        &self,
        tenant: &TenantId,
        document: &CredentialDocument,
    ) -> Result<MailTarget> {
        let recorded: Option<(String, String, i64, String)> =
            sqlx::query_as("SELECT mailu_api_url, smtp_host, smtp_port, smtp_tls FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(self.db.pool())
                .await?;
        // The TLS mode too: a flipped mode sends nothing in the clear, but it would silence the
        // heartbeat's drift detection and tell consumers another mode than the page shows.
        let matches = recorded.as_ref().is_some_and(|(url, host, port, tls)| {
            url == &document.mailu_api_url
                && host == &document.smtp_host
                && *port == i64::from(document.smtp_port)
                && tls == document.tls().as_str()
        });
        if !matches {
            let (url, host, port, tls) = recorded.unwrap_or_default();
            let details = serde_json::json!({
                "recorded": {"mailu_api_url": url, "smtp_host": host, "smtp_port": port, "smtp_tls": tls},
                "in_vault": {"mailu_api_url": document.mailu_api_url, "smtp_host": document.smtp_host, "smtp_port": document.smtp_port, "smtp_tls": document.tls().as_str()},
            });
            let alert = crate::core::alerting::Alert {
                kind: AlertKind::MailuDestinationMismatch,
                severity: crate::core::audit::Severity::Critical,
                tenant: Some(tenant),
                dedupe_key: format!(
                    "mailu_destination_mismatch:{tenant}:{}:{}:{}:{}",
                    document.mailu_api_url,
                    document.smtp_host,
                    document.smtp_port,
                    document.tls().as_str()
                ),
                message: format!(
                    "{tenant}: Vault names another mail server ({}) than the console recorded ({url}); nothing was sent",
                    document.mailu_api_url
                ),
                details,
                audience: crate::core::alerting::Audience::Security,
            };
            if let Err(e) = self.raise_alert(alert).await {
                tracing::error!(error = %e, "could not raise the destination alert");
            }
            return Err(Error::DestinationMismatch);
        }
        self.mail_target(tenant, document)
    }

    /// The mail server a document names (for a document the caller vouches for: one being
    /// provisioned from an authenticated request).
    pub(crate) fn mail_target(&self, tenant: &TenantId, document: &CredentialDocument) -> Result<MailTarget> {
        Ok(MailTarget {
            username: document.username.clone(),
            smtp_host: document.smtp_host.clone(),
            smtp_port: document.smtp_port,
            smtp_tls: document.tls(),
            api_url: document.mailu_api_url.clone(),
            api_token: self.keyring()?.open(&document.mailu_api_token, tenant, SecretField::MailuApiToken)?,
            tls_name: None,
            api_address: None,
        })
    }

    /// The password a consumer should use now: the current one, or the pending one once the mail
    /// server has it (zero downtime: a consumer that fails a login and reads again gets the
    /// password the server accepts).
    ///
    /// `stored` is replaced by a newer document when the rotation finished during the call.
    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn effective_password(
        &self,
        tenant: &TenantId,
        stored: &mut VersionedDocument,
        state: Option<CredentialState>,
    ) -> Result<SecretString> {
        let keyring = self.keyring()?;
        let current = keyring.open(&stored.document.password, tenant, SecretField::Password)?;
        // The mail server is only ever changed after the tenant is marked `rotating` (and a
        // gave-up rotation stays `needs_reconcile`), so other tenants skip the pending read.
        // `state` may have been read before or after `stored`: read before, an `active` state
        // means the server still took `stored`'s password then, or `stored` is already the
        // promoted one, so the answer was right at some moment of the call; read after a
        // rotation recorded its end, `read_to_hand_out` has re-read the older `stored`.
        if state.is_some_and(|s| !state::may_have_pending(s)) {
            return Ok(current);
        }
        let vault = self.vault()?;
        let Some((pending, _)) = vault.read_pending(tenant).await? else {
            // The record is dropped only after its password was promoted: with none left, the
            // rotation either finished during this call (`stored` may predate the promotion,
            // while the mail server already takes the new password) or has not staged one yet
            // (`rotating` is recorded first; the server has not been touched).
            if let Some(fresh) = vault.read_credential(tenant).await?
                && fresh.version > stored.version
            {
                *stored = fresh;
                return Ok(keyring.open(&stored.document.password, tenant, SecretField::Password)?);
            }
            return Ok(current);
        };
        let new = keyring.open(&pending.password, tenant, SecretField::Password)?;
        match pending.phase {
            PendingPhase::Applied => Ok(new),
            // The change may be in flight: ask the server which one it takes.
            PendingPhase::Staged => {
                let target = self.recorded_mail_target(tenant, &stored.document).await?;
                if self.mail()?.check_login(&target, &new).await == LoginCheck::Accepted {
                    Ok(new)
                } else {
                    Ok(current)
                }
            }
        }
    }

    /// A tenant's rotation state (`active`, `rotating`, …), `None` for a tenant without a row.
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn rotation_state(&self, tenant: &TenantId) -> Result<Option<CredentialState>> {
        Ok(self.rotation_record(tenant).await?.map(|(state, _)| state))
    }

    /// A tenant's rotation state and the KV version the database last recorded for it.
    pub(crate) async fn rotation_record(&self, tenant: &TenantId) -> Result<Option<(CredentialState, u64)>> {
        let record: Option<(String, i64)> = sqlx::query_as("SELECT state, version FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        // A state this build does not know is read as one that may have a pending password: the
        // safe side (the pending record is looked at, not skipped).
        Ok(record.map(|(state, version)| {
            let state = CredentialState::from_name(&state).unwrap_or(CredentialState::NeedsReconcile);
            (state, u64::try_from(version).unwrap_or_default())
        }))
    }

    /// A tenant's current document and rotation state, read at once (the two round trips
    /// overlap).
    ///
    /// # Errors
    /// [`Error::NotFound`] without a stored credential; Vault and database errors.
    pub(crate) async fn read_to_hand_out(
        &self,
        tenant: &TenantId,
    ) -> Result<(VersionedDocument, Option<CredentialState>)> {
        let vault = self.vault()?;
        let (stored, record) =
            futures_util::future::try_join(vault.read_credential(tenant), self.rotation_record(tenant)).await?;
        let mut stored = stored.ok_or(Error::NotFound("credential"))?;
        // Vault may have answered before a rotation promoted its password and the database
        // after it recorded the result (`active` with the new version): the document read is
        // then older than the password the mail server takes. Read it again; it is now at
        // least the recorded version.
        if let Some((_, recorded)) = &record
            && *recorded > stored.version
        {
            stored = vault.read_credential(tenant).await?.ok_or(Error::NotFound("credential"))?;
        }
        Ok((stored, record.map(|(state, _)| state)))
    }

    /// The password a caller gets now (see [`Core::effective_password`]); a ciphertext that fails
    /// its integrity check is diagnosed, recorded and refused.
    pub(crate) async fn password_to_hand_out(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        stored: &mut crate::core::vault::VersionedDocument,
        state: Option<CredentialState>,
        now: DateTime<Utc>,
    ) -> Result<secrecy::SecretString> {
        match self.effective_password(tenant, stored, state).await {
            Err(Error::Crypto(e)) => {
                Err(self.integrity_failure(actor, client, tenant, &stored.document.password, e, now).await)
            }
            other => other,
        }
    }
}
