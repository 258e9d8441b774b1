//! The incremental Vault-against-database reconciliation: each daily cycle compares a slice of
//! the tenants (by id, from where the last slice stopped; a whole pass every
//! [`PASS_DAYS`] days) and reports what differs — a credential missing from Vault, a Vault
//! version the database never recorded, a pending record the database does not know of (it
//! is repaired), and, once per pass, tenants Vault holds that the database does not.

use crate::core::Core;
use crate::core::access::{Actor, ClientInfo, authorize};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::error::Result;
use crate::core::rotation::state::may_have_pending;
use crate::model::{Permission, TenantId};
use serde_json::json;

/// A full pass over the tenants takes this many daily slices.
pub const PASS_DAYS: i64 = 7;
/// The cursor's row in `fleet_cursors`.
const CURSOR: &str = "reconcile";
/// The row that asks for the one scan after the upgrade (migration 0017).
const LEGACY_SCAN: &str = "legacy_pending_scan";

/// What one slice found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Tenants compared.
    pub checked: usize,
    /// One line per difference (`tenant: what`), each also an audit event.
    pub differences: Vec<String>,
    /// The slice reached the last tenant: the next one starts a new pass.
    pub pass_finished: bool,
}

impl Core {
    /// Compares the next slice of tenants with Vault (a seventh of them, at least 100).
    ///
    /// # Errors
    /// [`crate::core::Error::Forbidden`] for anyone but the system and the operator; Vault and
    /// database errors (the cursor stays, so the slice is compared again next time).
    pub async fn reconcile_slice(&self, actor: &Actor) -> Result<ReconcileReport> {
        authorize(actor, Permission::Rotate)?;
        let (total,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tenants").fetch_one(self.db.pool()).await?;
        self.reconcile_next(actor, (total + PASS_DAYS - 1) / PASS_DAYS).await
    }

    /// Compares up to `size` tenants after the cursor.
    pub(crate) async fn reconcile_next(&self, actor: &Actor, size: i64) -> Result<ReconcileReport> {
        let vault = self.vault()?;
        let after: Option<(String,)> = sqlx::query_as("SELECT position FROM fleet_cursors WHERE name = $1")
            .bind(CURSOR)
            .fetch_optional(self.db.pool())
            .await?;
        let after = after.map(|(p,)| p).unwrap_or_default();
        let size = size.max(100);
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT tenant_id, state, version FROM tenants WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2",
        )
        .bind(&after)
        .bind(size)
        .fetch_all(self.db.pool())
        .await?;
        let mut report = ReconcileReport {
            checked: rows.len(),
            pass_finished: i64::try_from(rows.len()).unwrap_or(i64::MAX) < size,
            ..ReconcileReport::default()
        };
        let client = ClientInfo::local();
        let mut differences: Vec<(TenantId, &'static str, serde_json::Value)> = Vec::new();
        for (id, _, _) in &rows {
            let Ok(tenant) = TenantId::parse(id) else { continue };
            match self.reconcile_one(actor, &client, &tenant).await {
                Ok(Some((what, details))) => differences.push((tenant, what, details)),
                Ok(None) => {}
                // Vault is away: the slice stops and is compared again next time.
                Err(e) if e.is_vault_outage() => return Err(e),
                // One tenant's trouble (a malformed record, say) is a finding, not a stop.
                Err(e) => differences.push((tenant, "check_failed", json!({"error": e.to_string()}))),
            }
        }
        if report.pass_finished {
            // Once a pass: what Vault holds that the database does not (one LIST).
            let known: Vec<(String,)> =
                sqlx::query_as("SELECT tenant_id FROM tenants").fetch_all(self.db.pool()).await?;
            let known: std::collections::HashSet<String> = known.into_iter().map(|(t,)| t).collect();
            for tenant in vault.list_tenants().await? {
                if !known.contains(tenant.as_str()) {
                    differences.push((tenant, "missing_in_database", json!({})));
                }
            }
        }
        let position =
            if report.pass_finished { String::new() } else { rows.last().map(|r| r.0.clone()).unwrap_or_default() };
        let mut tx = self.db.begin_write().await?;
        for (tenant, what, details) in &differences {
            let mut details = details.clone();
            details["difference"] = json!(what);
            let event =
                NewEvent::info(EventType::ReconcileDifference, Some(tenant), details).with_severity(Severity::Warning);
            audit::append(&mut tx, actor, &client, event, self.now()).await?;
            report.differences.push(format!("{tenant}: {what}"));
        }
        sqlx::query(
            "INSERT INTO fleet_cursors (name, position, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(CURSOR)
        .bind(&position)
        .bind(self.now().timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Compares one tenant. Vault is read first and the database's row after it, so a rotation
    /// or store that moved the row meanwhile is seen as such and not reported.
    async fn reconcile_one(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
    ) -> Result<Option<(&'static str, serde_json::Value)>> {
        let vault = self.vault()?;
        let version = vault.metadata_version(tenant).await?;
        let pending = vault.read_pending(tenant).await?.is_some();
        let Some((state, recorded)) = self.rotation_record(tenant).await? else { return Ok(None) };
        if version == 0 {
            return Ok(Some(("missing_in_vault", json!({"recorded_version": recorded}))));
        }
        if may_have_pending(state) {
            // A rotation owns the tenant: repair and the rotation itself settle it.
            return Ok(None);
        }
        if pending {
            // A rotation the database never heard of (written by a console before the start
            // was recorded first, or by hand): settled like an interrupted one.
            let outcome = match self.repair_rotation(actor, client, tenant).await {
                Ok(outcome) => format!("{outcome:?}"),
                Err(e) => format!("repair failed: {e}"),
            };
            return Ok(Some(("unrecorded_pending", json!({"repair": outcome}))));
        }
        if recorded != version {
            return Ok(Some(("version_not_recorded", json!({"recorded_version": recorded, "vault_version": version}))));
        }
        Ok(None)
    }

    /// Once after the upgrade that made rotations record their start first: the tenants whose
    /// pending record only Vault knows of (an older console's crash between the two), found by
    /// listing Vault. Nothing to do on a fresh install or after the first run.
    ///
    /// # Errors
    /// Vault and database errors (the scan is tried again at the next start).
    pub(crate) async fn legacy_pending_scan(&self) -> Result<Vec<TenantId>> {
        let due: Option<(String,)> = sqlx::query_as("SELECT name FROM fleet_cursors WHERE name = $1")
            .bind(LEGACY_SCAN)
            .fetch_optional(self.db.pool())
            .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let vault = self.vault()?;
        let mut found = Vec::new();
        for tenant in vault.list_tenants().await? {
            let unsettled = self.rotation_record(&tenant).await?.is_some_and(|(state, _)| may_have_pending(state));
            if !unsettled && vault.read_pending(&tenant).await?.is_some() {
                found.push(tenant);
            }
        }
        sqlx::query("DELETE FROM fleet_cursors WHERE name = $1").bind(LEGACY_SCAN).execute(self.db.pool()).await?;
        Ok(found)
    }
}
