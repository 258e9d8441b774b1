//! The sealed file formats: a backup's manifest and records, journal records, the frame around
//! a ciphertext, and which backups retention keeps. Pure: nothing here touches a store.

use super::{KEEP_DAILY, KEEP_MONTHLY, MAGIC, PURPOSE_BACKUP};
use crate::core::crypto::Keyring;
use crate::core::error::{Error, Result};
use crate::core::vault::{CredentialDocument, PendingDocument};
use crate::model::TenantId;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Write};

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
pub(super) struct Export {
    pub(super) tenants: Vec<TenantRecord>,
}

/// Writes an [`Export`] one record at a time, straight into gzip and the digest, so a backup of
/// 100,000 tenants never holds their records or the uncompressed JSON at once (only the
/// compressed bytes). The bytes are exactly `serde_json::to_vec(&Export { .. })`'s.
pub(super) struct ExportWriter {
    gzip: flate2::write::GzEncoder<Vec<u8>>,
    digest: Sha256,
    /// One record's JSON, reused; it holds envelopes only, but is wiped all the same.
    scratch: zeroize::Zeroizing<Vec<u8>>,
    pub(super) tenants: usize,
    pub(super) pending: usize,
}

impl ExportWriter {
    pub(super) fn new() -> Result<Self> {
        let mut writer = Self {
            gzip: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            digest: Sha256::new(),
            scratch: zeroize::Zeroizing::new(Vec::with_capacity(4096)),
            tenants: 0,
            pending: 0,
        };
        writer.put(b"{\"tenants\":[")?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.digest.update(bytes);
        self.gzip.write_all(bytes).map_err(|e| Error::io("compressing", e))
    }

    pub(super) fn push(&mut self, record: &TenantRecord) -> Result<()> {
        if self.tenants > 0 {
            self.put(b",")?;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        serde_json::to_writer(&mut *scratch, record).map_err(|e| Error::Internal(e.to_string()))?;
        let written = self.put(&scratch);
        self.scratch = scratch;
        written?;
        self.tenants += 1;
        self.pending += usize::from(record.pending.is_some());
        Ok(())
    }

    /// The compressed export and the hex SHA-256 of the uncompressed one.
    pub(super) fn finish(mut self) -> Result<(Vec<u8>, String)> {
        self.put(b"]}")?;
        let compressed = self.gzip.finish().map_err(|e| Error::io("compressing", e))?;
        Ok((compressed, hex::encode(self.digest.finalize())))
    }
}

/// One journal entry: a credential or pending record as written.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct JournalHeader {
    pub(super) format: u32,
    pub(super) kind: String,
    pub(super) key_id: String,
    pub(super) nonce: String,
    pub(super) tenant_id: TenantId,
    pub(super) record: String,
    pub(super) version: u64,
    pub(super) at: DateTime<Utc>,
}

/// Journal records are written in format 2: their time is authenticated too, so a bucket
/// writer cannot change the order a replay applies them in (format 1 bound tenant, kind and
/// version only; such records are still read until the next backup supersedes them).
pub(super) const JOURNAL_FORMAT: u32 = 2;

/// The associated data a journal record is sealed with. A format 2 record opened as format 1
/// (its header's format edited) fails authentication, so the downgrade gains nothing.
pub(super) fn journal_aad(format: u32, tenant: &TenantId, record: &str, version: u64, at: DateTime<Utc>) -> String {
    match format {
        1 => format!("journal/{tenant}/{record}/{version}"),
        _ => format!("journal/{format}/{tenant}/{record}/{version}/{}", at.timestamp_micros()),
    }
}

pub(super) fn frame(header: &[u8], ciphertext: &[u8]) -> Vec<u8> {
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
pub(super) fn unframe(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(Error::BackupInvalid("not an smtp-vault backup file"))?;
    let len: [u8; 4] =
        rest.get(..4).and_then(|b| b.try_into().ok()).ok_or(Error::BackupInvalid("file is truncated"))?;
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| Error::BackupInvalid("header too long"))?;
    let header = rest.get(4..4 + len).ok_or(Error::BackupInvalid("file is truncated"))?;
    Ok((header, &rest[4 + len..]))
}

pub(super) fn gunzip(bytes: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
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
pub(super) type Replayed = (TenantRecord, DateTime<Utc>, Option<DateTime<Utc>>);

/// The authenticated part of a manifest.
pub(super) fn binding(manifest: &BackupManifest) -> Result<Vec<u8>> {
    serde_json::to_vec(&json!({
        "format": manifest.format, "id": manifest.id, "created_at": manifest.created_at,
        "tenants": manifest.tenants, "pending": manifest.pending, "sha256": manifest.sha256,
        "console_version": manifest.console_version, "mount": manifest.mount,
    }))
    .map_err(|e| Error::Internal(e.to_string()))
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
    fn the_streamed_export_is_byte_for_byte_the_whole_one() {
        let record = |i: usize, pending: bool| -> TenantRecord {
            serde_json::from_value(json!({
                "tenant_id": format!("t-{i}"), "version": i,
                "document": {"username": "admin@example.com", "password": "v1.x", "smtp_host": "mail.example.com",
                    "smtp_port": 465, "webmail_url": "https://mail.example.com/", "mailu_api_url": "https://mail.example.com/api",
                    "mailu_api_token": "v1.y"},
                "pending": pending.then(|| json!({"rotation_id": "r", "password": "v1.z", "phase": "staged", "attempts": 0,
                    "trigger": "manual", "started_at": "2026-12-07T00:00:00Z"})),
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        for records in [vec![], vec![record(1, false)], vec![record(1, true), record(2, false), record(3, true)]] {
            let mut writer = ExportWriter::new().unwrap_or_else(|e| panic!("{e}"));
            for r in &records {
                writer.push(r).unwrap_or_else(|e| panic!("{e}"));
            }
            let (tenants, pending) = (writer.tenants, writer.pending);
            let (compressed, sha) = writer.finish().unwrap_or_else(|e| panic!("{e}"));
            let whole = serde_json::to_vec(&Export { tenants: records.clone() }).unwrap_or_default();
            assert_eq!(gunzip(&compressed).map(|p| p.to_vec()).ok(), Some(whole.clone()));
            assert_eq!(sha, hex::encode(Sha256::digest(&whole)));
            assert_eq!((tenants, pending), (records.len(), records.iter().filter(|r| r.pending.is_some()).count()));
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
