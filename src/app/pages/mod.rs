//! The console's pages, one module per navigation area. Pages render for anyone; the data in
//! them comes from server functions, which the core authorizes.

pub mod admins;
pub mod credentials;
pub mod login;

use leptos::prelude::*;

pub use admins::AdminsPage;
pub use credentials::{CredentialsPage, TenantPage};
pub use login::{EnrollPage, LoginPage};

/// A page heading with a one-line purpose.
#[component]
fn PageHeader(title: &'static str, purpose: &'static str) -> impl IntoView {
    view! {
        <h1>{title}</h1>
        <p class="purpose">{purpose}</p>
    }
}

/// The audit trail (dashboard in a later issue).
#[component]
pub fn AuditPage() -> impl IntoView {
    view! {
        <PageHeader
            title="Audit"
            purpose="The hash-chained record of every change and every secret read. Verify it with `smtp-vault audit verify`."
        />
    }
}

/// Alerts raised by the console (rotation gave up, heartbeat drift, notices); emergency resets
/// and their review come later.
#[component]
pub fn IncidentsPage() -> impl IntoView {
    let me = crate::app::session::use_me();
    let alerts = Resource::new(
        move || crate::app::session::signed_in(me).is_some(),
        |signed| async move { if signed { crate::app::server_fns::list_alerts().await } else { Ok(Vec::new()) } },
    );
    view! {
        <PageHeader title="Incidents" purpose="Alerts raised by the console; emergency resets and their review." />
        <section class="card" aria-labelledby="alerts-title">
            <h2 id="alerts-title">"Alerts"</h2>
            <Transition fallback=|| view! { <p>"Loading…"</p> }>
                {move || alerts.get().map(|answer| match answer {
                    Err(e) => view! { <p class="error">{e.message}</p> }.into_any(),
                    Ok(list) if list.is_empty() => view! { <p>"No alerts."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="table" data-testid="alerts">
                            <thead><tr><th>"When"</th><th>"Severity"</th><th>"Kind"</th><th>"Tenant"</th><th>"Message"</th><th>"Delivery"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|a| view! {
                                    <tr>
                                        <td>{a.created_at.format("%Y-%m-%d %H:%M UTC").to_string()}</td>
                                        <td>{a.severity}</td>
                                        <td>{a.kind.replace('_', " ")}</td>
                                        <td>{a.tenant_id.unwrap_or_default()}</td>
                                        <td>{a.message}</td>
                                        <td>{a.state}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                })}
            </Transition>
        </section>
    }
}

/// Backups, restores and DR drills.
#[component]
pub fn BackupsPage() -> impl IntoView {
    view! { <PageHeader title="Backups" purpose="Encrypted backups, verified restores and disaster-recovery drills." /> }
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
