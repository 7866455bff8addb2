//! Configuration from the environment (PRODUCT.md §7). Every problem names its variable.

mod checkpoints;
pub use checkpoints::CheckpointSettings;

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::Duration;

/// Where the event store lives; all commands need it.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `MONGO_URL`, a MongoDB connection string (a replica set: transactions need one).
    pub mongo_url: String,
    /// `DB_NAME`, default `cryptovault`.
    pub db_name: String,
}

/// `ENVIRONMENT`: `development` (default), `test` or `production`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreSettings,
    pub environment: Environment,
    /// `HOST` (default 0.0.0.0) and `PORT` (default 8000).
    pub host: IpAddr,
    pub port: u16,
    /// `JWT_SECRET`: HMAC key for access tokens. At least 32 bytes in production.
    pub jwt_secret: Secret,
    /// `JWT_ALGORITHM`: HS256 (default), HS384 or HS512.
    pub jwt_algorithm: String,
    /// `CSRF_SECRET`: HMAC key for CSRF tokens. At least 32 bytes in production.
    pub csrf_secret: Secret,
    /// `EMAIL_INDEX_KEY`: HMAC key of the blind index that names `email-…` streams. At least 32
    /// bytes in production; must never change for a database (its addresses would not be
    /// found).
    pub email_index_key: Secret,
    /// `CORS_ORIGINS`: JSON array or comma-separated list of allowed origins.
    pub cors_origins: Vec<String>,
    /// `USE_CROSS_SITE_COOKIES`: `true` gives `Secure; SameSite=None` cookies.
    pub use_cross_site_cookies: bool,
    /// `APP_URL`, `PUBLIC_API_URL`: where the UI and this API are reachable (informational).
    pub app_url: Option<String>,
    pub public_api_url: Option<String>,
    /// `PUBLIC_WS_URL`: where this service's WebSockets are reachable, a `ws://` or `wss://`
    /// URL as given (the predecessor's client opens `{it}/ws/prices`). Unset: derived from
    /// `PUBLIC_API_URL`, see [`Config::ws_base_url`].
    pub public_ws_url: Option<String>,
    /// `REQUEST_TIMEOUT_SECS` (default 30): longest time a request may take.
    pub request_timeout: Duration,
    /// `MAX_BODY_BYTES` (default 65536): larger request bodies get 413.
    pub max_body_bytes: usize,
    pub auth: AuthConfig,
    pub rate_limits: RateLimits,
    /// `ASSETS` (default `USD:2,USDC:6,USDT:6,BTC:8,BNB:8,SOL:9,ETH:18`) and `MAX_AMOUNT` (default
    /// 1000000000): supported assets, their decimal places, the largest amount per command.
    pub assets: crate::ledger::amount::Assets,
    /// `READ_YOUR_WRITES_TIMEOUT_MS` (default 5000): longest wait for `?min_position=`.
    pub read_your_writes_timeout: Duration,
    pub prices: PriceSettings,
    pub deposits: DepositSettings,
    /// The log's signed checkpoints: [`CheckpointSettings`].
    pub checkpoints: CheckpointSettings,
    /// Connections, client IP, operational data: [`EdgeSettings`].
    pub edge: EdgeSettings,
    /// `ENVIRONMENT` was unset (and so development): start-up says so loudly.
    pub environment_defaulted: bool,
}

/// How money enters the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositsMode {
    /// `self-service`: `POST /api/wallet/deposits` credits the caller — for development and
    /// demos (the default unless `ENVIRONMENT=production`).
    SelfService,
    /// `provider`: only an admin (`POST /api/admin/deposits`, never to their own account) or
    /// the payment provider's signed webhook (`POST /api/webhooks/deposits`) credits; the
    /// self-service route answers 403 (the default with `ENVIRONMENT=production`).
    Provider,
}

/// `DEPOSITS_MODE`, the webhook's secret and its replay window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositSettings {
    /// `DEPOSITS_MODE`: `self-service` or `provider` (defaults above).
    pub mode: DepositsMode,
    /// `DEPOSIT_WEBHOOK_SECRET`: the HMAC-SHA256 key the payment provider signs webhook bodies
    /// with (at least 32 bytes in production). Unset: the webhook answers 403.
    pub webhook_secret: Option<Secret>,
    /// `DEPOSIT_WEBHOOK_TOLERANCE_SECS` (default 300, 1 to 3600): how far a webhook's signed
    /// timestamp may be from this server's clock.
    pub webhook_tolerance: Duration,
}

impl DepositSettings {
    fn from_lookup(lookup: &impl Lookup, environment: Environment) -> Result<Self, ConfigError> {
        let mode = match lookup("DEPOSITS_MODE").as_deref() {
            None if environment == Environment::Production => DepositsMode::Provider,
            None => DepositsMode::SelfService,
            Some("self-service") => DepositsMode::SelfService,
            Some("provider") => DepositsMode::Provider,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "DEPOSITS_MODE",
                    reason: format!("{other:?} is not one of self-service, provider"),
                })
            }
        };
        let webhook_secret = match lookup("DEPOSIT_WEBHOOK_SECRET") {
            None => None,
            Some(_) => Some(secret(lookup, "DEPOSIT_WEBHOOK_SECRET", environment)?),
        };
        let tolerance = parse(lookup, "DEPOSIT_WEBHOOK_TOLERANCE_SECS", 300u64)?;
        if !(1..=3600).contains(&tolerance) {
            return Err(ConfigError::Invalid {
                var: "DEPOSIT_WEBHOOK_TOLERANCE_SECS",
                reason: format!("{tolerance} is not between 1 and 3600"),
            });
        }
        Ok(Self {
            mode,
            webhook_secret,
            webhook_tolerance: Duration::from_secs(tolerance),
        })
    }
}

