//! `GET /health` (the process is up), `GET /ready` (MongoDB answers; 503 otherwise),
//! `GET /metrics` (Prometheus text format) and `GET /api/config` (public runtime
//! configuration: nothing secret).
//!
//! `GET /api/config` also answers the predecessor's web client, which merges it over its own
//! `RuntimeConfig` fallback (missing keys are fine): the camel-case keys `appUrl`, `apiBaseUrl`,
//! `wsBaseUrl` (each left out when its setting is unset, never `null`), `socketIoPath`,
//! `version`, `preferRelativeApi` and `sentry`, next to the native keys (`environment` is
//! shared: same value, same meaning).
//!
//! Operational data (issue 14, finding 15): `/metrics` and the details of `/ready` (log
//! position, each projection's position) need `Authorization: Bearer <OPS_TOKEN>` when
//! `OPS_TOKEN` is set (compared in constant time). Without `OPS_TOKEN` they are open in
//! development and test, and closed in production: `/metrics` answers 404, `/ready` only its
//! status. `/health` is always open and says nothing but `ok`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::credentials::bearer_token;
use super::error::ApiError;
use super::views::{ErrorBody, StatusBody};
use super::AppState;
use crate::config::Environment;

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
    /// `APP_URL`: where the web UI is served. Left out when unset.
    #[serde(rename = "appUrl", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub app_url: Option<String>,
    /// `PUBLIC_API_URL`: the base URL of this API. Left out when unset (the predecessor's
    /// client then keeps its build-time `VITE_API_BASE_URL`).
    #[serde(rename = "apiBaseUrl", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub api_base_url: Option<String>,
    /// `PUBLIC_WS_URL`, else `PUBLIC_API_URL` with `http`→`ws`, `https`→`wss`: the base of
    /// `{wsBaseUrl}/ws/prices`. Left out when neither is set.
    #[serde(rename = "wsBaseUrl", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ws_base_url: Option<String>,
    /// `/socket.io`: where the predecessor's client tries Socket.IO. This service does not
    /// serve it (no page data of that client depends on it).
    #[serde(rename = "socketIoPath")]
    pub socket_io_path: String,
    /// This service's version (`Cargo.toml`).
    #[schema(example = "0.1.0")]
    pub version: String,
    /// Always `false`: the client keeps its build-time API base unless `apiBaseUrl` says
    /// otherwise.
    #[serde(rename = "preferRelativeApi")]
    pub prefer_relative_api: bool,
    /// Error reporting of the predecessor's client: always off.
    pub sentry: SentryConfig,
}

/// The predecessor client's Sentry settings: this service configures none.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentryConfig {
    /// Always `false`.
    pub enabled: bool,
    /// Always `null`.
    #[schema(required = true)]
    pub dsn: Option<String>,
    /// The same as the top-level `environment`.
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
    responses((status = 200, description = "Assets, limits, features; and the predecessor web \
        client's runtime keys (`appUrl`, `apiBaseUrl`, `wsBaseUrl` only when configured, \
        `socketIoPath`, `version`, `preferRelativeApi`, `sentry`).", body = PublicConfig))
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
    let environment = format!("{:?}", config.environment).to_lowercase();
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
        environment: environment.clone(),
        app_url: config.app_url.clone(),
        api_base_url: config.public_api_url.clone(),
        ws_base_url: config.ws_base_url(),
        socket_io_path: "/socket.io".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        prefer_relative_api: false,
        sentry: SentryConfig {
            enabled: false,
            dsn: None,
            environment,
        },
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

/// The details (`checks`, `log_position`, `projections`) only for the operations token, or
/// where operational data is open (see the module).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<ReadyChecks>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_position: Option<u64>,
    /// Each projection's applied position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projections: Option<BTreeMap<String, u64>>,
}

/// Whether this request may read operational data: `Ok(true)` yes, `Ok(false)` no (closed in
/// production without `OPS_TOKEN`), `Err` 401 for a missing or wrong token.
fn ops_allowed(state: &AppState, headers: &HeaderMap) -> Result<bool, ApiError> {
    match &state.config.edge.ops_token {
        Some(expected) => {
            let given = bearer_token(headers).unwrap_or_default();
            if constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
                Ok(true)
            } else {
                Err(ApiError::Unauthorized(
                    "operational data needs Authorization: Bearer <OPS_TOKEN>".into(),
                ))
            }
        }
        None => Ok(state.config.environment != Environment::Production),
    }
}

/// Equality whose time depends on neither the contents nor the lengths (both are hashed first).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest as _;
    use subtle::ConstantTimeEq as _;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyChecks {
    /// `ok`.
    pub mongodb: String,
    /// `caught_up`.
    pub projections: String,
}

/// MongoDB answers and the projections have reached the log head of start-up. The details need
/// the operations token where `OPS_TOKEN` is set, and are left out in production without it;
/// the status is always answered.
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
async fn ready(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ReadyBody>, ApiError> {
    // Without the token (a load balancer's probe), the status alone.
    let detailed = ops_allowed(&state, &headers).unwrap_or(false);
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
                return Err(ApiError::Unavailable(if detailed {
                    format!("projections catching up: {}", behind.join(", "))
                } else {
                    "projections catching up".into()
                }));
            }
            if !detailed {
                return Ok(Json(ReadyBody {
                    status: "ready".into(),
                    checks: None,
                    log_position: None,
                    projections: None,
                }));
            }
            Ok(Json(ReadyBody {
                status: "ready".into(),
                checks: Some(ReadyChecks {
                    mongodb: "ok".into(),
                    projections: "caught_up".into(),
                }),
                log_position: Some(state.store.known_head()),
                projections: Some(
                    projections
                        .iter()
                        .map(|p| (p.name.to_owned(), p.position()))
                        .collect(),
                ),
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

/// Prometheus metrics (text exposition format). Needs the operations token where `OPS_TOKEN`
/// is set; 404 in production without it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", content_type = "text/plain", body = String),
        (status = 401, description = "`unauthorized`: `OPS_TOKEN` is set and the request does not carry it.", body = ErrorBody),
        (status = 404, description = "`not_found`: production without `OPS_TOKEN`.", body = ErrorBody),
    )
)]
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !ops_allowed(&state, &headers)? {
        return Err(ApiError::NotFound("no such route".into()));
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}
