//! `GET /health` (the process is up), `GET /ready` (MongoDB answers; 503 otherwise),
//! `GET /metrics` (Prometheus text format) and `GET /api/config` (public runtime
//! configuration: nothing secret).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::views::{ErrorBody, StatusBody};
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(public_config))
}

/// Public runtime configuration.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicConfig {
    pub assets: Vec<AssetConfig>,
    pub limits: Limits,
    pub features: Features,
    pub access_token_ttl_secs: u64,
    /// `development`, `test` or `production`.
    pub environment: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssetConfig {
    pub asset: String,
    /// Decimal places.
    pub precision: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Limits {
    /// The largest amount of one command, a decimal string.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub max_amount: String,
    pub max_body_bytes: usize,
    pub rate_limits_per_minute: RateLimitsPerMinute,
    pub read_your_writes_timeout_ms: u64,
    pub page_size_max: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitsPerMinute {
    pub per_ip: u32,
    pub per_user: u32,
    pub login: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Features {
    pub two_factor: bool,
    pub statements: Vec<String>,
    pub balance_as_of: bool,
    pub websockets: Vec<String>,
    /// `coincap` or `simulated`.
    pub price_feed: String,
}

/// `GET /api/config`: what a client needs to know to talk to this service.
#[utoipa::path(
    get,
    path = "/api/config",
    tag = "operations",
    responses((status = 200, description = "Assets, limits, features.", body = PublicConfig))
)]
async fn public_config(State(state): State<AppState>) -> Json<PublicConfig> {
    let config = &state.config;
    let assets = state
        .ledger
        .assets
        .iter()
        .map(|(asset, precision)| AssetConfig {
            asset: asset.to_owned(),
            precision,
        })
        .collect();
    Json(PublicConfig {
        assets,
        limits: Limits {
            max_amount: state.ledger.assets.max_amount.to_string(),
            max_body_bytes: config.max_body_bytes,
            rate_limits_per_minute: RateLimitsPerMinute {
                per_ip: config.rate_limits.per_ip.get(),
                per_user: config.rate_limits.per_user.get(),
                login: config.rate_limits.login.get(),
            },
            read_your_writes_timeout_ms: config.read_your_writes_timeout.as_millis() as u64,
            page_size_max: 200,
        },
        features: Features {
            two_factor: true,
            statements: vec!["csv".into(), "json".into()],
            balance_as_of: true,
            websockets: vec!["/ws/prices".into(), "/ws/account".into()],
            price_feed: if config.prices.coincap {
                "coincap"
            } else {
                "simulated"
            }
            .into(),
        },
        access_token_ttl_secs: config.auth.access_token_ttl.as_secs(),
        environment: format!("{:?}", config.environment).to_lowercase(),
    })
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ok\"}`.", body = StatusBody))
)]
async fn health() -> Json<StatusBody> {
    Json(StatusBody {
        status: "ok".into(),
    })
}

/// Longest time `/ready` waits for MongoDB before declaring the service not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready`.
    pub status: String,
    pub checks: ReadyChecks,
    pub log_position: u64,
    /// Each projection's applied position.
    pub projections: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`.
    pub mongodb: String,
    /// `caught_up`.
    pub projections: String,
}

/// MongoDB answers and the projections have reached the log head of start-up.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = ReadyBody),
        (status = 503, description = "`unavailable`: MongoDB does not answer, or projections are catching up; with `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<ReadyBody>, ApiError> {
    let ping = state.read_models.ping();
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
            Ok(Json(ReadyBody {
                status: "ready".into(),
                checks: ReadyChecks {
                    mongodb: "ok".into(),
                    projections: "caught_up".into(),
                },
                log_position: state.store.known_head(),
                projections: projections
                    .iter()
                    .map(|p| (p.name.to_owned(), p.position()))
                    .collect(),
            }))
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

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
