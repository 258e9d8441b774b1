//! The JSON API under `/api/v1` (ARCHITECTURE §3.3). Each handler: actor, one core call,
//! convert. Responses that carry a secret are marked `no-store`.

use crate::model::{
    CredentialMetadataView, CredentialSecretView, EmergencyResetReceipt, EmergencyResetRequest,
    ProvisionCredentialRequest, RevealRequestView, RotationView, StoreCredentialRequest, StoredCredentialView,
    TenantId,
};
use crate::web::AppState;
use crate::web::error::ApiFailure;
use crate::web::extract::{ApiActor, ApiQuery, Client, JsonBody, TenantPath};
use crate::web::openapi::{BodyErrors, CallerErrors, ConflictError, MailServerError, NotFoundError};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// The `/api/v1` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(crate::web::openapi::serve))
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

#[utoipa::path(
    put, path = "/tenants/{id}/smtp-credentials", tag = "credentials",
    summary = "Store a tenant's admin SMTP credential (credentials:write)",
    params(("id" = TenantId, Path, description = "The tenant id")), request_body = StoreCredentialRequest,
    responses(
        (status = 200, description = "Stored (encrypted, in Vault); audited", body = StoredCredentialView),
        CallerErrors, ConflictError, BodyErrors,
    )
)]
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

#[utoipa::path(
    get, path = "/tenants/{id}/smtp-credentials", tag = "credentials",
    summary = "A credential's metadata, never its password (credentials:read)",
    params(("id" = TenantId, Path, description = "The tenant id")),
    responses(
        (status = 200, description = "The metadata", body = CredentialMetadataView),
        CallerErrors, NotFoundError,
    )
)]
async fn credential_metadata(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    TenantPath(tenant): TenantPath,
) -> Result<Json<CredentialMetadataView>, ApiFailure> {
    Ok(Json(state.core.credential_metadata(&actor, &tenant).await?))
}

#[utoipa::path(
    get, path = "/tenants/{id}/smtp-credentials/secret", tag = "credentials",
    summary = "Read the password (credentials:read-secret); audited before it is answered",
    params(("id" = TenantId, Path, description = "The tenant id")),
    responses(
        (status = 200, description = "The credential with its password; `Cache-Control: no-store`", body = CredentialSecretView,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        CallerErrors, NotFoundError, ConflictError,
    )
)]
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
#[utoipa::path(
    get, path = "/tenants", tag = "tenants",
    summary = "A page of tenants, by tenant id (credentials:read)",
    params(crate::model::TenantQuery),
    responses(
        (status = 200, description = "The page", body = crate::model::TenantPage),
        CallerErrors,
    )
)]
async fn list_tenants(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiQuery(query): ApiQuery<crate::model::TenantQuery>,
) -> Result<Json<crate::model::TenantPage>, ApiFailure> {
    Ok(Json(state.core.tenant_page(&actor, &query).await?))
}

#[derive(serde::Deserialize)]
struct RevealRequestQuery {
    #[serde(default)]
    pending: bool,
}

/// Four-eyes reveal requests (audit:read): who asked, for which tenant, why, and who decided.
#[utoipa::path(
    get, path = "/reveal-requests", tag = "audit",
    summary = "Four-eyes reveal requests (audit:read)",
    params(("pending" = Option<bool>, Query, description = "Only those awaiting a decision")),
    responses(
        (status = 200, description = "The requests, newest first", body = Vec<RevealRequestView>),
        CallerErrors,
    )
)]
async fn list_reveal_requests(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiQuery(query): ApiQuery<RevealRequestQuery>,
) -> Result<Json<Vec<RevealRequestView>>, ApiFailure> {
    Ok(Json(state.core.list_reveal_requests(&actor, query.pending).await?))
}

#[utoipa::path(
    post, path = "/tenants/{id}/smtp-credentials/rotate", tag = "credentials",
    summary = "Rotate the password now (credentials:rotate)",
    params(("id" = TenantId, Path, description = "The tenant id")),
    responses(
        (status = 200, description = "Rotated", body = RotationView),
        CallerErrors, NotFoundError, ConflictError, MailServerError,
    )
)]
async fn rotate_now(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    TenantPath(tenant): TenantPath,
) -> Result<Json<RotationView>, ApiFailure> {
    Ok(Json(state.core.rotate_now(&actor, &client, &tenant).await?))
}

#[utoipa::path(
    post, path = "/tenants/{id}/smtp-credentials/provision", tag = "credentials",
    summary = "Create the Mailu admin with a generated password and store it (credentials:write)",
    params(("id" = TenantId, Path, description = "The tenant id")), request_body = ProvisionCredentialRequest,
    responses(
        (status = 200, description = "Provisioned", body = StoredCredentialView),
        CallerErrors, ConflictError, BodyErrors, MailServerError,
    )
)]
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

