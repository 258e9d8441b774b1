//! A tenant's mail server answers whatever it likes: the status and body classification, and
//! the PEM bundle reader for extra CAs, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_vault::core::mail::{classify_response, pem_certificates};

fuzz_target!(|data: &[u8]| {
    if let [high, low, body @ ..] = data {
        let status = u16::from_be_bytes([*high, *low]) % 1000;
        let _ = classify_response(status, body);
    }
    let _ = pem_certificates(data);
});
