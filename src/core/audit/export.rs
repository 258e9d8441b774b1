//! Exported copies of the trail checked offline: a SIEM's syslog file, the API's CSV or JSON
//! lines, saved webhook payloads. With the keyring alone (no database, no Vault) every event's
//! MAC is recomputed, every link to its predecessor followed and every gap named, so a reviewer
//! can prove a copy complete and unaltered from its first event to its last.

use super::GENESIS_HASH;
use super::chain::{BrokenLink, ChainKey, HashInput};
use crate::core::db::AuditEventRow;
use crate::core::error::{Error, Result};
use crate::model::{AuditEventView, CSV_HEADER, csv_field_value};
use std::collections::BTreeMap;
use std::io::BufRead;

/// What an exported copy holds and whether it verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCheck {
    /// Distinct events read.
    pub events: u64,
    /// The lowest and highest sequence numbers read.
    pub range: Option<(i64, i64)>,
    /// Hash of the highest event read.
    pub head_hash: String,
    /// Copies of an event already read (a delivery retried: at-least-once), ignored.
    pub duplicates: u64,
    /// Lines that hold no event (a syslog file's other messages, blank lines).
    pub skipped_lines: u64,
    /// Events checked against the keyring's MAC.
    pub mac_checked: u64,
    /// Events from before the chain was keyed (below `keyed_from`): checked by plain SHA-256,
    /// which anyone can recompute, so they are pinned only by the first keyed event after them.
    pub hash_only: u64,
    /// The first event that fails, if any.
    pub first_broken: Option<BrokenLink>,
}

/// [`verify_export`] of the file at `path` with the keyring at `keyring` (the console's: the
/// chain's MAC key is derived from it).
///
/// # Errors
/// [`Error::Config`] for a keyring that does not load; those of [`verify_export`].
pub fn verify_export_file(path: &std::path::Path, keyring: &std::path::Path, keyed_from: i64) -> Result<ExportCheck> {
    let ring = crate::core::crypto::Keyring::load(keyring).map_err(|e| Error::Config(e.to_string()))?;
    let file = std::fs::File::open(path).map_err(|e| Error::io("opening the export", e))?;
    verify_export(std::io::BufReader::new(file), &ChainKey::from_keyring(&ring), keyed_from)
}

/// Reads an export: CSV when its first line is the CSV export's header, otherwise one event per
/// line as JSON starting at the line's first `{` (JSON lines, a syslog message, or a webhook
/// payload `{"type", "timestamp", "data": {…}}`), then verifies it.
///
/// # Errors
/// [`Error::InvalidInput`] for a line that starts an event but is not one; I/O errors.
pub fn verify_export(mut input: impl BufRead, key: &ChainKey, keyed_from: i64) -> Result<ExportCheck> {
    let mut first = String::new();
    input.read_line(&mut first).map_err(|e| Error::io("reading the export", e))?;
    let mut events: BTreeMap<i64, AuditEventRow> = BTreeMap::new();
    let (mut duplicates, mut skipped_lines) = (0u64, 0u64);
    let mut conflict = None;
    let mut keep = |row: AuditEventRow, events: &mut BTreeMap<i64, AuditEventRow>| match events.get(&row.seq) {
        Some(seen) if same(seen, &row) => duplicates += 1,
        Some(_) => {
            conflict.get_or_insert(row.seq);
        }
        None => {
            events.insert(row.seq, row);
        }
    };
    if first.trim_end() == CSV_HEADER.trim_end() {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(input);
        for (n, record) in reader.records().enumerate() {
            let record = record.map_err(|e| Error::InvalidInput(format!("CSV record {}: {e}", n + 1)))?;
            keep(
                row_of_csv(&record).map_err(|e| Error::InvalidInput(format!("CSV record {}: {e}", n + 1)))?,
                &mut events,
            );
        }
    } else {
        let mut line = first;
        let mut number = 1;
        loop {
            match line.find('{') {
                Some(start) => {
                    let row = row_of_json(line[start..].trim_end())
                        .map_err(|e| Error::InvalidInput(format!("line {number}: {e}")))?;
                    match row {
                        Some(row) => keep(row, &mut events),
                        None => skipped_lines += 1,
                    }
                }
                None => skipped_lines += 1,
            }
            line.clear();
            number += 1;
            if input.read_line(&mut line).map_err(|e| Error::io("reading the export", e))? == 0 {
                break;
            }
        }
    }
    let mut check = ExportCheck {
        events: events.len() as u64,
        range: events.keys().next().copied().zip(events.keys().next_back().copied()),
        head_hash: events.values().next_back().map(|r| r.hash.clone()).unwrap_or_default(),
        duplicates,
        skipped_lines,
        mac_checked: events.range(keyed_from..).count() as u64,
        hash_only: events.range(..keyed_from).count() as u64,
        first_broken: None,
    };
    if let Some(seq) = conflict {
        check.first_broken =
            Some(BrokenLink { seq, reason: format!("two different events are numbered {seq} (one was altered)") });
        return Ok(check);
    }
    let mut previous: Option<&AuditEventRow> = None;
    for row in events.values() {
        let key = if row.seq >= keyed_from { Some(key) } else { None };
        let broken = match previous {
            Some(p) if row.seq != p.seq + 1 => Some(format!(
                "missing: events {}–{} are not in the export (removed, or never delivered)",
                p.seq + 1,
                row.seq - 1
            )),
            Some(p) if row.prev_hash != p.hash => {
                Some(format!("relinked: its predecessor hash is not event {}'s hash", p.seq))
            }
            None if row.seq == 1 && row.prev_hash != GENESIS_HASH => {
                Some("relinked: the first event does not start from the chain's genesis".to_owned())
            }
            _ if HashInput::of_row(row).digest(key) != row.hash => Some(if key.is_some() {
                "altered: its content does not match its MAC (or the keyring is not the console's)".to_owned()
            } else {
                "altered: its content does not match its hash".to_owned()
            }),
            _ => None,
        };
        if let Some(reason) = broken {
            let seq = previous.map_or(row.seq, |p| if row.seq != p.seq + 1 { p.seq + 1 } else { row.seq });
            check.first_broken = Some(BrokenLink { seq, reason });
            return Ok(check);
        }
        previous = Some(row);
    }
    Ok(check)
}

