//! The console's pages, one module per navigation area. Pages render for anyone; the data in
//! them comes from server functions, which the core authorizes.

pub mod admins;
pub mod alerts;
pub mod approvals;
pub mod audit;
pub mod backups;
pub mod credentials;
pub mod incidents;
pub mod login;
pub mod overview;

use leptos::prelude::*;

pub use admins::AdminsPage;
pub use alerts::AlertsPage;
pub use approvals::ApprovalsPage;
pub use audit::AuditPage;
pub use backups::BackupsPage;
pub use credentials::{CredentialsPage, TenantPage};
pub use incidents::IncidentsPage;
pub use login::{EnrollPage, LoginPage};
pub use overview::OverviewPage;

/// A page heading with a one-line purpose.
#[component]
fn PageHeader(title: &'static str, purpose: &'static str) -> impl IntoView {
    view! {
        <h1>{title}</h1>
        <p class="purpose">{purpose}</p>
    }
}

/// Unknown path.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(axum::http::StatusCode::NOT_FOUND);
        }
    }
    view! { <PageHeader title="Not found" purpose="There is no page at this address." /> }
}
