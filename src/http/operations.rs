//! `GET /health` (the process is up), `GET /ready` (MongoDB answers; 503 otherwise) and
//! `GET /metrics` (Prometheus text format).

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bson::doc;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Longest time `/ready` waits for MongoDB before declaring the service not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let ping = state.db.run_command(doc! { "ping": 1 });
    match tokio::time::timeout(READY_TIMEOUT, ping).await {
        Ok(Ok(_)) => Ok(Json(json!({
            "status": "ready",
            "checks": { "mongodb": "ok" },
            "log_position": state.store.known_head(),
        }))),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: mongodb ping failed");
            Err(ApiError::Unavailable("mongodb is not reachable".into()))
        }
        Err(_) => Err(ApiError::Unavailable(
            "mongodb did not answer in time".into(),
        )),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
