//! The HTTP surface: one module per resource, each with its own `router()`, merged here, plus the
//! layers every request passes through.

/// The error type of the HTTP layer and the JSON error shape.
pub mod error;
/// `/health`, `/ready`, `/metrics`.
pub mod operations;
/// Request id, request span, request metrics.
pub mod request_context;

use axum::http::StatusCode;
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::startup::AppState;

/// The complete application router with its middleware.
pub fn router(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    Router::new()
        .merge(operations::router())
        .fallback(|| async {
            error::error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(axum::middleware::from_fn(request_context::request_context))
        .with_state(state)
}
