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

use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::access::{authorize, authorize_ceremony};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::crypto::{Keyring, SecretField};
use crate::core::error::{Error, Result};
use crate::core::vault::{CredentialDocument, PendingDocument, Vault};
use crate::model::Permission;
use crate::model::TenantId;
pub use crate::model::{BackupView, RestoreReport};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

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

/// Where backups go.
pub struct BackupTarget {
    store: Arc<dyn ObjectStore>,
    /// `file:///…` or `s3://bucket/prefix`, for messages.
    pub description: String,
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for BackupTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupTarget").field("target", &self.description).finish()
    }
}

impl BackupTarget {
    /// Opens `file://DIR` (created when missing; relative to the working directory) or
    /// `s3://BUCKET[/PREFIX]` (credentials, region and endpoint from the usual `AWS_*`
    /// variables; `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for a local S3 server).
    ///
    /// # Errors
    /// [`Error::Config`] for another scheme or an S3 setup object_store refuses.
    pub fn open(url: &str) -> Result<Self> {
        if let Some(dir) = url.strip_prefix("file://") {
            let root = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
                .map_err(|e| Error::Config(format!("backup target {url}: {e}")))?;
            let absolute = std::fs::canonicalize(&root).unwrap_or(root);
            return Ok(Self { store: Arc::new(store), description: url.to_owned(), local_root: Some(absolute) });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config("SMTP_VAULT_BACKUP_TARGET: s3://BUCKET[/PREFIX] needs a bucket".into()));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| Error::Config(format!("backup target {url}: {e}")))?;
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            };
            return Ok(Self { store, description: url.to_owned(), local_root: None });
        }
        Err(Error::Config("SMTP_VAULT_BACKUP_TARGET must start with file:// or s3://".into()))
    }

    /// Refuses a backup key stored under a local backup target (ARCHITECTURE §3.2).
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn check_key_apart(&self, key_path: &std::path::Path) -> Result<()> {
        let (Some(root), Some(parent)) = (&self.local_root, key_path.parent()) else { return Ok(()) };
        let dir = std::fs::canonicalize(if parent.as_os_str().is_empty() { std::path::Path::new(".") } else { parent });
        if dir.is_ok_and(|d| d.starts_with(root)) {
            return Err(Error::Config(format!(
                "the backup key {} lies inside the backup target {}: keep it apart, or whoever holds the backups can read them",
                key_path.display(),
                self.description
            )));
        }
        Ok(())
    }

    pub(crate) async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.store
            .put(&StorePath::from(path), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| store_error(&self.description, "writing", path, &e))
    }

    pub(crate) async fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.store.get(&StorePath::from(path)).await {
            Ok(found) => found
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| store_error(&self.description, "reading", path, &e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(&self.description, "reading", path, &e)),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = StorePath::from(prefix);
        let mut names: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| store_error(&self.description, "listing", prefix.as_ref(), &e))?;
        names.sort();
        Ok(names)
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<()> {
        match self.store.delete(&StorePath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(&self.description, "deleting", path, &e)),
        }
    }
}

fn store_error(target: &str, doing: &str, path: &str, error: &object_store::Error) -> Error {
    Error::Backup(format!("{doing} {path} in {target}: {error}"))
}

/// The backup key: a keyring file of its own.
///
/// # Errors
/// [`Error::Config`] when it cannot be read.
pub fn load_backup_key(path: &std::path::Path) -> Result<Keyring> {
    Keyring::load(path).map_err(|e| {
        Error::Config(format!(
            "backup key {}: {e} (create it with `smtp-vault keys generate --backup`)",
            path.display()
        ))
    })
}

/// What a backup says about itself, in the clear (no secrets) and authenticated as the
/// ciphertext's associated data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Format version.
    pub format: u32,
    /// The backup's id (its UTC date).
    pub id: String,
    /// When the export began.
    pub created_at: DateTime<Utc>,
    /// Backup key id.
    pub key_id: String,
    /// Nonce (base64).
    pub nonce: String,
    /// Tenants in it.
    pub tenants: usize,
    /// In-flight rotations in it.
    pub pending: usize,
    /// SHA-256 of the uncompressed export.
    pub sha256: String,
    /// Bytes of the sealed file.
    pub size: u64,
    /// The console that wrote it.
    pub console_version: String,
    /// KV mount it came from.
    pub mount: String,
}

