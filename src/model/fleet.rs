//! The fleet at scale: the paged, filtered tenant list (`GET /api/v1/tenants`, the Credentials
//! page, `smtp-vault tenants list`) and the overview an admin lands on.

use super::TenantSummary;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A slice of the fleet a list can be narrowed to: a life-cycle state, or the tenants whose
/// Mailu rate-limits the console (their logins prove nothing until it is exempted).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantFilter {
    /// Stored and believed to work.
    Active,
    /// A rotation is in flight.
    Rotating,
    /// A rotation gave up; a person must look.
    NeedsReconcile,
    /// The heartbeat found the stored password refused.
    Drifted,
    /// Mailu rate-limits the console for this tenant's server.
    RateLimited,
}

impl TenantFilter {
    /// Every filter, in the order the overview shows them.
    pub const ALL: [TenantFilter; 5] = [
        TenantFilter::Active,
        TenantFilter::Rotating,
        TenantFilter::NeedsReconcile,
        TenantFilter::Drifted,
        TenantFilter::RateLimited,
    ];

    /// The wire name (`state=` in a query string).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TenantFilter::Active => "active",
            TenantFilter::Rotating => "rotating",
            TenantFilter::NeedsReconcile => "needs_reconcile",
            TenantFilter::Drifted => "drifted",
            TenantFilter::RateLimited => "rate_limited",
        }
    }

    /// Parses the wire name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// For people.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            TenantFilter::Active => "Active",
            TenantFilter::Rotating => "Rotating",
            TenantFilter::NeedsReconcile => "Needs reconcile",
            TenantFilter::Drifted => "Drifted",
            TenantFilter::RateLimited => "Rate-limited",
        }
    }
}

/// Which tenants, and which page of them; every field optional. Filters combine with AND.
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// One state (or `rate_limited`).
    pub state: Option<TenantFilter>,
    /// Next rotation due before this time.
    pub due_before: Option<DateTime<Utc>>,
    /// Text in the tenant id (`q` in a query string).
    #[serde(alias = "q")]
    pub search: Option<String>,
    /// A `next_cursor` or `prev_cursor` from an earlier page (same filters).
    pub cursor: Option<String>,
    /// Page size (1 to 500, default 50).
    pub limit: Option<u32>,
}

/// A page of tenants, ordered by tenant id.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPage {
    /// The tenants on this page.
    pub tenants: Vec<TenantSummary>,
    /// How many tenants match the filters (all pages).
    pub total: u64,
    /// Pass as `cursor` for the page after this one; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Pass as `cursor` for the page before this one; `None` on the first page.
    pub prev_cursor: Option<String>,
}

/// Tenants per state, counted by index, not by walking them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCounts {
    /// Every tenant with a stored credential.
    pub total: u64,
    /// `active`.
    pub active: u64,
    /// `rotating`.
    pub rotating: u64,
    /// `needs_reconcile`.
    pub needs_reconcile: u64,
    /// `drifted`.
    pub drifted: u64,
    /// Mailu rate-limits the console (in any state).
    pub rate_limited: u64,
}

impl TenantCounts {
    /// The count under `filter`.
    #[must_use]
    pub const fn of(&self, filter: TenantFilter) -> u64 {
        match filter {
            TenantFilter::Active => self.active,
            TenantFilter::Rotating => self.rotating,
            TenantFilter::NeedsReconcile => self.needs_reconcile,
            TenantFilter::Drifted => self.drifted,
            TenantFilter::RateLimited => self.rate_limited,
        }
    }
}

/// The tenant whose last successful heartbeat is the oldest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StalestHeartbeat {
    /// The tenant.
    pub tenant_id: String,
    /// Its last successful heartbeat.
    pub at: DateTime<Utc>,
}

/// The last disaster-recovery drill, as measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillSummary {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Whether every tenant restored and verified.
    pub ok: bool,
    /// Recovery time, in milliseconds.
    pub rto_ms: i64,
    /// Recovery point (the age of the newest change the backup holds), in milliseconds.
    pub rpo_ms: Option<i64>,
}

/// The landing page for signed-in admins: what needs a look, each with a link to the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverviewView {
    /// When these were counted.
    pub at: DateTime<Utc>,
    /// Tenants per state.
    pub counts: TenantCounts,
    /// Next rotation due within 7 days (overdue ones included).
    pub due_within_7_days: u64,
    /// Its cut-off, for the link to the list.
    pub due_before: DateTime<Utc>,
    /// The oldest last-successful heartbeat, if any tenant has had one.
    pub stalest_heartbeat: Option<StalestHeartbeat>,
    /// Tenants whose heartbeat never logged in yet.
    pub never_heartbeat: u64,
    /// Incidents (resets, sweeps) not yet acknowledged.
    pub open_incidents: u64,
    /// Alerts not yet acknowledged.
    pub unacknowledged_alerts: u64,
    /// When the newest backup was made, if ever.
    pub last_backup_at: Option<DateTime<Utc>>,
    /// The newest drill, if any.
    pub last_drill: Option<DrillSummary>,
}
