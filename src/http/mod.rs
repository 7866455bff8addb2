//! The HTTP surface: one module per resource, each with its own `router()`, merged here, plus the
//! layers every request passes through.

/// `/api/admin/users`: user administration.
pub mod admin;
/// `/api/audit/*` and `/api/admin/audit-logs`: the auditor API.
pub mod audit;
/// `/api/auth`: signup, login, sessions, profile, 2FA.
pub mod auth;
/// Client IP and user agent.
pub mod client;
/// Session cookies.
pub mod cookies;
/// The error type of the HTTP layer and the JSON error shape.
pub mod error;
/// Authentication extractors (`AuthUser`, CSRF) and request metadata (`Meta`).
pub mod extract;
/// The Idempotency-Key wrapper for write handlers.
pub mod idempotent;
/// JSON bodies with rejections in the shared error shape.
pub mod json;
/// `/api/prices`, `/ws/prices`, `/ws/account`.
pub mod live;
/// `/health`, `/ready`, `/metrics`.
pub mod operations;
/// Cursors, page sizes and date-time parameters of list endpoints.
pub mod paging;
/// Query strings with rejections in the shared error shape.
pub mod query;
/// Per-IP, per-user and login rate limits.
pub mod rate_limit;
/// Request id, request span, request metrics.
pub mod request_context;
/// CORS and security headers.
pub mod security;
/// `/api/transactions`: history, one transaction, statements; `GET /api/wallet/deposits`.
pub mod transactions;
/// `/api/wallet`: deposits, withdrawals, transfers, balances.
pub mod wallet;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use tower_http::timeout::TimeoutLayer;

use crate::startup::AppState;

/// The complete application router with its middleware. Outermost first: request context (id,
/// span, metrics) → security headers → CORS → rate limits → timeout → body limit → routes.
pub fn router(state: AppState) -> anyhow::Result<Router> {
    let config = state.config.clone();
    let mut router = Router::new()
        .merge(operations::router())
        .merge(auth::router())
        .merge(admin::router())
        .merge(wallet::router())
        .merge(transactions::router())
        .merge(audit::router())
        .merge(live::router())
        .fallback(|| async {
            error::error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::rate_limit,
        ))
        .layer(security::cors(&config)?);
    for layer in security::header_layers() {
        router = router.layer(layer);
    }
    Ok(router
        .layer(axum::middleware::from_fn(request_context::request_context))
        .with_state(state))
}
