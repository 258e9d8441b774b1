//! The continuous journal: every credential write to Vault also appends a sealed record, so a
//! restore replays to the last change.

use super::{JOURNAL_FORMAT, JournalHeader, PURPOSE_JOURNAL, frame, journal_aad, unframe};
use crate::core::Core;
use crate::core::alerting::AlertKind;
use crate::core::audit::Severity;
use crate::core::error::{Error, Result};
use crate::core::vault::{CredentialDocument, PendingDocument};
use crate::model::TenantId;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

impl Core {
    /// Appends a sealed journal record of what was just written to Vault (`record` is `admin`
    /// or `pending`). Best effort: a failure is logged and alerted, never undoes the write.
    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "journal_write", skip_all)]
    pub(crate) async fn journal<T: Serialize + Sync>(
        &self,
        tenant: &TenantId,
        record: &str,
        version: u64,
        document: &T,
    ) {
        let (Ok(key), Ok(target)) = (self.backup_key(), self.backup_target()) else { return };
        let at = self.now();
        let outcome: Result<()> = async {
            let plain =
                zeroize::Zeroizing::new(serde_json::to_vec(document).map_err(|e| Error::Internal(e.to_string()))?);
            let aad = journal_aad(JOURNAL_FORMAT, tenant, record, version, at);
            let sealed = key.seal_blob(PURPOSE_JOURNAL, aad.as_bytes(), &plain)?;
            let header = JournalHeader {
                format: JOURNAL_FORMAT,
                kind: "journal".into(),
                key_id: sealed.key_id,
                nonce: STANDARD.encode(&sealed.nonce),
                tenant_id: tenant.clone(),
                record: record.to_owned(),
                version,
                at,
            };
            let header = serde_json::to_vec(&header).map_err(|e| Error::Internal(e.to_string()))?;
            let name = format!(
                "journal/{}/{:013}-{tenant}-{record}-{version}.enc",
                at.format("%Y-%m-%d"),
                at.timestamp_millis()
            );
            target.put(&name, frame(&header, &sealed.ciphertext)).await
        }
        .await;
        if let Err(e) = outcome {
            tracing::error!(tenant = %tenant, error = %e, "journal record not written: the next backup is the recovery point");
            let alert = crate::core::alerting::Alert {
                kind: AlertKind::JournalWriteFailed,
                severity: Severity::Warning,
                tenant: Some(tenant),
                dedupe_key: format!("journal_write_failed:{}", at.format("%Y-%m-%d")),
                message: "writing the backup journal failed; changes since the last backup are not yet recoverable"
                    .into(),
                details: json!({"error": e.to_string()}),
                audience: crate::core::alerting::Audience::Security,
            };
            if let Err(e) = self.raise_alert(alert).await {
                tracing::error!(error = %e, "could not raise the journal alert");
            }
        }
    }

    /// Writes a tenant's document and journals it: every credential write goes through here.
    ///
    /// # Errors
    /// Those of [`Vault::write_credential`].
    pub(crate) async fn write_credential_journaled(
        &self,
        tenant: &TenantId,
        document: &CredentialDocument,
        cas: u64,
    ) -> Result<u64> {
        let version = self.vault()?.write_credential(tenant, document, cas).await?;
        self.journal(tenant, "admin", version, document).await;
        Ok(version)
    }

    /// Writes an in-flight rotation and journals it.
    ///
    /// # Errors
    /// Those of [`Vault::write_pending`].
    pub(crate) async fn write_pending_journaled(
        &self,
        tenant: &TenantId,
        pending: &PendingDocument,
        cas: u64,
    ) -> Result<u64> {
        let version = self.vault()?.write_pending(tenant, pending, cas).await?;
        self.journal(tenant, "pending", version, pending).await;
        Ok(version)
    }

    /// Reads and opens journal records newer than `after` (and not newer than `until`),
    /// oldest first.
    pub(super) async fn read_journal(
        &self,
        after: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<(JournalHeader, zeroize::Zeroizing<Vec<u8>>)>> {
        let target = self.backup_target()?;
        let key = self.backup_key()?;
        let first_day = after.format("%Y-%m-%d").to_string();
        let mut records = Vec::new();
        for name in target.list("journal").await? {
            let day = name.strip_prefix("journal/").and_then(|rest| rest.split('/').next()).unwrap_or_default();
            if day < first_day.as_str() {
                continue;
            }
            let bytes =
                target.get(&name).await?.ok_or(Error::BackupInvalid("a journal record vanished while reading"))?;
            let (header_bytes, ciphertext) = unframe(&bytes)?;
            let header: JournalHeader = serde_json::from_slice(header_bytes)
                .map_err(|_| Error::BackupInvalid("a journal record's header is damaged"))?;
            if header.at <= after || until.is_some_and(|u| header.at > u) {
                continue;
            }
            let nonce = STANDARD
                .decode(&header.nonce)
                .map_err(|_| Error::BackupInvalid("a journal record's header is damaged"))?;
            if !(1..=JOURNAL_FORMAT).contains(&header.format) {
                return Err(Error::BackupInvalid("a journal record has an unknown format"));
            }
            let aad = journal_aad(header.format, &header.tenant_id, &header.record, header.version, header.at);
            let plain =
                key.open_blob(PURPOSE_JOURNAL, aad.as_bytes(), &header.key_id, &nonce, ciphertext).map_err(|_| {
                    Error::BackupInvalid("a journal record failed authentication (altered, or another backup key)")
                })?;
            records.push((header, plain));
        }
        records.sort_by_key(|(h, _)| h.at);
        Ok(records)
    }
}