/// One tenant in a backup or journal replay.
#[derive(Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Tenant.
    pub tenant_id: TenantId,
    /// KV version in the source Vault.
    pub version: u64,
    /// The document as stored (envelopes).
    pub document: CredentialDocument,
    /// The in-flight rotation, if any.
    pub pending: Option<PendingDocument>,
}

#[derive(Serialize, Deserialize)]
struct Export {
    tenants: Vec<TenantRecord>,
}

/// One journal entry: a credential or pending record as written.
#[derive(Clone, Serialize, Deserialize)]
struct JournalHeader {
    format: u32,
    kind: String,
    key_id: String,
    nonce: String,
    tenant_id: TenantId,
    record: String,
    version: u64,
    at: DateTime<Utc>,
}

/// Journal records are written in format 2: their time is authenticated too, so a bucket
/// writer cannot change the order a replay applies them in (format 1 bound tenant, kind and
/// version only; such records are still read until the next backup supersedes them).
const JOURNAL_FORMAT: u32 = 2;

/// The associated data a journal record is sealed with. A format 2 record opened as format 1
/// (its header's format edited) fails authentication, so the downgrade gains nothing.
fn journal_aad(format: u32, tenant: &TenantId, record: &str, version: u64, at: DateTime<Utc>) -> String {
    match format {
        1 => format!("journal/{tenant}/{record}/{version}"),
        _ => format!("journal/{format}/{tenant}/{record}/{version}/{}", at.timestamp_micros()),
    }
}

fn frame(header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(header.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(ciphertext);
    out
}

/// Splits a sealed file into its header bytes and ciphertext.
///
/// # Errors
/// [`Error::BackupInvalid`] for a file that is not one, or is cut short.
fn unframe(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(Error::BackupInvalid("not an smtp-vault backup file"))?;
    let len: [u8; 4] =
        rest.get(..4).and_then(|b| b.try_into().ok()).ok_or(Error::BackupInvalid("file is truncated"))?;
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| Error::BackupInvalid("header too long"))?;
    let header = rest.get(4..4 + len).ok_or(Error::BackupInvalid("file is truncated"))?;
    Ok((header, &rest[4 + len..]))
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).map_err(|e| Error::io("compressing", e))?;
    encoder.finish().map_err(|e| Error::io("compressing", e))
}

fn gunzip(bytes: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut out = zeroize::Zeroizing::new(Vec::new());
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|_| Error::BackupInvalid("the decrypted export does not decompress"))?;
    Ok(out)
}

/// Opens a sealed backup file: parse, authenticate and decrypt, decompress, check the digest.
/// Nothing is trusted before all of that passes.
///
/// # Errors
/// [`Error::BackupInvalid`] naming the problem: not a backup, truncated, sealed with another
/// key, altered, or a digest mismatch.
pub fn open_backup(key: &Keyring, bytes: &[u8]) -> Result<(BackupManifest, Vec<TenantRecord>)> {
    let (header, ciphertext) = unframe(bytes)?;
    let manifest: BackupManifest =
        serde_json::from_slice(header).map_err(|_| Error::BackupInvalid("the manifest is damaged"))?;
    let nonce = STANDARD.decode(&manifest.nonce).map_err(|_| Error::BackupInvalid("the manifest is damaged"))?;
    if !key.key_ids().any(|id| id == manifest.key_id) {
        return Err(Error::BackupInvalid("sealed with a backup key this console does not hold (wrong backup key)"));
    }
    let compressed =
        key.open_blob(PURPOSE_BACKUP, &binding(&manifest)?, &manifest.key_id, &nonce, ciphertext).map_err(|_| {
            Error::BackupInvalid("failed authentication: the file is truncated, altered, or the backup key is wrong")
        })?;
    let plain = gunzip(&compressed)?;
    if hex::encode(Sha256::digest(plain.as_slice())) != manifest.sha256 {
        return Err(Error::BackupInvalid("the export's SHA-256 does not match the manifest"));
    }
    let export: Export =
        serde_json::from_slice(&plain).map_err(|_| Error::BackupInvalid("the export is not in the expected format"))?;
    if export.tenants.len() != manifest.tenants {
        return Err(Error::BackupInvalid("the export's tenant count does not match the manifest"));
    }
    Ok((manifest, export.tenants))
}

