//! The console's pages, one per navigation area. This step ships the shell; each area fills in
//! with its issue.

use crate::app::status::ReadinessCard;
use leptos::prelude::*;

/// A page heading with a one-line purpose.
#[component]
fn PageHeader(title: &'static str, purpose: &'static str) -> impl IntoView {
    view! {
        <h1>{title}</h1>
        <p class="purpose">{purpose}</p>
    }
}

/// Tenants' SMTP credentials (home).
#[component]
pub fn CredentialsPage() -> impl IntoView {
    view! {
        <PageHeader title="Credentials" purpose="Tenants' Mailu admin SMTP credentials, encrypted in Vault." />
        <ReadinessCard />
        <section class="card">
            <h2>"Tenants"</h2>
            <p>"Signing in with a passkey comes next; until then tenants are managed through the API and the CLI."</p>
        </section>
    }
}

/// The audit trail.
#[component]
pub fn AuditPage() -> impl IntoView {
    view! { <PageHeader title="Audit" purpose="The hash-chained record of every change and every secret read. Verify it with `smtp-vault audit verify`." /> }
}

/// Emergency resets and their review.
#[component]
pub fn IncidentsPage() -> impl IntoView {
    view! { <PageHeader title="Incidents" purpose="Emergency resets and their second-person review." /> }
}

/// Backups, restores and DR drills.
#[component]
pub fn BackupsPage() -> impl IntoView {
    view! { <PageHeader title="Backups" purpose="Encrypted backups, verified restores and disaster-recovery drills." /> }
}

/// Admins and passkeys.
#[component]
pub fn AdminsPage() -> impl IntoView {
    view! { <PageHeader title="Admins" purpose="Who may sign in, with which role and passkeys." /> }
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