/// Where `/api/prices` and `/ws/prices` get quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSettings {
    /// `PRICE_FEED`: `simulated` (default, deterministic) or `coincap`.
    pub coincap: bool,
    /// `COINCAP_URL` (default `https://api.coincap.io/v2`): base URL of the CoinCap API.
    pub coincap_url: String,
    /// `COINCAP_API_KEY`: optional bearer key for CoinCap.
    pub coincap_api_key: Option<Secret>,
    /// `PRICE_INTERVAL_MS` (default 2000, at least 100): how often quotes refresh.
    pub interval: Duration,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Secret {}

/// Token lifetimes and the lockout rule.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `ACCESS_TOKEN_TTL_SECS` (default 900).
    pub access_token_ttl: Duration,
    /// `REFRESH_TOKEN_TTL_SECS` (default 604800, 7 days).
    pub refresh_token_ttl: Duration,
    /// The login throttle (ARCHITECTURE.md, "The login throttle"), all per normalised address.
    /// `LOGIN_MAX_FAILURES` (default 5, at least 1): attempts per source (device or IP) before
    /// blocks begin.
    pub login_max_failures: u32,
    /// `LOGIN_LOCKOUT_SECS` (default 60, at least 1): the first block of a source; each
    /// further failure doubles it.
    pub login_lockout: Duration,
    /// `LOGIN_LOCKOUT_MAX_SECS` (default 3600, from `LOGIN_LOCKOUT_SECS` to 30 days): the
    /// longest block.
    pub login_lockout_max: Duration,
    /// `LOGIN_ACCOUNT_MAX_FAILURES` (default 100, at least 1): attempts per window from sources
    /// that never signed in to the address (known devices and IPs are exempt).
    pub login_account_max_failures: u32,
    /// `LOGIN_ACCOUNT_WINDOW_SECS` (default 3600, 1 s to 30 days): that window.
    pub login_account_window: Duration,
}

