//! The JSON API under `/api/v1` (ARCHITECTURE §3.3). Each handler: actor, one core call,
//! convert. Responses that carry a secret are marked `no-store`.

use crate::model::{
    CredentialMetadataView, EmergencyResetReceipt, EmergencyResetRequest, ProvisionCredentialRequest,
    RevealRequestView, RotationView, StoreCredentialRequest, StoredCredentialView,
};
use crate::web::AppState;
use crate::web::error::ApiFailure;
use crate::web::extract::{ApiActor, Client, JsonBody, TenantPath};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tenants", get(list_tenants))
        .route("/tenants/{id}/smtp-credentials", get(credential_metadata).put(store_credential))
        .route("/tenants/{id}/smtp-credentials/secret", get(read_credential_secret))
        .route("/tenants/{id}/smtp-credentials/rotate", post(rotate_now))
        .route("/tenants/{id}/smtp-credentials/provision", post(provision_credential))
        .route("/tenants/{id}/smtp-credentials/emergency-reset", post(emergency_reset))
        .route("/tenants/{id}/smtp-credentials/revert", post(revert_credential))
        .route("/tenants/{id}/recover", post(recover_tenant))
        .route("/tenants/{id}/mailu-admins", get(mailu_admins))
        .route("/reveal-requests", get(list_reveal_requests))
        .route("/sweeps", post(exposure_sweep))
        .route("/audit", get(query_audit))
        .route("/audit/export.csv", get(export_audit_csv))
        .route("/audit/export.jsonl", get(export_audit_jsonl))
        .fallback(|| async { ApiFailure::no_route() })
        .method_not_allowed_fallback(|| async { ApiFailure::method_not_allowed() })
}

async fn store_credential(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
    JsonBody(body): JsonBody,
) -> Result<Json<StoredCredentialView>, ApiFailure> {
    let request = StoreCredentialRequest::from_json(body).map_err(crate::core::Error::from)?;
    Ok(Json(state.core.store_credential(&actor, &client, &tenant, request).await?))
}

async fn credential_metadata(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    TenantPath(tenant): TenantPath,
) -> Result<Json<CredentialMetadataView>, ApiFailure> {
    Ok(Json(state.core.credential_metadata(&actor, &tenant).await?))
}

