//! The one error type of the HTTP layer and its mapping to status codes and the error shape
//! `{"error":{"code","message","request_id"}}` (PRODUCT.md §4). Internal causes are logged,
//! never shown to clients.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::request_context::current_request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 503 `unavailable`: a dependency (MongoDB) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal_error`: the cause is logged with the request id, the client sees neither.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "internal error; quote the request id when reporting it".to_owned()
            }
            other => other.to_string(),
        };
        error_response(status, code, &message)
    }
}

/// Builds an error response in the shared shape; used by [`ApiError`] and by middleware.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "error": {
        "code": code,
        "message": message,
        "request_id": current_request_id(),
    }});
    (status, Json(body)).into_response()
}
