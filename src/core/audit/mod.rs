//! The hash-chained audit log (ARCHITECTURE §4) and its anchors. Each event carries a MAC
//! (HMAC-SHA256 under a key derived from the keyring, which the database never holds) over its
//! fields and its predecessor's; events from before the chain was keyed keep their SHA-256 and
//! are pinned by the first keyed event. MACed anchors (the head's number and hash) go to the
//! backup target, so cutting the tail or moving the keyed boundary shows too. Appends happen
//! inside the caller's transaction, so an event exists exactly when the change it records does,
//! and a failed append fails the operation (fail closed). Details never hold a secret: callers
//! pass ids, versions and reasons only.

mod anchor;
mod chain;
mod events;
mod export;
mod query;

pub use anchor::Anchor;
pub use chain::{BrokenLink, ChainKey, ChainReport, append, event_hash, record, verify};
pub use events::{EventType, GENESIS_HASH, NewEvent, Severity};
pub use export::{ExportCheck, verify_export, verify_export_file};
pub use query::events_between;