/// Requests per minute (PRODUCT.md §4), each at least 1.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// `RATE_LIMIT_PER_IP_PER_MIN` (default 60): every request, per client IP.
    pub per_ip: NonZeroU32,
    /// `RATE_LIMIT_PER_USER_PER_MIN` (default 100): `/api/wallet` and `/api/transactions`, per user.
    pub per_user: NonZeroU32,
    /// `RATE_LIMIT_LOGIN_PER_MIN` (default 10): `/api/auth/login` and `signup`, per client IP.
    pub login: NonZeroU32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing required environment variable {0}")]
    Missing(&'static str),
    #[error("invalid value for {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("{0} is too weak for ENVIRONMENT=production: use at least 32 random bytes")]
    WeakSecret(&'static str),
}

/// Reads variables through `lookup`, so tests can configure without touching the process env.
pub trait Lookup: Fn(&str) -> Option<String> {}
impl<F: Fn(&str) -> Option<String>> Lookup for F {}

/// The process environment, with empty values treated as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl StoreSettings {
    pub fn from_lookup(lookup: impl Lookup) -> Result<Self, ConfigError> {
        let mongo_url = lookup("MONGO_URL").ok_or(ConfigError::Missing("MONGO_URL"))?;
        if !(mongo_url.starts_with("mongodb://") || mongo_url.starts_with("mongodb+srv://")) {
            return Err(ConfigError::Invalid {
                var: "MONGO_URL",
                reason: "must start with mongodb:// or mongodb+srv://".into(),
            });
        }
        let db_name = lookup("DB_NAME").unwrap_or_else(|| "cryptovault".into());
        if db_name.is_empty()
            || db_name.len() > 38
            || db_name.contains(['/', '\\', '.', ' ', '"', '$'])
        {
            return Err(ConfigError::Invalid {
                var: "DB_NAME",
                reason: "1-38 characters, none of / \\ . space \" $".into(),
            });
        }
        Ok(Self { mongo_url, db_name })
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(process_env)
    }

    pub fn from_lookup(lookup: impl Lookup) -> Result<Self, ConfigError> {
        let store = StoreSettings::from_lookup(&lookup)?;
        let environment = match lookup("ENVIRONMENT").as_deref() {
            None | Some("development") => Environment::Development,
            Some("test") => Environment::Test,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "ENVIRONMENT",
                    reason: format!("{other:?} is not one of development, test, production"),
                })
            }
        };
        let port = parse(&lookup, "PORT", 8000u16)?;
        let host = parse(&lookup, "HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
        let jwt_algorithm = lookup("JWT_ALGORITHM").unwrap_or_else(|| "HS256".into());
        if !matches!(jwt_algorithm.as_str(), "HS256" | "HS384" | "HS512") {
            return Err(ConfigError::Invalid {
                var: "JWT_ALGORITHM",
                reason: format!("{jwt_algorithm:?} is not one of HS256, HS384, HS512"),
            });
        }
        let jwt_secret = secret(&lookup, "JWT_SECRET", environment)?;
        let csrf_secret = secret(&lookup, "CSRF_SECRET", environment)?;
        let email_index_key = secret(&lookup, "EMAIL_INDEX_KEY", environment)?;
        let cors_origins = match lookup("CORS_ORIGINS") {
            None => Vec::new(),
            Some(raw) => parse_origins(&raw).map_err(|reason| ConfigError::Invalid {
                var: "CORS_ORIGINS",
                reason,
            })?,
        };
        let use_cross_site_cookies = parse(&lookup, "USE_CROSS_SITE_COOKIES", false)?;
        let request_timeout = Duration::from_secs(parse(&lookup, "REQUEST_TIMEOUT_SECS", 30u64)?);
        let auth = AuthConfig {
            access_token_ttl: Duration::from_secs(parse(&lookup, "ACCESS_TOKEN_TTL_SECS", 900u64)?),
            refresh_token_ttl: Duration::from_secs(parse(
                &lookup,
                "REFRESH_TOKEN_TTL_SECS",
                604_800u64,
            )?),
            login_max_failures: at_least_one(&lookup, "LOGIN_MAX_FAILURES", 5)?,
            login_lockout: Duration::from_secs(
                at_least_one(&lookup, "LOGIN_LOCKOUT_SECS", 60)?.into(),
            ),
            login_lockout_max: Duration::from_secs(
                at_least_one(&lookup, "LOGIN_LOCKOUT_MAX_SECS", 3600)?.into(),
            ),
            login_account_max_failures: at_least_one(&lookup, "LOGIN_ACCOUNT_MAX_FAILURES", 100)?,
            login_account_window: Duration::from_secs(
                at_least_one(&lookup, "LOGIN_ACCOUNT_WINDOW_SECS", 3600)?.into(),
            ),
        };
        const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);
        if auth.login_lockout_max < auth.login_lockout || auth.login_lockout_max > THIRTY_DAYS {
            return Err(ConfigError::Invalid {
                var: "LOGIN_LOCKOUT_MAX_SECS",
                reason: "must be from LOGIN_LOCKOUT_SECS to 2592000 (30 days)".into(),
            });
        }
        if auth.login_account_window > THIRTY_DAYS {
            return Err(ConfigError::Invalid {
                var: "LOGIN_ACCOUNT_WINDOW_SECS",
                reason: "must be at most 2592000 (30 days)".into(),
            });
        }
        let per_minute = |var, default: u32| {
            parse(
                &lookup,
                var,
                NonZeroU32::new(default).expect("defaults are positive"),
            )
        };
        let rate_limits = RateLimits {
            per_ip: per_minute("RATE_LIMIT_PER_IP_PER_MIN", 60)?,
            per_user: per_minute("RATE_LIMIT_PER_USER_PER_MIN", 100)?,
            login: per_minute("RATE_LIMIT_LOGIN_PER_MIN", 10)?,
        };
        let edge = EdgeSettings::from_lookup(&lookup, environment, request_timeout)?;
        let config = Self {
            store,
            environment,
            host,
            port,
            jwt_secret,
            jwt_algorithm,
            csrf_secret,
            email_index_key,
            cors_origins,
            use_cross_site_cookies,
            app_url: lookup("APP_URL"),
            public_api_url: lookup("PUBLIC_API_URL"),
            public_ws_url: ws_url(&lookup, "PUBLIC_WS_URL")?,
            request_timeout,
            max_body_bytes: parse(&lookup, "MAX_BODY_BYTES", 65_536usize)?,
            auth,
            rate_limits,
            assets: assets_from_lookup(&lookup)?,
            read_your_writes_timeout: Duration::from_millis(parse(
                &lookup,
                "READ_YOUR_WRITES_TIMEOUT_MS",
                5000u64,
            )?),
            prices: PriceSettings {
                coincap: match lookup("PRICE_FEED").as_deref() {
                    None | Some("simulated") => false,
                    Some("coincap") => true,
                    Some(other) => {
                        return Err(ConfigError::Invalid {
                            var: "PRICE_FEED",
                            reason: format!("{other:?} is not one of simulated, coincap"),
                        })
                    }
                },
                coincap_url: lookup("COINCAP_URL")
                    .unwrap_or_else(|| "https://api.coincap.io/v2".into()),
                coincap_api_key: lookup("COINCAP_API_KEY").map(Secret),
                interval: Duration::from_millis(
                    parse(&lookup, "PRICE_INTERVAL_MS", 2000u64)?.max(100),
                ),
            },
            deposits: DepositSettings::from_lookup(&lookup, environment)?,
            checkpoints: CheckpointSettings::from_lookup(&lookup, environment)?,
            edge,
            environment_defaulted: lookup("ENVIRONMENT").is_none(),
        };
        check_consistency(&config)?;
        Ok(config)
    }
}

impl Config {
    /// The WebSocket base URL clients are told (`GET /api/config`'s `wsBaseUrl`):
    /// `PUBLIC_WS_URL`, else `PUBLIC_API_URL` with `http://` → `ws://` and `https://` →
    /// `wss://`; `None` when neither gives one.
    pub fn ws_base_url(&self) -> Option<String> {
        self.public_ws_url
            .clone()
            .or_else(|| self.public_api_url.as_deref().and_then(ws_url_of_api))
    }
}

/// `api` (an `http(s)://` URL) with the scheme of its WebSocket: `https://` → `wss://`,
/// `http://` → `ws://` (case-insensitive); the rest unchanged. `None` for another scheme.
pub fn ws_url_of_api(api: &str) -> Option<String> {
    let api = api.trim();
    let (scheme, rest) = api.split_once("://")?;
    let ws = if scheme.eq_ignore_ascii_case("https") {
        "wss"
    } else if scheme.eq_ignore_ascii_case("http") {
        "ws"
    } else {
        return None;
    };
    Some(format!("{ws}://{rest}"))
}

