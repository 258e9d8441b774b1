//! Tenant ids arrive in URLs and bodies: anything accepted must be exactly what it claims
//! (lowercase letters, digits, inner hyphens) and round-trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_vault::model::TenantId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = TenantId::parse(text)
    {
        assert_eq!(id.as_str(), text);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert!(!id.as_str().starts_with('-') && !id.as_str().ends_with('-'));
    }
});
