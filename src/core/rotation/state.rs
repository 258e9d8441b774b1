//! The credential's rotation state machine: the transition table of [`CredentialState`] and the
//! one function that performs a transition (a conditional update and its audit event in one
//! transaction), with the rotation's records built on it.

use super::RotationResult;
use crate::core::Core;
use crate::core::access::{Actor, ClientInfo};
use crate::core::alerting::AlertKind;
use crate::core::alerting::{self, Alert};
use crate::core::audit::{self, EventType, NewEvent, Severity};
use crate::core::db::WriteTx;
use crate::core::error::{Error, Result};
use crate::core::vault::PendingDocument;
use crate::model::{CredentialState, TenantId};
use chrono::{DateTime, Utc};
use serde_json::json;

/// A move of a tenant's credential from one [`CredentialState`] to another. Every change of
/// `tenants.state` is one of these, made by [`transition`] (or, for the heartbeat's combined
/// write, by SQL built from [`Transition::sources_sql`] and [`sql`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    /// A credential was stored, provisioned or recovered onto a replacement server.
    Stored,
    /// A rotation staged its pending password.
    RotationStarted,
    /// A pending record was found whose start the database never recorded.
    RotationResumed,
    /// The rotation's password became the current one.
    Rotated,
    /// A rotation was dropped before its password reached the mail server.
    RolledBack,
    /// A rotation (or a provisioning) gave up: a person must look.
    GaveUp,
    /// The heartbeat logged in with the stored password.
    HeartbeatAccepted,
    /// The heartbeat's refusal held on its re-check.
    HeartbeatRefused,
}

use CredentialState::{Active, Drifted, NeedsReconcile, Rotating};

/// Every state: a transition from "anywhere".
const ANY: &[CredentialState] = &[Active, Rotating, NeedsReconcile, Drifted];

impl Transition {
    /// The states it leaves from; in any other the transition does not happen.
    #[must_use]
    pub(crate) const fn sources(self) -> &'static [CredentialState] {
        match self {
            // A store or a finished rotation settles whatever came before.
            Transition::Stored | Transition::Rotated | Transition::RolledBack | Transition::GaveUp => ANY,
            Transition::RotationStarted => ANY,
            // A start that was recorded, or gave up, keeps its state (a reader already knows).
            Transition::RotationResumed => &[Active, Drifted],
            // A rotation that started meanwhile owns the state: the heartbeat never overwrites
            // `rotating` or `needs_reconcile`.
            Transition::HeartbeatAccepted | Transition::HeartbeatRefused => &[Active, Drifted],
        }
    }

    /// The state it arrives at.
    #[must_use]
    pub(crate) const fn target(self) -> CredentialState {
        match self {
            Transition::Stored | Transition::Rotated | Transition::RolledBack | Transition::HeartbeatAccepted => Active,
            Transition::RotationStarted | Transition::RotationResumed => Rotating,
            Transition::GaveUp => NeedsReconcile,
            Transition::HeartbeatRefused => Drifted,
        }
    }

    /// `state IN (…)` over its sources, for SQL.
    #[must_use]
    pub(crate) fn sources_sql(self) -> String {
        states_sql(self.sources())
    }
}

/// A state as an SQL literal.
#[must_use]
pub(crate) const fn sql(state: CredentialState) -> &'static str {
    match state {
        Active => "'active'",
        Rotating => "'rotating'",
        NeedsReconcile => "'needs_reconcile'",
        Drifted => "'drifted'",
    }
}

/// `state IN (…)` over `states`, for SQL.
#[must_use]
pub(crate) fn states_sql(states: &[CredentialState]) -> String {
    let list: Vec<&str> = states.iter().map(|s| sql(*s)).collect();
    format!("state IN ({})", list.join(", "))
}

/// Whether readers must consider a pending password: the mail server is only ever changed after
/// the tenant is marked `rotating`, and a rotation that gave up stays `needs_reconcile`.
#[must_use]
pub(crate) const fn may_have_pending(state: CredentialState) -> bool {
    matches!(state, Rotating | NeedsReconcile)
}

