//! The fleet at scale: the paged tenant list and the overview on a fixture of 2,345 tenant rows
//! (SQLite, and PostgreSQL when `SMTP_VAULT_TEST_DATABASE` points there). A walk by
//! `next_cursor` meets every tenant exactly once, and so does a walk back by `prev_cursor`;
//! every filter and every count is what a plain computation over the fixture's formula says.
//! Speed is measured in the benchmark (`scripts/bench.sh --scale N`), not here.

use crate::common::TestDb;
use chrono::{DateTime, Utc};
use smtp_vault::core::config::Config;
use smtp_vault::core::{Actor, Core, Needs};
use smtp_vault::model::{CredentialState, TenantFilter, TenantQuery};

const N: i64 = 2_345;
const DAY_MS: i64 = 86_400_000;
const RATE_LIMITED: &str = smtp_vault::core::mail::RATE_LIMITED;

/// The fixture tenant `i`, as the SQL below writes it.
struct Fixture {
    id: String,
    state: &'static str,
    rate_limited: bool,
    next_rotation_ms: i64,
    heartbeat_ok_ms: Option<i64>,
}

fn fixture(base: i64, i: i64) -> Fixture {
    Fixture {
        id: format!("tenant-{i:05}"),
        state: match i % 50 {
            0 => "needs_reconcile",
            1 | 2 => "drifted",
            3 => "rotating",
            _ => "active",
        },
        rate_limited: i % 97 == 0,
        next_rotation_ms: base + (i % 90) * DAY_MS,
        heartbeat_ok_ms: (i % 13 != 0).then_some(base - i * 1_000),
    }
}

fn fixture_sql(base: i64) -> String {
    let rate_limited = RATE_LIMITED.replace('\'', "''");
    format!(
        "WITH RECURSIVE n(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < {N}) \
         INSERT INTO tenants (tenant_id, state, version, username, smtp_host, smtp_port, webmail_url, \
           mailu_api_url, stored_at_ms, next_rotation_at_ms, created_at_ms, updated_at_ms, last_error, \
           heartbeat_ok_at_ms) \
         SELECT 'tenant-' || SUBSTR('0000' || CAST(i AS TEXT), LENGTH(CAST(i AS TEXT)), 5), \
           CASE i % 50 WHEN 0 THEN 'needs_reconcile' WHEN 1 THEN 'drifted' WHEN 2 THEN 'drifted' \
             WHEN 3 THEN 'rotating' ELSE 'active' END, \
           1, 'admin@example.com', 'mail.example.com', 587, 'https://mail.example.com', \
           'https://mail.example.com/api', {base}, {base} + (i % 90) * {DAY_MS}, {base}, {base}, \
           CASE WHEN i % 97 = 0 THEN '{rate_limited}' ELSE NULL END, \
           CASE WHEN i % 13 = 0 THEN NULL ELSE {base} - i * 1000 END \
         FROM n"
    )
}

async fn every_page(core: &Core, mut query: TenantQuery, limit: u32) -> (Vec<String>, Option<String>) {
    query.limit = Some(limit);
    let mut ids = Vec::new();
    let mut last_prev = None;
    loop {
        let page = core.tenant_page(&Actor::operator(), &query).await.unwrap();
        assert!(page.tenants.len() <= limit as usize);
        ids.extend(page.tenants.iter().map(|t| t.tenant_id.to_string()));
        last_prev = page.prev_cursor.or(last_prev);
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return (ids, last_prev),
        }
    }
}

fn expected(base: i64, keep: impl Fn(&Fixture) -> bool) -> Vec<String> {
    (1..=N).map(|i| fixture(base, i)).filter(|f| keep(f)).map(|f| f.id).collect()
}

