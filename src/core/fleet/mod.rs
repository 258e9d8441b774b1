//! The fleet at scale: the paged, filtered tenant list (keyset pages over the tenant id, so a
//! page costs the same at 100 or 100,000 tenants) and the overview's counts, each answered from
//! an index rather than by walking tenants.

pub mod reconcile;

use crate::core::Core;
use crate::core::access::{Actor, authorize};
use crate::core::error::{Error, Result};
use crate::model::{
    CredentialState, DrillSummary, OverviewView, Permission, StalestHeartbeat, TenantCounts, TenantFilter, TenantId,
    TenantPage, TenantQuery, TenantSummary,
};
use chrono::{DateTime, Utc};
use futures_util::TryFutureExt;

/// Page size when the caller names none, and the most a caller may ask for (a page of 500
/// summaries is about 75 KB).
pub const DEFAULT_PAGE: u32 = 50;
/// See [`DEFAULT_PAGE`].
pub const MAX_PAGE: u32 = 500;

/// Which way a cursor walks from the tenant it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    After,
    Before,
}

/// A cursor is the tenant id at the edge of a page, with the way to walk from it: `n.<id>`
/// (the page after) or `p.<id>` (the page before). Tenant ids are `[a-z0-9-]`, so it needs no
/// escaping; it is opaque to callers all the same.
fn parse_cursor(cursor: &str) -> Result<(Direction, String)> {
    let bad = || Error::InvalidInput("the cursor is not one this API gave out".into());
    let (direction, id) = match cursor.split_once('.') {
        Some(("n", id)) => (Direction::After, id),
        Some(("p", id)) => (Direction::Before, id),
        _ => return Err(bad()),
    };
    TenantId::parse(id).map_err(|_| bad())?;
    Ok((direction, id.to_owned()))
}

/// The filters as SQL conditions with their parameters, numbered from `first`.
fn conditions(query: &TenantQuery, first: usize) -> (String, Vec<SqlParam>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    match query.state {
        None => {}
        Some(TenantFilter::RateLimited) => clauses.push(rate_limited_sql()),
        Some(filter) => {
            let state = CredentialState::from_name(filter.as_str()).unwrap_or(CredentialState::Active);
            clauses.push(format!("state = ${}", first + params.len()));
            params.push(SqlParam::Text(state.as_str().to_owned()));
        }
    }
    if let Some(before) = query.due_before {
        clauses.push(format!("next_rotation_at_ms < ${}", first + params.len()));
        params.push(SqlParam::Int(before.timestamp_millis()));
    }
    // Tenant ids are [a-z0-9-]: anything else cannot match, and LIKE wildcards are dropped.
    let needle: String = query
        .search
        .as_deref()
        .unwrap_or("")
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if !needle.is_empty() {
        clauses.push(format!("tenant_id LIKE ${}", first + params.len()));
        params.push(SqlParam::Text(format!("%{needle}%")));
    }
    let sql = if clauses.is_empty() { "1 = 1".to_owned() } else { clauses.join(" AND ") };
    (sql, params)
}

/// The rate-limited tenants' condition, as a literal: the partial index `tenants_rate_limited`
/// (migration 0017) is used only for a query that states its very predicate.
fn rate_limited_sql() -> String {
    format!("last_error = '{}'", crate::core::mail::RATE_LIMITED.replace('\'', "''"))
}

/// A bound value of a built query.
enum SqlParam {
    Text(String),
    Int(i64),
}

fn bind_all<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    params: Vec<SqlParam>,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    for param in params {
        query = match param {
            SqlParam::Text(text) => query.bind(text),
            SqlParam::Int(n) => query.bind(n),
        };
    }
    query
}

/// `tenant_id, state, version, rotated_at_ms, next_rotation_at_ms`.
type SummaryRow = (String, String, i64, Option<i64>, Option<i64>);