/// The backups to keep among `dates`: the newest [`KEEP_DAILY`], and for each of the
/// [`KEEP_MONTHLY`] most recent months before those, that month's newest backup.
#[must_use]
pub fn retained(dates: &[NaiveDate]) -> BTreeSet<NaiveDate> {
    let newest_first: Vec<NaiveDate> = dates.iter().copied().collect::<BTreeSet<_>>().into_iter().rev().collect();
    let mut keep: BTreeSet<NaiveDate> = newest_first.iter().take(KEEP_DAILY).copied().collect();
    let mut months = BTreeSet::new();
    for date in newest_first.iter().skip(KEEP_DAILY) {
        if months.len() == KEEP_MONTHLY {
            break;
        }
        if months.insert((date.year(), date.month())) {
            keep.insert(*date);
        }
    }
    keep
}

/// A tenant during replay: its record, when its document was written, and when its pending
/// rotation was (if any).
type Replayed = (TenantRecord, DateTime<Utc>, Option<DateTime<Utc>>);

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
        let tenants = vault.list_tenants().await?;
        let total = tenants.len();
        progress(0, total);
        let mut done = 0;
        let mut records = Vec::with_capacity(total);
        let mut reads = futures_util::stream::iter(tenants)
            .map(|tenant| async move { export_tenant(vault, tenant).await })
            .buffer_unordered(VAULT_CONCURRENCY);
        while let Some(record) = reads.next().await {
            if let Some(record) = record? {
                records.push(record);
            }
            done += 1;
            if done % 100 == 0 || done == total {
                progress(done, total);
            }
        }
        drop(reads);
        records.sort_by(|a, b| a.tenant_id.as_str().cmp(b.tenant_id.as_str()));
        let export_ms = ms(clock);
        let pending = records.iter().filter(|r| r.pending.is_some()).count();
        let count = records.len();
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&Export { tenants: records }).map_err(|e| Error::Internal(e.to_string()))?,
        );
        let compressed = gzip(&plain)?;
        let id = created_at.format("%Y-%m-%d").to_string();
        let mut manifest = BackupManifest {
            format: 1,
            id: id.clone(),
            created_at,
            key_id: String::new(),
            nonce: String::new(),
            tenants: count,
            pending,
            sha256: hex::encode(Sha256::digest(plain.as_slice())),
            size: 0,
            console_version: env!("CARGO_PKG_VERSION").to_owned(),
            mount: vault.mount().to_owned(),
        };
        // The associated data is the manifest without what sealing produces (key id, nonce)
        // and the file size, so every fact a restore relies on is authenticated.
        let sealed = key.seal_blob(PURPOSE_BACKUP, &binding(&manifest)?, &compressed)?;
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
                kind: "journal_write_failed",
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
    async fn read_journal(
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

    async fn run_restore(
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
                let destination = (destination, d.tls());
                (tenant, destination, restore_tenant(vault, keyring, record, options).await)
            })
            .buffer_unordered(VAULT_CONCURRENCY);
        let mut versions = Vec::new();
        let mut done = 0;
        while let Some((tenant, (destination, smtp_tls), outcome)) = outcomes.next().await {
            match outcome {
                Ok(TenantOutcome::Written(version)) => {
                    report.written += 1;
                    report.verified += usize::from(!options.dry_run);
                    versions.push(Restored { tenant, version, destination, smtp_tls });
                }
                Ok(TenantOutcome::Unchanged(version)) => {
                    report.unchanged += 1;
                    report.verified += 1;
                    versions.push(Restored { tenant, version, destination, smtp_tls });
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
            let recorded: Option<(String, String, i64)> =
                sqlx::query_as("SELECT mailu_api_url, smtp_host, smtp_port FROM tenants WHERE tenant_id = $1")
                    .bind(&restored.tenant)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((from, from_host, from_port)) = recorded.filter(|r| (&r.0, &r.1, r.2) != (url, host, *port)) {
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
            sqlx::query(
                "UPDATE tenants SET version = $1, mailu_api_url = $2, smtp_host = $3, smtp_port = $4, updated_at_ms = $5, \
                 smtp_tls = $7 WHERE tenant_id = $6",
            )
            .bind(i64::try_from(restored.version).unwrap_or(i64::MAX))
            .bind(url)
            .bind(host)
            .bind(port)
            .bind(now.timestamp_millis())
            .bind(&restored.tenant)
            .bind(restored.smtp_tls.as_str())
            .execute(&mut *tx)
            .await?;
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

/// A tenant a restore wrote (or found unchanged): its new KV version and the mail server its
/// restored document names (Mailu API URL, SMTP host and port).
pub(crate) struct Restored {
    tenant: String,
    version: u64,
    destination: (String, String, i64),
    smtp_tls: crate::model::SmtpTls,
}

/// The authenticated part of a manifest.
fn binding(manifest: &BackupManifest) -> Result<Vec<u8>> {
    serde_json::to_vec(&json!({
        "format": manifest.format, "id": manifest.id, "created_at": manifest.created_at,
        "tenants": manifest.tenants, "pending": manifest.pending, "sha256": manifest.sha256,
        "console_version": manifest.console_version, "mount": manifest.mount,
    }))
    .map_err(|e| Error::Internal(e.to_string()))
}

async fn export_tenant(vault: &Vault, tenant: TenantId) -> Result<Option<TenantRecord>> {
    let Some(current) = vault.read_credential(&tenant).await? else { return Ok(None) };
    let pending = vault.read_pending(&tenant).await?.map(|(p, _)| p);
    Ok(Some(TenantRecord { tenant_id: tenant, version: current.version, document: current.document, pending }))
}

enum TenantOutcome {
    Written(u64),
    Unchanged(u64),
    Skipped(String),
}

async fn restore_tenant(
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

/// The clear header of a sealed raft snapshot.
#[derive(Serialize, Deserialize)]
struct RaftHeader {
    format: u32,
    kind: String,
    id: String,
    key_id: String,
    nonce: String,
    created_at: DateTime<Utc>,
    bytes: usize,
}

impl Core {
    /// Adds Vault's raft snapshot to backup `backup_id`, sealed with the backup key. It is
    /// restorable only with the original cluster's unseal keys (docs/disaster-recovery.md).
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless an operator; Vault errors (not raft, no permission).
    pub async fn save_raft_snapshot(
        &self,
        actor: &Actor,
        backup_id: &str,
        token: Option<&secrecy::SecretString>,
    ) -> Result<usize> {
        authorize(actor, Permission::HostMaintenance)?;
        let snapshot = zeroize::Zeroizing::new(self.vault()?.raft_snapshot(token).await?);
        let aad = format!("raft/{backup_id}");
        let sealed = self.backup_key()?.seal_blob(PURPOSE_RAFT, aad.as_bytes(), &snapshot)?;
        let header = RaftHeader {
            format: 1,
            kind: "raft".into(),
            id: backup_id.to_owned(),
            key_id: sealed.key_id,
            nonce: STANDARD.encode(&sealed.nonce),
            created_at: self.now(),
            bytes: snapshot.len(),
        };
        let header = serde_json::to_vec(&header).map_err(|e| Error::Internal(e.to_string()))?;
        self.backup_target()?
            .put(&format!("backups/{backup_id}/raft.snap.enc"), frame(&header, &sealed.ciphertext))
            .await?;
        let details = json!({"backup_id": backup_id, "raft_snapshot_bytes": snapshot.len()});
        audit::record(
            &self.db,
            actor,
            &ClientInfo::local(),
            NewEvent::info(EventType::BackupCreated, None, details),
            self.now(),
        )
        .await?;
        Ok(snapshot.len())
    }

    /// Opens the raft snapshot of backup `backup_id` for `bao operator raft snapshot restore`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the backup has none; [`Error::BackupInvalid`] when it does not
    /// authenticate.
    pub async fn export_raft_snapshot(&self, actor: &Actor, backup_id: &str) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        authorize(actor, Permission::HostMaintenance)?;
        let bytes = self
            .backup_target()?
            .get(&format!("backups/{backup_id}/raft.snap.enc"))
            .await?
            .ok_or(Error::NotFound("raft snapshot in that backup"))?;
        let (header, ciphertext) = unframe(&bytes)?;
        let header: RaftHeader = serde_json::from_slice(header)
            .map_err(|_| Error::BackupInvalid("the raft snapshot's header is damaged"))?;
        let nonce = STANDARD
            .decode(&header.nonce)
            .map_err(|_| Error::BackupInvalid("the raft snapshot's header is damaged"))?;
        let aad = format!("raft/{backup_id}");
        self.backup_key()?.open_blob(PURPOSE_RAFT, aad.as_bytes(), &header.key_id, &nonce, ciphertext).map_err(|_| {
            Error::BackupInvalid("the raft snapshot failed authentication (altered, or another backup key)")
        })
    }
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
        session: &crate::core::passkeys::SessionBinding,
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
        let context = json!({"backup_id": backup_id, "dry_run": dry_run, "force": force});
        self.begin_reauth(actor, session, crate::core::passkeys::Purpose::Restore, None, context).await
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
        session: &crate::core::passkeys::SessionBinding,
        client: &ClientInfo,
        credential_json: &str,
    ) -> Result<crate::model::RestoreStatusView> {
        authorize_ceremony(actor, Permission::RestoreBackup)?;
        let purpose = crate::core::passkeys::Purpose::Restore;
        let (_, context) = self.finish_step_up(actor, session, client, purpose, None, credential_json).await?;
        let backup_id = context["backup_id"].as_str().unwrap_or_default().to_owned();
        let options = RestoreOptions {
            dry_run: context["dry_run"].as_bool().unwrap_or(true),
            force: context["force"].as_bool().unwrap_or(false),
            ..RestoreOptions::default()
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_30_daily_and_12_monthly_over_400_days() {
        let start = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap_or_default();
        let mut kept: BTreeSet<NaiveDate> = BTreeSet::new();
        for day in 0..400 {
            let today = start + chrono::Duration::days(day);
            kept.insert(today);
            kept = retained(&kept.iter().copied().collect::<Vec<_>>());
        }
        let last = start + chrono::Duration::days(399);
        assert_eq!(kept.len(), KEEP_DAILY + KEEP_MONTHLY);
        let daily: Vec<NaiveDate> = (0..30).map(|d| last - chrono::Duration::days(d)).collect();
        assert!(daily.iter().all(|d| kept.contains(d)));
        let older: Vec<&NaiveDate> = kept.iter().filter(|d| !daily.contains(d)).collect();
        let months: BTreeSet<(i32, u32)> = older.iter().map(|d| (d.year(), d.month())).collect();
        assert_eq!(months.len(), 12, "one per month");
        for d in &older {
            // Each monthly backup is the last one of its month (or the last before the daily window).
            let next = **d + chrono::Duration::days(1);
            assert!(next.month() != d.month() || daily.contains(&next) || next > last, "{d}");
        }
    }

    #[test]
    fn frames_reject_garbage_and_truncation() {
        assert!(matches!(unframe(b"hello"), Err(Error::BackupInvalid(_))));
        let framed = frame(b"{}", b"body");
        assert_eq!(
            unframe(&framed).map(|(h, b)| (h.to_vec(), b.to_vec())).ok(),
            Some((b"{}".to_vec(), b"body".to_vec()))
        );
        assert!(matches!(unframe(&framed[..8]), Err(Error::BackupInvalid(_))));
    }
}
