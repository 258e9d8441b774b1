//! The error contract of every edge: one [`ErrorCode`] set, the API's body
//! `{"error": {"code": "snake_case_code", "message": "human text"}}` and the UI's server-function
//! error carry the same codes, each with its HTTP status.

use serde::{Deserialize, Serialize};

/// A stable code clients branch on. The core maps its errors to one (`core::Error::code`); the
/// edges add their own request-shape ones.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A named field failed validation (422).
    InvalidField,
    /// Other invalid input (400).
    InvalidInput,
    /// A tenant id in the path is not one (400).
    InvalidTenantId,
    /// A query string could not be read (400).
    InvalidQuery,
    /// The body could not be read (400).
    MalformedBody,
    /// The body is not JSON (400).
    MalformedJson,
    /// No valid credentials (401).
    Unauthenticated,
    /// A token without the scope (403).
    InsufficientScope,
    /// A passkey confirmation of this session is needed first (403).
    StepUpRequired,
    /// Not allowed (403).
    Forbidden,
    /// A cross-site request (403).
    CsrfRejected,
    /// No such thing, or no such route (404).
    NotFound,
    /// A route that does not take this method (405).
    MethodNotAllowed,
    /// A rotation of the tenant is running (409).
    RotationInProgress,
    /// A concurrent change won (409).
    Conflict,
    /// The body is too large (413).
    PayloadTooLarge,
    /// The body is not declared JSON (415).
    UnsupportedMediaType,
    /// Too many attempts (429).
    RateLimited,
    /// The tenant's mail server failed or refused (502).
    MailServerError,
    /// A stored credential failed its integrity check (500).
    CredentialIntegrityError,
    /// Vault or the database is unavailable (503).
    ServiceUnavailable,
    /// A bug or a configuration problem; the console's log has it (500).
    InternalError,
    /// The server-function machinery failed (500).
    RequestFailed,
    /// The browser's passkey prompt failed or was dismissed (UI only).
    StepUpFailed,
    /// A code this build does not know (a newer server).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::InvalidTenantId => "invalid_tenant_id",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::StepUpRequired => "step_up_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CsrfRejected => "csrf_rejected",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RotationInProgress => "rotation_in_progress",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MailServerError => "mail_server_error",
            ErrorCode::CredentialIntegrityError => "credential_integrity_error",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::RequestFailed => "request_failed",
            ErrorCode::StepUpFailed => "step_up_failed",
            ErrorCode::Other => "other",
        }
    }

    /// The HTTP status an edge answers it with.
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidField => 422,
            ErrorCode::InvalidInput
            | ErrorCode::InvalidTenantId
            | ErrorCode::InvalidQuery
            | ErrorCode::MalformedBody
            | ErrorCode::MalformedJson => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::InsufficientScope
            | ErrorCode::StepUpRequired
            | ErrorCode::Forbidden
            | ErrorCode::CsrfRejected => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RotationInProgress | ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::MailServerError => 502,
            ErrorCode::ServiceUnavailable => 503,
            ErrorCode::CredentialIntegrityError
            | ErrorCode::InternalError
            | ErrorCode::RequestFailed
            | ErrorCode::StepUpFailed
            | ErrorCode::Other => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of an API error body.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable code clients branch on.
    pub code: ErrorCode,
    /// Human text; never an internal detail.
    pub message: String,
}

/// The whole error body.
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiError,
}

impl ApiErrorBody {
    /// Builds a body from a code and message.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ApiError { code, message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_serializes_as_its_wire_name() {
        for code in [ErrorCode::InsufficientScope, ErrorCode::StepUpRequired, ErrorCode::CredentialIntegrityError] {
            assert_eq!(serde_json::to_value(code).ok(), Some(serde_json::Value::String(code.as_str().into())));
        }
        let unknown: ErrorCode = serde_json::from_str("\"from_a_newer_server\"").unwrap_or(ErrorCode::InvalidInput);
        assert_eq!(unknown, ErrorCode::Other);
    }
}
