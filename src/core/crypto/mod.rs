//! The crypto envelope (ARCHITECTURE §3.2): the keyring file, per-tenant key derivation and the
//! `v1.{key_id}.{nonce}.{ciphertext}` text that is the only form a secret takes in Vault.
//!
//! Invariants: a fresh random 96-bit nonce per encryption; AAD binds every ciphertext to its
//! tenant and field; key material is zeroized on drop and never printed. Nothing here touches
//! Vault or the database.

mod keyring;

use crate::model::TenantId;
use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hkdf::Hkdf;
pub use keyring::KeyringError;
use keyring::valid_key_id;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// Version prefix of the envelope text.
pub const ENVELOPE_VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Which secret field a ciphertext belongs to; part of the AAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretField {
    /// The SMTP admin password.
    Password,
    /// The Mailu admin API token.
    MailuApiToken,
}

impl SecretField {
    /// Every secret field.
    pub const ALL: [SecretField; 2] = [SecretField::Password, SecretField::MailuApiToken];

    /// The Vault field name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SecretField::Password => "password",
            SecretField::MailuApiToken => "mailu_api_token",
        }
    }
}

impl fmt::Display for SecretField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an envelope could not be made or opened. Each cause is its own variant so an operator
/// knows at once whether data was tampered with, moved, or the keyring is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The text is not a `v1.{key_id}.{nonce}.{ciphertext}` envelope.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The envelope names a key the keyring does not hold.
    #[error("envelope was sealed with key `{0}`, which is not in the keyring")]
    UnknownKey(String),
    /// The ciphertext authenticates for another tenant.
    #[error("ciphertext stored for tenant `{expected}` was encrypted for tenant `{actual}`")]
    WrongTenant {
        /// Tenant whose secret held it.
        expected: TenantId,
        /// Tenant it was sealed for.
        actual: TenantId,
    },
    /// The ciphertext authenticates for another field of the same tenant.
    #[error("ciphertext stored in field `{expected}` was encrypted for field `{actual}`")]
    WrongField {
        /// Field that held it.
        expected: SecretField,
        /// Field it was sealed for.
        actual: SecretField,
    },
    /// The ciphertext fails authentication for every binding tried: altered bytes, or sealed for
    /// a tenant this console does not know.
    #[error(
        "ciphertext for tenant `{tenant}` field `{field}` failed authentication: it was altered or sealed for an unknown tenant"
    )]
    NotAuthentic {
        /// Tenant whose secret held it.
        tenant: TenantId,
        /// Field that held it.
        field: SecretField,
    },
    /// Decrypted bytes are not UTF-8 (cannot happen for data this console sealed).
    #[error("decrypted value is not UTF-8")]
    NotUtf8,
    /// The operating system's random source failed.
    #[error("random number generator failed")]
    Rng,
}

impl CryptoError {
    /// True when the fix is in the keyring, not in the data.
    #[must_use]
    pub fn is_configuration(&self) -> bool {
        matches!(self, CryptoError::UnknownKey(_) | CryptoError::Rng)
    }
}

/// Fills a buffer from the OS random source.
///
/// # Errors
/// [`CryptoError::Rng`] if the OS refuses.
pub fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut()).map_err(|_| CryptoError::Rng)?;
    Ok(buf)
}

struct MasterKey {
    id: String,
    created_at: DateTime<Utc>,
    key: Zeroizing<[u8; 32]>,
}

/// An encrypted blob and what opening it needs besides the key.
#[derive(Debug, Clone)]
pub struct SealedBlob {
    /// Key id used.
    pub key_id: String,
    /// 96-bit nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// The master keys, one of them active. `Debug` shows ids only.
pub struct Keyring {
    keys: Vec<MasterKey>,
    active: usize,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
            .field("active", &self.active_key_id())
            .finish()
    }
}

