//! Where backups go: the `object_store` target (`file://…` or `s3://…`) and the backup key,
//! which is kept apart from it.

use crate::core::crypto::Keyring;
use crate::core::error::{Error, Result};
use futures_util::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;

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

pub(super) fn store_error(target: &str, doing: &str, path: &str, error: &object_store::Error) -> Error {
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
