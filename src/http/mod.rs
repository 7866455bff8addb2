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
/// The wallet's commands in domain values, shared by the native and the predecessor's routes.
pub mod commands;
/// Session cookies.
pub mod cookies;
/// The one `Authorization` parser (Bearer, RFC 9110 §11.4).
pub mod credentials;
/// `/api/admin/deposits` and `/api/webhooks/deposits`: deposits that are not self-service.
pub mod deposits;
/// The error type of the HTTP layer and the JSON error shape.
pub mod error;
/// Authentication extractors (`AuthUser`, CSRF) and request metadata (`Meta`).
pub mod extract;
/// The Idempotency-Key wrapper for write handlers.
pub mod idempotent;
/// JSON bodies with rejections in the shared error shape.
pub mod json;
/// `/api/audit/liabilities` and `/api/wallet/liabilities-proof`: proof of liabilities.
pub mod liabilities;
/// `/api/prices`, `/ws/prices`, `/ws/account`.
pub mod live;
/// The OpenAPI document (`/api/openapi.json`) and the docs page (`/docs`).
pub mod openapi;
/// `/health`, `/ready`, `/metrics`.
pub mod operations;
/// Cursors, page sizes and date-time parameters of list endpoints.
pub mod paging;
/// The predecessor's web client: thin adapters over the native commands and queries.
pub mod predecessor;
/// The verifiable log: public key, checkpoints, proofs, receipts (issue 16).
pub mod proofs;
/// Query strings with rejections in the shared error shape.
pub mod query;
/// Per-IP, per-user and login rate limits.
pub mod rate_limit;
/// Reads of the read models that several resources answer with.
pub mod read_models;
/// Request id, request span, request metrics.
pub mod request_context;
/// CORS and security headers.
pub mod security;
/// The accept loop: header and idle timeouts, connection bounds, graceful shutdown.
pub mod server;
/// The state every handler shares.
mod state;
/// `/api/transactions`: history, one transaction, statements; `GET /api/wallet/deposits`.
pub mod transactions;
/// Response bodies shared by several resources.
pub mod views;
/// `/api/wallet`: deposits, withdrawals, transfers, balances.
pub mod wallet;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use state::AppState;

use crate::store::read_models::runner::ProjectionHandle;
use error::ApiError;

/// Every route with its OpenAPI entry. Routes are registered only through `routes!` (a test
/// fails on a plain `.route(`), so the document and the router cannot differ.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(operations::router())
        .merge(auth::router())
        .merge(admin::router())
        .merge(wallet::router())
        .merge(deposits::router())
        .merge(transactions::router())
        .merge(audit::router())
        .merge(proofs::router())
        .merge(liabilities::router())
        .merge(live::router())
        .merge(predecessor::router())
        .merge(openapi::router())
}

/// The OpenAPI 3.1 document of the API, as served at `GET /api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::complete(api_router().into_openapi())
}

/// The complete application router with its middleware. Outermost first: request context (id,
/// span, metrics) → security headers → CORS → rate limits → timeout → body limit → routes.
pub fn router(state: AppState) -> anyhow::Result<Router> {
    let config = state.config.clone();
    let (routes, _) = api_router().split_for_parts();
    let mut router = routes
        .fallback(|| async {
            error::error_response(StatusCode::NOT_FOUND, "not_found", "no such route")
        })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            config.request_timeout,
            request_timeout,
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

/// Answers 503 `timeout` (in the error shape, logged) when the handler has not produced a
/// response within `REQUEST_TIMEOUT_SECS`. Only the time to the response head counts: a statement
/// that has started streaming is not cut off.
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%method, %path, limit_secs = limit.as_secs_f64(), "request timed out");
            let mut response = error::error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long and was abandoned; it may or may not have taken effect, \
                 retry with the same Idempotency-Key",
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(error::UNAVAILABLE_RETRY_AFTER_SECS),
            );
            response
        }
    }
}

/// Waits until `projection` has applied `min_position` (if given), at most
/// `READ_YOUR_WRITES_TIMEOUT_MS`; then 503 `projection_lag`. A position beyond the log head is
/// 422 `validation_error` naming `min_position`, at once.
pub async fn read_your_writes(
    state: &AppState,
    projection: &ProjectionHandle,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    let Some(position) = min_position else {
        return Ok(());
    };
    if projection.position() >= position {
        return Ok(());
    }
    // Positions are handed out only once committed, so one beyond the log head names nothing
    // any client was given: a client error, not a lag to wait for.
    let (head, _) = state.store.head().await?;
    if position > head {
        return Err(ApiError::Validation {
            field: "min_position".into(),
            message: format!("is beyond the log head ({head}): no answer has named it"),
        });
    }
    if projection
        .wait_for(position, state.config.read_your_writes_timeout)
        .await
    {
        Ok(())
    } else {
        Err(ApiError::ProjectionLag(position))
    }
}