/// Performs `moved` on `tenant` in the caller's transaction: the state changes only from one of
/// its sources, and `event` is appended to the audit trail with it. Returns whether it moved.
///
/// # Errors
/// Database errors (the caller rolls back).
pub(crate) async fn transition(
    tx: &mut WriteTx,
    actor: &Actor,
    client: &ClientInfo,
    tenant: &TenantId,
    moved: Transition,
    event: NewEvent,
    now: DateTime<Utc>,
) -> Result<bool> {
    let update = format!(
        "UPDATE tenants SET state = {}, updated_at_ms = $1 WHERE tenant_id = $2 AND {}",
        sql(moved.target()),
        moved.sources_sql()
    );
    let done = sqlx::query(&update).bind(now.timestamp_millis()).bind(tenant.as_str()).execute(&mut **tx).await?;
    let moved = done.rows_affected() == 1;
    if moved {
        audit::append(tx, actor, client, event, now).await?;
    }
    Ok(moved)
}

impl Core {
    /// Drops a rotation whose new password the server does not have: pending gone, the tenant
    /// active again with no attempts counted, `rotation_rolled_back` with `outcome`.
    pub(super) async fn roll_back(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
        outcome: &str,
    ) -> Result<()> {
        self.vault()?.delete_pending(tenant).await?;
        self.record_rolled_back(actor, client, tenant, pending, outcome).await
    }

