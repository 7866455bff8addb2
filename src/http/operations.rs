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
        Ok(Ok(_)) => {
            let projections = [&state.balances, &state.withdrawals];
            let behind: Vec<&str> = projections
                .iter()
                .filter(|p| p.position() < state.startup_head)
                .map(|p| p.name)
                .collect();
            if !behind.is_empty() {
                return Err(ApiError::Unavailable(format!(
                    "projections catching up: {}",
                    behind.join(", ")
                )));
            }
            Ok(Json(json!({
                "status": "ready",
                "checks": { "mongodb": "ok", "projections": "caught_up" },
                "log_position": state.store.known_head(),
                "projections": projections.iter().map(|p| (p.name, p.position())).collect::<std::collections::BTreeMap<_, _>>(),
            })))
        }
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
