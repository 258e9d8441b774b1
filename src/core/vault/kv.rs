//! The KV v2 paths of a tenant (`smtp/{tenant}/admin` and its pending record): reads and
//! check-and-set writes, tolerant of a write whose answer was lost to a failover.

use super::{CredentialDocument, PendingDocument, Vault, VersionedDocument, vault_error};
use crate::core::error::{Error, Result};
use crate::model::TenantId;
use rustify::errors::ClientError as RestError;
use serde::Serialize;
use std::time::Duration;
use vaultrs::api::kv2::requests::{ReadSecretRequest, SetSecretRequestOptions};
use vaultrs::error::ClientError;

/// True for both 404 shapes: a never-written path (`APIError{404}`) and a deleted or destroyed
/// version (a bare `ServerResponseError{404}` with metadata in the body).
pub(super) fn is_absent(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::APIError { code: 404, .. }
            | ClientError::RestClientError { source: RestError::ServerResponseError { code: 404, .. } }
    )
}

/// Vault's only signal of a mount still upgrading from KV v1 to v2 (openbao.md): its message.
pub(super) const MOUNT_UPGRADING: &str = "Upgrading from non-versioned to versioned";

/// Vault's answer to a write right after a KV v1→v2 upgrade started (a fresh mount).
pub(super) fn is_mount_upgrading(e: &ClientError) -> bool {
    // No typed signal exists for this state; Vault's message is the only one (openbao.md).
    matches!(e, ClientError::APIError { code: 400, errors } if errors.iter().any(|m| m.contains(MOUNT_UPGRADING)))
}

pub(super) fn is_cas_mismatch(e: &ClientError) -> bool {
    // Vault reports a stale check-and-set only through this message.
    matches!(e, ClientError::APIError { code: 400, errors } if errors.iter().any(|m| m.contains("check-and-set parameter")))
}

impl Vault {
    pub(super) fn path(tenant: &TenantId) -> String {
        format!("{tenant}/admin")
    }

    /// Reads a tenant's current document, or `None` if it has none (never written, deleted or
    /// destroyed).
    ///
    /// # Errors
    /// [`Error::Vault`], [`Error::VaultSealed`], or [`Error::MalformedSecret`] when the data is
    /// not a credential document.
    pub async fn read_credential(&self, tenant: &TenantId) -> Result<Option<VersionedDocument>> {
        Ok(self.read_doc(&Self::path(tenant)).await?.map(|(document, version)| VersionedDocument { document, version }))
    }

    /// Reads the in-flight rotation of a tenant, if any, with its KV version.
    ///
    /// # Errors
    /// Vault errors, [`Error::MalformedSecret`].
    pub async fn read_pending(&self, tenant: &TenantId) -> Result<Option<(PendingDocument, u64)>> {
        self.read_doc(&Self::pending_path(tenant)).await
    }

    /// Writes the in-flight rotation with check-and-set (0 = must not exist); returns the version.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another writer changed it first.
    pub async fn write_pending(&self, tenant: &TenantId, pending: &PendingDocument, cas: u64) -> Result<u64> {
        self.write_doc(&Self::pending_path(tenant), pending, cas).await
    }

