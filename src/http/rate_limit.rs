//! Rate limits (governor's keyed GCRA limiters), PRODUCT.md §4:
//! every request per client IP; `/api/auth/login` and `/api/auth/signup` per client IP with a
//! stricter quota; `/api/wallet` and `/api/transactions` per authenticated user. Over the limit:
//! 429 `rate_limited` with `Retry-After`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use super::client::client_ip;
use super::cookies::ACCESS_COOKIE;
use super::error::ApiError;
use super::AppState;
use crate::config::RateLimits;

pub struct RateLimiters {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    login: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<Uuid>,
    clock: DefaultClock,
}

impl RateLimiters {
    pub fn new(limits: RateLimits) -> Arc<Self> {
        Arc::new(Self {
            per_ip: RateLimiter::keyed(Quota::per_minute(limits.per_ip)),
            login: RateLimiter::keyed(Quota::per_minute(limits.login)),
            per_user: RateLimiter::keyed(Quota::per_minute(limits.per_user)),
            clock: DefaultClock::default(),
        })
    }

    /// Forgets keys whose buckets are full again, bounding memory; run periodically.
    pub fn forget_idle_keys(&self) {
        self.per_ip.retain_recent();
        self.login.retain_recent();
        self.per_user.retain_recent();
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), ApiError> {
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            metrics::counter!("http_rate_limited_total").increment(1);
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

/// Spawns the periodic clean-up of idle keys.
pub fn spawn_cleanup(limiters: Arc<RateLimiters>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiters.forget_idle_keys();
        }
    });
}

pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn check(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let limiters = &state.limiters;
    let ip = client_ip(
        request.extensions(),
        request.headers(),
        &state.config.edge.trusted_proxies,
    );
    limiters.check(&limiters.per_ip, &ip)?;
    let path = request.uri().path();
    if path == "/api/auth/login" || path == "/api/auth/signup" {
        limiters.check(&limiters.login, &ip)?;
    }
    if path.starts_with("/api/wallet")
        || path.starts_with("/api/transactions")
        || path == "/api/portfolio"
    {
        if let Some(user) = authenticated_user(state, request) {
            limiters.check(&limiters.per_user, &user)?;
        }
    }
    Ok(())
}

/// The user of a valid access token (Bearer or cookie), if any. Requests without one are left
/// to the per-IP limit and get their 401 from the handler.
fn authenticated_user(state: &AppState, request: &Request) -> Option<Uuid> {
    let bearer = super::credentials::bearer_token(request.headers()).map(str::to_owned);
    let token = bearer.or_else(|| {
        CookieJar::from_headers(request.headers())
            .get(ACCESS_COOKIE)
            .map(|c| c.value().to_owned())
    })?;
    state
        .identity
        .tokens
        .verify(&token)
        .map(|claims| claims.sub)
}