impl Keyring {
    fn key(&self, id: &str) -> Result<&MasterKey, CryptoError> {
        self.keys.iter().find(|k| k.id == id).ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))
    }

    fn cipher(master: &MasterKey, tenant: &TenantId) -> Aes256Gcm {
        let mut tenant_key = Zeroizing::new([0u8; 32]);
        let info = format!("smtp-vault/v1/tenant/{tenant}");
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(None, master.key.as_ref()).expand(info.as_bytes(), tenant_key.as_mut());
        let key: &[u8; 32] = &tenant_key;
        Aes256Gcm::new(key.into())
    }

    fn aad(tenant: &TenantId, field: SecretField) -> String {
        format!("{tenant}/{field}")
    }

    /// Encrypts `plaintext` for `tenant` and `field` under the active key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if no nonce can be drawn.
    pub fn seal(&self, tenant: &TenantId, field: SecretField, plaintext: &SecretString) -> Result<String, CryptoError> {
        let master = self.keys.get(self.active).ok_or(CryptoError::UnknownKey(String::new()))?;
        // SECURITY: a random 96-bit nonce per message; with per-tenant keys the birthday bound
        // is far beyond any realistic number of rotations.
        let nonce = Nonce::try_generate().map_err(|_| CryptoError::Rng)?;
        let aad = Self::aad(tenant, field);
        let ciphertext = Self::cipher(master, tenant)
            .encrypt(&nonce, Payload { msg: plaintext.expose_secret().as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| CryptoError::Rng)?;
        Ok(format!(
            "{ENVELOPE_VERSION}.{}.{}.{}",
            master.id,
            URL_SAFE_NO_PAD.encode(nonce.as_slice()),
            URL_SAFE_NO_PAD.encode(ciphertext)
        ))
    }

    /// Encrypts a blob (a backup, a journal record) under the active key, with a key derived
    /// for `purpose` and `aad` bound to it; returns the key id, the nonce and the ciphertext.
    ///
    /// # Errors
    /// [`CryptoError::Rng`].
    pub fn seal_blob(&self, purpose: &str, aad: &[u8], plaintext: &[u8]) -> Result<SealedBlob, CryptoError> {
        let master = self.keys.get(self.active).ok_or(CryptoError::UnknownKey(String::new()))?;
        // SECURITY: a random 96-bit nonce per blob under a per-purpose key; daily backups and one
        // journal record per change stay far below the birthday bound.
        let nonce = Nonce::try_generate().map_err(|_| CryptoError::Rng)?;
        let ciphertext = Self::blob_cipher(master, purpose)
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .map_err(|_| CryptoError::Rng)?;
        Ok(SealedBlob { key_id: master.id.clone(), nonce: nonce.to_vec(), ciphertext })
    }

    /// Decrypts a blob made by [`Keyring::seal_blob`].
    ///
    /// # Errors
    /// [`CryptoError::UnknownKey`] when the key is not in this keyring, [`CryptoError::Malformed`]
    /// for a bad nonce, [`CryptoError::NotAuthentic`]-like failure as [`CryptoError::Malformed`]
    /// `"blob failed authentication"` when the bytes or the binding were altered.
    pub fn open_blob(
        &self,
        purpose: &str,
        aad: &[u8],
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let master = self.key(key_id)?;
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Malformed("bad nonce length"))?;
        Self::blob_cipher(master, purpose)
            .decrypt(&nonce, Payload { msg: ciphertext, aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Malformed("blob failed authentication"))
    }

    /// A MAC key for `purpose`, derived from the oldest key. Keys are only ever added (old ones
    /// stay to open old envelopes), so it stays the same across `keys generate --add`: the
    /// audit chain written before a key rotation still verifies after it.
    #[must_use]
    pub fn mac_key(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let mut key = Zeroizing::new([0u8; 32]);
        // By creation time, not file order: a hand-edited keyring keeps its audit key.
        if let Some(oldest) = self.keys.iter().min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id))) {
            let info = format!("smtp-vault/v1/mac/{purpose}");
            let _ = Hkdf::<Sha256>::new(None, oldest.key.as_ref()).expand(info.as_bytes(), key.as_mut());
        }
        key
    }

    fn blob_cipher(master: &MasterKey, purpose: &str) -> Aes256Gcm {
        let mut key = Zeroizing::new([0u8; 32]);
        let info = format!("smtp-vault/v1/blob/{purpose}");
        let _ = Hkdf::<Sha256>::new(None, master.key.as_ref()).expand(info.as_bytes(), key.as_mut());
        let key: &[u8; 32] = &key;
        Aes256Gcm::new(key.into())
    }

    /// Decrypts an envelope stored for `tenant` and `field`. If it does not authenticate, the
    /// other fields of the same tenant are tried so a swapped field is named as such.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`], [`CryptoError::UnknownKey`], [`CryptoError::WrongField`] or
    /// [`CryptoError::NotAuthentic`] (refine with [`Keyring::diagnose`]).
    pub fn open(&self, envelope: &str, tenant: &TenantId, field: SecretField) -> Result<SecretString, CryptoError> {
        let parsed = parse_envelope(envelope)?;
        let master = self.key(parsed.key_id)?;
        match Self::try_open(master, &parsed, tenant, field) {
            Some(plain) => plain,
            None => {
                let moved = SecretField::ALL
                    .into_iter()
                    .filter(|f| *f != field)
                    .find(|f| Self::try_open(master, &parsed, tenant, *f).is_some());
                Err(match moved {
                    Some(actual) => CryptoError::WrongField { expected: field, actual },
                    None => CryptoError::NotAuthentic { tenant: tenant.clone(), field },
                })
            }
        }
    }

    /// After [`CryptoError::NotAuthentic`]: tries the envelope against `candidates` (other
    /// tenants the console knows) to tell a ciphertext moved between tenants from altered bytes.
    #[must_use]
    pub fn diagnose<'a>(
        &self,
        envelope: &str,
        tenant: &TenantId,
        field: SecretField,
        candidates: impl IntoIterator<Item = &'a TenantId>,
    ) -> CryptoError {
        let Ok(parsed) = parse_envelope(envelope) else {
            return CryptoError::Malformed("not an envelope");
        };
        let Ok(master) = self.key(parsed.key_id) else {
            return CryptoError::UnknownKey(parsed.key_id.to_owned());
        };
        for other in candidates.into_iter().filter(|t| *t != tenant) {
            if SecretField::ALL.into_iter().any(|f| Self::try_open(master, &parsed, other, f).is_some()) {
                return CryptoError::WrongTenant { expected: tenant.clone(), actual: other.clone() };
            }
        }
        CryptoError::NotAuthentic { tenant: tenant.clone(), field }
    }

    fn try_open(
        master: &MasterKey,
        parsed: &ParsedEnvelope<'_>,
        tenant: &TenantId,
        field: SecretField,
    ) -> Option<Result<SecretString, CryptoError>> {
        let aad = Self::aad(tenant, field);
        let nonce = Nonce::try_from(parsed.nonce.as_slice()).ok()?;
        let plain = Self::cipher(master, tenant)
            .decrypt(&nonce, Payload { msg: &parsed.ciphertext, aad: aad.as_bytes() })
            .ok()?;
        Some(String::from_utf8(plain).map(SecretString::from).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            CryptoError::NotUtf8
        }))
    }

    /// The key id an envelope names, if it parses.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`].
    pub fn envelope_key_id(envelope: &str) -> Result<&str, CryptoError> {
        parse_envelope(envelope).map(|p| p.key_id)
    }
}

