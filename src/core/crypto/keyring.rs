//! The keyring file: master keys by id, generated and added (never overwritten), loaded and
//! saved with mode 0600, zeroized on drop.

use super::{CryptoError, Keyring, MasterKey, random_bytes};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// Keyring file contents (JSON, mode 0600).
#[derive(Serialize, Deserialize)]
pub(super) struct KeyringFile {
    version: u32,
    active: String,
    keys: Vec<KeyringFileEntry>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct KeyringFileEntry {
    id: String,
    created_at: DateTime<Utc>,
    /// base64 of the 32 key bytes.
    key: String,
}

impl Drop for KeyringFileEntry {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// Problems with the keyring file, each with the fix in its message.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file does not exist.
    #[error("keyring {0} does not exist; create it with `smtp-vault keys generate`")]
    Missing(String),
    /// `keys generate` refuses to replace a keyring.
    #[error(
        "keyring {0} already exists and is never overwritten (losing it loses every credential); use `keys generate --add` to add a new active key"
    )]
    Exists(String),
    /// Group or others can read the file.
    #[error("keyring {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    Permissions {
        /// File path.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// The contents are not a keyring.
    #[error("keyring {path} is invalid: {problem}")]
    Invalid {
        /// File path.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing failed.
    #[error("keyring {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Randomness failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

pub(super) fn valid_key_id(id: &str) -> bool {
    // Dots separate envelope parts, so ids are short lower-case alphanumerics.
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

pub(super) fn write_private(path: &Path, bytes: &[u8], truncate: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if truncate {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

impl Keyring {
    /// A keyring with one fresh random key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn generate(now: DateTime<Utc>) -> Result<Self, CryptoError> {
        let mut ring = Keyring { keys: Vec::new(), active: 0 };
        ring.add_key(now)?;
        Ok(ring)
    }

    /// Adds a new random key and makes it active; returns its id.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn add_key(&mut self, now: DateTime<Utc>) -> Result<String, CryptoError> {
        let suffix = random_bytes::<4>()?;
        let id = format!("k{}{}", now.format("%Y%m%d"), hex::encode(suffix.as_ref()));
        self.keys.push(MasterKey { id: id.clone(), created_at: now, key: random_bytes::<32>()? });
        self.active = self.keys.len() - 1;
        Ok(id)
    }

    /// Id of the key new envelopes are sealed with.
    #[must_use]
    pub fn active_key_id(&self) -> &str {
        self.keys.get(self.active).map_or("", |k| k.id.as_str())
    }

    /// Ids of every key, oldest first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// Loads a keyring file, refusing one that group or others can read.
    ///
    /// # Errors
    /// [`KeyringError`] naming the path and the fix.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let shown = path.display().to_string();
        let io = |source: std::io::Error| KeyringError::Io { path: shown.clone(), source };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyringError::Missing(shown));
            }
            Err(e) => return Err(io(e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            // SECURITY: a keyring others can read is as good as published; refuse to run on it.
            if mode & 0o077 != 0 {
                return Err(KeyringError::Permissions { path: shown, mode });
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let invalid = |problem: String| KeyringError::Invalid { path: shown.clone(), problem };
        let file: KeyringFile = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("not keyring JSON ({})", format!("{:?}", e.classify()).to_lowercase())))?;
        if file.version != 1 {
            return Err(invalid(format!("unsupported version {}", file.version)));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in &file.keys {
            if !valid_key_id(&entry.id) {
                return Err(invalid("a key id is not 1-32 characters of a-z and 0-9".into()));
            }
            if keys.iter().any(|k: &MasterKey| k.id == entry.id) {
                return Err(invalid(format!("key id `{}` appears twice", entry.id)));
            }
            let raw = Zeroizing::new(
                STANDARD
                    .decode(entry.key.as_bytes())
                    .map_err(|_| invalid(format!("key `{}` is not base64", entry.id)))?,
            );
            let key: [u8; 32] =
                raw.as_slice().try_into().map_err(|_| invalid(format!("key `{}` is not 32 bytes", entry.id)))?;
            keys.push(MasterKey { id: entry.id.clone(), created_at: entry.created_at, key: Zeroizing::new(key) });
        }
        let active = keys
            .iter()
            .position(|k| k.id == file.active)
            .ok_or_else(|| invalid(format!("active key `{}` is not in the file", file.active)))?;
        Ok(Keyring { keys, active })
    }

    /// Writes the keyring to `path` with mode 0600. With `replace` false the file must not
    /// exist yet (creation is atomic: `create_new`).
    ///
    /// # Errors
    /// [`KeyringError::Exists`] or an I/O error.
    pub fn save(&self, path: &Path, replace: bool) -> Result<(), KeyringError> {
        let shown = path.display().to_string();
        let io = |source: std::io::Error| KeyringError::Io { path: shown.clone(), source };
        let file = KeyringFile {
            version: 1,
            active: self.active_key_id().to_owned(),
            keys: self
                .keys
                .iter()
                .map(|k| KeyringFileEntry {
                    id: k.id.clone(),
                    created_at: k.created_at,
                    key: STANDARD.encode(k.key.as_ref()),
                })
                .collect(),
        };
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&file)
                .map_err(|e| KeyringError::Invalid { path: shown.clone(), problem: e.to_string() })?,
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if replace {
            // Write beside, then rename: a crash never leaves a half-written keyring. The file
            // beside is made anew (mode 0600, never following a link): one left behind, or
            // planted, would keep its own mode through a truncating open.
            let tmp = path.with_extension("tmp");
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
            write_private(&tmp, text.as_bytes(), false).map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)
        } else {
            match write_private(path, text.as_bytes(), false) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(KeyringError::Exists(shown)),
                other => other.map_err(io),
            }
        }
    }
}
