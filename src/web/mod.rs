//! The HTTP edge: the axum router (UI, `/api/v1`, health), the middleware stack in the order of
//! ARCHITECTURE §5 rule 8, and `serve`. Handlers stay thin; decisions are the core's.

pub mod api;
pub mod csrf;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod session;
pub mod ui;

use crate::app::{App, shell};
use crate::core::Core;
use crate::core::config::Config;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use leptos::prelude::{LeptosOptions, provide_context};
use leptos_axum::{LeptosRoutes, generate_route_list};
use serde_json::json;
use session::SqlSessionStore;
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

/// Shared state of the router.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The service core.
    pub core: Core,
    /// Leptos settings (site root, output name).
    pub leptos_options: LeptosOptions,
    /// Bearer token `/metrics` requires, when set.
    pub metrics_token: Option<secrecy::SecretString>,
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos_options.clone()
    }
}

/// Random request ids (16 hex characters).
#[derive(Clone, Copy, Default)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let bytes = crate::core::crypto::random_bytes::<8>().ok()?;
        HeaderValue::from_str(&hex::encode(bytes.as_ref())).ok().map(RequestId::new)
    }
}

/// The whole application router with its middleware.
pub fn router(core: Core, config: &Config, leptos_options: LeptosOptions, sessions: SqlSessionStore) -> Router {
    let state = AppState {
        core: core.clone(),
        leptos_options: leptos_options.clone(),
        metrics_token: config.metrics_token.clone(),
    };
    // Installed before the first request so the core's counters are kept from the start.
    let _ = metrics::handle();
    let routes = generate_route_list(App);
    let pages = Router::new()
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(core.clone()),
            move || shell(leptos_options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell));
    let x_request_id = HeaderName::from_static("x-request-id");
    let core_for_client = state.core.clone();
    let hsts = (config.public_url.scheme() == "https").then(|| {
        SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        )
    });
    let middleware = ServiceBuilder::new()
        // A caller's own x-request-id is dropped: it would land in the audit trail as if the
        // console had assigned it (and could forge a correlation with another request).
        .layer(tower::util::MapRequestLayer::new(|mut request: Request<axum::body::Body>| {
            request.headers_mut().remove("x-request-id");
            request
        }))
        // client address: the peer, or what a trusted proxy forwarded, for limits and audit
        .layer(axum::middleware::from_fn_with_state(core_for_client, extract::resolve_client))
        // request id: assigned first so every log line and audit event can carry it
        .layer(SetRequestIdLayer::new(x_request_id.clone(), RandomRequestId))
        .layer(PropagateRequestIdLayer::new(x_request_id))
        // trace: method, path, status, latency; never headers or bodies
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|r| r.header_value().to_str().ok())
                        .unwrap_or("");
                    let path = loggable_path(request.uri().path());
                    tracing::info_span!("http", method = %request.method(), path = %path, request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        // timeout: a stuck dependency cannot hold a connection forever
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(config.request_timeout_secs),
        ))
        // body limit: bodies beyond it are refused before they are buffered. DefaultBodyLimit
        // binds axum's extractors; server functions read the body themselves, so the body is
        // also wrapped (a declared length over the limit is a 413 at once, a longer stream
        // fails when it passes the limit).
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(tower::util::MapResponseLayer::new(
            |response: axum::http::Response<tower_http::limit::ResponseBody<axum::body::Body>>| {
                // The limit's own refusal is plain text: answered with the error-body contract.
                let is_json = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json"));
                if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
                    return error::ApiFailure::new(
                        crate::model::ErrorCode::PayloadTooLarge,
                        "the request body is too large",
                    )
                    .into_response();
                }
                response.map(axum::body::Body::new)
            },
        ))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(tower::util::MapRequestLayer::new(|request: Request<tower_http::body::Limited<axum::body::Body>>| {
            request.map(axum::body::Body::new)
        }))
        // security headers: pages set their own CSP with the response's nonce; everything else
        // (API, server functions, assets) gets a deny-all one
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .option_layer(hsts)
        // session: the SQL-backed cookie session
        .layer(session::layer(sessions, config))
        // CSRF: state-changing requests must come from our own origin
        .layer(axum::middleware::from_fn_with_state(csrf::Origin::of(&config.public_url), csrf::reject_cross_site));
    // auth: per handler (bearer token or session), decided by the core
    Router::new()
        .nest("/api/v1", api::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .merge(pages)
        // inside the stack, where the route pattern is known
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(middleware)
        .with_state(state)
}

/// The request path as it may be logged: an enrollment link's path is its secret, so only the
/// route is kept.
fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.starts_with("/enroll/") { "/enroll/{token}".into() } else { path.into() }
}

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers and Vault is unsealed.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let r = state.core.shared_readiness().await;
    let status = if r.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if r.ready() { "ready" } else { "not_ready" }, "database": r.database, "vault": r.vault.as_str()});
    (status, Json(body))
}

/// Serves the console until Ctrl-C / SIGTERM.
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn serve(core: Core, config: &Config) -> std::io::Result<()> {
    let mut leptos_options = leptos::config::get_configuration(None)
        .map_err(|e| std::io::Error::other(format!("leptos configuration: {e}")))?
        .leptos_options;
    leptos_options.site_addr = config.site_addr;
    tokio::spawn({
        let core = core.clone();
        async move { core.maintain_vault_token().await }
    });
    let sessions =
        SqlSessionStore::connect(config).await.map_err(|e| std::io::Error::other(format!("session store: {e}")))?;
    tokio::spawn({
        let core = core.clone();
        async move {
            // Records reveal windows and requests that closed by time, even when nobody looks.
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                if let Err(e) = core.record_expired_grants().await {
                    tracing::warn!(error = %e, "could not record expired reveal windows");
                }
                if let Err(e) = core.record_expired_requests().await {
                    tracing::warn!(error = %e, "could not record expired reveal requests");
                }
            }
        }
    });
    tokio::spawn({
        let core = core.clone();
        // The heartbeat spread over the day: each minute, the tenants whose time has come (a
        // task of its own, so slow logins never hold up the monitor's rules).
        async move {
            if core.mail().is_err() {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                core.run_heartbeat_pass().await;
            }
        }
    });
    tokio::spawn({
        let core = core.clone();
        async move {
            match core.repair_interrupted_rotations().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(repaired = n, "interrupted rotations repaired at start-up"),
                Err(e) => tracing::error!(error = %e, "could not look for interrupted rotations"),
            }
        }
    });
    tokio::spawn({
        let core = core.clone();
        // Sends queued alerts (email, Slack) as they are raised, retries with backoff, and
        // checks for incidents left unacknowledged.
        async move { core.run_outbox_worker(Duration::from_secs(1)).await }
    });
    tokio::spawn({
        let core = core.clone();
        // Every audit event to the SIEM sinks, when configured (syslog stream, webhook outbox).
        async move { core.run_siem_export(Duration::from_secs(1)).await }
    });
    tokio::spawn({
        let core = core.clone();
        // Suspicious-activity rules as events arrive; Vault, backup and chain checks.
        async move { core.run_monitor(Duration::from_secs(1)).await }
    });
    let _scheduler = crate::scheduler::start(core.clone(), config)
        .await
        .map_err(|e| std::io::Error::other(format!("scheduler: {e}")))?;
    let app = router(core, config, leptos_options, sessions);
    let listener = tokio::net::TcpListener::bind(config.site_addr).await?;
    tracing::info!(address = %listener.local_addr()?, "smtp-vault console listening");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down");
}
