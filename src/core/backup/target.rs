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

/// Where `SMTP_VAULT_BACKUP_TARGET` points: a local directory or an S3 bucket and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupLocation {
    /// `file://DIR` (relative to the working directory unless absolute).
    Dir(std::path::PathBuf),
    /// `s3://BUCKET[/PREFIX]`.
    S3 {
        /// The bucket.
        bucket: String,
        /// Key prefix inside it, without surrounding slashes; may be empty.
        prefix: String,
    },
}

impl BackupLocation {
    /// Parses `file://DIR` or `s3://BUCKET[/PREFIX]`.
    ///
    /// # Errors
    /// [`Error::Config`] for another scheme or an S3 location without a bucket.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(dir) = text.strip_prefix("file://") {
            if dir.is_empty() {
                return Err(Error::Config("SMTP_VAULT_BACKUP_TARGET: file://DIR needs a directory".into()));
            }
            return Ok(Self::Dir(dir.into()));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config("SMTP_VAULT_BACKUP_TARGET: s3://BUCKET[/PREFIX] needs a bucket".into()));
            }
            return Ok(Self::S3 { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned() });
        }
        Err(Error::Config("SMTP_VAULT_BACKUP_TARGET must start with file:// or s3://".into()))
    }
}

impl std::fmt::Display for BackupLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "file://{}", dir.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl BackupTarget {
    /// Opens a directory (created when missing) or an S3 bucket (credentials, region and
    /// endpoint from the usual `AWS_*` variables; `AWS_ENDPOINT` and `AWS_ALLOW_HTTP=true` for
    /// a local S3 server).
    ///
    /// # Errors
    /// [`Error::Config`] for an S3 setup object_store refuses; I/O errors creating the directory.
    pub fn open(location: &BackupLocation) -> Result<Self> {
        let description = location.to_string();
        match location {
            BackupLocation::Dir(root) => {
                std::fs::create_dir_all(root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| Error::Config(format!("backup target {description}: {e}")))?;
                let absolute = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
                Ok(Self { store: Arc::new(store), description, local_root: Some(absolute) })
            }
            BackupLocation::S3 { bucket, prefix } => {
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| Error::Config(format!("backup target {description}: {e}")))?;
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(object_store::prefix::PrefixStore::new(s3, prefix.as_str()))
                };
                Ok(Self { store, description, local_root: None })
            }
        }
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