/// `var` as a `ws://` or `wss://` URL with a host, kept as given (trimmed); unset is `None`.
fn ws_url(lookup: &impl Lookup, var: &'static str) -> Result<Option<String>, ConfigError> {
    let Some(raw) = lookup(var) else {
        return Ok(None);
    };
    let raw = raw.trim().to_owned();
    let invalid = |reason: String| ConfigError::Invalid { var, reason };
    let url = reqwest::Url::parse(&raw).map_err(|e| {
        invalid(format!(
            "{raw:?} is not a URL ({e}); expected ws://… or wss://…"
        ))
    })?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(invalid(format!(
            "{raw:?} is not a ws:// or wss:// URL (e.g. wss://api.example.com)"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{raw:?} names no host")));
    }
    Ok(Some(raw))
}

/// `ASSETS` and `MAX_AMOUNT` (defaults as documented), checked against the exact
/// representation (`Assets::with_max_amount`). Also used by `cryptovault verify`, which needs
/// no secrets.
pub fn assets_from_lookup(
    lookup: &impl Lookup,
) -> Result<crate::ledger::amount::Assets, ConfigError> {
    let max_amount: rust_decimal::Decimal = parse(
        lookup,
        "MAX_AMOUNT",
        rust_decimal::Decimal::from(1_000_000_000u64),
    )?;
    let spec =
        lookup("ASSETS").unwrap_or_else(|| "USD:2,USDC:6,USDT:6,BTC:8,BNB:8,SOL:9,ETH:18".into());
    crate::ledger::amount::Assets::parse(&spec, rust_decimal::Decimal::ONE)
        .map_err(|reason| ConfigError::Invalid {
            var: "ASSETS",
            reason,
        })?
        .with_max_amount(max_amount)
        .map_err(|reason| ConfigError::Invalid {
            var: "MAX_AMOUNT",
            reason,
        })
}

fn parse<T: std::str::FromStr>(
    lookup: &impl Lookup,
    var: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(var) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                var,
                reason: format!("{raw:?}: {e}"),
            }),
    }
}

