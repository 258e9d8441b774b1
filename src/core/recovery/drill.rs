//! Disaster-recovery drills: restore the latest backup into a scratch OpenBao, verify every
//! tenant, measure RTO and RPO, and record the result.

use super::{DrillReport, millis};
use crate::core::Core;
use crate::core::access::authorize;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::AlertKind;
use crate::core::alerting::{Alert, Audience};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::backup::RestoreOptions;
use crate::core::crypto::random_bytes;
use crate::core::error::{Error, Result};
use crate::core::vault::{RoleSettings, Vault, VaultAuth, VaultSettings};
use crate::model::Permission;
use secrecy::SecretString;
use serde_json::json;
use std::time::{Duration, Instant};

/// The scratch server's command. Its root token goes in the environment, which only its user
/// can read: a command line is visible to every local user (`ps`), and the console's own
/// environment (its Vault credentials) is not passed on.
pub(super) fn scratch_command(binary: &str, port: u16, token: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["server", "-dev", "-dev-no-store-token", &format!("-dev-listen-address=127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BAO_DEV_ROOT_TOKEN_ID", token)
        .env("VAULT_DEV_ROOT_TOKEN_ID", token)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// A dev-mode OpenBao on a free loopback port, killed when dropped.
pub(super) struct ScratchServer {
    _child: tokio::process::Child,
    addr: String,
    token: SecretString,
}

impl ScratchServer {
    pub(super) async fn start(binary: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("finding a free port for the drill", e))?
            .port();
        let token = format!("drill-{}", hex::encode(random_bytes::<16>()?.as_ref()));
        let child = scratch_command(binary, port, &token).spawn().map_err(|e| {
            Error::io(format!("starting the drill's scratch server `{binary}` (SMTP_VAULT_DRILL_BAO)"), e)
        })?;
        let addr = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{addr}/v1/sys/health")).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Vault("the drill's scratch server did not become ready in 30 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { _child: child, addr, token: SecretString::from(token) })
    }
}

impl Core {
    /// A disaster-recovery drill: restores the newest backup plus the journal into a scratch
    /// OpenBao started for the purpose (or the Vault at `vault_addr` with `token`), verifies
    /// every tenant, measures RTO and RPO against live Vault, keeps the report and alerts when
    /// it fails or misses a target.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless an operator or the scheduler; setup errors of the scratch
    /// server. A failed restore is a failed drill (recorded), not an error.
    pub async fn run_dr_drill(
        &self,
        actor: &Actor,
        given: Option<(String, SecretString)>,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<DrillReport> {
        authorize(actor, Permission::RunDrills)?;
        let started_at = self.now();
        let drill_id = hex::encode(random_bytes::<8>()?.as_ref());
        let (scratch, _server) = match given {
            Some((addr, token)) => (self.scratch_vault(&addr, token).await?, None),
            None => {
                let server = ScratchServer::start(&self.settings.recovery.drill_bao).await?;
                (self.scratch_vault(&server.addr, server.token.clone()).await?, Some(server))
            }
        };
        let clock = Instant::now();
        let mut problems = Vec::new();
        let mut report = DrillReport {
            drill_id: drill_id.clone(),
            started_at,
            backup_id: None,
            journal_records: 0,
            tenants: 0,
            verified: 0,
            rto_ms: 0,
            rpo_ms: None,
            lost_changes: 0,
            ok: false,
            problems: Vec::new(),
        };
        let options = RestoreOptions::default();
        match self.restore_state(None, &options).await {
            Err(e) => problems.push(format!("the backup could not be opened: {e}")),
            Ok(state) => {
                let restored_up_to = state.restored_up_to;
                match self.restore_into(&scratch, state, &options, progress).await {
                    Err(e) => problems.push(format!("the restore failed: {e}")),
                    Ok((restore, _)) => {
                        report.rto_ms = millis(clock.elapsed());
                        report.backup_id = Some(restore.backup_id.clone());
                        report.journal_records = restore.journal_records;
                        report.tenants = restore.tenants;
                        report.verified = restore.verified;
                        for (tenant, why) in restore.failed.iter().take(5) {
                            problems.push(format!("{tenant} did not verify: {why}"));
                        }
                        if restore.verified != restore.tenants {
                            problems.push(format!("{} of {} tenants verified", restore.verified, restore.tenants));
                        }
                        report.lost_changes = self.count_lost_changes(&scratch).await?;
                        let rpo = if report.lost_changes == 0 {
                            0
                        } else {
                            u64::try_from((self.now() - restored_up_to).num_milliseconds()).unwrap_or(0)
                        };
                        report.rpo_ms = Some(rpo);
                    }
                }
            }
        }
        let settings = &self.settings.recovery;
        if report.rto_ms > millis(settings.drill_rto) {
            problems.push(format!("RTO {} ms misses the target of {} s", report.rto_ms, settings.drill_rto.as_secs()));
        }
        if report.rpo_ms.is_some_and(|rpo| rpo > millis(settings.drill_rpo)) {
            problems.push(format!(
                "{} tenant(s) changed since the newest recoverable point; RPO misses the target of {} s",
                report.lost_changes,
                settings.drill_rpo.as_secs()
            ));
        }
        report.ok = problems.is_empty();
        report.problems = problems;
        self.record_drill(actor, &report).await?;
        Ok(report)
    }

    pub(super) async fn scratch_vault(&self, addr: &str, token: SecretString) -> Result<Vault> {
        let live = self.vault()?;
        let vault = Vault::connect(VaultSettings {
            addrs: vec![addr.to_owned()],
            mount: live.mount().to_owned(),
            approle_mount: "approle".into(),
            auth: VaultAuth::Token(token),
            timeout: Duration::from_secs(10),
        })
        .await?;
        vault.setup(&RoleSettings::default()).await?;
        Ok(vault)
    }

    /// Tenants whose secret in live Vault differs from (or is missing in) the restored one.
    pub(super) async fn count_lost_changes(&self, restored: &Vault) -> Result<usize> {
        let live = self.vault()?;
        let mut lost = 0;
        for tenant in live.list_tenants().await? {
            let Some(current) = live.read_credential(&tenant).await? else { continue };
            let again = restored.read_credential(&tenant).await?;
            if again.is_none_or(|r| r.document != current.document) {
                lost += 1;
            }
        }
        Ok(lost)
    }

    pub(super) async fn record_drill(&self, actor: &Actor, report: &DrillReport) -> Result<()> {
        let text = serde_json::to_string(report).map_err(|e| Error::Internal(e.to_string()))?;
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO dr_drills (drill_id, started_at_ms, backup_id, ok, tenants, verified, rto_ms, rpo_ms, lost_changes, report) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&report.drill_id)
        .bind(report.started_at.timestamp_millis())
        .bind(report.backup_id.as_deref())
        .bind(i64::from(report.ok))
        .bind(i64::try_from(report.tenants).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.verified).unwrap_or(i64::MAX))
        .bind(i64::try_from(report.rto_ms).unwrap_or(i64::MAX))
        .bind(report.rpo_ms.map(|r| i64::try_from(r).unwrap_or(i64::MAX)))
        .bind(i64::try_from(report.lost_changes).unwrap_or(i64::MAX))
        .bind(&text)
        .execute(&mut *tx)
        .await?;
        let severity = if report.ok { Severity::Info } else { Severity::Warning };
        let details = json!({
            "drill_id": report.drill_id, "ok": report.ok, "backup_id": report.backup_id, "tenants": report.tenants,
            "verified": report.verified, "rto_ms": report.rto_ms, "rpo_ms": report.rpo_ms, "problems": report.problems,
        });
        audit::append(
            &mut tx,
            actor,
            &ClientInfo::local(),
            NewEvent::info(EventType::DrDrillRan, None, details.clone()).with_severity(severity),
            now,
        )
        .await?;
        if !report.ok {
            let alert = Alert {
                kind: AlertKind::DrDrillFailed,
                severity: Severity::Critical,
                tenant: None,
                dedupe_key: format!("dr_drill_failed:{}", report.drill_id),
                message: format!("the disaster-recovery drill failed: {}", report.problems.join("; ")),
                details,
                audience: Audience::Security,
            };
            crate::core::alerting::raise_in(&mut tx, &self.channels, alert, now).await?;
        }
        tx.commit().await?;
        self.wake_outbox();
        Ok(())
    }

    /// The newest drills (any admin, the operator).
    ///
    /// # Errors
    /// Refusals for others; database errors.
    pub async fn list_drills(&self, actor: &Actor, limit: i64) -> Result<Vec<DrillReport>> {
        authorize(actor, Permission::ViewOperations)?;
        let rows: Vec<(String,)> = sqlx::query_as("SELECT report FROM dr_drills ORDER BY started_at_ms DESC LIMIT $1")
            .bind(limit.clamp(1, 500))
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.into_iter().filter_map(|(text,)| serde_json::from_str(&text).ok()).collect())
    }
}

#[cfg(test)]
mod scratch_tests {
    use super::scratch_command;

    #[test]
    fn the_drill_token_is_not_on_the_command_line() {
        let command = scratch_command("bao", 8299, "drill-secret-token");
        let std = command.as_std();
        assert!(std.get_args().all(|a| !a.to_string_lossy().contains("drill-secret-token")));
        let env: Vec<_> = std.get_envs().collect();
        assert!(env.iter().any(|(k, v)| *k == "BAO_DEV_ROOT_TOKEN_ID" && v.is_some_and(|v| v == "drill-secret-token")));
        assert!(env.iter().all(|(k, _)| *k != "VAULT_TOKEN" && *k != "VAULT_SECRET_ID"));
    }
}