#[tokio::test]
async fn pages_meet_every_tenant_once_and_every_filter_and_count_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let mut config = Config::defaults();
    config.database_url = db.url.clone();
    let core = Core::connect(&config, Needs::DB, None).await.unwrap();
    let base = Utc::now().timestamp_millis();
    sqlx::query(&fixture_sql(base)).execute(core.db().pool()).await.unwrap();
    let all = expected(base, |_| true);
    assert_eq!(all.len(), N as usize);
    assert_eq!(all[0], "tenant-00001", "the fixture's ids are zero-padded");

    // Forward, 97 at a time: every tenant once, in id order.
    let (walked, _) = every_page(&core, TenantQuery::default(), 97).await;
    assert_eq!(walked, all);
    // Back from the last page by prev_cursor: every tenant once too.
    let mut query = TenantQuery { limit: Some(97), ..TenantQuery::default() };
    let mut last = core.tenant_page(&Actor::operator(), &query).await.unwrap();
    while let Some(next) = last.next_cursor.clone() {
        query.cursor = Some(next);
        last = core.tenant_page(&Actor::operator(), &query).await.unwrap();
    }
    let mut back: Vec<String> = last.tenants.iter().map(|t| t.tenant_id.to_string()).collect();
    while let Some(prev) = last.prev_cursor.clone() {
        query.cursor = Some(prev);
        last = core.tenant_page(&Actor::operator(), &query).await.unwrap();
        assert_eq!(last.tenants.len(), 97, "a page walked back to is full");
        let mut page: Vec<String> = last.tenants.iter().map(|t| t.tenant_id.to_string()).collect();
        page.append(&mut back);
        back = page;
    }
    assert_eq!(back, all);
    assert!(last.next_cursor.is_some(), "the first page reached backwards links forward");

    // Every filter, alone and combined, with its total.
    let cases: Vec<(TenantQuery, Vec<String>)> = vec![
        (
            TenantQuery { state: Some(TenantFilter::Drifted), ..TenantQuery::default() },
            expected(base, |f| f.state == "drifted"),
        ),
        (
            TenantQuery { state: Some(TenantFilter::RateLimited), ..TenantQuery::default() },
            expected(base, |f| f.rate_limited),
        ),
        (
            TenantQuery { due_before: DateTime::from_timestamp_millis(base + 7 * DAY_MS), ..TenantQuery::default() },
            expected(base, |f| f.next_rotation_ms < base + 7 * DAY_MS),
        ),
        (
            TenantQuery { search: Some("0012".into()), ..TenantQuery::default() },
            expected(base, |f| f.id.contains("0012")),
        ),
        (
            TenantQuery {
                state: Some(TenantFilter::Active),
                due_before: DateTime::from_timestamp_millis(base + 30 * DAY_MS),
                search: Some("-01".into()),
                ..TenantQuery::default()
            },
            expected(base, |f| f.state == "active" && f.next_rotation_ms < base + 30 * DAY_MS && f.id.contains("-01")),
        ),
    ];
    for (query, want) in cases {
        assert!(!want.is_empty(), "{query:?} selects something");
        let (got, _) = every_page(&core, query.clone(), 50).await;
        assert_eq!(got, want, "{query:?}");
        let first = core.tenant_page(&Actor::operator(), &query).await.unwrap();
        assert_eq!(first.total, want.len() as u64, "{query:?}");
        assert!(first.prev_cursor.is_none());
    }

    // Counts per state, and the overview, as the formula says.
    let counts = core.tenant_counts(&Actor::operator()).await.unwrap();
    let of = |state: &str| expected(base, |f| f.state == state).len() as u64;
    assert_eq!(counts.total, N as u64);
    assert_eq!(
        (counts.active, counts.rotating, counts.needs_reconcile, counts.drifted),
        (of("active"), of("rotating"), of("needs_reconcile"), of("drifted"))
    );
    assert_eq!(counts.rate_limited, expected(base, |f| f.rate_limited).len() as u64);
    let overview = core.overview(&Actor::operator()).await.unwrap();
    assert_eq!(overview.counts, counts);
    let due = expected(base, |f| f.next_rotation_ms < overview.due_before.timestamp_millis()).len() as u64;
    assert_eq!(overview.due_within_7_days, due);
    let stalest = (1..=N).map(|i| fixture(base, i)).filter_map(|f| f.heartbeat_ok_ms.map(|at| (at, f.id))).min();
    let stalest = stalest.unwrap();
    let shown = overview.stalest_heartbeat.unwrap();
    assert_eq!((shown.at.timestamp_millis(), shown.tenant_id), stalest);
    assert_eq!(overview.never_heartbeat, expected(base, |f| f.heartbeat_ok_ms.is_none()).len() as u64);
    assert_eq!((overview.open_incidents, overview.last_backup_at, overview.last_drill), (0, None, None));
    assert_eq!(CredentialState::from_name("drifted"), Some(CredentialState::Drifted));

    // A cursor not given out, and limits outside 1 to 500, are refused.
    for bad in [
        TenantQuery { cursor: Some("tenant-00001".into()), ..TenantQuery::default() },
        TenantQuery { cursor: Some("n.Robert'); DROP TABLE tenants".into()), ..TenantQuery::default() },
        TenantQuery { limit: Some(0), ..TenantQuery::default() },
        TenantQuery { limit: Some(501), ..TenantQuery::default() },
    ] {
        let refused = core.tenant_page(&Actor::operator(), &bad).await;
        assert!(matches!(refused, Err(smtp_vault::core::Error::InvalidInput(_))), "{bad:?}: {refused:?}");
    }
}