/// A positive whole number (`u32`); 0 is refused naming the variable.
fn at_least_one(lookup: &impl Lookup, var: &'static str, default: u32) -> Result<u32, ConfigError> {
    let value = parse(lookup, var, default)?;
    if value == 0 {
        return Err(ConfigError::Invalid {
            var,
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

/// Known placeholder values that must never protect real money.
const PLACEHOLDER_SECRETS: [&str; 4] = ["secret", "changeme", "change-me", "your-secret-key"];

fn secret(
    lookup: &impl Lookup,
    var: &'static str,
    environment: Environment,
) -> Result<Secret, ConfigError> {
    let value = lookup(var).ok_or(ConfigError::Missing(var))?;
    if environment == Environment::Production {
        check_strength(var, &value)?;
    }
    Ok(Secret(value))
}

/// Accepts `["https://a","https://b"]` (the predecessor's form) or `https://a,https://b`.
fn parse_origins(raw: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = if raw.trim_start().starts_with('[') {
        serde_json::from_str(raw).map_err(|e| format!("not a JSON array of strings: {e}"))?
    } else {
        raw.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    for origin in &origins {
        if origin == "*" {
            return Err("\"*\" cannot be combined with credentials; list the origins".into());
        }
        if !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err(format!("{origin:?} is not an http(s) origin"));
        }
    }
    Ok(origins)
}

// ---- The edge: connections, client IP, operations endpoints (issue 14) ----

/// `TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` entries are believed, as a comma
/// list of CIDRs or single addresses (`10.0.0.0/8, 192.0.2.7, fd00::/8`). Empty (the default):
/// the TCP peer is the client and `X-Forwarded-For` is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{s:?} is neither a CIDR (10.0.0.0/8) nor an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `ip` (IPv4-mapped IPv6 addresses as IPv4) is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How connections are served, whom the client IP is taken from, who reads operational data.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// `TRUSTED_PROXIES` (default none). `TRUST_PROXY_HEADERS=true`, which believed the
    /// client-chosen leftmost entry, is refused with a message naming this setting.
    pub trusted_proxies: TrustedProxies,
    /// `HTTP_HEADER_TIMEOUT_SECS` (default 10, 1–300): a request head must be complete this long
    /// after the server started waiting for it (accept, or the previous answer on a keep-alive
    /// connection: idle keep-alive connections are closed after it too).
    pub header_timeout: Duration,
    /// `HTTP_IDLE_TIMEOUT_SECS` (default 60, up to 3600): a connection on which no byte moved
    /// for this long is closed. Longer than the header timeout and `REQUEST_TIMEOUT_SECS`.
    pub idle_timeout: Duration,
    /// `MAX_CONNECTIONS` (default 4096): open connections in all; more are closed at once.
    pub max_connections: usize,
    /// `MAX_CONNECTIONS_PER_CLIENT` (default 64, at most `MAX_CONNECTIONS`): open connections per
    /// peer address (IPv6: per /64); trusted proxies count only against `MAX_CONNECTIONS`.
    pub max_connections_per_client: usize,
    /// `OPS_TOKEN`: a Bearer token for `/metrics` and the detailed `/ready`. Unset: those are
    /// open in development and test, and closed (`/metrics` 404, `/ready` status only) in
    /// production.
    pub ops_token: Option<Secret>,
}

impl EdgeSettings {
    fn from_lookup(
        lookup: &impl Lookup,
        environment: Environment,
        request_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        // Checked here, before the idle timeout is compared with it.
        within(request_timeout.as_secs(), 1, 600, "REQUEST_TIMEOUT_SECS")?;
        if parse(lookup, "TRUST_PROXY_HEADERS", false)? {
            return Err(ConfigError::Invalid {
                var: "TRUST_PROXY_HEADERS",
                reason: "is no longer supported: it believed the leftmost X-Forwarded-For entry, \
                         which the client chooses. List your proxies in TRUSTED_PROXIES (CIDRs, \
                         e.g. TRUSTED_PROXIES=10.0.0.0/8) and remove TRUST_PROXY_HEADERS"
                    .into(),
            });
        }
        let trusted_proxies = match lookup("TRUSTED_PROXIES") {
            None => TrustedProxies::default(),
            Some(raw) => TrustedProxies::parse(&raw).map_err(|reason| ConfigError::Invalid {
                var: "TRUSTED_PROXIES",
                reason,
            })?,
        };
        let header_secs = parse(lookup, "HTTP_HEADER_TIMEOUT_SECS", 10u64)?;
        within(header_secs, 1, 300, "HTTP_HEADER_TIMEOUT_SECS")?;
        let idle_secs = parse(lookup, "HTTP_IDLE_TIMEOUT_SECS", 60u64)?;
        within(idle_secs, 1, 3600, "HTTP_IDLE_TIMEOUT_SECS")?;
        if idle_secs <= header_secs {
            return Err(ConfigError::Invalid {
                var: "HTTP_IDLE_TIMEOUT_SECS",
                reason: format!(
                    "{idle_secs} must be longer than HTTP_HEADER_TIMEOUT_SECS ({header_secs}): \
                     a connection would be cut off while it sends a request head"
                ),
            });
        }
        if Duration::from_secs(idle_secs) <= request_timeout {
            return Err(ConfigError::Invalid {
                var: "HTTP_IDLE_TIMEOUT_SECS",
                reason: format!(
                    "{idle_secs} must be longer than REQUEST_TIMEOUT_SECS ({}): a request still \
                     being worked on would be cut off",
                    request_timeout.as_secs()
                ),
            });
        }
        let max_connections = parse(lookup, "MAX_CONNECTIONS", 4096usize)?;
        within(max_connections as u64, 1, 1_000_000, "MAX_CONNECTIONS")?;
        let max_connections_per_client = parse(lookup, "MAX_CONNECTIONS_PER_CLIENT", 64usize)?;
        within(
            max_connections_per_client as u64,
            1,
            max_connections as u64,
            "MAX_CONNECTIONS_PER_CLIENT",
        )?;
        let ops_token = match lookup("OPS_TOKEN") {
            None => None,
            Some(token) => {
                let body = token.trim_end_matches('=');
                if body.is_empty()
                    || !body
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
                {
                    return Err(ConfigError::Invalid {
                        var: "OPS_TOKEN",
                        reason: "must be a token68 (letters, digits, - . _ ~ + /)".into(),
                    });
                }
                if environment == Environment::Production {
                    check_strength("OPS_TOKEN", &token)?;
                }
                Some(Secret(token))
            }
        };
        Ok(Self {
            trusted_proxies,
            header_timeout: Duration::from_secs(header_secs),
            idle_timeout: Duration::from_secs(idle_secs),
            max_connections,
            max_connections_per_client,
            ops_token,
        })
    }
}

/// `value` of `var` within `min..=max`, or an error naming the variable.
fn within(value: u64, min: u64, max: u64, var: &'static str) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            var,
            reason: format!("{value} is outside {min}..={max}"),
        })
    }
}

/// Settings that are each valid but make no sense together or at their extremes; every error
/// names a variable.
fn check_consistency(config: &Config) -> Result<(), ConfigError> {
    let secs = |d: Duration| d.as_secs();
    within(
        secs(config.auth.access_token_ttl),
        1,
        86_400,
        "ACCESS_TOKEN_TTL_SECS",
    )?;
    within(
        secs(config.auth.refresh_token_ttl),
        1,
        366 * 86_400,
        "REFRESH_TOKEN_TTL_SECS",
    )?;
    if config.auth.refresh_token_ttl <= config.auth.access_token_ttl {
        return Err(ConfigError::Invalid {
            var: "REFRESH_TOKEN_TTL_SECS",
            reason: format!(
                "{} must be longer than ACCESS_TOKEN_TTL_SECS ({})",
                secs(config.auth.refresh_token_ttl),
                secs(config.auth.access_token_ttl)
            ),
        });
    }
    within(
        config.max_body_bytes as u64,
        256,
        64 << 20,
        "MAX_BODY_BYTES",
    )?;
    if config.jwt_secret == config.csrf_secret {
        return Err(ConfigError::Invalid {
            var: "CSRF_SECRET",
            reason: "must differ from JWT_SECRET (one leaked key would forge both)".into(),
        });
    }
    if let Some(ops) = &config.edge.ops_token {
        if *ops == config.jwt_secret || *ops == config.csrf_secret {
            return Err(ConfigError::Invalid {
                var: "OPS_TOKEN",
                reason: "must differ from JWT_SECRET and CSRF_SECRET".into(),
            });
        }
    }
    Ok(())
}

