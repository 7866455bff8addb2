//! Per-request context: the request id (kept from a valid incoming `X-Request-ID`, otherwise a
//! new UUID v7), the tracing span that puts it on every log line, the response header, and the
//! request count and latency metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Requests slower than this are logged as warnings.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(1);

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// An incoming id is kept if it is 1-128 characters of `[A-Za-z0-9._:-]`, so it is safe to log
/// and to echo.
fn is_valid_request_id(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn request_context(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // The route template, not the raw path, so metric cardinality stays bounded.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let started = Instant::now();

    let mut response = REQUEST_ID
        .scope(
            request_id.clone(),
            next.run(request).instrument(span.clone()),
        )
        .await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    span.in_scope(|| {
        let (status, latency_ms) = (response.status().as_u16(), elapsed.as_secs_f64() * 1e3);
        if elapsed > SLOW_REQUEST {
            tracing::warn!(status, latency_ms, "slow request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_valid_request_id;

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(is_valid_request_id("0190f5b2-7c1e-7abc-8def-0123456789ab"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("a b"));
        assert!(!is_valid_request_id("line\nbreak"));
        assert!(!is_valid_request_id(&"x".repeat(129)));
    }
}
