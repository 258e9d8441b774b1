//! The audit dashboard's queries on a million events (SQLite, and PostgreSQL when
//! `SMTP_VAULT_TEST_DATABASE` points there): every filter, the keyset pages, the text search,
//! "who revealed this tenant lately", the per-day chart and the export return exactly the rows
//! a plain computation over the fixture's formula says they must. Speed is measured in the
//! benchmarks, not here.

use crate::common::TestDb;
use chrono::{DateTime, Duration, Utc};
use smtp_vault::core::config::Config;
use smtp_vault::core::{Actor, Core, Needs};
use smtp_vault::model::AuditQuery;
use std::collections::BTreeMap;

const N: i64 = 1_000_000;
/// 400 days spread over the million events.
const STEP_MS: i64 = 34_560;
const EVENTS: [&str; 7] = [
    "login_succeeded",
    "credential_revealed",
    "reveal_granted",
    "credential_rotated",
    "credential_stored",
    "backup_created",
    "login_failed",
];

/// The fixture row `i`, as the SQL below writes it.
struct Row {
    seq: i64,
    at: i64,
    tenant: Option<String>,
    event: &'static str,
    severity: &'static str,
    actor: String,
    details: String,
}

fn row(base: i64, i: i64) -> Row {
    Row {
        seq: i,
        at: base + i * STEP_MS,
        tenant: (i % 10 != 0).then(|| format!("t{}", i % 50)),
        event: EVENTS[usize::try_from(i % 7).unwrap()],
        severity: if i % 97 == 0 {
            "critical"
        } else if i % 11 == 0 {
            "warning"
        } else {
            "info"
        },
        actor: format!("adm{0} (admin{0}@example.com)", i % 23),
        details: format!("{{\"n\":{i}}}"),
    }
}

/// One statement both databases run: a recursive counter feeding an INSERT.
fn fixture_sql(base: i64) -> String {
    format!(
        "WITH RECURSIVE n(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < {N}) \
         INSERT INTO audit_events (seq, occurred_at_ms, event_type, severity, actor_kind, actor_id, tenant_id, \
           client_ip, request_id, details, prev_hash, hash) \
         SELECT i, {base} + i * {STEP_MS}, \
           CASE i % 7 WHEN 0 THEN '{}' WHEN 1 THEN '{}' WHEN 2 THEN '{}' WHEN 3 THEN '{}' WHEN 4 THEN '{}' \
             WHEN 5 THEN '{}' ELSE '{}' END, \
           CASE WHEN i % 97 = 0 THEN 'critical' WHEN i % 11 = 0 THEN 'warning' ELSE 'info' END, \
           'admin', \
           'adm' || CAST(i % 23 AS TEXT) || ' (admin' || CAST(i % 23 AS TEXT) || '@example.com)', \
           CASE WHEN i % 10 = 0 THEN NULL ELSE 't' || CAST(i % 50 AS TEXT) END, \
           NULL, NULL, '{{\"n\":' || CAST(i AS TEXT) || '}}', 'fixture', 'fixture' \
         FROM n",
        EVENTS[0], EVENTS[1], EVENTS[2], EVENTS[3], EVENTS[4], EVENTS[5], EVENTS[6]
    )
}

fn when(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// Every page of a query (500 at a time), newest first.
async fn all_pages(core: &Core, mut query: AuditQuery) -> Vec<i64> {
    query.limit = Some(500);
    let mut seqs = Vec::new();
    loop {
        let page = core.query_audit(&Actor::operator(), &query).await.unwrap();
        assert!(page.events.len() <= 500);
        seqs.extend(page.events.iter().map(|e| e.seq));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return seqs,
        }
    }
}

fn expected(base: i64, keep: impl Fn(&Row) -> bool) -> Vec<i64> {
    (1..=N).rev().map(|i| row(base, i)).filter(|r| keep(r)).map(|r| r.seq).collect()
}