/// Production's rule for a key: at least 32 bytes, no known placeholder
/// ([`ConfigError::WeakSecret`]); at least 10 distinct characters, not one short unit repeated,
/// not mostly a run of consecutive characters (`abcdef…`, `012345…`) ([`ConfigError::Invalid`]
/// with the reason). 32 random hex digits pass (fewer than 10 distinct: p ≈ 4·10⁻⁵).
fn check_strength(var: &'static str, value: &str) -> Result<(), ConfigError> {
    let lower = value.to_ascii_lowercase();
    if value.len() < 32 || PLACEHOLDER_SECRETS.iter().any(|p| lower.contains(p)) {
        return Err(ConfigError::WeakSecret(var));
    }
    let bytes = value.as_bytes();
    let weak = |reason: &str| {
        Err(ConfigError::Invalid {
            var,
            reason: format!("too weak for ENVIRONMENT=production: {reason}; use 32+ random bytes"),
        })
    };
    let distinct = bytes.iter().collect::<std::collections::HashSet<_>>().len();
    if distinct < 10 {
        return weak(&format!("only {distinct} distinct characters"));
    }
    if (1..=bytes.len() / 2).any(|unit| {
        bytes.len().is_multiple_of(unit) && bytes.chunks(unit).all(|chunk| chunk == &bytes[..unit])
    }) {
        return weak("a short pattern repeated");
    }
    let steps = bytes
        .windows(2)
        .filter(|w| w[1].wrapping_sub(w[0]) == 1 || w[0].wrapping_sub(w[1]) == 1)
        .count();
    if steps * 2 >= bytes.len() {
        return weak("mostly runs of consecutive characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    const BASE: [(&str, &str); 4] = [
        ("MONGO_URL", "mongodb://127.0.0.1:27017/?replicaSet=rs0"),
        ("JWT_SECRET", "a-long-random-jwt-key-0123456789abcdef"),
        ("CSRF_SECRET", "a-long-random-csrf-key-0123456789abcdef"),
        (
            "EMAIL_INDEX_KEY",
            "a-long-random-index-key-0123456789abcdef",
        ),
    ];

    #[test]
    fn defaults_apply_when_optional_variables_are_unset() {
        let config = Config::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(config.port, 8000);
        assert_eq!(config.store.db_name, "cryptovault");
        assert_eq!(config.jwt_algorithm, "HS256");
        assert_eq!(config.environment, Environment::Development);
    }

    #[test]
    fn a_missing_variable_is_named() {
        let err = Config::from_lookup(lookup(&BASE[..2])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("CSRF_SECRET"));
        assert!(err.to_string().contains("CSRF_SECRET"));
    }

    #[test]
    fn an_invalid_variable_is_named() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PORT", "eighty"));
        let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { var: "PORT", .. }),
            "{err}"
        );
    }

    #[test]
    fn a_max_amount_beyond_the_exact_representation_is_refused() {
        for (assets, max) in [
            ("USD:2", "200000000000000000000"), // not one credit fits 1.7e20
            ("USD:2", "0.0000000000000000001"), // finer than 10^-18
            ("USD:2,ETH:18", "10000000000"),    // ETH amounts of 29 digits
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push(("ASSETS", assets));
            pairs.push(("MAX_AMOUNT", max));
            let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        var: "MAX_AMOUNT",
                        ..
                    }
                ),
                "{max}: {err}"
            );
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("ASSETS", "USD:2"));
        pairs.push(("MAX_AMOUNT", "100000000000000000000"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.assets.credit_cap(), 1);
    }

    #[test]
    fn the_email_index_key_is_required_and_strong_in_production() {
        assert_eq!(
            Config::from_lookup(lookup(&BASE[..3])).unwrap_err(),
            ConfigError::Missing("EMAIL_INDEX_KEY")
        );
        let mut pairs = BASE[..3].to_vec();
        pairs.push(("EMAIL_INDEX_KEY", "short"));
        pairs.push(("ENVIRONMENT", "production"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err(),
            ConfigError::WeakSecret("EMAIL_INDEX_KEY")
        );
    }

    #[test]
    fn production_refuses_weak_secrets() {
        let pairs = [
            BASE[0],
            ("JWT_SECRET", "secret"),
            ("CSRF_SECRET", BASE[2].1),
            ("ENVIRONMENT", "production"),
        ];
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err(),
            ConfigError::WeakSecret("JWT_SECRET")
        );
    }

    #[test]
    fn deposits_are_self_service_by_default_except_in_production() {
        let config = Config::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(config.deposits.mode, DepositsMode::SelfService);
        assert_eq!(config.deposits.webhook_secret, None);
        let mut pairs = BASE.to_vec();
        pairs.push(("ENVIRONMENT", "production"));
        pairs.push(("CHECKPOINT_SIGNING_KEY", signing_key()));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.deposits.mode, DepositsMode::Provider);
        pairs.push(("DEPOSITS_MODE", "self-service"));
        let config = Config::from_lookup(lookup(&pairs)).unwrap();
        assert_eq!(config.deposits.mode, DepositsMode::SelfService);
        pairs.push(("DEPOSIT_WEBHOOK_SECRET", "short"));
        assert_eq!(
            Config::from_lookup(lookup(&pairs)).unwrap_err(),
            ConfigError::WeakSecret("DEPOSIT_WEBHOOK_SECRET")
        );
        let bad = [
            BASE[0],
            BASE[1],
            BASE[2],
            BASE[3],
            ("DEPOSITS_MODE", "free"),
        ];
        assert!(matches!(
            Config::from_lookup(lookup(&bad)).unwrap_err(),
            ConfigError::Invalid {
                var: "DEPOSITS_MODE",
                ..
            }
        ));
    }

    #[test]
    fn login_throttle_settings_have_defaults_and_are_checked() {
        let config = Config::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(config.auth.login_max_failures, 5);
        assert_eq!(config.auth.login_lockout, Duration::from_secs(60));
        assert_eq!(config.auth.login_lockout_max, Duration::from_secs(3600));
        assert_eq!(config.auth.login_account_max_failures, 100);
        assert_eq!(config.auth.login_account_window, Duration::from_secs(3600));
        for (var, value) in [
            ("LOGIN_MAX_FAILURES", "0"),
            ("LOGIN_LOCKOUT_SECS", "0"),
            ("LOGIN_ACCOUNT_MAX_FAILURES", "0"),
            ("LOGIN_ACCOUNT_WINDOW_SECS", "0"),
            ("LOGIN_ACCOUNT_WINDOW_SECS", "2592001"),
            ("LOGIN_LOCKOUT_MAX_SECS", "30"),
            ("LOGIN_LOCKOUT_MAX_SECS", "2592001"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((var, value));
            let err = Config::from_lookup(lookup(&pairs)).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { var: v, .. } if v == var),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn the_public_ws_url_is_checked_or_derived_from_the_public_api_url() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = BASE.to_vec();
            pairs.extend_from_slice(extra);
            Config::from_lookup(lookup(&pairs))
        };
        let unset = with(&[]).unwrap();
        assert_eq!(unset.public_ws_url, None);
        assert_eq!(unset.ws_base_url(), None);
        let derived = with(&[("PUBLIC_API_URL", "https://api.example.com")]).unwrap();
        assert_eq!(
            derived.ws_base_url().as_deref(),
            Some("wss://api.example.com")
        );
        let plain = with(&[("PUBLIC_API_URL", "http://127.0.0.1:8000/base")]).unwrap();
        assert_eq!(
            plain.ws_base_url().as_deref(),
            Some("ws://127.0.0.1:8000/base")
        );
        let set = with(&[
            ("PUBLIC_API_URL", "https://api.example.com"),
            ("PUBLIC_WS_URL", " wss://live.example.com:8443 "),
        ])
        .unwrap();
        assert_eq!(
            set.public_ws_url.as_deref(),
            Some("wss://live.example.com:8443")
        );
        assert_eq!(
            set.ws_base_url().as_deref(),
            Some("wss://live.example.com:8443")
        );
        assert!(with(&[("PUBLIC_WS_URL", "ws://localhost:8000")]).is_ok());
        for bad in [
            "https://api.example.com",
            "api.example.com",
            "ws://",
            "ftp://x.example",
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push(("PUBLIC_WS_URL", bad));
            refused_naming(&pairs, "PUBLIC_WS_URL");
            let err = with(&[("PUBLIC_WS_URL", bad)]).unwrap_err().to_string();
            assert!(err.contains("PUBLIC_WS_URL"), "{err}");
        }
        assert_eq!(
            ws_url_of_api("HTTPS://a.example").as_deref(),
            Some("wss://a.example")
        );
        assert_eq!(ws_url_of_api("ftp://a.example"), None);
        assert_eq!(ws_url_of_api("a.example"), None);
    }

    #[test]
    fn cors_origins_accept_json_and_comma_lists() {
        assert_eq!(
            parse_origins(r#"["https://a.example","https://b.example"]"#).unwrap(),
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(
            parse_origins("https://a.example, https://b.example").unwrap(),
            vec!["https://a.example", "https://b.example"]
        );
        assert!(parse_origins("ftp://x").is_err());
    }

    /// A checkpoint signer key (production requires one).
    fn signing_key() -> &'static str {
        static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        KEY.get_or_init(|| {
            cryptovault_events::checkpoint::SignerKey::from_seed("example.com/ledger", [3; 32])
                .expect("a valid key name")
                .to_private_string()
        })
    }

    /// `BASE` in production with `extra` on top.
    fn production(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut pairs = vec![
            BASE[0],
            (
                "JWT_SECRET",
                "9f2c7e41b8d05a63f1e49c2d7b80a5e3c6d1f4a9b2e7c05d8a3f6b1e4c9d2a7f",
            ),
            (
                "CSRF_SECRET",
                "Qm7xK2pV9rT4wZ8nB3cH6jL1sD5fG0aYuE+/R-_~NiOkMvPyXqWtSzUhJgIdCbFe",
            ),
            (
                "EMAIL_INDEX_KEY",
                "3b8e1f6a9c2d5047e8b1a4c7f0d3e6b9a2c5f8e1d4b7a0c3f6e9d2b5a8c1f4e7",
            ),
            ("ENVIRONMENT", "production"),
            ("CHECKPOINT_SIGNING_KEY", signing_key()),
        ];
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k, v));
        }
        pairs
    }

    fn refused_naming(pairs: &[(&str, &str)], var: &str) {
        match Config::from_lookup(lookup(pairs)) {
            Err(ConfigError::Invalid { var: v, .. } | ConfigError::WeakSecret(v)) if v == var => {}
            other => panic!("{pairs:?}: expected an error naming {var}, got {other:?}"),
        }
    }

    #[test]
    fn production_accepts_random_secrets() {
        let config = Config::from_lookup(lookup(&production(&[]))).unwrap();
        assert_eq!(config.environment, Environment::Production);
    }

    #[test]
    fn production_refuses_low_entropy_repeated_and_sequential_secrets() {
        for weak in [
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // one character
            "abababababababababababababababababababab", // two
            "Zx9!Qw3#Lp0$Zx9!Qw3#Lp0$Zx9!Qw3#Lp0$",     // twelve distinct, a unit repeated
            "abcdefghijklmnopqrstuvwxyz0123456789ABCD", // a run of consecutive characters
            "0123456789012345678901234567890123456789", // ten distinct, repeated and a run
            "short-but-random-Qx7",                     // under 32 bytes
        ] {
            refused_naming(&production(&[("JWT_SECRET", weak)]), "JWT_SECRET");
            refused_naming(&production(&[("CSRF_SECRET", weak)]), "CSRF_SECRET");
        }
    }

    #[test]
    fn identical_jwt_and_csrf_secrets_are_refused() {
        let same = "9f2c7e41b8d05a63f1e49c2d7b80a5e3c6d1f4a9b2e7c05d8a3f6b1e4c9d2a7f";
        refused_naming(
            &production(&[("JWT_SECRET", same), ("CSRF_SECRET", same)]),
            "CSRF_SECRET",
        );
        // In every environment: there is no reason for one key to do both jobs.
        let pairs = [
            BASE[0],
            ("JWT_SECRET", BASE[1].1),
            ("CSRF_SECRET", BASE[1].1),
            BASE[3],
        ];
        refused_naming(&pairs, "CSRF_SECRET");
    }

    #[test]
    fn nonsensical_timeouts_and_limits_are_refused_naming_the_variable() {
        for (settings, var) in [
            (
                &[("ACCESS_TOKEN_TTL_SECS", "0")][..],
                "ACCESS_TOKEN_TTL_SECS",
            ),
            (
                &[("ACCESS_TOKEN_TTL_SECS", "31536000")][..],
                "ACCESS_TOKEN_TTL_SECS",
            ),
            (
                &[("REFRESH_TOKEN_TTL_SECS", "0")][..],
                "REFRESH_TOKEN_TTL_SECS",
            ),
            (
                &[("REFRESH_TOKEN_TTL_SECS", "60")][..],
                "REFRESH_TOKEN_TTL_SECS",
            ),
            (
                &[
                    ("ACCESS_TOKEN_TTL_SECS", "3600"),
                    ("REFRESH_TOKEN_TTL_SECS", "3600"),
                ][..],
                "REFRESH_TOKEN_TTL_SECS",
            ),
            (&[("REQUEST_TIMEOUT_SECS", "0")][..], "REQUEST_TIMEOUT_SECS"),
            (
                &[("REQUEST_TIMEOUT_SECS", "86400")][..],
                "REQUEST_TIMEOUT_SECS",
            ),
            (&[("MAX_BODY_BYTES", "0")][..], "MAX_BODY_BYTES"),
            (
                &[("HTTP_HEADER_TIMEOUT_SECS", "0")][..],
                "HTTP_HEADER_TIMEOUT_SECS",
            ),
            (
                &[
                    ("HTTP_HEADER_TIMEOUT_SECS", "90"),
                    ("HTTP_IDLE_TIMEOUT_SECS", "60"),
                ][..],
                "HTTP_IDLE_TIMEOUT_SECS",
            ),
            (
                &[
                    ("REQUEST_TIMEOUT_SECS", "120"),
                    ("HTTP_IDLE_TIMEOUT_SECS", "60"),
                ][..],
                "HTTP_IDLE_TIMEOUT_SECS",
            ),
            (&[("MAX_CONNECTIONS", "0")][..], "MAX_CONNECTIONS"),
            (
                &[("MAX_CONNECTIONS_PER_CLIENT", "0")][..],
                "MAX_CONNECTIONS_PER_CLIENT",
            ),
            (
                &[
                    ("MAX_CONNECTIONS", "10"),
                    ("MAX_CONNECTIONS_PER_CLIENT", "11"),
                ][..],
                "MAX_CONNECTIONS_PER_CLIENT",
            ),
            (&[("TRUSTED_PROXIES", "10.0.0.0/33")][..], "TRUSTED_PROXIES"),
            (&[("OPS_TOKEN", "short")][..], "OPS_TOKEN"),
            (
                &[(
                    "OPS_TOKEN",
                    "has spaces in it which no token68 has, 0123456789",
                )][..],
                "OPS_TOKEN",
            ),
        ] {
            refused_naming(&production(settings), var);
        }
        // Development does not judge secrets, but it does judge nonsense.
        let mut pairs = BASE.to_vec();
        pairs.push(("ACCESS_TOKEN_TTL_SECS", "0"));
        refused_naming(&pairs, "ACCESS_TOKEN_TTL_SECS");
    }

    #[test]
    fn an_unset_environment_is_development_and_flagged_for_the_start_up_warning() {
        let config = Config::from_lookup(lookup(&BASE)).unwrap();
        assert_eq!(config.environment, Environment::Development);
        assert!(config.environment_defaulted);
        let mut pairs = BASE.to_vec();
        pairs.push(("ENVIRONMENT", "development"));
        assert!(
            !Config::from_lookup(lookup(&pairs))
                .unwrap()
                .environment_defaulted
        );
    }
}
