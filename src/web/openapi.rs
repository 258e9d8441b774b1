//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`: derived by utoipa
//! from the handlers' `#[utoipa::path]` attributes and the model's types, so it cannot drift
//! from what the handlers take and answer.

use crate::model::ApiErrorBody;
use crate::web::api;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "smtp-vault API",
        description = "The provisioning and incident API of smtp-vault. Every call needs a service token \
            (`Authorization: Bearer …`) with the scope each operation names; errors are \
            `{\"error\": {\"code\", \"message\"}}` with a stable code.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only"),
    ),
    servers((url = "/api/v1")),
    paths(
        api::list_tenants,
        api::credential_metadata,
        api::store_credential,
        api::read_credential_secret,
        api::rotate_now,
        api::provision_credential,
        api::emergency_reset,
        api::revert_credential,
        api::recover_tenant,
        api::mailu_admins,
        api::list_reveal_requests,
        api::exposure_sweep,
        api::query_audit,
        api::export_audit_csv,
        api::export_audit_jsonl,
    ),
    // Schemas only query parameters and the error groups name (utoipa collects those of
    // bodies by itself).
    components(schemas(crate::model::TenantFilter, ApiErrorBody)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "tenants", description = "The fleet: paged lists, Mailu admin inventory"),
        (name = "credentials", description = "Store, read, rotate, revert"),
        (name = "incidents", description = "Emergency resets and exposure sweeps"),
        (name = "recovery", description = "Moving a tenant onto a replacement server"),
        (name = "audit", description = "The hash-chained audit trail and reveal requests"),
    )
)]
struct ApiDoc;

struct BearerToken;

// The error answers, grouped as the operations share them: each operation lists the groups it
// can answer with (the body is always the error contract, `{"error": {"code", "message"}}`).

/// What any operation may answer besides its success.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses; never built")]
pub(crate) enum CallerErrors {
    /// The request is malformed (`invalid_tenant_id`, `malformed_json`, `invalid_query`, `invalid_input`)
    #[response(status = 400)]
    BadRequest(ApiErrorBody),
    /// No token, or an unknown, expired or revoked one (`unauthenticated`)
    #[response(status = 401)]
    Unauthenticated(ApiErrorBody),
    /// The token lacks the operation's scope (`insufficient_scope`) or it is refused (`forbidden`)
    #[response(status = 403)]
    Forbidden(ApiErrorBody),
    /// Too many requests (`rate_limited`)
    #[response(status = 429)]
    RateLimited(ApiErrorBody),
    /// Vault or the database is unavailable (`service_unavailable`)
    #[response(status = 503)]
    Unavailable(ApiErrorBody),
}

/// The tenant (or admin, or token) named does not exist.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses; never built")]
pub(crate) enum NotFoundError {
    /// No such tenant, admin or service token (`not_found`)
    #[response(status = 404)]
    NotFound(ApiErrorBody),
}

/// Another change got there first.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses; never built")]
pub(crate) enum ConflictError {
    /// A rotation is in progress or the state forbids it (`rotation_in_progress`, `conflict`)
    #[response(status = 409)]
    Conflict(ApiErrorBody),
}

/// A body refused.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses; never built")]
pub(crate) enum BodyErrors {
    /// The body is over the limit (`payload_too_large`)
    #[response(status = 413)]
    TooLarge(ApiErrorBody),
    /// The body is not JSON (`unsupported_media_type`)
    #[response(status = 415)]
    NotJson(ApiErrorBody),
    /// A field failed validation (`invalid_field`; the message names it, never its value)
    #[response(status = 422)]
    InvalidField(ApiErrorBody),
}

/// The operation reaches the tenant's mail server.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "describes responses; never built")]
pub(crate) enum MailServerError {
    /// The tenant's mail server failed or could not be reached (`mail_server_error`)
    #[response(status = 502)]
    MailServer(ApiErrorBody),
}

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some("A service token (`smtp-vault token create`) with the operation's scope".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document, built once.
#[must_use]
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// `GET /api/v1/openapi.json`: public (it describes the API, holds nothing of any tenant).
pub async fn serve() -> Response {
    static BODY: OnceLock<String> = OnceLock::new();
    let body = BODY.get_or_init(|| document().to_pretty_json().unwrap_or_default());
    let mut response = body.as_str().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
