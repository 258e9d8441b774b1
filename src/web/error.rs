//! Errors at the HTTP edge: core error kinds and request-shape problems become a status and the
//! `{"error": {"code", "message"}}` body; internals are logged once here and never sent.

use crate::core::{Error, ErrorKind};
use crate::model::ApiErrorBody;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API failure ready to be sent.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiFailure {
    /// A failure with a fixed code and a message safe to show.
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 `invalid_tenant_id`.
    #[must_use]
    pub fn invalid_tenant_id() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_tenant_id", crate::model::InvalidTenantId.to_string())
    }

    /// HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The safe message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 404 for an unknown route.
    #[must_use]
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
    }

    /// 405 for a known route with another method.
    #[must_use]
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
    }
}

impl From<Error> for ApiFailure {
    fn from(error: Error) -> Self {
        let (status, code, message): (StatusCode, &'static str, String) = match (&error, error.kind()) {
            (Error::InvalidField(field), _) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", field.to_string()),
            (_, ErrorKind::InvalidInput) => (StatusCode::BAD_REQUEST, "invalid_input", error.to_string()),
            (_, ErrorKind::Unauthenticated) => (StatusCode::UNAUTHORIZED, "unauthenticated", error.to_string()),
            (Error::MissingScope(_), _) => (StatusCode::FORBIDDEN, "insufficient_scope", error.to_string()),
            (Error::StepUpRequired, _) => (StatusCode::FORBIDDEN, "step_up_required", error.to_string()),
            (_, ErrorKind::Forbidden) => (StatusCode::FORBIDDEN, "forbidden", error.to_string()),
            (_, ErrorKind::RateLimited) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", error.to_string()),
            (_, ErrorKind::NotFound) => (StatusCode::NOT_FOUND, "not_found", error.to_string()),
            (Error::RotationBusy, _) => (StatusCode::CONFLICT, "rotation_in_progress", error.to_string()),
            (_, ErrorKind::Conflict) => (StatusCode::CONFLICT, "conflict", error.to_string()),
            (_, ErrorKind::Upstream) => (StatusCode::BAD_GATEWAY, "mail_server_error", error.to_string()),
            // SECURITY: vague on purpose; which tenant a ciphertext came from is for the audit
            // log and the operator, not for the caller.
            (_, ErrorKind::Integrity) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "credential_integrity_error",
                "the stored credential failed its integrity check; the event was recorded for investigation".into(),
            ),
            (_, ErrorKind::Unavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "a dependency of the console (Vault or the database) is unavailable; retry later".into(),
            ),
            (_, ErrorKind::Configuration | ErrorKind::Internal) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error; see the console's log".into())
            }
        };
        if status.is_server_error() {
            tracing::error!(error = %error, code, "request failed");
        } else {
            tracing::debug!(error = %error, code, "request refused");
        }
        Self { status, code, message }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(ApiErrorBody::new(self.code, self.message))).into_response();
        if unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