    /// The bookkeeping of a roll-back, alone: for a recorded start with no pending record behind
    /// it (`not_staged`), Vault is not touched.
    pub(super) async fn record_rolled_back(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
        outcome: &str,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE tenants SET rotation_attempts = 0 WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let details = json!({"rotation_id": pending.rotation_id, "outcome": outcome});
        let event = NewEvent::info(EventType::RotationRolledBack, Some(tenant), details);
        transition(&mut tx, actor, client, tenant, Transition::RolledBack, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn give_up(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
        reason: &str,
    ) -> Result<RotationResult> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE tenants SET last_error = $1 WHERE tenant_id = $2")
            .bind(reason)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let details = json!({"rotation_id": pending.rotation_id, "attempts": pending.attempts, "reason": reason});
        let event =
            NewEvent::info(EventType::RotationFailed, Some(tenant), details.clone()).with_severity(Severity::Critical);
        transition(&mut tx, actor, client, tenant, Transition::GaveUp, event, now).await?;
        tx.commit().await?;
        let alert = Alert {
            kind: AlertKind::RotationNeedsReconcile,
            severity: Severity::Critical,
            tenant: Some(tenant),
            dedupe_key: format!("rotation_needs_reconcile:{tenant}:{}", pending.rotation_id),
            message: format!("rotation of {tenant} gave up: {reason}"),
            details,
            audience: alerting::Audience::Security,
        };
        self.raise_alert(alert).await?;
        Ok(RotationResult::NeedsReconcile { reason: reason.to_owned() })
    }

    pub(super) async fn record_rotation_started(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE tenants SET rotation_attempts = 0, last_error = NULL WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        let details = json!({"rotation_id": pending.rotation_id, "trigger": pending.trigger});
        let event = NewEvent::info(EventType::RotationStarted, Some(tenant), details);
        transition(&mut tx, actor, client, tenant, Transition::RotationStarted, event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// True when the database says a rotation is under way but Vault already holds a version
    /// it never recorded: that rotation was promoted.
    pub(super) async fn promoted_unrecorded(&self, tenant: &TenantId, vault_version: u64) -> Result<bool> {
        let row: Option<(String, i64)> = sqlx::query_as("SELECT state, version FROM tenants WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.is_some_and(|(state, recorded)| {
            CredentialState::from_name(&state) == Some(Rotating) && u64::try_from(recorded).ok() != Some(vault_version)
        }))
    }

    /// Marks the tenant `rotating` when its pending record exists but the start was never
    /// recorded (the answer to the pending write was lost to a failover, or a crash came between
    /// the two), so readers consider the pending password from now on.
    pub(super) async fn record_resumed_start(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
    ) -> Result<()> {
        let state = self.rotation_state(tenant).await?;
        if !state.is_some_and(|s| Transition::RotationResumed.sources().contains(&s)) {
            return Ok(());
        }
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let details = json!({"rotation_id": pending.rotation_id, "trigger": pending.trigger, "resumed": true});
        let event = NewEvent::info(EventType::RotationStarted, Some(tenant), details);
        if transition(&mut tx, actor, client, tenant, Transition::RotationResumed, event, now).await? {
            tx.commit().await?;
        }
        Ok(())
    }

    pub(super) async fn record_rotated(
        &self,
        actor: &Actor,
        client: &ClientInfo,
        tenant: &TenantId,
        pending: &PendingDocument,
        version: u64,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.db.begin_write().await?;
        let period: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT rotation_period_days FROM tenants WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let period = period.and_then(|(days,)| days).map_or(self.settings.rotation_period, chrono::Duration::days);
        // The password existed from its rotation's start (it may be handed out once the mail
        // server has it); a run that only records an earlier promotion does not know when, and
        // keeps the older bound.
        let since = match (&pending.secret_since, pending.password.is_empty()) {
            (Some(t), _) => chrono::DateTime::parse_from_rfc3339(t).ok(),
            (None, true) => None,
            (None, false) => chrono::DateTime::parse_from_rfc3339(&pending.started_at).ok(),
        };
        sqlx::query(
            "UPDATE tenants SET version = $1, rotated_at_ms = $2, stored_at_ms = $2, next_rotation_at_ms = $3, \
             rotation_attempts = 0, last_error = NULL, deferred_until_ms = NULL, notice_for_ms = NULL, \
             heartbeat_refused_at_ms = NULL, secret_since_ms = CASE WHEN $5 = 1 THEN $6 ELSE secret_since_ms END \
             WHERE tenant_id = $4",
        )
        .bind(i64::try_from(version).map_err(|_| Error::Internal("version overflow".into()))?)
        .bind(now.timestamp_millis())
        .bind((now + period).timestamp_millis())
        .bind(tenant.as_str())
        .bind(i64::from(since.is_some()))
        .bind(since.map_or(0, |t| t.timestamp_millis()))
        .execute(&mut *tx)
        .await?;
        let details = json!({"rotation_id": pending.rotation_id, "version": version, "trigger": pending.trigger, "attempts": pending.attempts});
        let event = NewEvent::info(EventType::CredentialRotated, Some(tenant), details);
        transition(&mut tx, actor, client, tenant, Transition::Rotated, event, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Transition; 8] = [
        Transition::Stored,
        Transition::RotationStarted,
        Transition::RotationResumed,
        Transition::Rotated,
        Transition::RolledBack,
        Transition::GaveUp,
        Transition::HeartbeatAccepted,
        Transition::HeartbeatRefused,
    ];

    #[test]
    fn the_transition_table() {
        // (transition, from, allowed?)
        let cases = [
            (Transition::HeartbeatRefused, Rotating, false),
            (Transition::HeartbeatRefused, NeedsReconcile, false),
            (Transition::HeartbeatAccepted, Drifted, true),
            (Transition::HeartbeatAccepted, Rotating, false),
            (Transition::RotationResumed, Rotating, false),
            (Transition::RotationResumed, NeedsReconcile, false),
            (Transition::RotationResumed, Drifted, true),
            (Transition::Rotated, NeedsReconcile, true),
            (Transition::Stored, Drifted, true),
            (Transition::GaveUp, Rotating, true),
        ];
        for (moved, from, allowed) in cases {
            assert_eq!(moved.sources().contains(&from), allowed, "{moved:?} from {from:?}");
        }
    }

    #[test]
    fn readers_look_for_a_pending_password_exactly_where_a_rotation_can_have_one() {
        for moved in ALL {
            if matches!(moved.target(), Rotating) {
                assert!(may_have_pending(moved.target()));
            }
        }
        assert!(may_have_pending(NeedsReconcile) && !may_have_pending(Active) && !may_have_pending(Drifted));
    }

    #[test]
    fn sql_names_each_state_as_the_wire_does() {
        for state in ANY {
            assert_eq!(sql(*state), format!("'{}'", state.as_str()));
        }
        assert_eq!(Transition::HeartbeatAccepted.sources_sql(), "state IN ('active', 'drifted')");
    }
}