fn summary(row: SummaryRow) -> Result<TenantSummary> {
    let (tenant_id, state, version, rotated, next) = row;
    let broken = |what: &str| Error::Internal(format!("tenants row for `{tenant_id}` has an invalid {what}"));
    Ok(TenantSummary {
        tenant_id: TenantId::parse(&tenant_id).map_err(|_| broken("tenant id"))?,
        state: CredentialState::from_name(&state).ok_or_else(|| broken("state"))?,
        version: u64::try_from(version).map_err(|_| broken("version"))?,
        rotated_at: rotated.and_then(DateTime::from_timestamp_millis),
        next_rotation_at: next.and_then(DateTime::from_timestamp_millis),
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Core {
    /// A page of tenants, by tenant id, filtered; with the number that match and cursors to the
    /// pages either side. Keyset paging: a walk from the first page by `next_cursor` meets
    /// every tenant exactly once, however many there are.
    ///
    /// # Errors
    /// [`Error::MissingScope`], [`Error::InvalidInput`] for a bad limit or cursor, database errors.
    pub async fn tenant_page(&self, actor: &Actor, query: &TenantQuery) -> Result<TenantPage> {
        authorize(actor, Permission::ReadCredentials)?;
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::InvalidInput(format!("limit is 1 to {MAX_PAGE}")));
        }
        let cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
            Some(c) => Some(parse_cursor(c)?),
            None => None,
        };
        let (direction, edge) = cursor.clone().unwrap_or((Direction::After, String::new()));
        let (filters, params) = conditions(query, 3);
        let (compare, order) = match direction {
            Direction::After => (">", "ASC"),
            Direction::Before => ("<", "DESC"),
        };
        let sql = format!(
            "SELECT tenant_id, state, version, rotated_at_ms, next_rotation_at_ms FROM tenants \
             WHERE tenant_id {compare} $1 AND {filters} ORDER BY tenant_id {order} LIMIT $2"
        );
        let page = bind_all(sqlx::query_as::<_, SummaryRow>(&sql).bind(edge).bind(i64::from(limit) + 1), params)
            .fetch_all(self.db.pool());
        let (count_filters, count_params) = conditions(query, 1);
        let count_sql = format!("SELECT COUNT(*) FROM tenants WHERE {count_filters}");
        let total = bind_all(sqlx::query_as::<_, (i64,)>(&count_sql), count_params).fetch_one(self.db.pool());
        let (rows, (total,)) = futures_util::try_join!(page, total)?;
        let more = rows.len() > limit as usize;
        let mut tenants = rows.into_iter().take(limit as usize).map(summary).collect::<Result<Vec<_>>>()?;
        if direction == Direction::Before {
            tenants.reverse();
        }
        // Walking forward, a page before exists when we came from one; walking back, the
        // extra row says whether one more lies before, and the page after is the one we left.
        let (has_prev, has_next) = match direction {
            Direction::After => (cursor.is_some(), more),
            Direction::Before => (more, true),
        };
        let next_cursor = has_next.then(|| tenants.last().map(|t| format!("n.{}", t.tenant_id))).flatten();
        let prev_cursor = has_prev.then(|| tenants.first().map(|t| format!("p.{}", t.tenant_id))).flatten();
        Ok(TenantPage { tenants, total: count(total), next_cursor, prev_cursor })
    }

    /// Tenants per state and rate-limited, from the indexes.
    ///
    /// # Errors
    /// [`Error::MissingScope`], database errors.
    pub async fn tenant_counts(&self, actor: &Actor) -> Result<TenantCounts> {
        authorize(actor, Permission::ReadCredentials)?;
        self.counts().await
    }

    async fn counts(&self) -> Result<TenantCounts> {
        let pool = self.db.pool();
        let states =
            sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM tenants GROUP BY state").fetch_all(pool);
        let limited_sql = format!("SELECT COUNT(*) FROM tenants WHERE {}", rate_limited_sql());
        let limited = sqlx::query_as::<_, (i64,)>(&limited_sql).fetch_one(pool);
        let (states, (limited,)) = futures_util::try_join!(states, limited)?;
        let mut counts = TenantCounts { rate_limited: count(limited), ..TenantCounts::default() };
        for (state, n) in states {
            let n = count(n);
            counts.total += n;
            match CredentialState::from_name(&state) {
                Some(CredentialState::Active) => counts.active += n,
                Some(CredentialState::Rotating) => counts.rotating += n,
                Some(CredentialState::NeedsReconcile) => counts.needs_reconcile += n,
                Some(CredentialState::Drifted) => counts.drifted += n,
                None => {}
            }
        }
        Ok(counts)
    }

    /// What an admin sees first: tenants per state, what is due, the stalest heartbeat, open
    /// incidents and alerts, the last backup and drill. Every figure is one indexed query.
    ///
    /// # Errors
    /// [`Error::MissingScope`] (admins and the operator only), database errors.
    pub async fn overview(&self, actor: &Actor) -> Result<OverviewView> {
        authorize(actor, Permission::ViewOperations)?;
        authorize(actor, Permission::ReadCredentials)?;
        let now = self.now();
        let due_before = now + chrono::Duration::days(7);
        let pool = self.db.pool();
        let due = sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM tenants WHERE next_rotation_at_ms < $1")
            .bind(due_before.timestamp_millis())
            .fetch_one(pool);
        // The index gives the oldest at its start; tenants never checked (NULL) sort first in
        // SQLite and last in PostgreSQL, so they are left out here and counted apart.
        let stalest = sqlx::query_as::<_, (String, i64)>(
            "SELECT tenant_id, heartbeat_ok_at_ms FROM tenants WHERE heartbeat_ok_at_ms IS NOT NULL \
             ORDER BY heartbeat_ok_at_ms LIMIT 1",
        )
        .fetch_optional(pool);
        let never = sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM tenants WHERE heartbeat_ok_at_ms IS NULL")
            .fetch_one(pool);
        let incidents =
            sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM incidents WHERE state = 'open'").fetch_one(pool);
        let alerts =
            sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM alerts WHERE acknowledged_at_ms IS NULL").fetch_one(pool);
        let backup = sqlx::query_as::<_, (i64,)>(
            "SELECT occurred_at_ms FROM audit_events WHERE event_type = 'backup_created' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(pool);
        let drill = sqlx::query_as::<_, (i64, i64, i64, Option<i64>)>(
            "SELECT started_at_ms, ok, rto_ms, rpo_ms FROM dr_drills ORDER BY started_at_ms DESC LIMIT 1",
        )
        .fetch_optional(pool);
        let (counts, (due,), stalest, (never,), (incidents,), (alerts,), backup, drill) = futures_util::try_join!(
            self.counts(),
            due.err_into(),
            stalest.err_into(),
            never.err_into(),
            incidents.err_into(),
            alerts.err_into(),
            backup.err_into(),
            drill.err_into()
        )?;
        Ok(OverviewView {
            at: now,
            counts,
            due_within_7_days: count(due),
            due_before,
            stalest_heartbeat: stalest.and_then(|(tenant_id, at)| {
                DateTime::from_timestamp_millis(at).map(|at| StalestHeartbeat { tenant_id, at })
            }),
            never_heartbeat: count(never),
            open_incidents: count(incidents),
            unacknowledged_alerts: count(alerts),
            last_backup_at: backup.and_then(|(at,)| DateTime::<Utc>::from_timestamp_millis(at)),
            last_drill: drill.and_then(|(at, ok, rto_ms, rpo_ms)| {
                DateTime::from_timestamp_millis(at).map(|at| DrillSummary { at, ok: ok != 0, rto_ms, rpo_ms })
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_a_direction_and_a_tenant_id_and_nothing_else() {
        assert_eq!(parse_cursor("n.acme").ok(), Some((Direction::After, "acme".to_owned())));
        assert_eq!(parse_cursor("p.tenant-7").ok(), Some((Direction::Before, "tenant-7".to_owned())));
        for bad in ["acme", "x.acme", "n.", "n.ACME", "n.a'b", "n.a%"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_rate_limited_filter_states_the_partial_index_s_very_predicate() {
        for migration in [
            include_str!("../../../migrations/sqlite/0017_fleet_at_scale.sql"),
            include_str!("../../../migrations/postgres/0017_fleet_at_scale.sql"),
        ] {
            assert!(migration.contains(&format!("WHERE {};", rate_limited_sql())), "the index would go unused");
        }
    }

    #[test]
    fn filters_bind_every_value_and_drop_like_wildcards() {
        let query = TenantQuery {
            state: Some(TenantFilter::Drifted),
            due_before: DateTime::from_timestamp_millis(5),
            search: Some("Ac%_me'".into()),
            ..TenantQuery::default()
        };
        let (sql, params) = conditions(&query, 3);
        assert_eq!(sql, "state = $3 AND next_rotation_at_ms < $4 AND tenant_id LIKE $5");
        assert!(matches!(&params[2], SqlParam::Text(t) if t == "%acme%"));
        assert_eq!(conditions(&TenantQuery::default(), 1).0, "1 = 1");
    }
}
