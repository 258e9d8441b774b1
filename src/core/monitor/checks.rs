//! State checks the monitor runs every minute (Vault sealed or leaderless, the last backup's
//! age, the audit chain and its anchors) and the Prometheus gauges.

use super::{severity_of, when};
use crate::core::Core;
use crate::core::alerting::AlertKind;
use crate::core::alerting::{Alert, Audience, raise_in};
use crate::core::error::Result;
use crate::core::vault::VaultHealth;
use chrono::{DateTime, Utc};
use serde_json::json;

impl Core {
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
        if self.backup_target.is_some() && self.settings.rules.on(AlertKind::BackupOverdue) {
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

    pub(super) async fn vault_episode(&self, health: VaultHealth, now: DateTime<Utc>) -> Result<bool> {
        let kind = match health {
            VaultHealth::Active | VaultHealth::Standby => {
                sqlx::query("DELETE FROM monitor_episodes WHERE name = 'vault'").execute(self.db.pool()).await?;
                return Ok(false);
            }
            VaultHealth::Sealed => AlertKind::VaultSealed,
            VaultHealth::Uninitialized | VaultHealth::Unreachable | VaultHealth::Leaderless => {
                AlertKind::VaultUnreachable
            }
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

    pub(super) async fn check_backup_age(&self, now: DateTime<Utc>) -> Result<bool> {
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
            kind: AlertKind::BackupOverdue,
            severity: severity_of(AlertKind::BackupOverdue),
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

    pub(super) async fn raise_truncation(&self, cursor: i64, head: i64) -> Result<bool> {
        if !self.settings.rules.on(AlertKind::AuditChainBroken) {
            return Ok(false);
        }
        let reason = format!(
            "truncated: the alert rules had already read {cursor} events, the chain now has {head} (events removed \
             from the end)"
        );
        let alert = Alert {
            kind: AlertKind::AuditChainBroken,
            severity: severity_of(AlertKind::AuditChainBroken),
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
        if !self.settings.rules.on(AlertKind::AuditChainBroken) {
            return Ok(false);
        }
        let alert = Alert {
            kind: AlertKind::AuditChainBroken,
            severity: severity_of(AlertKind::AuditChainBroken),
            tenant: None,
            dedupe_key: format!("audit_chain_broken:{}", broken.seq),
            message: format!("the audit chain is broken at event {}: {}", broken.seq, broken.reason),
            details: json!({"seq": broken.seq, "reason": broken.reason, "events": report.events}),
            audience: Audience::Security,
        };
        self.raise_alert(alert).await
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
        // Per kind too, so a rule can page on one (the audit chain broken, say).
        let kinds: Vec<(String, i64)> =
            sqlx::query_as("SELECT kind, COUNT(*) FROM alerts WHERE acknowledged_at_ms IS NULL GROUP BY kind")
                .fetch_all(pool)
                .await?;
        for kind in crate::core::alerting::AlertKind::ALL {
            let n = kinds.iter().find(|(k, _)| k == kind.as_str()).map_or(0, |(_, n)| *n);
            metrics::gauge!("smtp_vault_alerts_open", "kind" => kind.as_str()).set(n as f64);
        }
        for (sink, _, behind, _, dead) in self.siem_status().await? {
            metrics::gauge!("smtp_vault_siem_lag_events", "sink" => sink.clone()).set(behind as f64);
            metrics::gauge!("smtp_vault_siem_dead_letters", "sink" => sink).set(dead as f64);
        }
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
