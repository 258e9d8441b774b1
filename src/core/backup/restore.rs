//! Restores: check everything before writing anything, never silently overwrite what differs,
//! verify each tenant reads back and decrypts; from the CLI, or from the console after a
//! platform admin's step-up.

use super::format::Replayed;
use super::{RestoreOptions, RestoreReport, RestoreState, TenantRecord, VAULT_CONCURRENCY, ms, open_backup};
use crate::core::Core;
use crate::core::access::stepup::Intent;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize, authorize_ceremony};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::credentials::records;
use crate::core::crypto::{Keyring, SecretField};
use crate::core::error::{Error, Result};
use crate::core::rotation::state::{Transition, transition};
use crate::core::vault::{CredentialDocument, PendingDocument, Vault};
use crate::model::Permission;
use crate::model::TenantId;
use chrono::NaiveDate;
use futures_util::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

/// A tenant a restore wrote (or found unchanged): its new KV version and the mail server its
/// restored document names (Mailu API URL, SMTP host and port).
pub(crate) struct Restored {
    tenant: String,
    version: u64,
    destination: (String, String, i64),
    smtp_tls: crate::model::SmtpTls,
    /// The backup held a rotation in flight: its pending record is back in Vault.
    pending: bool,
}

pub(super) enum TenantOutcome {
    Written(u64),
    Unchanged(u64),
    Skipped(String),
}

pub(super) async fn restore_tenant(
    vault: &Vault,
    keyring: &Keyring,
    record: TenantRecord,
    options: &RestoreOptions,
) -> Result<TenantOutcome> {
    let tenant = &record.tenant_id;
    // The keyring must open what is about to be restored, or the restore is pointless.
    keyring.open(&record.document.password, tenant, SecretField::Password)?;
    keyring.open(&record.document.mailu_api_token, tenant, SecretField::MailuApiToken)?;
    // Onto an empty path (the disaster case) a check-and-set write on 0 is all it takes; only a
    // path that already has a secret is read and compared first (one Vault call less per
    // tenant for a whole restore into a new Vault).
    let written = if options.dry_run {
        None
    } else {
        match vault.write_credential(tenant, &record.document, 0).await {
            Ok(version) => Some(version),
            Err(Error::Conflict) => None,
            Err(e) => return Err(e),
        }
    };
    let version = match written {
        Some(version) => version,
        None => {
            let existing = vault.read_credential(tenant).await?;
            let cas = match &existing {
                Some(found) if found.document == record.document => {
                    return Ok(TenantOutcome::Unchanged(found.version));
                }
                Some(_) if !options.force => {
                    return Ok(TenantOutcome::Skipped(
                        "the target holds a different secret (newer?); use --force".into(),
                    ));
                }
                Some(found) => found.version,
                None => 0,
            };
            if options.dry_run {
                return Ok(TenantOutcome::Written(0));
            }
            vault.write_credential(tenant, &record.document, cas).await?
        }
    };
    if let Some(pending) = &record.pending
        && vault.read_pending(tenant).await?.is_none()
    {
        vault.write_pending(tenant, pending, 0).await?;
    }
    let back =
        vault.read_credential(tenant).await?.ok_or(Error::BackupInvalid("a restored secret did not read back"))?;
    if back.document != record.document {
        return Err(Error::BackupInvalid("a restored secret read back different"));
    }
    keyring.open(&back.document.password, tenant, SecretField::Password)?;
    Ok(TenantOutcome::Written(version))
}

impl Core {
    /// Starts a restore from the console: a platform admin's WebAuthn step-up, bound to the
    /// backup id and options.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for other roles, [`Error::InvalidInput`] for a bad id,
    /// [`Error::NotFound`] for an unknown backup.
    pub async fn begin_restore(
        &self,
        actor: &Actor,
        session: &crate::core::access::passkeys::SessionBinding,
        backup_id: &str,
        dry_run: bool,
        force: bool,
    ) -> Result<String> {
        authorize_ceremony(actor, Permission::RestoreBackup)?;
        if NaiveDate::parse_from_str(backup_id, "%Y-%m-%d").is_err() {
            return Err(Error::InvalidInput("a backup id is a date: YYYY-MM-DD".into()));
        }
        if !self.backups().await?.iter().any(|b| b.id == backup_id) {
            return Err(Error::NotFound("backup"));
        }
        let intent = Intent::Restore { backup_id: backup_id.to_owned(), dry_run, force };
        self.begin_step_up(actor, session, None, &intent).await
    }

