//! The Leptos UI: the HTML shell, the router and the layout with its navigation. Pages live in
//! `pages/`; server functions stay thin (actor, one core call, convert).

mod pages;
pub mod status;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

/// The whole HTML document, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <link rel="icon" href="/favicon.ico" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The application: layout, navigation and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href="/pkg/smtp-vault.css" />
        <Title text="smtp-vault" />
        <Router>
            <div class="layout">
                <header class="topbar">
                    <a class="brand" href="/">"smtp-vault"</a>
                    <nav aria-label="Main">
                        <A href="/">"Credentials"</A>
                        <A href="/audit">"Audit"</A>
                        <A href="/incidents">"Incidents"</A>
                        <A href="/backups">"Backups"</A>
                        <A href="/admins">"Admins"</A>
                    </nav>
                    <status::HydrationBadge />
                </header>
                <main>
                    <Routes fallback=|| view! { <pages::NotFound /> }>
                        <Route path=path!("/") view=pages::CredentialsPage />
                        <Route path=path!("/audit") view=pages::AuditPage />
                        <Route path=path!("/incidents") view=pages::IncidentsPage />
                        <Route path=path!("/backups") view=pages::BackupsPage />
                        <Route path=path!("/admins") view=pages::AdminsPage />
                    </Routes>
                </main>
                <footer class="footer">
                    "smtp-vault " {env!("CARGO_PKG_VERSION")}
                </footer>
            </div>
        </Router>
    }
}
