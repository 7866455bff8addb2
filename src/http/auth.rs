//! `/api/auth`: signup, login, refresh, logout, me, profile, change-password, 2FA.
//! Thin handlers: parse, call `identity::Identity`, shape the answer and the cookies.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde_json::{json, Value};

use super::cookies::{self, REFRESH_COOKIE};
use super::error::ApiError;
use super::extract::{csrf_satisfied, AuthUser, MaybeAuthUser, Meta};
use super::json::ApiJson;
use super::user_json;
use super::AppState;
use crate::identity::domain::UserState;
use crate::identity::Session;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/auth/profile", put(update_profile))
        .route("/api/auth/change-password", post(change_password))
        .route("/api/auth/2fa/setup", post(totp_setup))
        .route("/api/auth/2fa/verify", post(totp_verify))
        .route("/api/auth/2fa/disable", post(totp_disable))
        .route("/api/auth/2fa/status", get(totp_status))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    email: String,
    password: String,
    name: String,
}

async fn signup(
    State(state): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<impl IntoResponse, ApiError> {
    let user = state
        .identity
        .signup(&body.email, &body.password, &body.name, &meta)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": user_json(&user) })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    totp_code: Option<String>,
}

/// The body of a login or refresh answer, plus the cookies.
fn session_response(
    state: &AppState,
    jar: CookieJar,
    user: &UserState,
    session: &Session,
) -> impl IntoResponse {
    let csrf_token = state.csrf.issue();
    let jar = cookies::with_session(jar, session, &csrf_token, &state.config);
    let body = json!({
        "user": user_json(user),
        "access_token": session.access_token,
        "token_type": "Bearer",
        "expires_in": state.config.auth.access_token_ttl.as_secs(),
        "csrf_token": csrf_token,
    });
    (jar, Json(body))
}

async fn login(
    State(state): State<AppState>,
    Meta(meta): Meta,
    jar: CookieJar,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, session) = state
        .identity
        .login(
            &body.email,
            &body.password,
            body.totp_code.as_deref(),
            &meta,
        )
        .await?;
    Ok(session_response(&state, jar, &user, &session))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: Option<String>,
}

/// Refresh token from the body (API clients; no CSRF needed) or the cookie (browsers; the
/// request is cookie-authenticated, so it needs the CSRF header).
async fn refresh(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    jar: CookieJar,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<RefreshBody>(&body)
            .map_err(|e| {
                ApiError::MalformedJson(format!("request body is not a valid refresh request: {e}"))
            })?
            .refresh_token
    };
    let token = match from_body {
        Some(token) => token,
        None => {
            let cookie = jar
                .get(REFRESH_COOKIE)
                .map(|c| c.value().to_owned())
                .ok_or_else(|| ApiError::Unauthorized("no refresh token".into()))?;
            if !csrf_satisfied(&method, &headers, &state) {
                return Err(ApiError::CsrfFailed(
                    "X-CSRF-Token header must match the csrf_token cookie".into(),
                ));
            }
            cookie
        }
    };
    let (user, session) = state.identity.refresh(&token).await?;
    Ok(session_response(&state, jar, &user, &session))
}

async fn logout(
    State(state): State<AppState>,
    MaybeAuthUser(user): MaybeAuthUser,
    method: Method,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let refresh = jar.get(REFRESH_COOKIE).map(|c| c.value().to_owned());
    let bearer = user.as_ref().is_some_and(|u| !u.via_cookie);
    if refresh.is_some() && !bearer && !csrf_satisfied(&method, &headers, &state) {
        return Err(ApiError::CsrfFailed(
            "X-CSRF-Token header must match the csrf_token cookie".into(),
        ));
    }
    state
        .identity
        .logout(user.as_ref().map(|u| &u.claims), refresh.as_deref())
        .await?;
    let jar = cookies::cleared(jar, &state.config);
    Ok((jar, Json(json!({ "status": "logged_out" }))))
}

async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let user = state.identity.user(user.user_id()).await?;
    Ok(Json(json!({ "user": user_json(&user) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    name: String,
}

async fn update_profile(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<ProfileBody>,
) -> Result<Json<Value>, ApiError> {
    let updated = state
        .identity
        .update_profile(user.user_id(), &body.name, &meta)
        .await?;
    Ok(Json(json!({ "user": user_json(&updated) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> Result<Json<Value>, ApiError> {
    state
        .identity
        .change_password(
            user.user_id(),
            &body.current_password,
            &body.new_password,
            &meta,
        )
        .await?;
    Ok(Json(json!({ "status": "password_changed" })))
}

async fn totp_setup(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let (secret, url) = state.identity.totp_setup(user.user_id()).await?;
    Ok(Json(json!({ "secret": secret, "otpauth_url": url })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

async fn totp_verify(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    state
        .identity
        .totp_verify(user.user_id(), &body.code, &meta)
        .await?;
    Ok(Json(json!({ "enabled": true })))
}

async fn totp_disable(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    state
        .identity
        .totp_disable(user.user_id(), &body.code, &meta)
        .await?;
    Ok(Json(json!({ "enabled": false })))
}

async fn totp_status(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Value>, ApiError> {
    let user = state.identity.user(user.user_id()).await?;
    Ok(Json(json!({ "enabled": user.totp_enabled })))
}
