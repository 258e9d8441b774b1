//! Suspicious-activity rules. Event rules judge each audit event once, after it commits, by
//! walking a cursor over the chain in the database (so nothing is judged twice or skipped
//! across restarts, and two consoles share the work); state checks look at the world every
//! minute (Vault sealed or unreachable, no recent backup) and the whole chain every hour.
//! Each finding is an alert with a severity and a dedupe key, raised into the outbox in the
//! same transaction that moves the cursor. Thresholds come from [`RuleSettings`].
//!
//! Alerts for emergency resets, `needs_reconcile`, heartbeat drift, failed drills and
//! unacknowledged incidents are raised where those happen, in the same transaction, and are
//! not repeated here.

use crate::core::Core;
use crate::core::access::authorize;
use crate::core::alerting::{Alert, Audience, raise_in};
use crate::core::audit::Severity;
use crate::core::error::{Error, Result};
use crate::core::vault::VaultHealth;
use crate::model::Permission;
use crate::model::TenantId;
use chrono::{DateTime, Datelike, Duration, Timelike, Utc, Weekday};
use serde_json::{Value, json};
use sqlx::AnyConnection;
use std::collections::BTreeSet;

/// A rule that can be switched off, with the severity of what it raises.
#[derive(Debug, Clone, Copy)]
pub struct RuleInfo {
    /// The alert kind it raises (also its name in `SMTP_VAULT_RULES_OFF`).
    pub kind: &'static str,
    /// Severity of its alerts.
    pub severity: Severity,
}

/// The rules evaluated here; see docs/monitoring.md for what each means and what to do.
pub const RULES: &[RuleInfo] = &[
    RuleInfo { kind: "reveal_burst", severity: Severity::Critical },
    RuleInfo { kind: "reveal_outside_hours", severity: Severity::Warning },
    RuleInfo { kind: "failed_logins", severity: Severity::Warning },
    RuleInfo { kind: "failed_reauths", severity: Severity::Warning },
    RuleInfo { kind: "login_new_ip", severity: Severity::Warning },
    RuleInfo { kind: "login_new_passkey", severity: Severity::Warning },
    RuleInfo { kind: "backup_overdue", severity: Severity::Critical },
    RuleInfo { kind: "audit_chain_broken", severity: Severity::Critical },
    RuleInfo { kind: "vault_sealed", severity: Severity::Critical },
    RuleInfo { kind: "vault_unreachable", severity: Severity::Critical },
];

fn severity_of(kind: &str) -> Severity {
    RULES.iter().find(|r| r.kind == kind).map_or(Severity::Warning, |r| r.severity)
}

/// Days and hours (UTC) in which admins are expected to reveal passwords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHours {
    days: [bool; 7],
    start_min: u32,
    end_min: u32,
}

impl AllowedHours {
    /// Parses `"mon-fri 07:00-19:00"`, `"sat,sun 10:00-14:00"` or `"07:00-19:00"` (every day).
    /// An end before the start spans midnight (`22:00-06:00`).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let (days_part, hours_part) = match text.split_once(' ') {
            Some((days, hours)) => (Some(days.trim()), hours.trim()),
            None => (None, text.as_str()),
        };
        let mut days = [days_part.is_none(); 7];
        if let Some(spec) = days_part {
            for item in spec.split(',') {
                match item.split_once('-') {
                    Some((from, to)) => {
                        let (from, to) = (weekday(from)?, weekday(to)?);
                        let mut day = from;
                        loop {
                            days[day] = true;
                            if day == to {
                                break;
                            }
                            day = (day + 1) % 7;
                        }
                    }
                    None => days[weekday(item)?] = true,
                }
            }
        }
        let (start, end) =
            hours_part.split_once('-').ok_or_else(|| format!("expected HH:MM-HH:MM in {hours_part:?}"))?;
        let (start_min, end_min) = (minutes(start)?, minutes(end)?);
        if start_min == end_min {
            return Err("the allowed hours are empty (start equals end)".into());
        }
        Ok(Self { days, start_min, end_min })
    }

    /// Whether `at` falls inside.
    #[must_use]
    pub fn allows(&self, at: DateTime<Utc>) -> bool {
        let minute = at.hour() * 60 + at.minute();
        let day = at.weekday().num_days_from_monday() as usize;
        if self.start_min < self.end_min {
            self.days[day] && (self.start_min..self.end_min).contains(&minute)
        } else if minute >= self.start_min {
            self.days[day]
        } else {
            // The early hours belong to the shift that began the day before.
            minute < self.end_min && self.days[(day + 6) % 7]
        }
    }
}

impl std::fmt::Display for AllowedHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let days: Vec<&str> = NAMES.iter().zip(self.days).filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{} {}-{}", days.join(","), hm(self.start_min), hm(self.end_min))
    }
}

