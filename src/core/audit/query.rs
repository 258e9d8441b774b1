//! Reading the trail: filtered pages (keyset pagination), the per-day chart, the chain's
//! state for the dashboard, and the CSV/JSON stream of an export.

use crate::core::access::Actor;
use crate::core::access::authorize;
use crate::core::db::AuditEventRow;
use crate::core::error::{Error, Result};
use crate::model::Permission;
use crate::model::TenantId;
use chrono::DateTime;
use futures_util::TryStreamExt;
use serde_json::Value;

impl crate::core::Core {
    /// A page of the audit trail, newest first, filtered; `cursor` continues after a page.
    /// Filters combine with AND; the text search looks inside the details.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read` (security reviewers and platform admins
    /// have it); [`Error::InvalidInput`] for a bad cursor, severity or tenant.
    pub async fn query_audit(
        &self,
        actor: &Actor,
        query: &crate::model::AuditQuery,
    ) -> Result<crate::model::AuditPage> {
        authorize(actor, Permission::ReadAudit)?;
        let limit = query.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(Error::InvalidInput("limit is 1 to 500".into()));
        }
        let limit = i64::from(limit);
        let before = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => i64::MAX,
            Some(cursor) => cursor
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| Error::InvalidInput("the cursor is not one this API gave out".into()))?,
        };
        let filter = AuditSqlFilter::of(query)?;
        let order = self.audit_page_order(&filter).await?;
        let (conditions, params) = filter.clause(3);
        let sql = format!("{AUDIT_SELECT} WHERE seq < $1 AND {conditions} ORDER BY {order} DESC LIMIT $2");
        let rows = bind_all(sqlx::query_as::<_, AuditEventRow>(&sql).bind(before).bind(limit + 1), params)
            .fetch_all(self.db().pool())
            .await?;
        let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let events: Vec<crate::model::AuditEventView> =
            rows.into_iter().take(usize::try_from(limit).unwrap_or(50)).map(AuditEventRow::view).collect();
        let next_cursor = if more { events.last().map(|e| e.seq.to_string()) } else { None };
        Ok(crate::model::AuditPage { events, next_cursor })
    }
}

impl crate::core::Core {
    /// What a page is ordered by: `seq`, or `seq + 0`, which gives the same rows in the same
    /// order but keeps the database off the `seq` key so that it reads the time index.
    ///
    /// With a time range as the only indexed filter, PostgreSQL assumes the matches are spread
    /// evenly along `seq` and walks the key back from the newest event; for a range that ends
    /// long before the newest event, that walk first crosses every later event (51 ms for three
    /// days in the middle of a million). Reading the range by its index and sorting it is
    /// cheaper when the range holds fewer events than come after it, estimated from the
    /// table's time span (two index probes).
    pub(super) async fn audit_page_order(&self, filter: &AuditSqlFilter) -> Result<&'static str> {
        let Some(until) = filter.until else { return Ok("seq") };
        if !(filter.tenant.is_empty() && filter.event.is_empty() && filter.severity.is_empty()) {
            return Ok("seq");
        }
        // Two scalar subqueries: SQLite answers a lone MIN or MAX from the index, not both at once.
        let span: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT MIN(occurred_at_ms) FROM audit_events), (SELECT MAX(occurred_at_ms) FROM audit_events)",
        )
        .fetch_one(self.db().pool())
        .await?;
        let (Some(first), Some(last)) = span else { return Ok("seq") };
        let inside = until.min(last).saturating_sub(filter.since.unwrap_or(first).max(first));
        let after = last.saturating_sub(until);
        Ok(if inside < after { "seq + 0" } else { "seq" })
    }
}

/// A day in milliseconds: the chart's buckets are UTC days.
pub(super) const DAY_MS: i64 = 86_400_000;
/// The most bars the chart draws; a longer range shows its last days.
pub(super) const CHART_MAX_DAYS: i64 = 92;

