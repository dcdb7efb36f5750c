//! API errors: JSON bodies with a stable code and a message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::control::ControlError;
use crate::store::{QueryError, StoreError};

/// An error response: `{"error": {"code": "...", "message": "..."}}` plus, for an append
/// conflict, the stream's current version.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    current_version: Option<u64>,
}

impl ApiError {
    /// The same error, its message prefixed with where it happened (`streams[2]`...).
    pub fn within(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            current_version: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 with a code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// Its HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(version) = self.current_version {
            error["currentVersion"] = json!(version);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { actual, .. } => Self {
                current_version: Some(actual),
                ..Self::new(StatusCode::CONFLICT, "version_conflict", error.to_string())
            },
            StoreError::InvalidInput(message) | StoreError::Refused(message) => {
                Self::bad_request("invalid_input", message)
            }
            StoreError::NotFound(message) => Self::not_found("not_found", message),
            StoreError::OverBudget { transient, message } => {
                let status = match transient {
                    true => StatusCode::SERVICE_UNAVAILABLE,
                    false => StatusCode::BAD_REQUEST,
                };
                Self::new(status, "query_over_budget", message)
            }
            other => {
                tracing::warn!(error = %other, "store call from the API failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    other.to_string(),
                )
            }
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::UnknownProjection { .. } => {
                Self::not_found("projection_not_found", error.to_string())
            }
            ControlError::UnknownGeneration { .. } => {
                Self::not_found("generation_not_found", error.to_string())
            }
            ControlError::Conflict(message) => {
                Self::new(StatusCode::CONFLICT, "state_conflict", message)
            }
            ControlError::Store(store) => store.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        Self::bad_request("invalid_query", error.to_string())
    }
}
