//! A stored envelope (`v1.{key_id}.{nonce}.{ciphertext}`) comes from Vault, which an attacker
//! with Vault access controls: opening any text must fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_vault::core::crypto::{Keyring, SecretField};
use smtp_vault::model::TenantId;
use std::sync::OnceLock;

static RING: OnceLock<(Keyring, TenantId)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (ring, tenant) = RING.get_or_init(|| {
        let ring = Keyring::generate(chrono::Utc::now()).unwrap_or_else(|e| panic!("keyring: {e}"));
        (ring, TenantId::parse("acme").unwrap_or_else(|e| panic!("tenant: {e}")))
    });
    if let Ok(text) = std::str::from_utf8(data) {
        for field in [SecretField::Password, SecretField::MailuApiToken] {
            let _ = ring.open(text, tenant, field);
        }
    }
});