impl crate::core::Core {
    /// Events per UTC day under the filter (cursor and limit ignored): the given range, or
    /// the last 30 days, at most the last 92 days of it.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read`, [`Error::InvalidInput`]; database errors.
    pub async fn audit_per_day(
        &self,
        actor: &Actor,
        query: &crate::model::AuditQuery,
    ) -> Result<crate::model::AuditChart> {
        authorize(actor, Permission::ReadAudit)?;
        let mut filter = AuditSqlFilter::of(query)?;
        let last_day = filter.until.map_or(self.now().timestamp_millis(), |until| until - 1).div_euclid(DAY_MS);
        let first_day =
            filter.since.map_or(last_day - 29, |since| since.div_euclid(DAY_MS)).max(last_day - (CHART_MAX_DAYS - 1));
        if first_day > last_day {
            return Ok(crate::model::AuditChart::default());
        }
        filter.since = Some(filter.since.unwrap_or(i64::MIN).max(first_day * DAY_MS));
        filter.until = Some(filter.until.unwrap_or(i64::MAX).min((last_day + 1) * DAY_MS));
        let (conditions, params) = filter.clause(1);
        let sql = format!(
            "SELECT occurred_at_ms / {DAY_MS} AS day, severity, COUNT(*) FROM audit_events WHERE {conditions} \
             GROUP BY occurred_at_ms / {DAY_MS}, severity"
        );
        let counts: Vec<(i64, String, i64)> =
            bind_all(sqlx::query_as::<_, (i64, String, i64)>(&sql), params).fetch_all(self.db().pool()).await?;
        let mut days: Vec<crate::model::AuditDayCount> = (first_day..=last_day)
            .map(|day| crate::model::AuditDayCount {
                day: DateTime::from_timestamp_millis(day * DAY_MS).unwrap_or_default().format("%Y-%m-%d").to_string(),
                ..Default::default()
            })
            .collect();
        for (day, severity, n) in counts {
            let Some(slot) = usize::try_from(day - first_day).ok().and_then(|i| days.get_mut(i)) else { continue };
            let n = u64::try_from(n).unwrap_or(0);
            match severity.as_str() {
                "critical" => slot.critical += n,
                "warning" => slot.warning += n,
                _ => slot.info += n,
            }
        }
        Ok(crate::model::AuditChart { days })
    }
}

