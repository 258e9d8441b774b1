//! Audit-trail wire types: the query a reviewer or API caller makes and the page of events it
//! returns (newest first, keyset-paginated).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Filters for the audit trail; every field optional.
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// One tenant.
    pub tenant: Option<String>,
    /// One event type (stored name, e.g. `credential_revealed`).
    pub event: Option<String>,
    /// One actor (as recorded: admin id and email, token id and name, `cli:user`, job name);
    /// a substring match.
    pub actor: Option<String>,
    /// One severity.
    pub severity: Option<String>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Text in the details (`q` in a query string).
    #[serde(alias = "q")]
    pub text: Option<String>,
    /// Continue after this cursor (from the previous page).
    pub cursor: Option<String>,
    /// Page size (1 to 500, default 50).
    pub limit: Option<u32>,
}

/// One audit event as shown.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEventView {
    /// Position in the chain.
    pub seq: i64,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Event type.
    pub event: String,
    /// info | warning | critical.
    pub severity: String,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor.
    pub actor: String,
    /// Tenant, if any.
    pub tenant_id: Option<String>,
    /// Client address, if any.
    pub client_ip: Option<String>,
    /// Request id, if any.
    pub request_id: Option<String>,
    /// Details (JSON; never a secret).
    pub details: serde_json::Value,
    /// This event's hash.
    pub hash: String,
    /// The previous event's hash (the link an exported copy is checked by).
    pub prev_hash: String,
}

/// A page of events, newest first.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Events of one UTC day, by severity (the dashboard's chart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Routine events.
    pub info: u64,
    /// Warnings.
    pub warning: u64,
    /// Critical events.
    pub critical: u64,
}

impl AuditDayCount {
    /// All events of the day.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.info + self.warning + self.critical
    }
}

/// Events per day under a filter, every day of the range present (zeros included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChart {
    /// Oldest first.
    pub days: Vec<AuditDayCount>,
}

/// The audit chain's verification state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStateView {
    /// Events checked.
    pub events: u64,
    /// Hash of the last event checked.
    pub head_hash: String,
    /// The first broken event, if any.
    pub broken_seq: Option<i64>,
    /// Why it is broken.
    pub reason: Option<String>,
}

/// The CSV export's header line.
pub const CSV_HEADER: &str =
    "seq,occurred_at,event,severity,actor_kind,actor,tenant_id,client_ip,request_id,details,hash,prev_hash\r\n";

/// One CSV field: quoted when needed, and a leading `= + - @` (or tab) neutralised so a
/// spreadsheet never runs a value as a formula. A leading `'` is doubled, so
/// [`csv_field_value`] gives back exactly the value (an exported trail is re-verified from it).
#[must_use]
pub fn csv_field(value: &str) -> String {
    // SECURITY: details and actor names come from callers; opening the export must not run them.
    let value =
        if value.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) { format!("'{value}") } else { value.to_owned() };
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

/// The value a [`csv_field`] was made from, once the CSV reader has unquoted it.
#[must_use]
pub fn csv_field_value(field: &str) -> &str {
    field.strip_prefix('\'').unwrap_or(field)
}

impl AuditEventView {
    /// This event as one CSV line (CRLF-terminated).
    #[must_use]
    pub fn csv_line(&self) -> String {
        let fields = [
            self.seq.to_string(),
            self.occurred_at.to_rfc3339(),
            self.event.clone(),
            self.severity.clone(),
            self.actor_kind.clone(),
            self.actor.clone(),
            self.tenant_id.clone().unwrap_or_default(),
            self.client_ip.clone().unwrap_or_default(),
            self.request_id.clone().unwrap_or_default(),
            self.details.to_string(),
            self.hash.clone(),
            self.prev_hash.clone(),
        ];
        let mut line = fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",");
        line.push_str("\r\n");
        line
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@cmd"), "'@cmd");
        assert_eq!(csv_field("'quoted"), "''quoted");
        for value in ["plain", "=1+1", "'quoted", "''", "-x", ""] {
            let field = csv_field(value);
            let unquoted = field.strip_prefix('"').and_then(|f| f.strip_suffix('"')).unwrap_or(&field);
            assert_eq!(super::csv_field_value(unquoted), value);
        }
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
