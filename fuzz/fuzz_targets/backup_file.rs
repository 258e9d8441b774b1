//! A backup file comes from the backup target (a bucket others may write to): framing and
//! manifest are parsed before authentication, so any bytes must be refused cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_vault::core::backup::open_backup;
use smtp_vault::core::crypto::Keyring;
use std::sync::OnceLock;

static KEY: OnceLock<Keyring> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let key = KEY.get_or_init(|| Keyring::generate(chrono::Utc::now()).unwrap_or_else(|e| panic!("key: {e}")));
    let _ = open_backup(key, data);
});