impl crate::core::Core {
    /// The chain's verification state for reviewers (recomputed now).
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read`; database errors.
    pub async fn audit_chain_state(&self, actor: &Actor) -> Result<crate::model::ChainStateView> {
        authorize(actor, Permission::ReadAudit)?;
        let report = self.verify_audit_chain().await?;
        Ok(crate::model::ChainStateView {
            events: report.events,
            head_hash: report.head_hash,
            broken_seq: report.first_broken.as_ref().map(|b| b.seq),
            reason: report.first_broken.map(|b| b.reason),
        })
    }
}

pub(super) const AUDIT_SELECT: &str = "SELECT seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, tenant_id, client_ip, \
     request_id, details, prev_hash, hash FROM audit_events";

/// An [`crate::model::AuditQuery`]'s filters, checked and ready to bind.
pub(super) struct AuditSqlFilter {
    tenant: String,
    event: String,
    severity: String,
    since: Option<i64>,
    until: Option<i64>,
    actor: String,
    text: String,
}

/// A value bound to a filter's placeholder.
pub(super) enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

impl AuditSqlFilter {
    pub(super) fn of(query: &crate::model::AuditQuery) -> Result<Self> {
        if query.severity.as_deref().is_some_and(|s| !s.is_empty() && !["info", "warning", "critical"].contains(&s)) {
            return Err(Error::InvalidInput("severity is info, warning or critical".into()));
        }
        if let Some(tenant) = query.tenant.as_deref().filter(|t| !t.is_empty()) {
            TenantId::parse(tenant).map_err(|_| Error::InvalidInput("tenant is not a valid tenant id".into()))?;
        }
        // SECURITY: PostgreSQL refuses NUL in text (an error, not an empty answer), and no
        // recorded value holds control characters; a filter that does is refused as bad input.
        for (name, value) in [("event", &query.event), ("actor", &query.actor), ("q", &query.text)] {
            let value = value.as_deref().unwrap_or_default();
            if value.chars().count() > 200 || value.chars().any(|c| c.is_control() || c == '\u{fffd}') {
                return Err(Error::InvalidInput(format!(
                    "{name} must be at most 200 characters of valid text without control characters"
                )));
            }
        }
        let like = |text: &Option<String>| {
            text.as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| {
                    // SECURITY: the caller's text is data, never pattern syntax.
                    let escaped = t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                    format!("%{escaped}%")
                })
                .unwrap_or_default()
        };
        Ok(Self {
            tenant: query.tenant.clone().unwrap_or_default(),
            event: query.event.clone().unwrap_or_default(),
            severity: query.severity.clone().unwrap_or_default(),
            since: query.since.map(|t| t.timestamp_millis()),
            until: query.until.map(|t| t.timestamp_millis()),
            actor: like(&query.actor),
            text: like(&query.text),
        })
    }

    /// Conditions for the filters in use only, placeholders numbered from `$first`: a filter
    /// left empty must not appear in the SQL (`$2 = '' OR tenant_id = $2` would keep both
    /// databases from using the index on a million rows).
    pub(super) fn clause<'a>(&'a self, first: usize) -> (String, Vec<Param<'a>>) {
        let mut conditions = vec!["1 = 1".to_owned()];
        let mut params: Vec<Param<'_>> = Vec::new();
        let mut add = |sql: &str, param: Param<'a>| {
            conditions.push(sql.replace('?', &format!("${}", first + params.len())));
            params.push(param);
        };
        for (column, value) in [("tenant_id", &self.tenant), ("event_type", &self.event), ("severity", &self.severity)]
        {
            if !value.is_empty() {
                add(&format!("{column} = ?"), Param::Text(value));
            }
        }
        if let Some(since) = self.since {
            add("occurred_at_ms >= ?", Param::Int(since));
        }
        if let Some(until) = self.until {
            add("occurred_at_ms < ?", Param::Int(until));
        }
        for (column, pattern) in [("actor_id", &self.actor), ("details", &self.text)] {
            if !pattern.is_empty() {
                add(&format!("{column} LIKE ? ESCAPE '\\'"), Param::Text(pattern));
            }
        }
        (conditions.join(" AND "), params)
    }
}

pub(super) fn bind_all<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    params: Vec<Param<'q>>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    for param in params {
        query = match param {
            Param::Text(text) => query.bind(text),
            Param::Int(n) => query.bind(n),
        };
    }
    query
}

impl AuditEventRow {
    pub(super) fn view(self) -> crate::model::AuditEventView {
        crate::model::AuditEventView {
            seq: self.seq,
            occurred_at: DateTime::from_timestamp_millis(self.occurred_at_ms).unwrap_or_default(),
            details: serde_json::from_str(&self.details).unwrap_or(Value::String(self.details.clone())),
            event: self.event_type,
            severity: self.severity,
            actor_kind: self.actor_kind,
            actor: self.actor_id,
            tenant_id: self.tenant_id,
            client_ip: self.client_ip,
            request_id: self.request_id,
            hash: self.hash,
            prev_hash: self.prev_hash,
        }
    }
}

impl crate::core::Core {
    /// Streams every event matching `query` (oldest first; cursor and limit ignored) into
    /// `out`, for exports of any size in constant memory. Stops quietly when the receiver goes.
    ///
    /// # Errors
    /// [`Error::MissingScope`] without `audit:read`, [`Error::InvalidInput`]; database errors.
    pub async fn stream_audit(
        &self,
        actor: &Actor,
        query: &crate::model::AuditQuery,
        out: tokio::sync::mpsc::Sender<crate::model::AuditEventView>,
    ) -> Result<u64> {
        authorize(actor, Permission::ReadAudit)?;
        let filter = AuditSqlFilter::of(query)?;
        let (conditions, params) = filter.clause(1);
        let sql = format!("{AUDIT_SELECT} WHERE {conditions} ORDER BY seq");
        let mut rows = bind_all(sqlx::query_as::<_, AuditEventRow>(&sql), params).fetch(self.db().pool());
        let mut sent = 0;
        while let Some(row) = rows.try_next().await? {
            if out.send(row.view()).await.is_err() {
                break;
            }
            sent += 1;
        }
        Ok(sent)
    }

    /// Checks the actor may read the audit trail (before a stream starts, so the answer's
    /// status is right).
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::InvalidInput`] for a bad filter.
    pub fn check_audit_query(&self, actor: &Actor, query: &crate::model::AuditQuery) -> Result<()> {
        authorize(actor, Permission::ReadAudit)?;
        if query.cursor.is_some() || query.limit.is_some() {
            return Err(Error::InvalidInput(
                "an export takes no cursor or limit: it streams everything the filter selects".into(),
            ));
        }
        AuditSqlFilter::of(query).map(|_| ())
    }
}

/// The events numbered `from..=to` in the export format, oldest first (the SIEM sinks read
/// the trail with it).
///
/// # Errors
/// Database errors.
pub async fn events_between(
    db: &crate::core::db::Db,
    from: i64,
    to: i64,
) -> crate::core::error::Result<Vec<crate::model::AuditEventView>> {
    Ok(super::chain::chain_page(db, from, to).await?.into_iter().map(AuditEventRow::view).collect())
}