fn same(a: &AuditEventRow, b: &AuditEventRow) -> bool {
    // Every field the MAC covers, and the MAC: a "repeat" that differs anywhere is a conflict.
    (a.seq, a.occurred_at_ms, &a.event_type, &a.severity, &a.actor_kind, &a.actor_id)
        == (b.seq, b.occurred_at_ms, &b.event_type, &b.severity, &b.actor_kind, &b.actor_id)
        && (&a.tenant_id, &a.client_ip, &a.request_id, &a.details, &a.hash, &a.prev_hash)
            == (&b.tenant_id, &b.client_ip, &b.request_id, &b.details, &b.hash, &b.prev_hash)
}

/// A JSON event (a line of the JSON lines export, a syslog message, a webhook payload); `None`
/// for JSON that is not one (a syslog file's other messages). An event must be exactly what the
/// console writes — the same bytes once parsed and written again — so a line with a repeated
/// key (which a SIEM may read as the first value while this reads the last), an extra field or
/// another spelling of a value is refused rather than verified.
fn row_of_json(text: &str) -> std::result::Result<Option<AuditEventRow>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let is_payload = value.get("data").is_some_and(|d| d.get("seq").is_some());
    if !is_payload && value.get("seq").is_none() {
        return Ok(None);
    }
    let event: AuditEventView = if is_payload {
        serde_json::from_value(value["data"].clone()).map_err(|e| format!("not an audit event: {e}"))?
    } else {
        serde_json::from_value(value).map_err(|e| format!("not an audit event: {e}"))?
    };
    let canonical = if is_payload {
        crate::core::siem::webhook_payload(&event).map_err(|e| e.to_string())?
    } else {
        serde_json::to_string(&event).map_err(|e| e.to_string())?
    };
    if canonical != text {
        return Err(format!(
            "event {} is not in the form the console writes (a repeated or extra field, or a value spelled \
             differently): refused rather than trusted",
            event.seq
        ));
    }
    Ok(Some(AuditEventRow {
        seq: event.seq,
        occurred_at_ms: event.occurred_at.timestamp_millis(),
        event_type: event.event,
        severity: event.severity,
        actor_kind: event.actor_kind,
        actor_id: event.actor,
        tenant_id: event.tenant_id,
        client_ip: event.client_ip,
        request_id: event.request_id,
        // As the console stored it: serde_json's own rendering of the same value.
        details: event.details.to_string(),
        prev_hash: event.prev_hash,
        hash: event.hash,
    }))
}

/// A CSV cell's value, refused unless the console would have written exactly that cell for it
/// (so a formula whose guard was removed, say, does not pass as the same value).
fn csv_value(field: &str) -> std::result::Result<&str, String> {
    let value = csv_field_value(field);
    let written = crate::model::csv_field(value);
    let unquoted = written
        .strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .map_or_else(|| written.clone(), |w| w.replace("\"\"", "\""));
    if unquoted == field { Ok(value) } else { Err(format!("a cell is not in the form the console writes: {field:?}")) }
}

fn row_of_csv(record: &csv::StringRecord) -> std::result::Result<AuditEventRow, String> {
    let field = |i: usize| record.get(i).ok_or_else(|| format!("has no column {}", i + 1)).and_then(csv_value);
    let optional = |i: usize| field(i).map(|v| (!v.is_empty()).then(|| v.to_owned()));
    let occurred_at = chrono::DateTime::parse_from_rfc3339(field(1)?).map_err(|e| format!("occurred_at: {e}"))?;
    Ok(AuditEventRow {
        seq: field(0)?.parse().map_err(|e| format!("seq: {e}"))?,
        occurred_at_ms: occurred_at.timestamp_millis(),
        event_type: field(2)?.to_owned(),
        severity: field(3)?.to_owned(),
        actor_kind: field(4)?.to_owned(),
        actor_id: field(5)?.to_owned(),
        tenant_id: optional(6)?,
        client_ip: optional(7)?,
        request_id: optional(8)?,
        details: field(9)?.to_owned(),
        hash: field(10)?.to_owned(),
        prev_hash: field(11)?.to_owned(),
    })
}