async fn read_credential_secret(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
) -> Result<Response, ApiFailure> {
    let secret = state.core.read_credential_secret(&actor, &client, &tenant).await?;
    let mut response = Json(secret).into_response();
    // SECURITY: no cache (browser, proxy or CDN) may keep a plaintext credential.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// A page of tenants (credentials:read): `state`, `due_before`, `q`, `cursor`, `limit`.
async fn list_tenants(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    query: Result<axum::extract::Query<crate::model::TenantQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::model::TenantPage>, ApiFailure> {
    let axum::extract::Query(query) =
        query.map_err(|rejection| ApiFailure::new(crate::model::ErrorCode::InvalidQuery, rejection.body_text()))?;
    Ok(Json(state.core.tenant_page(&actor, &query).await?))
}

#[derive(serde::Deserialize)]
struct RevealRequestQuery {
    #[serde(default)]
    pending: bool,
}

/// Four-eyes reveal requests (audit:read): who asked, for which tenant, why, and who decided.
async fn list_reveal_requests(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    axum::extract::Query(query): axum::extract::Query<RevealRequestQuery>,
) -> Result<Json<Vec<RevealRequestView>>, ApiFailure> {
    Ok(Json(state.core.list_reveal_requests(&actor, query.pending).await?))
}

async fn rotate_now(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
) -> Result<Json<RotationView>, ApiFailure> {
    Ok(Json(state.core.rotate_now(&actor, &client, &tenant).await?))
}

async fn provision_credential(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
    JsonBody(body): JsonBody,
) -> Result<Json<StoredCredentialView>, ApiFailure> {
    let request = ProvisionCredentialRequest::from_json(body).map_err(crate::core::Error::from)?;
    Ok(Json(state.core.provision_credential(&actor, &client, &tenant, request).await?))
}

async fn emergency_reset(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
    JsonBody(body): JsonBody,
) -> Result<Json<EmergencyResetReceipt>, ApiFailure> {
    let request = EmergencyResetRequest::from_json(body).map_err(crate::core::Error::from)?;
    Ok(Json(state.core.emergency_reset(&actor, &client, &tenant, &request).await?))
}

/// The tenant's Mailu global admins as last inventoried (credentials:read).
async fn mailu_admins(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    TenantPath(tenant): TenantPath,
) -> Result<Json<Vec<crate::model::MailuAdminView>>, ApiFailure> {
    Ok(Json(state.core.mailu_admins(&actor, &tenant).await?))
}

/// Revert to the previous password through the staged protocol (credentials:revert).
async fn revert_credential(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
    JsonBody(body): JsonBody,
) -> Result<Json<crate::model::RevertView>, ApiFailure> {
    let request = crate::model::RevertRequest::from_json(body).map_err(crate::core::Error::from)?;
    Ok(Json(state.core.revert_credential(&actor, &client, &tenant, &request).await?))
}

/// Exposure sweep (credentials:reset): `dry_run` lists, otherwise rotates and answers when done.
async fn exposure_sweep(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    JsonBody(body): JsonBody,
) -> Result<Json<crate::model::SweepView>, ApiFailure> {
    let request = crate::model::SweepRequest::from_json(body).map_err(crate::core::Error::from)?;
    Ok(Json(state.core.exposure_sweep(&actor, &client, &request, None).await?))
}

async fn recover_tenant(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
    JsonBody(body): JsonBody,
) -> Result<Json<crate::model::RecoveryView>, ApiFailure> {
    let request = crate::model::RecoverTenantRequest::from_json(body).map_err(crate::core::Error::from)?;
    Ok(Json(state.core.recover_tenant(&actor, &client, &tenant, &request).await?))
}

async fn query_audit(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    query: Result<axum::extract::Query<crate::model::AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::model::AuditPage>, ApiFailure> {
    let axum::extract::Query(query) =
        query.map_err(|rejection| ApiFailure::new(crate::model::ErrorCode::InvalidQuery, rejection.body_text()))?;
    Ok(Json(state.core.query_audit(&actor, &query).await?))
}

type AuditQueryParams =
    Result<axum::extract::Query<crate::model::AuditQuery>, axum::extract::rejection::QueryRejection>;

async fn export_audit_csv(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    query: AuditQueryParams,
) -> Result<Response, ApiFailure> {
    export_audit(state, actor, query, true).await
}

async fn export_audit_jsonl(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    query: AuditQueryParams,
) -> Result<Response, ApiFailure> {
    export_audit(state, actor, query, false).await
}

/// Streams the export: rows leave as the database yields them, so any size fits in memory.
async fn export_audit(
    state: AppState,
    actor: crate::core::Actor,
    query: AuditQueryParams,
    csv: bool,
) -> Result<Response, ApiFailure> {
    let axum::extract::Query(query) =
        query.map_err(|rejection| ApiFailure::new(crate::model::ErrorCode::InvalidQuery, rejection.body_text()))?;
    state.core.check_audit_query(&actor, &query)?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let core = state.core.clone();
    tokio::spawn(async move {
        if let Err(e) = core.stream_audit(&actor, &query, tx).await {
            tracing::error!(error = %e, "audit export stopped");
        }
    });
    let head = futures_util::stream::iter(
        csv.then(|| Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(crate::model::CSV_HEADER))),
    );
    let rows = futures_util::stream::unfold(rx, move |mut rx| async move {
        let event = rx.recv().await?;
        let line = if csv {
            event.csv_line()
        } else {
            let mut json = serde_json::to_string(&event).unwrap_or_default();
            json.push('\n');
            json
        };
        Some((Ok(axum::body::Bytes::from(line)), rx))
    });
    let mut response = axum::body::Body::from_stream(futures_util::StreamExt::chain(head, rows)).into_response();
    let (kind, name) =
        if csv { ("text/csv; charset=utf-8", "audit.csv") } else { ("application/x-ndjson", "audit.jsonl") };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