    /// Finishes the step-up and starts the restore in the background; its progress is read
    /// with [`Core::restore_status`].
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] (audited), [`Error::RotationBusy`]-like
    /// [`Error::InvalidInput`] when a restore is already running.
    pub async fn finish_restore(
        &self,
        actor: &Actor,
        session: &crate::core::access::passkeys::SessionBinding,
        client: &ClientInfo,
        credential_json: &str,
    ) -> Result<crate::model::RestoreStatusView> {
        authorize_ceremony(actor, Permission::RestoreBackup)?;
        let purpose = crate::core::access::passkeys::Purpose::Restore;
        let (_, intent) = self.finish_step_up(actor, session, client, purpose, None, credential_json).await?;
        let Intent::Restore { backup_id, dry_run, force } = intent else {
            return Err(Error::Unauthenticated);
        };
        let options = RestoreOptions { dry_run, force, ..RestoreOptions::default() };
        let status = crate::model::RestoreStatusView {
            running: true,
            backup_id: backup_id.clone(),
            started_by: actor.audit_identity().1,
            started_at: Some(self.now()),
            ..Default::default()
        };
        {
            let mut slot = self.restore_status.lock().map_err(|_| Error::Internal("restore status lock".into()))?;
            if slot.as_ref().is_some_and(|s| s.running) {
                return Err(Error::InvalidInput("a restore is already running; watch its progress".into()));
            }
            *slot = Some(status.clone());
        }
        let (core, actor) = (self.clone(), actor.clone());
        tokio::spawn(async move {
            let shared = core.restore_status.clone();
            let mut progress = |done: usize, total: usize| {
                if let Ok(mut slot) = shared.lock()
                    && let Some(status) = slot.as_mut()
                {
                    status.done = done;
                    status.total = total;
                }
            };
            let outcome = core.run_restore(&actor, &backup_id, &options, &mut progress).await;
            if let Ok(mut slot) = core.restore_status.lock()
                && let Some(status) = slot.as_mut()
            {
                status.running = false;
                match outcome {
                    Ok(report) => status.report = Some(report),
                    Err(e) => {
                        tracing::error!(error = %e, "restore from the console failed");
                        status.error = Some(e.to_string());
                    }
                }
            }
        });
        Ok(status)
    }

    /// The restore started from the console in this process, if any (any admin).
    ///
    /// # Errors
    /// Refusals for others.
    pub fn restore_status(&self, actor: &Actor) -> Result<Option<crate::model::RestoreStatusView>> {
        authorize(actor, Permission::ViewOperations)?;
        Ok(self.restore_status.lock().map_err(|_| Error::Internal("restore status lock".into()))?.clone())
    }
}

