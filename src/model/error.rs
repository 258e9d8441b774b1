//! The API error body contract: `{"error": {"code": "snake_case_code", "message": "human text"}}`.

use serde::{Deserialize, Serialize};

/// The `error` object of an API error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable snake_case code clients branch on.
    pub code: String,
    /// Human text; never an internal detail.
    pub message: String,
}

/// The whole error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// The error.
    pub error: ApiError,
}

impl ApiErrorBody {
    /// Builds a body from a code and message.
    #[must_use]
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error: ApiError { code: code.into(), message: message.into() } }
    }
}