struct ParsedEnvelope<'a> {
    key_id: &'a str,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

fn parse_envelope(text: &str) -> Result<ParsedEnvelope<'_>, CryptoError> {
    let mut parts = text.split('.');
    let (Some(version), Some(key_id), Some(nonce), Some(ciphertext), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(CryptoError::Malformed("expected four dot-separated parts"));
    };
    if version != ENVELOPE_VERSION {
        return Err(CryptoError::Malformed("unsupported version (expected v1)"));
    }
    if !valid_key_id(key_id) {
        return Err(CryptoError::Malformed("invalid key id"));
    }
    let nonce = URL_SAFE_NO_PAD.decode(nonce).map_err(|_| CryptoError::Malformed("nonce is not base64url"))?;
    if nonce.len() != NONCE_LEN {
        return Err(CryptoError::Malformed("nonce is not 96 bits"));
    }
    let ciphertext =
        URL_SAFE_NO_PAD.decode(ciphertext).map_err(|_| CryptoError::Malformed("ciphertext is not base64url"))?;
    if ciphertext.len() < TAG_LEN {
        return Err(CryptoError::Malformed("ciphertext is shorter than its tag"));
    }
    Ok(ParsedEnvelope { key_id, nonce, ciphertext })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ring() -> Keyring {
        Keyring::generate(Utc::now()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn round_trip() {
        let ring = ring();
        let acme = tenant("acme");
        let env = ring.seal(&acme, SecretField::Password, &secret("hunter2-long")).unwrap_or_default();
        assert!(env.starts_with(&format!("v1.{}.", ring.active_key_id())), "{env}");
        assert!(!env.contains("hunter2"));
        let plain = ring.open(&env, &acme, SecretField::Password).map(|s| s.expose_secret().to_owned());
        assert_eq!(plain, Ok("hunter2-long".to_owned()));
        // Fresh nonce every time.
        let again = ring.seal(&acme, SecretField::Password, &secret("hunter2-long")).unwrap_or_default();
        assert_ne!(env, again);
    }

    #[test]
    fn tampered_ciphertext_is_not_authentic() {
        let ring = ring();
        let acme = tenant("acme");
        let env = ring.seal(&acme, SecretField::Password, &secret("pw")).unwrap_or_default();
        let (head, last) = env.rsplit_once('.').unwrap_or_default();
        let mut bytes = URL_SAFE_NO_PAD.decode(last).unwrap_or_default();
        bytes[0] ^= 1;
        let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes));
        let err = ring.open(&tampered, &acme, SecretField::Password).err();
        assert_eq!(err, Some(CryptoError::NotAuthentic { tenant: acme.clone(), field: SecretField::Password }));
        let globex = tenant("globex");
        assert!(matches!(
            ring.diagnose(&tampered, &acme, SecretField::Password, [&globex]),
            CryptoError::NotAuthentic { .. }
        ));
    }

    #[test]
    fn wrong_tenant_is_named() {
        let ring = ring();
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let env = ring.seal(&acme, SecretField::Password, &secret("pw")).unwrap_or_default();
        let err = ring.open(&env, &globex, SecretField::Password).err();
        assert!(matches!(err, Some(CryptoError::NotAuthentic { .. })), "{err:?}");
        let diagnosed = ring.diagnose(&env, &globex, SecretField::Password, [&globex, &acme]);
        assert_eq!(diagnosed, CryptoError::WrongTenant { expected: globex, actual: acme });
    }

    #[test]
    fn wrong_field_is_named() {
        let ring = ring();
        let acme = tenant("acme");
        let env = ring.seal(&acme, SecretField::MailuApiToken, &secret("tok")).unwrap_or_default();
        assert_eq!(
            ring.open(&env, &acme, SecretField::Password).err(),
            Some(CryptoError::WrongField { expected: SecretField::Password, actual: SecretField::MailuApiToken })
        );
    }

    #[test]
    fn unknown_key_id() {
        let (a, b) = (ring(), ring());
        let acme = tenant("acme");
        let env = a.seal(&acme, SecretField::Password, &secret("pw")).unwrap_or_default();
        assert_eq!(
            b.open(&env, &acme, SecretField::Password).err(),
            Some(CryptoError::UnknownKey(a.active_key_id().to_owned()))
        );
    }

    #[test]
    fn malformed_envelopes() {
        let ring = ring();
        let acme = tenant("acme");
        let good = ring.seal(&acme, SecretField::Password, &secret("pw")).unwrap_or_default();
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "plaintext-password".to_owned(),
            format!("v2.{}.{}.{}", parts[1], parts[2], parts[3]),
            format!("v1.{}.{}", parts[1], parts[2]),
            format!("{good}.extra"),
            format!("v1.K-1.{}.{}", parts[2], parts[3]),
            format!("v1.{}.!!.{}", parts[1], parts[3]),
            format!("v1.{}.AAAA.{}", parts[1], parts[3]),
            format!("v1.{}.{}.AAAA", parts[1], parts[2]),
        ];
        for text in cases {
            let err = ring.open(&text, &acme, SecretField::Password).err();
            assert!(matches!(err, Some(CryptoError::Malformed(_))), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn the_audit_mac_key_survives_a_key_rotation_and_a_reordered_file() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let mut ring = Keyring::generate(t0).unwrap_or_else(|_| unreachable!());
        let before = ring.mac_key("audit-events");
        let _ = ring.add_key(t0 + chrono::Duration::days(1));
        assert_eq!(ring.mac_key("audit-events"), before, "a new active key does not change it");
        ring.keys.reverse();
        assert_eq!(ring.mac_key("audit-events"), before, "nor the order of the file");
        assert_ne!(ring.mac_key("audit-anchors"), before, "each purpose has its own key");
    }

    #[test]
    fn rotated_keyring_opens_old_envelopes() {
        let mut ring = ring();
        let acme = tenant("acme");
        let old = ring.seal(&acme, SecretField::Password, &secret("pw")).unwrap_or_default();
        let old_id = ring.active_key_id().to_owned();
        let new_id = ring.add_key(Utc::now()).unwrap_or_default();
        assert_ne!(old_id, new_id);
        assert_eq!(Keyring::envelope_key_id(&old), Ok(old_id.as_str()));
        assert!(ring.open(&old, &acme, SecretField::Password).is_ok());
    }

    #[test]
    fn keyring_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys/keyring.json");
        let ring = ring();
        assert!(ring.save(&path, false).is_ok());
        assert!(matches!(ring.save(&path, false), Err(KeyringError::Exists(_))));
        let loaded = Keyring::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.active_key_id(), ring.active_key_id());
        assert!(!format!("{loaded:?}").contains(&STANDARD.encode(ring.keys[0].key.as_ref())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
            assert!(matches!(Keyring::load(&path), Err(KeyringError::Permissions { mode: 0o644, .. })));
        }
        assert!(matches!(Keyring::load(&dir.path().join("none")), Err(KeyringError::Missing(_))));
    }

    #[cfg(unix)]
    #[test]
    fn a_rewritten_keyring_is_private_even_over_a_planted_temp_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keyring.json");
        let ring = ring();
        assert!(ring.save(&path, false).is_ok());
        // A world-readable file where the rewrite writes first (left over, or planted).
        let tmp = path.with_extension("tmp");
        assert!(std::fs::write(&tmp, b"old").is_ok());
        assert!(std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).is_ok());
        assert!(ring.save(&path, true).is_ok());
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
        assert!(Keyring::load(&path).is_ok());
    }
}