impl Core {
    /// Restores a backup (plus the journal after it) into this console's Vault. Everything is
    /// fetched, authenticated and decoded before the first write; tenants whose stored secret
    /// differs are reported and skipped unless `force`; each restored tenant is read back and
    /// decrypted with the keyring.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless an operator; [`Error::NotFound`] for an unknown backup;
    /// [`Error::BackupInvalid`] for a damaged, altered or wrongly keyed file (nothing written).
    pub async fn restore_backup(
        &self,
        actor: &Actor,
        backup_id: &str,
        options: &RestoreOptions,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<RestoreReport> {
        authorize(actor, Permission::RestoreBackup)?;
        self.run_restore(actor, backup_id, options, progress).await
    }

    pub(super) async fn run_restore(
        &self,
        actor: &Actor,
        backup_id: &str,
        options: &RestoreOptions,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<RestoreReport> {
        let clock = Instant::now();
        let state = self.restore_state(Some(backup_id), options).await?;
        let (mut report, versions) = self.restore_into(self.vault()?, state, options, progress).await?;
        if !options.dry_run {
            self.record_restore(actor, &report, &versions).await?;
        }
        report.total_ms = ms(clock);
        Ok(report)
    }

    /// Fetches and opens a backup (the newest when `backup_id` is `None`) and replays the
    /// journal on top; writes nothing.
    pub(crate) async fn restore_state(
        &self,
        backup_id: Option<&str>,
        options: &RestoreOptions,
    ) -> Result<RestoreState> {
        let clock = Instant::now();
        let target = self.backup_target()?;
        let backup_id = match backup_id {
            Some(id) => id.to_owned(),
            None => self.backups().await?.into_iter().next().ok_or(Error::NotFound("backup"))?.id,
        };
        if NaiveDate::parse_from_str(&backup_id, "%Y-%m-%d").is_err() {
            return Err(Error::InvalidInput("a backup id is a date: YYYY-MM-DD (see `smtp-vault backup list`)".into()));
        }
        let bytes =
            target.get(&format!("backups/{backup_id}/vault-snapshot.enc")).await?.ok_or(Error::NotFound("backup"))?;
        let (manifest, records) = open_backup(self.backup_key()?, &bytes)?;
        // The id is authenticated inside the file: a file copied or renamed under another date
        // (an old password passed off as a newer backup) is refused.
        if manifest.id != backup_id {
            return Err(Error::BackupInvalid("the file is another day's backup, moved under this id"));
        }
        let mut state: BTreeMap<String, Replayed> = records
            .into_iter()
            .map(|r| {
                let pending_at = r.pending.as_ref().map(|_| manifest.created_at);
                (r.tenant_id.to_string(), (r, manifest.created_at, pending_at))
            })
            .collect();
        let journal = if options.skip_journal {
            Vec::new()
        } else {
            self.read_journal(manifest.created_at, options.until).await?
        };
        let mut restored_up_to = manifest.created_at;
        for (header, plain) in &journal {
            restored_up_to = restored_up_to.max(header.at);
            let key = header.tenant_id.to_string();
            match header.record.as_str() {
                "admin" => {
                    let document: CredentialDocument = serde_json::from_slice(plain)
                        .map_err(|_| Error::BackupInvalid("a journal record is not a credential document"))?;
                    let entry = state.entry(key).or_insert_with(|| {
                        let record = TenantRecord {
                            tenant_id: header.tenant_id.clone(),
                            version: header.version,
                            document: document.clone(),
                            pending: None,
                        };
                        (record, header.at, None)
                    });
                    entry.0.document = document;
                    entry.0.version = header.version;
                    entry.1 = header.at;
                }
                "pending" => {
                    let pending: PendingDocument = serde_json::from_slice(plain)
                        .map_err(|_| Error::BackupInvalid("a journal record is not a pending rotation"))?;
                    if let Some(entry) = state.get_mut(&key) {
                        entry.0.pending = Some(pending);
                        entry.2 = Some(header.at);
                    }
                }
                _ => return Err(Error::BackupInvalid("a journal record has an unknown kind")),
            }
        }
        // A pending rotation recorded before the tenant's latest document was promoted or
        // dropped since: only a newer one is still in flight.
        let records = state
            .into_values()
            .map(|(mut record, doc_at, pending_at)| {
                if pending_at.is_some_and(|p| p < doc_at) {
                    record.pending = None;
                }
                record
            })
            .collect();
        Ok(RestoreState { manifest, records, journal_records: journal.len(), restored_up_to, fetch_ms: ms(clock) })
    }

    /// Writes and verifies restored tenants into `vault`; returns the report and each tenant's
    /// new version.
    pub(crate) async fn restore_into(
        &self,
        vault: &Vault,
        state: RestoreState,
        options: &RestoreOptions,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<(RestoreReport, Vec<Restored>)> {
        let mut report = RestoreReport {
            backup_id: state.manifest.id.clone(),
            backup_created_at: Some(state.manifest.created_at),
            journal_records: state.journal_records,
            restored_up_to: Some(state.restored_up_to),
            tenants: state.records.len(),
            dry_run: options.dry_run,
            fetch_ms: state.fetch_ms,
            ..RestoreReport::default()
        };
        let written_at = Instant::now();
        let keyring = self.keyring()?;
        let total = state.records.len();
        progress(0, total);
        let mut outcomes = futures_util::stream::iter(state.records)
            .map(|record| async move {
                let tenant = record.tenant_id.to_string();
                let d = &record.document;
                let destination = (d.mailu_api_url.clone(), d.smtp_host.clone(), i64::from(d.smtp_port));
                let had_pending = record.pending.is_some();
                let id = record.tenant_id.clone();
                let tls = d.tls();
                let outcome = restore_tenant(vault, keyring, record, options).await;
                // Marked `rotating` only where Vault now holds the backup's pending record
                // (written now, or by an earlier run of this restore that died before its
                // bookkeeping): not for a dry run, a skipped tenant or one left unchanged
                // without one.
                let pending = had_pending
                    && !options.dry_run
                    && matches!(outcome, Ok(TenantOutcome::Written(_) | TenantOutcome::Unchanged(_)))
                    && matches!(vault.read_pending(&id).await, Ok(Some(_)));
                (tenant, (destination, tls, pending), outcome)
            })
            .buffer_unordered(VAULT_CONCURRENCY);
        let mut versions = Vec::new();
        let mut done = 0;
        while let Some((tenant, (destination, smtp_tls, pending), outcome)) = outcomes.next().await {
            match outcome {
                Ok(TenantOutcome::Written(version)) => {
                    report.written += 1;
                    report.verified += usize::from(!options.dry_run);
                    versions.push(Restored { tenant, version, destination, smtp_tls, pending });
                }
                Ok(TenantOutcome::Unchanged(version)) => {
                    report.unchanged += 1;
                    report.verified += 1;
                    versions.push(Restored { tenant, version, destination, smtp_tls, pending });
                }
                Ok(TenantOutcome::Skipped(why)) => report.skipped.push((tenant, why)),
                Err(e) => report.failed.push((tenant, e.to_string())),
            }
            done += 1;
            if done % 100 == 0 || done == total {
                progress(done, total);
            }
        }
        drop(outcomes);
        report.skipped.sort();
        report.failed.sort();
        report.write_ms = ms(written_at);
        report.total_ms = report.fetch_ms + report.write_ms;
        Ok((report, versions))
    }

    /// Brings the tenants table in line with the restored Vault (new KV versions, and the
    /// restored mail server where it differs: recorded as a destination change and alerted, like
    /// every other re-pointing) and audits the restore, in one transaction.
    pub(crate) async fn record_restore(
        &self,
        actor: &Actor,
        report: &RestoreReport,
        versions: &[Restored],
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        for restored in versions {
            let (url, host, port) = &restored.destination;
            let destination =
                records::Destination { mailu_api_url: url.clone(), smtp_host: host.clone(), smtp_port: *port };
            let recorded = records::destination(&mut tx, &restored.tenant).await?;
            if let Some(records::Destination { mailu_api_url: from, smtp_host: from_host, smtp_port: from_port }) =
                recorded.filter(|r| *r != destination)
            {
                let tenant = TenantId::parse(&restored.tenant)
                    .map_err(|_| Error::BackupInvalid("a restored tenant id is not valid"))?;
                let to = if &from == url {
                    format!("{url} (SMTP {host}:{port}, was {from_host}:{from_port})")
                } else {
                    url.clone()
                };
                self.record_destination_change(
                    &mut tx,
                    actor,
                    &ClientInfo::local(),
                    &tenant,
                    (&from, &to),
                    "restore",
                    now,
                )
                .await?;
            }
            records::record_restored(&mut tx, &restored.tenant, restored.version, &destination, restored.smtp_tls, now)
                .await?;
            if restored.pending {
                // Vault holds a pending record only for a tenant the database marks rotating:
                // start-up repair and the daily cycle find interrupted rotations by that state.
                let tenant = TenantId::parse(&restored.tenant)
                    .map_err(|_| Error::BackupInvalid("a restored tenant id is not valid"))?;
                let details = json!({"resumed": true, "via": "restore"});
                let event = NewEvent::info(EventType::RotationStarted, Some(&tenant), details);
                transition(&mut tx, actor, &ClientInfo::local(), &tenant, Transition::RotationResumed, event, now)
                    .await?;
            }
        }
        let details = json!({
            "backup_id": report.backup_id, "journal_records": report.journal_records, "tenants": report.tenants,
            "written": report.written, "unchanged": report.unchanged, "skipped": report.skipped.len(),
            "failed": report.failed.len(), "restored_up_to": report.restored_up_to, "vault": self.vault()?.addr(),
        });
        let severity = if report.failed.is_empty() { Severity::Warning } else { Severity::Critical };
        let event = NewEvent::info(EventType::BackupRestored, None, details).with_severity(severity);
        audit::append(&mut tx, actor, &ClientInfo::local(), event, now).await?;
        tx.commit().await?;
        Ok(())
    }
}