fn weekday(text: &str) -> std::result::Result<usize, String> {
    let day: Weekday = text.trim().parse().map_err(|_| format!("{text:?} is not a weekday (mon … sun)"))?;
    Ok(day.num_days_from_monday() as usize)
}

fn minutes(text: &str) -> std::result::Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day (HH:MM)");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Thresholds of the rules.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    /// Reveals by one admin within the window that make a burst.
    pub reveal_burst_count: u32,
    /// A burst also when one admin reveals more than this many tenants within the window.
    pub reveal_burst_tenants: u32,
    /// The burst window.
    pub reveal_burst_window: Duration,
    /// When reveals are expected; `None`: any time.
    pub reveal_hours: Option<AllowedHours>,
    /// Failed logins (per email or per address) or re-auths (per admin) within the window.
    pub failed_auth_count: u32,
    /// The failed-attempt window.
    pub failed_auth_window: Duration,
    /// Age of the newest backup that raises `backup_overdue`.
    pub backup_max_age: Duration,
    /// Rules switched off, by kind.
    pub off: BTreeSet<String>,
}

impl RuleSettings {
    /// From the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown rule name or malformed allowed hours.
    pub fn from_config(config: &crate::core::config::Config) -> Result<Self> {
        let mut off = BTreeSet::new();
        for name in config.rules_off.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if !RULES.iter().any(|r| r.kind == name) {
                let known: Vec<&str> = RULES.iter().map(|r| r.kind).collect();
                return Err(Error::Config(format!(
                    "SMTP_VAULT_RULES_OFF: unknown rule {name:?} (known: {})",
                    known.join(", ")
                )));
            }
            off.insert(name.to_owned());
        }
        let reveal_hours = match config.rule_reveal_hours.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                AllowedHours::parse(text).map_err(|e| Error::Config(format!("SMTP_VAULT_RULE_REVEAL_HOURS: {e}")))?,
            ),
        };
        Ok(Self {
            reveal_burst_count: config.rule_reveal_burst_count,
            reveal_burst_tenants: config.rule_reveal_burst_tenants,
            reveal_burst_window: Duration::minutes(i64::from(config.rule_reveal_burst_minutes)),
            reveal_hours,
            failed_auth_count: config.rule_failed_auth_count,
            failed_auth_window: Duration::minutes(i64::from(config.rule_failed_auth_minutes)),
            backup_max_age: Duration::hours(i64::from(config.rule_backup_max_age_hours)),
            off,
        })
    }

    fn on(&self, kind: &str) -> bool {
        !self.off.contains(kind)
    }
}

/// What one pass of the event rules did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RulePass {
    /// Audit events judged.
    pub events: usize,
    /// Alerts raised (new dedupe keys only).
    pub alerts: usize,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    occurred_at_ms: i64,
    event_type: String,
    actor_kind: String,
    actor_id: String,
    tenant_id: Option<String>,
    client_ip: Option<String>,
    details: String,
}

/// An alert found by a rule, before it is raised.
struct Finding {
    kind: &'static str,
    tenant: Option<String>,
    dedupe_key: String,
    message: String,
    details: Value,
}

/// Events judged per transaction: bounds how long the write lock is held.
const BATCH: i64 = 500;

/// Attacker-typed text (a login email) is cut before it reaches an alert.
fn clip(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
    if text.chars().count() > 120 {
        out.push('…');
    }
    out
}

