//! Vault Raft snapshots, sealed with the backup key and kept beside the logical backups.

use super::{PURPOSE_RAFT, frame, unframe};
use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::audit::{self, EventType, NewEvent};
use crate::core::error::{Error, Result};
use crate::model::Permission;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The clear header of a sealed raft snapshot.
#[derive(Serialize, Deserialize)]
pub(super) struct RaftHeader {
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
