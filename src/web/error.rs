//! Errors at the HTTP edge: core error kinds and request-shape problems become a status and the
//! `{"error": {"code", "message"}}` body; internals are logged once here and never sent.

use crate::core::{Error, ErrorKind};
use crate::model::{ApiErrorBody, ErrorCode};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An API failure ready to be sent.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiFailure {
    /// A failure with a fixed code and a message safe to show.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, code, message: message.into() }
    }

    /// 400 `invalid_tenant_id`.
    #[must_use]
    pub fn invalid_tenant_id() -> Self {
        Self::new(ErrorCode::InvalidTenantId, crate::model::InvalidTenantId.to_string())
    }

    /// HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
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
        Self::new(ErrorCode::NotFound, "no such API route")
    }

    /// 405 for a known route with another method.
    #[must_use]
    pub fn method_not_allowed() -> Self {
        Self::new(ErrorCode::MethodNotAllowed, "this route does not accept that method")
    }
}

impl From<Error> for ApiFailure {
    fn from(error: Error) -> Self {
        let code = error.code();
        let message = match error.kind() {
            // SECURITY: vague on purpose; which tenant a ciphertext came from is for the audit
            // log and the operator, not for the caller.
            ErrorKind::Integrity => {
                "the stored credential failed its integrity check; the event was recorded for investigation".into()
            }
            ErrorKind::Unavailable => {
                "a dependency of the console (Vault or the database) is unavailable; retry later".into()
            }
            ErrorKind::Configuration | ErrorKind::Internal => "internal error; see the console's log".into(),
            _ => error.to_string(),
        };
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %error, code = code.as_str(), "request failed");
        } else {
            tracing::debug!(error = %error, code = code.as_str(), "request refused");
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
