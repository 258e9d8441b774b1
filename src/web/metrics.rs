//! Prometheus on the console's own listener: the process-wide recorder, a middleware that
//! counts and times requests by route pattern (never by raw path, which would let a scanner
//! create series), and `/metrics`, which refreshes the gauges the core reads from the
//! database and Vault before rendering. An optional bearer token guards it.

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::{ExposeSecret, SecretString};
use std::sync::OnceLock;
use std::time::Instant;
use subtle::ConstantTimeEq;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (tests start several servers in one) and returns
/// its handle; `None` when another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("smtp_vault_http_request_duration_seconds".into()),
                    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    metrics::describe_counter!("smtp_vault_http_requests_total", "HTTP requests by method, route and status");
    metrics::describe_histogram!(
        "smtp_vault_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and route"
    );
    metrics::describe_counter!("smtp_vault_reveals_total", "Plaintext passwords sent to admins");
    metrics::describe_counter!("smtp_vault_rotations_total", "Rotations by outcome");
    metrics::describe_counter!(
        "smtp_vault_vault_failovers_total",
        "Moves to another Vault node after the one in use stopped serving"
    );
    metrics::describe_gauge!("smtp_vault_backup_age_seconds", "Age of the newest backup (-1: none yet)");
    metrics::describe_gauge!("smtp_vault_outbox_depth", "Alert deliveries by state (pending, dead)");
    metrics::describe_gauge!("smtp_vault_alerts_unacknowledged", "Alerts nobody has acknowledged");
    metrics::describe_gauge!("smtp_vault_alerts_open", "Unacknowledged alerts by kind");
    metrics::describe_gauge!("smtp_vault_siem_lag_events", "Audit events not yet handed to a SIEM sink");
    metrics::describe_gauge!("smtp_vault_siem_dead_letters", "SIEM webhook deliveries that gave up");
    metrics::describe_gauge!("smtp_vault_vault_up", "1 when Vault is active or standby");
    metrics::describe_gauge!("smtp_vault_vault_health", "1 for Vault's current health state");
    metrics::describe_gauge!("smtp_vault_database_up", "1 when the database answers");
    metrics::describe_gauge!("smtp_vault_credentials", "Stored credentials by state");
    metrics::describe_gauge!("smtp_vault_reveal_windows_open", "Reveal windows open now");
    metrics::describe_counter!(
        "smtp_vault_readiness_probes_total",
        "Readiness probes actually run (not served from the last)"
    );
    metrics::describe_counter!("smtp_vault_heartbeat_logins_total", "Heartbeat SMTP logins that got an answer");
    metrics::describe_counter!(
        "smtp_vault_heartbeat_failures_total",
        "Heartbeat checks that could not tell (retried in an hour)"
    );
    metrics::describe_counter!(
        "smtp_vault_rate_limiter_saturated_total",
        "Login attempts the rate limiter could not track (its table was full)"
    );
}

/// Counts and times each request under its route pattern.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route)];
    metrics::histogram!("smtp_vault_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    let [method, route] = labels;
    metrics::counter!("smtp_vault_http_requests_total", &[method, route, ("status", status)]).increment(1);
    response
}

/// `GET /metrics`.
pub async fn scrape(State(state): State<AppState>, request: Request) -> Response {
    if let Some(expected) = &state.metrics_token
        && !bearer_matches(&request, expected)
    {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "metrics token required\n")
            .into_response();
    }
    let Some(handle) = handle() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response();
    };
    if let Err(e) = state.core.shared_gauges().await {
        tracing::warn!(error = %e, "could not refresh the gauges");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

fn bearer_matches(request: &Request, expected: &SecretString) -> bool {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(expected.expose_secret().as_bytes()))
}