#[tokio::test]
async fn every_filter_returns_exactly_the_right_rows_on_a_million_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let mut config = Config::defaults();
    config.outbound_allow_plaintext = true;
    config.outbound_allow_networks = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
    config.database_url = db.url.clone();
    let core = Core::connect(&config, Needs::DB, None).await.unwrap();
    let now = Utc::now().timestamp_millis();
    let base = now - N * STEP_MS - 60_000;
    sqlx::query(&fixture_sql(base)).execute(core.db().pool()).await.unwrap();
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM audit_events").fetch_one(core.db().pool()).await.unwrap();
    assert_eq!(count, N);

    // One tenant and one event type: about 2,900 rows over six pages, none missed or repeated.
    let query =
        AuditQuery { tenant: Some("t7".into()), event: Some("credential_revealed".into()), ..AuditQuery::default() };
    let want = expected(base, |r| r.tenant.as_deref() == Some("t7") && r.event == "credential_revealed");
    assert!(want.len() > 2000);
    assert_eq!(all_pages(&core, query).await, want);

    // Severity and an actor (a substring that must not also match admin1, admin130…).
    let query =
        AuditQuery { severity: Some("critical".into()), actor: Some("admin13@".into()), ..AuditQuery::default() };
    let want = expected(base, |r| r.severity == "critical" && r.actor.contains("admin13@"));
    assert!(!want.is_empty());
    assert_eq!(all_pages(&core, query).await, want);

    // A time range (three days in the middle) with an event type.
    let (since, until) = (base + 500_000 * STEP_MS, base + 500_000 * STEP_MS + Duration::days(3).num_milliseconds());
    let query = AuditQuery {
        event: Some("login_failed".into()),
        since: Some(when(since)),
        until: Some(when(until)),
        ..AuditQuery::default()
    };
    let want = expected(base, |r| r.event == "login_failed" && r.at >= since && r.at < until);
    assert!(want.len() > 500);
    assert_eq!(all_pages(&core, query).await, want);

    // A time range alone, three days in the middle (the page is read by the time index and
    // sorted) and two days up to now (the page walks the sequence back from the newest event):
    // the same rows either way.
    let middle = base + 300_000 * STEP_MS;
    let three_days = Duration::days(3).num_milliseconds();
    for (since, until) in [(middle, middle + three_days), (now - three_days, now + 60_000)] {
        let query = AuditQuery { since: Some(when(since)), until: Some(when(until)), ..AuditQuery::default() };
        let want = expected(base, |r| r.at >= since && r.at < until);
        assert!(want.len() > 5000);
        assert_eq!(all_pages(&core, query).await, want);
    }

    // Text in the details: one event; pattern characters are data.
    let one = AuditQuery { text: Some("\"n\":424242}".into()), ..AuditQuery::default() };
    assert_eq!(all_pages(&core, one).await, expected(base, |r| r.details.contains("\"n\":424242}")));
    let wildcard = AuditQuery { text: Some("%".into()), ..AuditQuery::default() };
    assert!(all_pages(&core, wildcard).await.is_empty());

    // The saved filter: who revealed t3 in the last 30 days.
    let month_ago = now - Duration::days(30).num_milliseconds();
    let query = AuditQuery {
        tenant: Some("t3".into()),
        event: Some("credential_revealed".into()),
        since: Some(when(month_ago)),
        ..AuditQuery::default()
    };
    let want =
        expected(base, |r| r.tenant.as_deref() == Some("t3") && r.event == "credential_revealed" && r.at >= month_ago);
    assert!(!want.is_empty());
    assert_eq!(all_pages(&core, query.clone()).await, want);

    // The export streams the same rows, oldest first.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let export = tokio::spawn({
        let (core, query) = (core.clone(), query.clone());
        async move { core.stream_audit(&Actor::operator(), &query, tx).await.unwrap() }
    });
    let mut streamed = Vec::new();
    while let Some(event) = rx.recv().await {
        streamed.push(event.seq);
    }
    assert_eq!(export.await.unwrap(), u64::try_from(want.len()).unwrap());
    assert_eq!(streamed, want.iter().rev().copied().collect::<Vec<_>>());

    // The per-day chart for one tenant over ten days, by severity.
    let day_ms = 86_400_000;
    let first_day = (base + 200_000 * STEP_MS).div_euclid(day_ms);
    let query = AuditQuery {
        tenant: Some("t7".into()),
        since: Some(when(first_day * day_ms)),
        until: Some(when((first_day + 10) * day_ms)),
        ..AuditQuery::default()
    };
    let chart = core.audit_per_day(&Actor::operator(), &query).await.unwrap();
    assert_eq!(chart.days.len(), 10);
    let mut want: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for r in (1..=N).map(|i| row(base, i)) {
        if r.tenant.as_deref() == Some("t7")
            && r.at.div_euclid(day_ms) >= first_day
            && r.at.div_euclid(day_ms) < first_day + 10
        {
            let day = when(r.at).format("%Y-%m-%d").to_string();
            let slot = want.entry(day).or_default();
            slot[match r.severity {
                "info" => 0,
                "warning" => 1,
                _ => 2,
            }] += 1;
        }
    }
    let got: BTreeMap<String, [u64; 3]> =
        chart.days.iter().map(|d| (d.day.clone(), [d.info, d.warning, d.critical])).collect();
    assert_eq!(got, want);
    assert!(got.values().any(|counts| counts[1] > 0), "the range holds warnings too");
}
