//! The integration suite, one binary: a test binary links the whole crate, so one link instead of
//! one per area. Each module is an area of the product tested against the real parts (OpenBao,
//! SQLite or PostgreSQL, Dovecot, the stand-ins); `common` is the harness (`TestEnv`).
#![cfg(feature = "ssr")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test stops at the line that failed, with its message")]

mod common;

mod alerting;
mod api;
mod attacks;
mod audit_api;
mod audit_cli;
mod audit_scale;
mod backup;
mod crash;
mod deploy;
mod emergency;
mod fleet;
mod four_eyes;
mod hostile_input;
mod mail;
mod mailu_admins;
mod monitoring;
mod no_secret_in_logs;
mod openapi;
mod recovery;
mod reveal;
mod reveal_notices;
mod revert;
mod rotation;
mod siem;
mod standin;
mod sweep;
mod vault_ha;
mod web_access;
