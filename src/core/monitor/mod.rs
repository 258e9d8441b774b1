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

mod checks;
pub mod mailu_admins;
mod rules;
mod settings;

use crate::core::Core;
pub use rules::RulePass;
use rules::when;
use settings::severity_of;
pub use settings::{AllowedHours, RULES, RuleInfo, RuleSettings, reveal_hours, rules_off};

impl Core {}
