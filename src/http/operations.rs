//! `GET /health` (the process is up), `GET /ready` (MongoDB answers; 503 otherwise),
//! `GET /metrics` (Prometheus text format) and `GET /api/config` (public runtime
//! configuration: nothing secret).

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bson::doc;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/config", get(public_config))
}

/// `GET /api/config`: what a client needs to know to talk to this service.
async fn public_config(State(state): State<AppState>) -> Json<Value> {
    let config = &state.config;
    let assets: Vec<Value> = state
        .ledger
        .assets
        .iter()
        .map(|(asset, precision)| json!({ "asset": asset, "precision": precision }))
        .collect();
    Json(json!({
        "assets": assets,
        "limits": {
            "max_amount": state.ledger.assets.max_amount.to_string(),
            "max_body_bytes": config.max_body_bytes,
            "rate_limits_per_minute": {
                "per_ip": config.rate_limits.per_ip.get(),
                "per_user": config.rate_limits.per_user.get(),
                "login": config.rate_limits.login.get(),
            },
            "read_your_writes_timeout_ms": config.read_your_writes_timeout.as_millis() as u64,
            "page_size_max": 200,
        },
        "features": {
            "two_factor": true,
            "statements": ["csv", "json"],
            "balance_as_of": true,
            "websockets": ["/ws/prices", "/ws/account"],
            "price_feed": if config.prices.coincap { "coincap" } else { "simulated" },
        },
        "access_token_ttl_secs": config.auth.access_token_ttl.as_secs(),
        "environment": format!("{:?}", config.environment).to_lowercase(),
    }))
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
            let projections = state.projections();
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