    /// Removes the in-flight rotation record entirely (all its versions).
    ///
    /// # Errors
    /// Vault errors (an absent record is fine).
    pub async fn delete_pending(&self, tenant: &TenantId) -> Result<()> {
        let path = Self::pending_path(tenant);
        let mount = self.settings.mount.as_str();
        match self
            .on_cluster(|node| {
                let path = path.as_str();
                async move { vaultrs::kv2::delete_metadata(node.client.as_ref(), mount, path).await }
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(vault_error("dropping pending rotation", e)),
        }
    }

    pub(super) fn pending_path(tenant: &TenantId) -> String {
        format!("{tenant}/pending")
    }

    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "vault_read", skip_all)]
    pub(super) async fn read_doc<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<(T, u64)>> {
        let read = self
            .on_cluster(|node| {
                let request =
                    ReadSecretRequest { mount: self.settings.mount.clone(), path: path.to_owned(), version: None };
                async move { vaultrs::api::exec_with_result(node.client.as_ref(), request).await }
            })
            .await;
        match read {
            Ok(response) => {
                let document = serde_json::from_value(response.data).map_err(|_| Error::MalformedSecret {
                    path: format!("{}/{path}", self.settings.mount),
                    problem: "fields missing or of the wrong type",
                })?;
                Ok(Some((document, response.metadata.version)))
            }
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(vault_error("reading secret", e)),
        }
    }

    /// One earlier version of a tenant's document, or `None` when it was deleted, destroyed or
    /// never written.
    ///
    /// # Errors
    /// Vault errors, [`Error::MalformedSecret`].
    pub async fn read_credential_version(&self, tenant: &TenantId, version: u64) -> Result<Option<CredentialDocument>> {
        let path = Self::path(tenant);
        let mount = self.settings.mount.as_str();
        let read = self
            .on_cluster(|node| {
                let path = path.as_str();
                async move {
                    vaultrs::kv2::read_version::<serde_json::Value>(node.client.as_ref(), mount, path, version).await
                }
            })
            .await;
        match read {
            Ok(data) => serde_json::from_value(data).map(Some).map_err(|_| Error::MalformedSecret {
                path: format!("{mount}/{path} version {version}"),
                problem: "fields missing or of the wrong type",
            }),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(vault_error("reading an earlier version", e)),
        }
    }

    /// When Vault wrote `version` of a tenant's document (`None`: no such version on record).
    ///
    /// # Errors
    /// Vault errors.
    pub async fn version_written_at(
        &self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let path = Self::path(tenant);
        let mount = self.settings.mount.as_str();
        let read = self
            .on_cluster(|node| {
                let path = path.as_str();
                async move { vaultrs::kv2::read_metadata(node.client.as_ref(), mount, path).await }
            })
            .await;
        match read {
            Ok(meta) => Ok(meta
                .versions
                .get(&version.to_string())
                .and_then(|v| chrono::DateTime::parse_from_rfc3339(&v.created_time).ok())
                .map(|t| t.with_timezone(&chrono::Utc))),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(vault_error("reading credential metadata", e)),
        }
    }

    /// The current KV version from metadata (0 when the path was never written).
    ///
    /// # Errors
    /// Vault errors.
    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "vault_metadata", skip_all)]
    pub async fn metadata_version(&self, tenant: &TenantId) -> Result<u64> {
        let path = Self::path(tenant);
        let mount = self.settings.mount.as_str();
        let read = self
            .on_cluster(|node| {
                let path = path.as_str();
                async move { vaultrs::kv2::read_metadata(node.client.as_ref(), mount, path).await }
            })
            .await;
        match read {
            Ok(meta) => Ok(meta.current_version),
            Err(e) if is_absent(&e) => Ok(0),
            Err(e) => Err(vault_error("reading credential metadata", e)),
        }
    }

    /// Writes a tenant's document with check-and-set: `cas` is the version the caller read
    /// (0 = the path must not exist yet). Returns the new version.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another writer got there first; Vault errors otherwise.
    pub async fn write_credential(&self, tenant: &TenantId, document: &CredentialDocument, cas: u64) -> Result<u64> {
        self.write_doc(&Self::path(tenant), document, cas).await
    }

    // A debug span (off at the default `info`): the benchmark times the request's parts by it.
    #[tracing::instrument(level = "debug", name = "vault_write", skip_all)]
    pub(super) async fn write_doc<T: Serialize + Sync>(&self, path: &str, document: &T, cas: u64) -> Result<u64> {
        let cas32 = u32::try_from(cas).map_err(|_| Error::Internal("KV version beyond u32".into()))?;
        let mount = self.settings.mount.as_str();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (written, resent) = self
                .on_cluster_resending(|node| async move {
                    let options = SetSecretRequestOptions { cas: cas32 };
                    vaultrs::kv2::set_with_options(node.client.as_ref(), mount, path, document, options).await
                })
                .await;
            match written {
                Ok(meta) => return Ok(meta.version),
                // A resent write can meet its own first send, which landed before the node went
                // away: that is success, not a conflict.
                Err(e) if is_cas_mismatch(&e) => {
                    return if resent && self.holds_version(path, document, cas + 1).await? {
                        tracing::info!(path, "a resent vault write had landed before the failover");
                        Ok(cas + 1)
                    } else {
                        Err(Error::Conflict)
                    };
                }
                Err(e) if is_mount_upgrading(&e) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(vault_error("writing credential", e)),
            }
        }
    }

    /// Tenant ids with a document under the mount. Entries that are not valid tenant ids are
    /// skipped with a warning (someone wrote there by hand).
    ///
    /// # Errors
    /// Vault errors.
    pub async fn list_tenants(&self) -> Result<Vec<TenantId>> {
        let mount = self.settings.mount.as_str();
        let listed =
            self.on_cluster(|node| async move { vaultrs::kv2::list(node.client.as_ref(), mount, "").await }).await;
        let keys = match listed {
            Ok(keys) => keys,
            Err(e) if is_absent(&e) => Vec::new(),
            Err(e) => return Err(vault_error("listing tenants", e)),
        };
        Ok(keys
            .iter()
            .filter_map(|k| {
                let id = TenantId::parse(k.trim_end_matches('/')).ok();
                if id.is_none() {
                    tracing::warn!(key = %k, "skipping a Vault entry that is not a tenant id");
                }
                id
            })
            .collect())
    }

    /// Whether `version` of `path` holds exactly `document` (envelopes carry random nonces, so
    /// only the same write produces the same data).
    pub(super) async fn holds_version<T: Serialize + Sync>(
        &self,
        path: &str,
        document: &T,
        version: u64,
    ) -> Result<bool> {
        let expected = serde_json::to_value(document).map_err(|e| Error::Internal(format!("document: {e}")))?;
        let mount = self.settings.mount.as_str();
        let read = self
            .on_cluster(|node| async move {
                vaultrs::kv2::read_version::<serde_json::Value>(node.client.as_ref(), mount, path, version).await
            })
            .await;
        match read {
            Ok(found) => Ok(found == expected),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(vault_error("reading back a resent write", e)),
        }
    }
}
