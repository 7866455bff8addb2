//! Facts about the caller: IP address and user agent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{header, request::Parts, HeaderMap};

/// The client IP: the first `X-Forwarded-For` entry when `trust_proxy` (only behind a proxy that
/// sets it), else the peer address; `0.0.0.0` when neither is known (in-process tests).
pub fn client_ip(
    parts_extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    trust_proxy: bool,
) -> IpAddr {
    if trust_proxy {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The `User-Agent`, at most 512 bytes of it.
pub fn user_agent(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect())
}