impl Core {
    /// Judges every audit event not judged yet, raising what the rules find.
    ///
    /// # Errors
    /// Database errors (the cursor then stays where it was).
    pub async fn evaluate_rules(&self) -> Result<RulePass> {
        let mut pass = RulePass::default();
        // Nothing new (the usual case): one read, no write lock.
        let (cursor, head): (i64, i64) =
            sqlx::query_as("SELECT c.seq, h.seq FROM monitor_cursor c, audit_head h WHERE c.id = 1 AND h.id = 1")
                .fetch_one(self.db.pool())
                .await?;
        if cursor > head {
            // The rules read up to `cursor`, so those events existed: the chain was cut, and
            // the rules would stay silent until it grew past the cursor again.
            self.raise_truncation(cursor, head).await?;
            return Ok(pass);
        }
        if cursor == head {
            return Ok(pass);
        }
        loop {
            let mut tx = self.db.begin_write().await?;
            // Taking the row lock first: two consoles judge a batch one after the other.
            sqlx::query("UPDATE monitor_cursor SET seq = seq WHERE id = 1").execute(&mut *tx).await?;
            let (cursor,): (i64,) =
                sqlx::query_as("SELECT seq FROM monitor_cursor WHERE id = 1").fetch_one(&mut *tx).await?;
            let events: Vec<EventRow> = sqlx::query_as(
                "SELECT seq, occurred_at_ms, event_type, actor_kind, actor_id, tenant_id, client_ip, details \
                 FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(cursor)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                tx.rollback().await?;
                break;
            };
            for event in &events {
                for finding in self.judge(&mut tx, event).await? {
                    let tenant = finding.tenant.as_deref().and_then(|t| TenantId::parse(t).ok());
                    let alert = Alert {
                        kind: finding.kind,
                        severity: severity_of(finding.kind),
                        tenant: tenant.as_ref(),
                        dedupe_key: finding.dedupe_key,
                        message: finding.message,
                        details: finding.details,
                        audience: Audience::Security,
                    };
                    if raise_in(&mut tx, &self.channels, alert, self.now()).await?.is_some() {
                        pass.alerts += 1;
                    }
                }
            }
            sqlx::query("UPDATE monitor_cursor SET seq = $1 WHERE id = 1").bind(last).execute(&mut *tx).await?;
            tx.commit().await?;
            pass.events += events.len();
            if events.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        if pass.alerts > 0 {
            self.wake_outbox();
        }
        Ok(pass)
    }

    async fn judge(&self, conn: &mut AnyConnection, event: &EventRow) -> Result<Vec<Finding>> {
        let rules = &self.settings.rules;
        let at = DateTime::from_timestamp_millis(event.occurred_at_ms).unwrap_or_default();
        let mut found = Vec::new();
        match (event.event_type.as_str(), event.actor_kind.as_str()) {
            ("credential_revealed", "admin") => {
                let window = rules.reveal_burst_window.num_milliseconds().max(1);
                let burst_key = format!("reveal_burst:{}:{}", event.actor_id, event.occurred_at_ms / window);
                if rules.on("reveal_burst") && !already_raised(conn, &burst_key).await? {
                    let since = event.occurred_at_ms - rules.reveal_burst_window.num_milliseconds();
                    let tenants: Vec<(Option<String>,)> = sqlx::query_as(
                        "SELECT tenant_id FROM audit_events WHERE event_type = 'credential_revealed' \
                         AND actor_id = $1 AND occurred_at_ms > $2 AND seq <= $3",
                    )
                    .bind(&event.actor_id)
                    .bind(since)
                    .bind(event.seq)
                    .fetch_all(&mut *conn)
                    .await?;
                    let reveals = tenants.len();
                    let distinct: BTreeSet<String> = tenants.into_iter().filter_map(|(t,)| t).collect();
                    let too_many = reveals >= rules.reveal_burst_count as usize;
                    let too_wide = distinct.len() > rules.reveal_burst_tenants as usize;
                    if too_many || too_wide {
                        let minutes = rules.reveal_burst_window.num_minutes();
                        found.push(Finding {
                            kind: "reveal_burst",
                            tenant: None,
                            dedupe_key: burst_key,
                            message: format!(
                                "{} revealed {reveals} passwords of {} tenants within {minutes} minutes",
                                event.actor_id,
                                distinct.len()
                            ),
                            details: json!({
                                "admin": event.actor_id, "reveals": reveals,
                                "tenants": distinct, "window_minutes": minutes, "audit_seq": event.seq,
                            }),
                        });
                    }
                }
                if rules.on("reveal_outside_hours")
                    && let Some(hours) = &rules.reveal_hours
                    && !hours.allows(at)
                {
                    let tenant = event.tenant_id.clone().unwrap_or_default();
                    found.push(Finding {
                        kind: "reveal_outside_hours",
                        tenant: event.tenant_id.clone(),
                        dedupe_key: format!("reveal_outside_hours:{}:{}", event.actor_id, at.format("%Y-%m-%dT%H")),
                        message: format!(
                            "{} revealed {tenant}'s password at {} UTC, outside the allowed hours",
                            event.actor_id,
                            at.format("%a %H:%M")
                        ),
                        details: json!({"admin": event.actor_id, "at": at.to_rfc3339(), "audit_seq": event.seq}),
                    });
                }
            }
            ("login_failed", _) if rules.on("failed_logins") => {
                let email = email_of(&event.details);
                let bucket = event.occurred_at_ms / rules.failed_auth_window.num_milliseconds().max(1);
                let email_key = format!("failed_logins:email:{}:{bucket}", clip(&email));
                let ip_key = event.client_ip.as_ref().map(|ip| format!("failed_logins:ip:{ip}:{bucket}"));
                // Under a flood the alerts exist after the first few events: skip the counting.
                let email_open = !email.is_empty() && !already_raised(conn, &email_key).await?;
                let ip_open = match &ip_key {
                    Some(key) => !already_raised(conn, key).await?,
                    None => false,
                };
                if !email_open && !ip_open {
                    return Ok(found);
                }
                let since = event.occurred_at_ms - rules.failed_auth_window.num_milliseconds();
                let rows: Vec<(Option<String>, String)> = sqlx::query_as(
                    "SELECT client_ip, details FROM audit_events WHERE event_type = 'login_failed' \
                     AND actor_id = $1 AND occurred_at_ms > $2 AND seq <= $3",
                )
                .bind(&event.actor_id)
                .bind(since)
                .bind(event.seq)
                .fetch_all(&mut *conn)
                .await?;
                let minutes = rules.failed_auth_window.num_minutes();
                let limit = rules.failed_auth_count as usize;
                let same_email = rows.iter().filter(|(_, d)| email_open && email_of(d) == email).count();
                if same_email >= limit {
                    found.push(Finding {
                        kind: "failed_logins",
                        tenant: None,
                        dedupe_key: email_key,
                        message: format!("{same_email} failed logins for {} within {minutes} minutes", clip(&email)),
                        details: json!({"email": clip(&email), "attempts": same_email, "window_minutes": minutes}),
                    });
                }
                if let (Some(ip), Some(ip_key), true) = (&event.client_ip, ip_key, ip_open) {
                    let same_ip = rows.iter().filter(|(i, _)| i.as_ref() == Some(ip)).count();
                    if same_ip >= limit {
                        found.push(Finding {
                            kind: "failed_logins",
                            tenant: None,
                            dedupe_key: ip_key,
                            message: format!("{same_ip} failed logins from {ip} within {minutes} minutes"),
                            details: json!({"client_ip": ip, "attempts": same_ip, "window_minutes": minutes}),
                        });
                    }
                }
            }
            ("reauth_failed", "admin") if rules.on("failed_reauths") => {
                let bucket = event.occurred_at_ms / rules.failed_auth_window.num_milliseconds().max(1);
                let key = format!("failed_reauths:{}:{bucket}", event.actor_id);
                if already_raised(conn, &key).await? {
                    return Ok(found);
                }
                let since = event.occurred_at_ms - rules.failed_auth_window.num_milliseconds();
                let (failures,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM audit_events WHERE event_type = 'reauth_failed' \
                     AND actor_id = $1 AND occurred_at_ms > $2 AND seq <= $3",
                )
                .bind(&event.actor_id)
                .bind(since)
                .bind(event.seq)
                .fetch_one(&mut *conn)
                .await?;
                if failures >= i64::from(rules.failed_auth_count) {
                    let minutes = rules.failed_auth_window.num_minutes();
                    found.push(Finding {
                        kind: "failed_reauths",
                        tenant: event.tenant_id.clone(),
                        dedupe_key: key,
                        message: format!(
                            "{} failed {failures} passkey re-authentications within {minutes} minutes",
                            event.actor_id
                        ),
                        details: json!({"admin": event.actor_id, "failures": failures, "window_minutes": minutes}),
                    });
                }
            }
            ("login_succeeded", "admin") => {
                let details: Value = serde_json::from_str(&event.details).unwrap_or(Value::Null);
                let checks = [
                    ("ip", "login_new_ip", event.client_ip.clone()),
                    ("passkey", "login_new_passkey", details["passkey_id"].as_str().map(str::to_owned)),
                ];
                for (kind, rule, value) in checks {
                    let Some(value) = value else { continue };
                    let (known,): (i64,) =
                        sqlx::query_as("SELECT COUNT(*) FROM monitor_seen WHERE subject = $1 AND kind = $2")
                            .bind(&event.actor_id)
                            .bind(kind)
                            .fetch_one(&mut *conn)
                            .await?;
                    let inserted = sqlx::query(
                        "INSERT INTO monitor_seen (subject, kind, value, first_seen_ms) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (subject, kind, value) DO NOTHING",
                    )
                    .bind(&event.actor_id)
                    .bind(kind)
                    .bind(&value)
                    .bind(event.occurred_at_ms)
                    .execute(&mut *conn)
                    .await?;
                    // The first login (enrollment) teaches; only a later, unseen one is news.
                    if inserted.rows_affected() == 1 && known > 0 && rules.on(rule) {
                        let what =
                            if kind == "ip" { format!("a new address, {value}") } else { "a new passkey".into() };
                        found.push(Finding {
                            kind: rule,
                            tenant: None,
                            dedupe_key: format!("{rule}:{}", event.seq),
                            message: format!("{} signed in with {what}", event.actor_id),
                            details: json!({"admin": event.actor_id, kind: value, "audit_seq": event.seq}),
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(found)
    }

    /// Looks at Vault and the backups; raises an alert when trouble starts (Vault) or once a
    /// day while it lasts (backups). Returns the alerts raised.
    ///
    /// # Errors
    /// Database errors.
    pub async fn run_state_checks(&self) -> Result<usize> {
        let now = self.now();
        let mut raised = 0;
        if let Some(vault) = &self.vault {
            let health = vault.health().await;
            raised += usize::from(self.vault_episode(health, now).await?);
        }
        if self.backup_target.is_some() && self.settings.rules.on("backup_overdue") {
            raised += usize::from(self.check_backup_age(now).await?);
        }
        if self.mail().is_ok() {
            self.recheck_refused_heartbeats().await?;
        }
        if raised > 0 {
            self.wake_outbox();
        }
        Ok(raised)
    }

    async fn vault_episode(&self, health: VaultHealth, now: DateTime<Utc>) -> Result<bool> {
        let kind = match health {
            VaultHealth::Active | VaultHealth::Standby => {
                sqlx::query("DELETE FROM monitor_episodes WHERE name = 'vault'").execute(self.db.pool()).await?;
                return Ok(false);
            }
            VaultHealth::Sealed => "vault_sealed",
            VaultHealth::Uninitialized | VaultHealth::Unreachable | VaultHealth::Leaderless => "vault_unreachable",
        };
        let mut tx = self.db.begin_write().await?;
        let open: Option<(String, i64)> =
            sqlx::query_as("SELECT state, started_at_ms FROM monitor_episodes WHERE name = 'vault'")
                .fetch_optional(&mut *tx)
                .await?;
        let started = match open {
            Some((state, started)) if state == health.as_str() => started,
            _ => {
                let started = now.timestamp_millis();
                sqlx::query("DELETE FROM monitor_episodes WHERE name = 'vault'").execute(&mut *tx).await?;
                sqlx::query("INSERT INTO monitor_episodes (name, state, started_at_ms) VALUES ('vault', $1, $2)")
                    .bind(health.as_str())
                    .bind(started)
                    .execute(&mut *tx)
                    .await?;
                started
            }
        };
        let mut raised = None;
        if self.settings.rules.on(kind) {
            let alert = Alert {
                kind,
                severity: severity_of(kind),
                tenant: None,
                dedupe_key: format!("{kind}:{started}"),
                message: format!("Vault is {}: credentials can be neither read nor rotated", health.as_str()),
                details: json!({"state": health.as_str(), "since": when(started).to_rfc3339()}),
                audience: Audience::Security,
            };
            raised = raise_in(&mut tx, &self.channels, alert, now).await?;
        }
        tx.commit().await?;
        Ok(raised.is_some())
    }

    async fn check_backup_age(&self, now: DateTime<Utc>) -> Result<bool> {
        let newest: Option<(i64,)> = sqlx::query_as(
            "SELECT occurred_at_ms FROM audit_events WHERE event_type = 'backup_created' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(self.db.pool())
        .await?;
        // Never backed up: count from the console's first event (its installation).
        let (baseline, never) = match newest {
            Some((at,)) => (at, false),
            None => match sqlx::query_as::<_, (i64,)>("SELECT occurred_at_ms FROM audit_events ORDER BY seq LIMIT 1")
                .fetch_optional(self.db.pool())
                .await?
            {
                Some((at,)) => (at, true),
                None => return Ok(false),
            },
        };
        let age = now - when(baseline);
        if age <= self.settings.rules.backup_max_age {
            return Ok(false);
        }
        let hours = age.num_hours();
        let message = if never {
            format!("no backup has been written since the console started {hours} hours ago")
        } else {
            format!("the newest backup is {hours} hours old")
        };
        let alert = Alert {
            kind: "backup_overdue",
            severity: severity_of("backup_overdue"),
            tenant: None,
            // Once a day while it lasts.
            dedupe_key: format!("backup_overdue:{baseline}:{}", now.format("%Y-%m-%d")),
            message,
            details: json!({
                "newest_backup_at": (!never).then(|| when(baseline).to_rfc3339()),
                "age_hours": hours,
                "limit_hours": self.settings.rules.backup_max_age.num_hours(),
            }),
            audience: Audience::Security,
        };
        self.raise_alert(alert).await
    }

    async fn raise_truncation(&self, cursor: i64, head: i64) -> Result<bool> {
        if !self.settings.rules.on("audit_chain_broken") {
            return Ok(false);
        }
        let reason = format!(
            "truncated: the alert rules had already read {cursor} events, the chain now has {head} (events removed \
             from the end)"
        );
        let alert = Alert {
            kind: "audit_chain_broken",
            severity: severity_of("audit_chain_broken"),
            tenant: None,
            dedupe_key: format!("audit_chain_broken:{}", head + 1),
            message: format!("the audit chain is broken at event {}: {reason}", head + 1),
            details: json!({"seq": head + 1, "reason": reason, "events": head}),
            audience: Audience::Security,
        };
        self.raise_alert(alert).await
    }

    /// Verifies the whole chain and raises `audit_chain_broken` (once per broken link).
    ///
    /// # Errors
    /// Database errors.
    pub async fn check_audit_chain(&self) -> Result<bool> {
        let report = self.verify_audit_chain().await?;
        let Some(broken) = report.first_broken else { return Ok(false) };
        if !self.settings.rules.on("audit_chain_broken") {
            return Ok(false);
        }
        let alert = Alert {
            kind: "audit_chain_broken",
            severity: severity_of("audit_chain_broken"),
            tenant: None,
            dedupe_key: format!("audit_chain_broken:{}", broken.seq),
            message: format!("the audit chain is broken at event {}: {}", broken.seq, broken.reason),
            details: json!({"seq": broken.seq, "reason": broken.reason, "events": report.events}),
            audience: Audience::Security,
        };
        self.raise_alert(alert).await
    }

    /// Every alert kind the console raises and when, with the thresholds in effect (any
    /// signed-in admin, and the operator).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] / `Forbidden` for others.
    pub fn alert_rules(&self, actor: &crate::core::Actor) -> Result<Vec<crate::model::AlertRuleView>> {
        authorize(actor, Permission::ViewOperations)?;
        let r = &self.settings.rules;
        let window = r.reveal_burst_window.num_minutes();
        let failed = r.failed_auth_window.num_minutes();
        let hours = r
            .reveal_hours
            .as_ref()
            .map_or_else(|| "no allowed hours are set (the rule is idle)".to_owned(), |h| format!("outside {h}"));
        let ack_hours = self.settings.incident_ack_after.num_hours();
        let ruled = [
            (
                "reveal_burst",
                format!(
                    "one admin reveals {} or more passwords, or more than {} tenants, within {window} minutes",
                    r.reveal_burst_count, r.reveal_burst_tenants
                ),
            ),
            ("reveal_outside_hours", hours),
            (
                "failed_logins",
                format!(
                    "{} failed logins for one email or from one address within {failed} minutes",
                    r.failed_auth_count
                ),
            ),
            (
                "failed_reauths",
                format!(
                    "{} failed passkey re-authentications by one admin within {failed} minutes",
                    r.failed_auth_count
                ),
            ),
            ("login_new_ip", "an admin signs in from an address they have not used before".to_owned()),
            ("login_new_passkey", "an admin signs in with a passkey they have not signed in with before".to_owned()),
            (
                "backup_overdue",
                format!("no backup for {} hours; repeated daily while it lasts", r.backup_max_age.num_hours()),
            ),
            ("audit_chain_broken", "the hourly verification finds a broken link in the audit chain".to_owned()),
            ("vault_sealed", "Vault answers sealed (checked every minute); once per episode".to_owned()),
            ("vault_unreachable", "Vault does not answer (checked every minute); once per episode".to_owned()),
        ];
        let mut views: Vec<crate::model::AlertRuleView> = ruled
            .into_iter()
            .map(|(kind, condition)| crate::model::AlertRuleView {
                kind: kind.to_owned(),
                severity: severity_of(kind).as_str().to_owned(),
                condition,
                audience: "security".into(),
                enabled: r.on(kind),
            })
            .collect();
        let at_source: [(&str, Severity, &str, String); 17] = [
            ("emergency_reset", Severity::Critical, "security", "an emergency reset starts".into()),
            ("emergency_reset_failed", Severity::Critical, "security", "an emergency reset could not rotate".into()),
            (
                "emergency_reset_interrupted",
                Severity::Critical,
                "security",
                "an emergency reset was cut short (15 minutes without an outcome)".into(),
            ),
            (
                "incident_unacknowledged",
                Severity::Critical,
                "security",
                format!("an incident has no second-person acknowledgment after {ack_hours} hours"),
            ),
            (
                "rotation_needs_reconcile",
                Severity::Critical,
                "security",
                "a rotation gave up after its attempts (needs_reconcile)".into(),
            ),
            (
                "heartbeat_drift",
                Severity::Critical,
                "security",
                "the daily heartbeat finds the stored password refused".into(),
            ),
            (
                "dr_drill_failed",
                Severity::Critical,
                "security",
                "a disaster-recovery drill failed or missed its RTO/RPO".into(),
            ),
            ("job_failed", Severity::Critical, "security", "a scheduled job (backup, drill) failed".into()),
            (
                "journal_write_failed",
                Severity::Warning,
                "security",
                "a credential change could not be journaled for backups".into(),
            ),
            ("dns_hook_failed", Severity::Critical, "security", "the DNS hook failed after a recovery".into()),
            (
                "mailu_destination_changed",
                Severity::Warning,
                "security",
                "a tenant's Mailu API URL (where its passwords go) was changed".into(),
            ),
            (
                "mailu_destination_mismatch",
                Severity::Critical,
                "security",
                "the Mailu API URL or SMTP host in Vault is not the one the console recorded (nothing is sent there)"
                    .into(),
            ),
            (
                "passkey_added",
                Severity::Warning,
                "security",
                "an admin added a passkey (the admin is mailed too)".into(),
            ),
            (
                "mailu_rate_limited",
                Severity::Warning,
                "security",
                "a tenant's Mailu rate-limits the console, so its logins prove nothing (once a day)".into(),
            ),
            (
                "passkey_counter_regressed",
                Severity::Critical,
                "security",
                "a passkey signed with a signature counter at or below the last one seen (copied?)".into(),
            ),
            (
                "new_passkey_step_up",
                Severity::Warning,
                "security",
                "a passkey added less than 24 h ago passed a step-up".into(),
            ),
            (
                "rotation_notice",
                Severity::Info,
                "tenant",
                "a rotation is due within 7 days (to the tenant's contact)".into(),
            ),
        ];
        views.extend(at_source.into_iter().map(|(kind, severity, audience, condition)| crate::model::AlertRuleView {
            kind: kind.to_owned(),
            severity: severity.as_str().to_owned(),
            condition,
            audience: audience.to_owned(),
            enabled: true,
        }));
        views.push(crate::model::AlertRuleView {
            kind: "tenant_credential_reset".into(),
            severity: Severity::Warning.as_str().to_owned(),
            condition: "an emergency reset finished (a letter to the tenant's contact)".into(),
            audience: "tenant".into(),
            enabled: true,
        });
        Ok(views)
    }

    /// Sets the gauges `/metrics` shows from the database and Vault (read at scrape time, so
    /// every console reports the same shared state).
    ///
    /// # Errors
    /// Database errors (the database gauge is set first either way).
    pub async fn observe_gauges(&self) -> Result<()> {
        let readiness = self.shared_readiness().await;
        metrics::gauge!("smtp_vault_database_up").set(f64::from(u8::from(readiness.database)));
        let up = matches!(readiness.vault, VaultHealth::Active | VaultHealth::Standby);
        metrics::gauge!("smtp_vault_vault_up").set(f64::from(u8::from(up)));
        for state in [
            VaultHealth::Active,
            VaultHealth::Standby,
            VaultHealth::Leaderless,
            VaultHealth::Sealed,
            VaultHealth::Uninitialized,
            VaultHealth::Unreachable,
        ] {
            let current = f64::from(u8::from(state == readiness.vault));
            metrics::gauge!("smtp_vault_vault_health", "state" => state.as_str()).set(current);
        }
        let pool = self.db.pool();
        let newest: Option<(i64,)> = sqlx::query_as(
            "SELECT occurred_at_ms FROM audit_events WHERE event_type = 'backup_created' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        let age = newest.map_or(-1.0, |(at,)| ((self.now().timestamp_millis() - at).max(0) / 1000) as f64);
        metrics::gauge!("smtp_vault_backup_age_seconds").set(age);
        let depth: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM alert_deliveries WHERE state IN ('pending', 'dead') GROUP BY state",
        )
        .fetch_all(pool)
        .await?;
        for state in ["pending", "dead"] {
            let n = depth.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
            metrics::gauge!("smtp_vault_outbox_depth", "state" => state).set(n as f64);
        }
        let (open_alerts,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE acknowledged_at_ms IS NULL").fetch_one(pool).await?;
        metrics::gauge!("smtp_vault_alerts_unacknowledged").set(open_alerts as f64);
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM tenants GROUP BY state").fetch_all(pool).await?;
        for (state, n) in states {
            metrics::gauge!("smtp_vault_credentials", "state" => state).set(n as f64);
        }
        let (windows,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM reveal_grants WHERE revoked_at_ms IS NULL AND expires_at_ms > $1")
                .bind(self.now().timestamp_millis())
                .fetch_one(pool)
                .await?;
        metrics::gauge!("smtp_vault_reveal_windows_open").set(windows as f64);
        Ok(())
    }

    /// Runs the rules until the process ends: event rules every `poll` (an idle pass is one
    /// read), state checks every minute, an audit anchor every `audit_anchor_every` (when the
    /// chain grew), the chain check every hour.
    pub async fn run_monitor(&self, poll: std::time::Duration) {
        let minute = std::time::Duration::from_secs(60);
        let hour = std::time::Duration::from_secs(3600);
        let (mut last_state, mut last_chain, mut last_anchor): (
            Option<std::time::Instant>,
            Option<std::time::Instant>,
            Option<std::time::Instant>,
        ) = (None, None, None);
        loop {
            if let Err(e) = self.evaluate_rules().await {
                tracing::warn!(error = %e, "could not evaluate the alert rules");
            }
            if last_state.is_none_or(|t| t.elapsed() >= minute) {
                last_state = Some(std::time::Instant::now());
                if let Err(e) = self.run_state_checks().await {
                    tracing::warn!(error = %e, "could not run the health checks");
                }
            }
            if last_anchor.is_none_or(|t| t.elapsed() >= self.settings.audit_anchor_every) {
                last_anchor = Some(std::time::Instant::now());
                if let Err(e) = self.write_audit_anchor().await {
                    tracing::warn!(error = %e, "could not write an audit anchor");
                }
            }
            if last_chain.is_none_or(|t| t.elapsed() >= hour) {
                last_chain = Some(std::time::Instant::now());
                if let Err(e) = self.check_audit_chain().await {
                    tracing::warn!(error = %e, "could not verify the audit chain");
                }
            }
            tokio::time::sleep(poll).await;
        }
    }
}

fn when(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn email_of(details: &str) -> String {
    serde_json::from_str::<Value>(details).ok().and_then(|d| d["email"].as_str().map(str::to_owned)).unwrap_or_default()
}

async fn already_raised(conn: &mut AnyConnection, dedupe_key: &str) -> Result<bool> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE dedupe_key = $1")
        .bind(dedupe_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().unwrap_or_default()
    }

    #[test]
    fn office_hours_on_weekdays() {
        let hours = AllowedHours::parse("Mon-Fri 07:00-19:00").unwrap_or_else(|e| panic!("{e}"));
        // 2026-12-02 is a Wednesday.
        assert!(hours.allows(at(2026, 12, 2, 7, 0)));
        assert!(hours.allows(at(2026, 12, 2, 18, 59)));
        assert!(!hours.allows(at(2026, 12, 2, 19, 0)));
        assert!(!hours.allows(at(2026, 12, 2, 6, 59)));
        assert!(!hours.allows(at(2026, 12, 5, 12, 0)), "Saturday");
    }

    #[test]
    fn a_night_shift_spans_midnight_and_belongs_to_its_first_day() {
        let hours = AllowedHours::parse("fri 22:00-06:00").unwrap_or_else(|e| panic!("{e}"));
        assert!(hours.allows(at(2026, 12, 4, 23, 0)), "Friday night");
        assert!(hours.allows(at(2026, 12, 5, 5, 59)), "early Saturday is Friday's shift");
        assert!(!hours.allows(at(2026, 12, 5, 23, 0)), "Saturday night");
        assert!(!hours.allows(at(2026, 12, 4, 5, 0)), "early Friday is Thursday's shift");
    }

    #[test]
    fn every_day_and_lists_and_wrapping_ranges() {
        let all = AllowedHours::parse("08:00-17:30").unwrap_or_else(|e| panic!("{e}"));
        assert!(all.allows(at(2026, 12, 6, 17, 29)));
        assert!(!all.allows(at(2026, 12, 6, 17, 30)));
        let weekend = AllowedHours::parse("sat,sun 00:00-24:00").unwrap_or_else(|e| panic!("{e}"));
        assert!(weekend.allows(at(2026, 12, 6, 23, 59)));
        assert!(!weekend.allows(at(2026, 12, 7, 0, 0)));
        let wrap = AllowedHours::parse("sat-mon 09:00-10:00").unwrap_or_else(|e| panic!("{e}"));
        assert!(wrap.allows(at(2026, 12, 7, 9, 30)), "Monday");
        assert!(!wrap.allows(at(2026, 12, 8, 9, 30)), "Tuesday");
    }

    #[test]
    fn malformed_hours_say_what_is_wrong() {
        for (text, needle) in [
            ("funday 07:00-19:00", "not a weekday"),
            ("07:00", "HH:MM-HH:MM"),
            ("7-19", "time of day"),
            ("25:00-26:00", "time of day"),
            ("09:00-09:00", "empty"),
        ] {
            match AllowedHours::parse(text) {
                Ok(hours) => panic!("{text} parsed as {hours:?}"),
                Err(err) => assert!(err.contains(needle), "{text}: {err}"),
            }
        }
    }

    #[test]
    fn settings_refuse_unknown_rules_and_bad_hours_with_the_setting_named() {
        let mut config = crate::core::config::Config::defaults();
        config.rules_off = vec!["login_new_ip".into(), " ".into()];
        let settings = RuleSettings::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        assert!(!settings.on("login_new_ip") && settings.on("reveal_burst"));
        config.rules_off = vec!["login_new_ipp".into()];
        let refused = |config: &crate::core::config::Config| match RuleSettings::from_config(config) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        let err = refused(&config);
        assert!(err.contains("SMTP_VAULT_RULES_OFF") && err.contains("login_new_ipp"), "{err}");
        config.rules_off.clear();
        config.rule_reveal_hours = Some("weekdays 9-5".into());
        let err = refused(&config);
        assert!(err.contains("SMTP_VAULT_RULE_REVEAL_HOURS"), "{err}");
        config.rule_reveal_hours = Some("Mon-Fri 07:00-19:00".into());
        let settings = RuleSettings::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.reveal_hours.map(|h| h.to_string()).as_deref(), Some("mon,tue,wed,thu,fri 07:00-19:00"));
    }
}
