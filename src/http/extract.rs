//! Authentication as extractors.
//!
//! [`AuthUser`] accepts `Authorization: Bearer <jwt>` or the `access_token` cookie. A
//! cookie-authenticated unsafe request (POST, PUT, PATCH, DELETE) must carry `X-CSRF-Token`
//! equal to the signed `csrf_token` cookie; Bearer requests are exempt (a browser never adds the
//! header on its own, so they cannot be forged cross-site). [`Meta`] gives commands the request
//! id, client IP and user agent for event metadata.

use axum::extract::FromRequestParts;
use axum::http::{request::Parts, HeaderMap, Method};
use axum_extra::extract::CookieJar;
use uuid::Uuid;

use super::client::{client_ip, user_agent};
use super::cookies::{ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER};
use super::error::ApiError;
use super::request_context::current_request_id;
use super::AppState;
use crate::identity::tokens::Claims;
use crate::identity::{RequestMeta, Role};

/// An authenticated caller.
pub struct AuthUser {
    pub claims: Claims,
    /// Authenticated by cookie (CSRF already checked for unsafe methods) rather than Bearer.
    pub via_cookie: bool,
}

impl AuthUser {
    pub fn user_id(&self) -> Uuid {
        self.claims.sub
    }

    /// 403 unless the token carries `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.claims.roles.contains(&role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this requires the {} role",
                role.as_str()
            )))
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    super::credentials::bearer_token(&parts.headers)
}

/// Whether an unsafe cookie-authenticated request carries a valid CSRF token.
pub fn csrf_satisfied(method: &Method, headers: &HeaderMap, state: &AppState) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let jar = CookieJar::from_headers(headers);
    let cookie = jar.get(CSRF_COOKIE).map(|c| c.value());
    let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    state.csrf.verify(cookie, header)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let (token, via_cookie) = match bearer(parts) {
            Some(token) => (token.to_owned(), false),
            None => match jar.get(ACCESS_COOKIE) {
                Some(cookie) => (cookie.value().to_owned(), true),
                None => return Err(ApiError::unauthorized()),
            },
        };
        let claims =
            state.identity.tokens.verify(&token).ok_or_else(|| {
                ApiError::Unauthorized("access token is invalid or expired".into())
            })?;
        let revoked = state
            .identity
            .sessions
            .is_access_revoked(claims.jti)
            .await?;
        if revoked {
            return Err(ApiError::Unauthorized("access token was revoked".into()));
        }
        if via_cookie && !csrf_satisfied(&parts.method, &parts.headers, state) {
            return Err(ApiError::CsrfFailed(
                "X-CSRF-Token header must match the csrf_token cookie".into(),
            ));
        }
        Ok(Self { claims, via_cookie })
    }
}

/// An optional caller: `None` when the request carries no valid credentials (or, for a cookie,
/// no valid CSRF token). For routes that work with or without a session, such as logout.
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(AuthUser::from_request_parts(parts, state).await.ok()))
    }
}

/// Request facts for event metadata.
pub struct Meta(pub RequestMeta);

impl FromRequestParts<AppState> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = client_ip(
            &parts.extensions,
            &parts.headers,
            &state.config.edge.trusted_proxies,
        );
        Ok(Self(RequestMeta {
            request_id: current_request_id(),
            ip: Some(ip.to_string()),
            user_agent: user_agent(parts),
        }))
    }
}
