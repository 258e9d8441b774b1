//! Backups and the continuous journal (disaster recovery). A backup is a logical export of every
//! tenant's secret as stored (still envelope-encrypted), with its KV version and any in-flight
//! rotation, gzip-compressed and sealed with AES-256-GCM under the backup key, written with
//! `object_store` to `file://…` or `s3://…` as `backups/{YYYY-MM-DD}/vault-snapshot.enc` beside a
//! plaintext `manifest.json` (no secrets). Every credential write also appends a sealed journal
//! record, so a restore replays to the last change. Retention keeps 30 daily and 12 monthly
//! backups. A restore checks everything before it writes anything, never silently overwrites
//! what differs in the target, and verifies that each tenant reads back and decrypts.
//!
//! The backup key is a keyring file of its own (`SMTP_VAULT_BACKUP_KEY`), never in Vault and
//! never under the backup target.

mod format;
mod journal;
mod raft;
mod restore;
mod target;

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::audit::{self, EventType, NewEvent};
use crate::core::crypto::Keyring;
use crate::core::error::{Error, Result};
use crate::core::vault::Vault;
use crate::model::Permission;
use crate::model::TenantId;
pub use crate::model::{BackupView, RestoreReport};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDate, Utc};
pub use format::{BackupManifest, TenantRecord, open_backup, retained};
use format::{ExportWriter, JOURNAL_FORMAT, JournalHeader, binding, frame, journal_aad, unframe};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Instant;
pub use target::{BackupLocation, BackupTarget, load_backup_key};

const MAGIC: &[u8] = b"SVBK1\n";
/// Daily backups kept.
pub const KEEP_DAILY: usize = 30;
/// Monthly backups kept (older than the daily window).
pub const KEEP_MONTHLY: usize = 12;
/// Vault calls in flight during a backup's export and a restore: raft storage commits
/// concurrent writes together, so throughput keeps rising well past 16 (measured in
/// docs/performance.md), while Vault's own limits are far above this.
const VAULT_CONCURRENCY: usize = 64;
const PURPOSE_BACKUP: &str = "backup";
const PURPOSE_JOURNAL: &str = "journal";
const PURPOSE_RAFT: &str = "raft";

/// A backup opened and replayed, ready to write.
pub(crate) struct RestoreState {
    manifest: BackupManifest,
    records: Vec<TenantRecord>,
    journal_records: usize,
    /// Time of the newest change in it.
    pub(crate) restored_up_to: DateTime<Utc>,
    fetch_ms: u64,
}

/// What a backup run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// The manifest written.
    pub manifest: BackupManifest,
    /// Where.
    pub location: String,
    /// Milliseconds spent exporting from Vault.
    pub export_ms: u64,
    /// Milliseconds in all.
    pub total_ms: u64,
    /// Backups deleted by retention afterwards.
    pub pruned: Vec<String>,
}

