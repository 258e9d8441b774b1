//! Wire types shared by the UI, the JSON API and the CLI: validated ids, request inputs, views
//! and the error body. Serde only, so it compiles to wasm; it must never hold a plaintext secret
//! in a type that derives `Debug` or `Serialize` without redaction.

mod admin;
mod audit;
mod credentials;
mod error;
mod fleet;
mod incidents;
mod permission;
mod recovery;
mod scope;
mod tenant;

pub use admin::{
    AdminView, GrantView, InviteCreatedView, InviteView, PasskeyView, RevealRequestStatus, RevealRequestView,
    RevealStep, RevealedCredentialView, Role, UiError,
};
pub use audit::{
    AuditChart, AuditDayCount, AuditEventView, AuditPage, AuditQuery, CSV_HEADER, ChainStateView, csv_field,
    csv_field_value,
};
pub use credentials::{
    CredentialMetadataView, CredentialSecretView, CredentialState, FieldError, MailuAdminView, PasswordAlphabet,
    PasswordPolicy, ProvisionCredentialRequest, RevealCategory, RevealNotice, RevertRequest, RevertView,
    RotationEventView, RotationStatusView, RotationView, ServiceTokenSummary, SmtpTls, StoreCredentialRequest,
    StoredCredentialView, TenantSettingsInput, TenantSettingsView, TenantSummary,
};
pub use error::{ApiError, ApiErrorBody, ErrorCode};
pub use fleet::{DrillSummary, OverviewView, StalestHeartbeat, TenantCounts, TenantFilter, TenantPage, TenantQuery};
#[cfg(feature = "ssr")]
pub use incidents::SweepBody;
pub use incidents::{
    AlertRuleView, AlertView, DeliveryView, EmergencyResetReceipt, EmergencyResetRequest, IncidentEventView,
    IncidentView, ResetTimings, SweepRequest, SweepSubject, SweepTenantView, SweepView,
};
pub use permission::{Permission, Rule, StepUp};
pub use recovery::{BackupView, DrillReport, RecoverTenantRequest, RecoveryView, RestoreReport, RestoreStatusView};
pub use scope::{Scope, UnknownScope};
pub use tenant::{InvalidTenantId, TenantId};