#[utoipa::path(
    post, path = "/tenants/{id}/smtp-credentials/emergency-reset", tag = "incidents",
    summary = "Emergency reset: rotate now, revoke reveals, alert security (credentials:reset)",
    params(("id" = TenantId, Path, description = "The tenant id")), request_body = EmergencyResetRequest,
    responses(
        (status = 200, description = "Reset", body = EmergencyResetReceipt),
        CallerErrors, NotFoundError, ConflictError, BodyErrors, MailServerError,
    )
)]
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
#[utoipa::path(
    get, path = "/tenants/{id}/mailu-admins", tag = "tenants",
    summary = "The tenant's Mailu global admins as last inventoried (credentials:read)",
    params(("id" = TenantId, Path, description = "The tenant id")),
    responses(
        (status = 200, description = "The admins", body = Vec<crate::model::MailuAdminView>),
        CallerErrors, NotFoundError,
    )
)]
async fn mailu_admins(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    TenantPath(tenant): TenantPath,
) -> Result<Json<Vec<crate::model::MailuAdminView>>, ApiFailure> {
    Ok(Json(state.core.mailu_admins(&actor, &tenant).await?))
}

/// Revert to the previous password through the staged protocol (credentials:revert).
#[utoipa::path(
    post, path = "/tenants/{id}/smtp-credentials/revert", tag = "credentials",
    summary = "Revert to the previous password through the staged protocol (credentials:revert)",
    params(("id" = TenantId, Path, description = "The tenant id")), request_body = crate::model::RevertRequest,
    responses(
        (status = 200, description = "Reverted", body = crate::model::RevertView),
        CallerErrors, NotFoundError, ConflictError, BodyErrors, MailServerError,
    )
)]
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
#[utoipa::path(
    post, path = "/sweeps", tag = "incidents",
    summary = "Exposure sweep: rotate every tenant a subject was exposed to (credentials:reset)",
    request_body = crate::model::SweepBody,
    responses(
        (status = 200, description = "What was found (dry run) or done", body = crate::model::SweepView),
        CallerErrors, NotFoundError, ConflictError, BodyErrors,
    )
)]
async fn exposure_sweep(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Client(client): Client,
    JsonBody(body): JsonBody,
) -> Result<Json<crate::model::SweepView>, ApiFailure> {
    let request = crate::model::SweepRequest::from_json(body).map_err(crate::core::Error::from)?;
    Ok(Json(state.core.exposure_sweep(&actor, &client, &request, None).await?))
}

#[utoipa::path(
    post, path = "/tenants/{id}/recover", tag = "recovery",
    summary = "Move a tenant onto a replacement mail server (tenants:recover)",
    params(("id" = TenantId, Path, description = "The tenant id")), request_body = crate::model::RecoverTenantRequest,
    responses(
        (status = 200, description = "Recovered", body = crate::model::RecoveryView),
        CallerErrors, NotFoundError, ConflictError, BodyErrors, MailServerError,
    )
)]
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

#[utoipa::path(
    get, path = "/audit", tag = "audit",
    summary = "A page of audit events, newest first (audit:read)",
    params(crate::model::AuditQuery),
    responses(
        (status = 200, description = "The page", body = crate::model::AuditPage),
        CallerErrors,
    )
)]
async fn query_audit(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiQuery(query): ApiQuery<crate::model::AuditQuery>,
) -> Result<Json<crate::model::AuditPage>, ApiFailure> {
    Ok(Json(state.core.query_audit(&actor, &query).await?))
}

#[utoipa::path(
    get, path = "/audit/export.csv", tag = "audit",
    summary = "Every matching event as CSV, streamed (audit:read)",
    params(crate::model::AuditQuery),
    responses(
        (status = 200, description = "CSV with a header row", body = String, content_type = "text/csv"),
        CallerErrors,
    )
)]
async fn export_audit_csv(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiQuery(query): ApiQuery<crate::model::AuditQuery>,
) -> Result<Response, ApiFailure> {
    export_audit(state, actor, query, true).await
}

#[utoipa::path(
    get, path = "/audit/export.jsonl", tag = "audit",
    summary = "Every matching event as JSON lines, streamed (audit:read)",
    params(crate::model::AuditQuery),
    responses(
        (status = 200, description = "One event per line", body = String, content_type = "application/x-ndjson"),
        CallerErrors,
    )
)]
async fn export_audit_jsonl(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiQuery(query): ApiQuery<crate::model::AuditQuery>,
) -> Result<Response, ApiFailure> {
    export_audit(state, actor, query, false).await
}

/// Streams the export: rows leave as the database yields them, so any size fits in memory.
async fn export_audit(
    state: AppState,
    actor: crate::core::Actor,
    query: crate::model::AuditQuery,
    csv: bool,
) -> Result<Response, ApiFailure> {
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