/// How a restore treats the target.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Check and plan only; write nothing.
    pub dry_run: bool,
    /// Overwrite tenants whose stored secret differs from the backup.
    pub force: bool,
    /// Replay journal records up to this time (default: all).
    pub until: Option<DateTime<Utc>>,
    /// Leave the journal out.
    pub skip_journal: bool,
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    pub(crate) fn backup_target(&self) -> Result<&BackupTarget> {
        self.backup_target.as_deref().ok_or_else(|| Error::Config("no backup target configured".into()))
    }

    pub(crate) fn backup_key(&self) -> Result<&Keyring> {
        self.backup_key.as_deref().ok_or_else(|| {
            Error::Config("no backup key: create one with `smtp-vault keys generate --backup` and keep it apart".into())
        })
    }

    /// Exports every tenant as stored, seals it and writes it; then applies retention.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless an operator or the scheduler; Vault, store and key errors.
    pub async fn run_backup(
        &self,
        actor: &Actor,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<BackupReport> {
        authorize(actor, Permission::RunBackups)?;
        let clock = Instant::now();
        let key = self.backup_key()?;
        let target = self.backup_target()?;
        let vault = self.vault()?;
        let created_at = self.now();
        // Sorted, and read in order (`buffered`), so the export is written as it arrives.
        let mut tenants = vault.list_tenants().await?;
        tenants.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let total = tenants.len();
        progress(0, total);
        let mut done = 0;
        let mut export = ExportWriter::new()?;
        let mut reads = futures_util::stream::iter(tenants)
            .map(|tenant| async move { export_tenant(vault, tenant).await })
            .buffered(VAULT_CONCURRENCY);
        while let Some(record) = reads.next().await {
            if let Some(record) = record? {
                export.push(&record)?;
            }
            done += 1;
            if done % 100 == 0 || done == total {
                progress(done, total);
            }
        }
        drop(reads);
        let export_ms = ms(clock);
        let (pending, count) = (export.pending, export.tenants);
        let (compressed, sha256) = export.finish()?;
        let id = created_at.format("%Y-%m-%d").to_string();
        let mut manifest = BackupManifest {
            format: 1,
            id: id.clone(),
            created_at,
            key_id: String::new(),
            nonce: String::new(),
            tenants: count,
            pending,
            sha256,
            size: 0,
            console_version: env!("CARGO_PKG_VERSION").to_owned(),
            mount: vault.mount().to_owned(),
        };
        // The associated data is the manifest without what sealing produces (key id, nonce)
        // and the file size, so every fact a restore relies on is authenticated.
        let sealed = key.seal_blob(PURPOSE_BACKUP, &binding(&manifest)?, &compressed)?;
        drop(compressed);
        manifest.key_id = sealed.key_id;
        manifest.nonce = STANDARD.encode(&sealed.nonce);
        let header = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        let file = frame(&header, &sealed.ciphertext);
        manifest.size = u64::try_from(file.len()).unwrap_or(u64::MAX);
        let location = format!("backups/{id}/vault-snapshot.enc");
        target.put(&location, file).await?;
        let listing = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        target.put(&format!("backups/{id}/manifest.json"), listing).await?;
        let details = json!({"backup_id": id, "tenants": count, "pending": pending, "sha256": manifest.sha256, "target": target.description});
        audit::record(
            &self.db,
            actor,
            &ClientInfo::local(),
            NewEvent::info(EventType::BackupCreated, None, details),
            self.now(),
        )
        .await?;
        let pruned = self.prune_backups(actor).await?;
        // The chain's head goes out with the backup (a failed anchor does not fail the backup).
        if let Err(e) = self.write_audit_anchor().await {
            tracing::warn!(error = %e, "could not write an audit anchor after the backup");
        }
        Ok(BackupReport {
            manifest,
            location: format!("{}/{location}", target.description.trim_end_matches('/')),
            export_ms,
            total_ms: ms(clock),
            pruned,
        })
    }

    /// Backups in the target, newest first (any admin, the operator).
    ///
    /// # Errors
    /// Refusals for others; store errors.
    pub async fn list_backups(&self, actor: &Actor) -> Result<Vec<BackupView>> {
        authorize(actor, Permission::ViewOperations)?;
        self.backups().await
    }

    async fn backups(&self) -> Result<Vec<BackupView>> {
        let target = self.backup_target()?;
        let mut ids = BTreeSet::new();
        for name in target.list("backups").await? {
            if let Some(id) = name.strip_prefix("backups/").and_then(|rest| rest.split('/').next()) {
                ids.insert(id.to_owned());
            }
        }
        let mut entries = Vec::new();
        for id in ids.into_iter().rev() {
            let manifest: Option<BackupManifest> = target
                .get(&format!("backups/{id}/manifest.json"))
                .await?
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            entries.push(BackupView {
                id,
                created_at: manifest.as_ref().map(|m| m.created_at),
                tenants: manifest.as_ref().map(|m| m.tenants),
                size: manifest.as_ref().map(|m| m.size),
                key_id: manifest.map(|m| m.key_id),
            });
        }
        Ok(entries)
    }

    /// Applies retention (30 daily + 12 monthly); also drops journal days older than the
    /// oldest backup kept. Returns the backup ids deleted.
    ///
    /// # Errors
    /// Store errors.
    pub async fn prune_backups(&self, actor: &Actor) -> Result<Vec<String>> {
        authorize(actor, Permission::RunBackups)?;
        let target = self.backup_target()?;
        let entries = self.backups().await?;
        let dates: Vec<NaiveDate> =
            entries.iter().filter_map(|e| NaiveDate::parse_from_str(&e.id, "%Y-%m-%d").ok()).collect();
        let keep = retained(&dates);
        let mut pruned = Vec::new();
        for date in dates.iter().filter(|d| !keep.contains(d)) {
            let id = date.format("%Y-%m-%d").to_string();
            for name in target.list(&format!("backups/{id}")).await? {
                target.delete(&name).await?;
            }
            pruned.push(id);
        }
        if let Some(oldest) = keep.iter().next() {
            let cutoff = oldest.format("%Y-%m-%d").to_string();
            for name in target.list("journal").await? {
                let day = name.strip_prefix("journal/").and_then(|rest| rest.split('/').next()).unwrap_or_default();
                if day < cutoff.as_str() {
                    target.delete(&name).await?;
                }
            }
        }
        if !pruned.is_empty() {
            let details = json!({"deleted": pruned, "kept": keep.len()});
            audit::record(
                &self.db,
                actor,
                &ClientInfo::local(),
                NewEvent::info(EventType::BackupsPruned, None, details),
                self.now(),
            )
            .await?;
        }
        Ok(pruned)
    }
}

async fn export_tenant(vault: &Vault, tenant: TenantId) -> Result<Option<TenantRecord>> {
    let Some(current) = vault.read_credential(&tenant).await? else { return Ok(None) };
    let pending = vault.read_pending(&tenant).await?.map(|(p, _)| p);
    Ok(Some(TenantRecord { tenant_id: tenant, version: current.version, document: current.document, pending }))
}
