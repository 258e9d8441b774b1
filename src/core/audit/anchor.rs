//! Anchors: the chain's length and head MACed onto the backup target, so a cut tail or a moved
//! keyed boundary shows in verification.

use super::ChainKey;
use crate::core::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A checkpoint of the chain kept outside the database: how many events there were, the last
/// one's hash and where keying began, MACed with a key the database never holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Events in the chain when it was written.
    pub seq: i64,
    /// The hash of event `seq`.
    pub hash: String,
    /// The chain's keyed boundary then.
    pub keyed_from: i64,
    /// When it was written (ms).
    pub written_at_ms: i64,
    /// HMAC over the fields above.
    pub mac: String,
}

impl Anchor {
    pub(super) fn signed_bytes(seq: i64, hash: &str, keyed_from: i64, written_at_ms: i64) -> Vec<u8> {
        format!("smtp-vault-anchor-v1|{seq}|{hash}|{keyed_from}|{written_at_ms}").into_bytes()
    }

    /// An anchor for the given head, MACed.
    #[must_use]
    pub fn new(key: &ChainKey, seq: i64, hash: &str, keyed_from: i64, now: DateTime<Utc>) -> Self {
        let written_at_ms = now.timestamp_millis();
        let mac = ChainKey::mac(&key.anchors, &Self::signed_bytes(seq, hash, keyed_from, written_at_ms));
        Self { seq, hash: hash.to_owned(), keyed_from, written_at_ms, mac }
    }

    /// True when the MAC holds.
    #[must_use]
    pub fn authentic(&self, key: &ChainKey) -> bool {
        let expected =
            ChainKey::mac(&key.anchors, &Self::signed_bytes(self.seq, &self.hash, self.keyed_from, self.written_at_ms));
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), self.mac.as_bytes()).into()
    }

    pub(super) fn written_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.written_at_ms).unwrap_or_default()
    }
}

/// Where anchors live on the backup target.
pub(super) const ANCHOR_PREFIX: &str = "audit-anchors";
/// Anchors kept: the newest is the one that counts; a few older ones survive a bad write.
pub(super) const ANCHORS_KEPT: usize = 24;

impl crate::core::Core {
    /// Writes an anchor of the chain's head to the backup target when the chain grew since the
    /// newest one (every few minutes from the monitor, and after each backup). Returns it.
    ///
    /// # Errors
    /// [`Error::AuditChain`] without the keyring; backup-target and database errors.
    pub async fn write_audit_anchor(&self) -> Result<Option<Anchor>> {
        let target = self.backup_target()?;
        let key = self.db().chain_key().ok_or_else(|| Error::AuditChain("no keyring: cannot sign an anchor".into()))?;
        let (seq, hash, keyed_from): (i64, String, i64) =
            sqlx::query_as("SELECT seq, hash, keyed_from FROM audit_head WHERE id = 1")
                .fetch_one(self.db().pool())
                .await?;
        let names = target.list(ANCHOR_PREFIX).await?;
        if names.last().is_some_and(|newest| newest.ends_with(&format!("/{seq:020}.json"))) {
            return Ok(None);
        }
        // SECURITY: an anchor is only ever written on top of the newest one. A chain that
        // contradicts it (cut, rewritten) is not re-anchored, or the console itself would turn
        // the damage into the new truth; the hourly verification reports it.
        if let Some(newest) = self.authentic_anchors(target, key, &names, 1).await?.first() {
            let at: Option<(String,)> = sqlx::query_as("SELECT hash FROM audit_events WHERE seq = $1")
                .bind(newest.seq)
                .fetch_optional(self.db().pool())
                .await?;
            let continues = newest.seq == 0 || at.is_some_and(|(h,)| h == newest.hash);
            if seq < newest.seq || newest.keyed_from != keyed_from || !continues {
                return Err(Error::AuditChain(format!(
                    "the chain does not continue the anchor of {} events; not anchoring it (run `smtp-vault audit verify`)",
                    newest.seq
                )));
            }
        }
        let anchor = Anchor::new(key, seq, &hash, keyed_from, self.now());
        let bytes = serde_json::to_vec(&anchor).map_err(|e| Error::Internal(e.to_string()))?;
        target.put(&format!("{ANCHOR_PREFIX}/{seq:020}.json"), bytes).await?;
        for old in names.iter().rev().skip(ANCHORS_KEPT - 1) {
            target.delete(old).await?;
        }
        Ok(Some(anchor))
    }

    /// The newest authentic anchor on the backup target.
    ///
    /// # Errors
    /// Backup-target errors.
    pub async fn latest_audit_anchor(&self) -> Result<Option<Anchor>> {
        let (Ok(target), Some(key)) = (self.backup_target(), self.db().chain_key()) else { return Ok(None) };
        let names = target.list(ANCHOR_PREFIX).await?;
        Ok(self.authentic_anchors(target, key, &names, 1).await?.into_iter().next())
    }

    /// Every authentic anchor on the backup target, newest (highest) first. One that does not
    /// authenticate is skipped and logged: someone who can write the bucket but not read the
    /// keyring.
    ///
    /// # Errors
    /// Backup-target errors.
    pub async fn audit_anchors(&self) -> Result<Vec<Anchor>> {
        let (Ok(target), Some(key)) = (self.backup_target(), self.db().chain_key()) else { return Ok(Vec::new()) };
        let names = target.list(ANCHOR_PREFIX).await?;
        self.authentic_anchors(target, key, &names, usize::MAX).await
    }

    /// Up to `limit` authentic anchors among the listed `names` (sorted), newest first; only
    /// as many are read as needed.
    pub(super) async fn authentic_anchors(
        &self,
        target: &crate::core::backup::BackupTarget,
        key: &ChainKey,
        names: &[String],
        limit: usize,
    ) -> Result<Vec<Anchor>> {
        let mut anchors = Vec::new();
        for name in names.iter().rev() {
            if anchors.len() >= limit {
                break;
            }
            let Some(bytes) = target.get(name).await? else { continue };
            match serde_json::from_slice::<Anchor>(&bytes) {
                Ok(anchor) if anchor.authentic(key) && name.ends_with(&format!("/{:020}.json", anchor.seq)) => {
                    anchors.push(anchor);
                }
                _ => tracing::warn!(anchor = %name, "an audit anchor on the backup target does not authenticate"),
            }
        }
        Ok(anchors)
    }
}
