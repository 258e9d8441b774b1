//! The Leptos UI: the HTML shell (with its per-request CSP nonce), the router and the layout
//! with navigation and the signed-in admin. Pages live in `pages/`; server functions in
//! `server_fns` stay thin (context, one core call, convert).

mod browser;
mod confirm;
mod details;
mod pages;
pub mod server_fns;
pub(crate) mod session;
pub mod status;
pub(crate) mod when;

use crate::model::{ErrorCode, UiError};
use leptos::prelude::*;
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use leptos::task::spawn_local;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;

impl FromServerFnError for UiError {
    type Encoder = JsonEncoding;

    /// Errors of the server-function machinery itself: a request that cannot be decoded is the
    /// caller's fault (4xx with a plain reason), never an internal error.
    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        let (code, message) = match &value {
            ServerFnErrorErr::Deserialization(m) | ServerFnErrorErr::Request(m) if m.contains("length limit") => {
                (ErrorCode::PayloadTooLarge, "the request body is larger than the console accepts".to_owned())
            }
            ServerFnErrorErr::Deserialization(m)
            | ServerFnErrorErr::Args(m)
            | ServerFnErrorErr::MissingArg(m)
            | ServerFnErrorErr::Request(m) => (ErrorCode::InvalidInput, format!("malformed request: {m}")),
            ServerFnErrorErr::UnsupportedRequestMethod(_) => (ErrorCode::MethodNotAllowed, value.to_string()),
            ServerFnErrorErr::Registration(_) => (ErrorCode::NotFound, value.to_string()),
            _ => (ErrorCode::RequestFailed, value.to_string()),
        };
        #[cfg(feature = "ssr")]
        if let (Some(response), Ok(status)) =
            (use_context::<leptos_axum::ResponseOptions>(), axum::http::StatusCode::from_u16(code.status()))
        {
            response.set_status(status);
        }
        UiError::new(code, message)
    }
}

/// The page CSP: scripts only from this origin or carrying this response's nonce (the inline
/// hydration bootstrap), wasm compilation allowed, nothing framed, no plugins.
#[cfg(feature = "ssr")]
fn set_page_csp() {
    use axum::http::{HeaderValue, header};
    let (Some(nonce), Some(response)) = (leptos::nonce::use_nonce(), use_context::<leptos_axum::ResponseOptions>())
    else {
        return;
    };
    let policy = format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// The whole HTML document, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    set_page_csp();
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

/// Who is signed in, with a sign-out button; or a sign-in link.
#[component]
fn AccountMenu() -> impl IntoView {
    let me = session::use_me();
    let sign_out = move |_| {
        spawn_local(async move {
            let _ = server_fns::logout().await;
            me.refetch();
            let navigate = leptos_router::hooks::use_navigate();
            navigate("/login", Default::default());
        });
    };
    view! {
        <Transition fallback=|| ()>
            {move || match session::signed_in(me) {
                Some(admin) => view! {
                    <span class="account" data-testid="account">
                        <span>{admin.email.clone()}</span>
                        <span class="role">{admin.role.label()}</span>
                        <button type="button" class="link" on:click=sign_out>"Sign out"</button>
                    </span>
                }
                .into_any(),
                None => view! { <a class="account" href="/login">"Sign in"</a> }.into_any(),
            }}
        </Transition>
    }
}

/// The application: layout, navigation and routes.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    session::provide_me();
    view! {
        <Stylesheet id="leptos" href="/pkg/smtp-vault.css" />
        <Title text="smtp-vault" />
        <Router>
            <div class="layout">
                <header class="topbar">
                    <a class="brand" href="/">"smtp-vault"</a>
                    <nav aria-label="Main">
                        <A href="/" exact=true>"Overview"</A>
                        <A href="/tenants">"Credentials"</A>
                        <A href="/approvals">"Approvals"</A>
                        <A href="/audit">"Audit"</A>
                        <A href="/incidents">"Incidents"</A>
                        <A href="/alerts">"Alerts"</A>
                        <A href="/backups">"Backups"</A>
                        <A href="/admins">"Admins"</A>
                    </nav>
                    <status::HydrationBadge />
                    <AccountMenu />
                </header>
                <main>
                    <Routes fallback=|| view! { <pages::NotFound /> }>
                        <Route path=path!("/") view=pages::OverviewPage />
                        <Route path=path!("/tenants") view=pages::CredentialsPage />
                        <Route path=path!("/login") view=pages::LoginPage />
                        <Route path=path!("/enroll/:token") view=pages::EnrollPage />
                        <Route path=path!("/tenants/:id") view=pages::TenantPage />
                        <Route path=path!("/approvals") view=pages::ApprovalsPage />
                        <Route path=path!("/audit") view=pages::AuditPage />
                        <Route path=path!("/incidents") view=pages::IncidentsPage />
                        <Route path=path!("/alerts") view=pages::AlertsPage />
                        <Route path=path!("/backups") view=pages::BackupsPage />
                        <Route path=path!("/admins") view=pages::AdminsPage />
                    </Routes>
                </main>
                <footer class="footer">"smtp-vault " {env!("CARGO_PKG_VERSION")}</footer>
            </div>
        </Router>
    }
}
