//! Browser-facing hardening: the CORS allow-list (with credentials) and the security headers
//! every response carries.
//!
//! `Cache-Control: no-store` is one of them: answers carry tokens (login, refresh), TOTP
//! secrets (2FA setup), personal data (me, balances, history, statements) and error messages
//! about the caller, and no browser or shared cache may keep any of it. The rule is simplest as
//! a default for every answer; a route that wants caching opts in by setting its own
//! `Cache-Control` (the layer only fills it in when absent). None does today.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::Config;

/// CORS for the origins in `CORS_ORIGINS` only, credentials allowed. No origins: no CORS.
pub fn cors(config: &Config) -> anyhow::Result<CorsLayer> {
    let origins = config
        .cors_origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("CORS_ORIGINS: {o:?} is not a valid header value"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-csrf-token"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600)))
}

/// The security headers, as `(name, value)`; each is set unless the handler set it already.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains; preload",
    ),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

pub fn header_layers() -> Vec<SetResponseHeaderLayer<HeaderValue>> {
    SECURITY_HEADERS
        .iter()
        .map(|(name, value)| {
            SetResponseHeaderLayer::if_not_present(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}
