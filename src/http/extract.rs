//! Authentication as extractors.
//!
//! [`AuthUser`] accepts `Authorization: Bearer <jwt>` or the `access_token` cookie. The token's
//! session (`sid`) must be live: one read of its session record by primary key
//! (`store::sessions::Sessions::session`) per authenticated request, no cache — so a session
//! ended on any instance (logout, password change, refresh-token reuse, 2FA enabled) refuses
//! its tokens from the next request on. The caller's roles are the session record's, kept
//! current by role grants and revocations, not the token's `roles` claim. A
//! cookie-authenticated unsafe request (POST, PUT, PATCH, DELETE) must carry `X-CSRF-Token`
//! equal to the `csrf_token` cookie and signed for this session; Bearer requests are exempt (a
//! browser never adds the header on its own, so they cannot be forged cross-site). [`Meta`]
//! gives commands the request id, client IP and user agent for event metadata.

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
use crate::store::sessions::SessionState;

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

/// Whether an unsafe cookie-authenticated request of `session` carries a CSRF token issued for
/// that session.
pub fn csrf_satisfied(
    method: &Method,
    headers: &HeaderMap,
    state: &AppState,
    session: Uuid,
) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let jar = CookieJar::from_headers(headers);
    let cookie = jar.get(CSRF_COOKIE).map(|c| c.value());
    let header = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    state.csrf.verify(session, cookie, header)
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
        let mut claims =
            state.identity.tokens.verify(&token).ok_or_else(|| {
                ApiError::Unauthorized("access token is invalid or expired".into())
            })?;
        match state
            .identity
            .sessions
            .session(claims.sid, chrono::Utc::now())
            .await?
        {
            SessionState::Live { user_id, roles } if user_id == claims.sub => {
                claims.roles = roles
                    .iter()
                    .filter_map(|r| Role::parse(r, "role").ok())
                    .collect();
            }
            SessionState::Ended { reason } => {
                return Err(ApiError::Unauthorized(format!(
                    "the session of this access token has ended ({reason})"
                )))
            }
            SessionState::Live { .. } | SessionState::Unknown => {
                return Err(ApiError::Unauthorized(
                    "the session of this access token is unknown or expired".into(),
                ))
            }
        }
        if via_cookie && !csrf_satisfied(&parts.method, &parts.headers, state, claims.sid) {
            return Err(ApiError::CsrfFailed(
                "X-CSRF-Token header must match the csrf_token cookie of this session".into(),
            ));
        }
        Ok(Self { claims, via_cookie })
    }
}

/// An optional caller: `None` when the request carries no valid credentials (or, for a cookie,
/// no valid CSRF token). For routes that work with or without a session, such as logout. A
/// session that could not be checked (MongoDB unavailable: 503) is the request's answer, not
/// `None`: a logout must not answer "logged out" for a session it could not end.
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match AuthUser::from_request_parts(parts, state).await {
            Ok(user) => Ok(Self(Some(user))),
            Err(fault @ (ApiError::Unavailable(_) | ApiError::Internal(_))) => Err(fault),
            Err(_) => Ok(Self(None)),
        }
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
