//! `/api/auth`: signup, login, refresh, logout, me, profile, change-password, 2FA.
//! Thin handlers: parse, call `identity::Identity`, shape the answer and the cookies.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cookies::{self, REFRESH_COOKIE};
use super::error::ApiError;
use super::extract::{csrf_satisfied, AuthUser, MaybeAuthUser, Meta};
use super::json::{ApiJson, RawBody};
use super::views::{ErrorBody, StatusBody, UserBody, UserView};
use super::AppState;
use crate::config::{Config, Environment};
use crate::identity::domain::UserState;
use crate::identity::Session;

/// The device cookie: a random id set on every successful login (HttpOnly, path `/api/auth`,
/// 400 days). A device that signed in to an address before is a source of its own for the login
/// throttle (ARCHITECTURE.md, "The login throttle"): a stranger's failures elsewhere never
/// refuse it. Logout keeps it (it identifies the device, not a session).
pub const DEVICE_COOKIE: &str = "device_id";
const DEVICE_COOKIE_DAYS: i64 = 400;

fn device(jar: &CookieJar) -> Option<String> {
    jar.get(DEVICE_COOKIE).map(|c| c.value().to_owned())
}

fn device_cookie(device_id: String, config: &Config) -> Cookie<'static> {
    let cross_site = config.use_cross_site_cookies;
    Cookie::build((DEVICE_COOKIE, device_id))
        .path("/api/auth")
        .http_only(true)
        .secure(cross_site || config.environment == Environment::Production)
        .same_site(if cross_site {
            SameSite::None
        } else {
            SameSite::Lax
        })
        .max_age(time::Duration::days(DEVICE_COOKIE_DAYS))
        .build()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(update_profile))
        .routes(routes!(change_password))
        .routes(routes!(totp_setup))
        .routes(routes!(totp_verify))
        .routes(routes!(totp_disable))
        .routes(routes!(totp_status))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignupBody {
    email: String,
    password: String,
    name: String,
}

/// Creates a user (role `user`).
#[utoipa::path(
    post,
    path = "/api/auth/signup",
    tag = "auth",
    request_body = SignupBody,
    responses(
        (status = 201, description = "Created.", body = UserBody),
        (status = 409, description = "`conflict`: the email is already registered.", body = ErrorBody),
    )
)]
async fn signup(
    State(state): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<impl IntoResponse, ApiError> {
    let user = state
        .identity
        .signup(&body.email, &body.password, &body.name, &meta)
        .await?;
    Ok((StatusCode::CREATED, Json(UserBody::from(&user))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
    totp_code: Option<String>,
}

/// The body of a login or refresh answer (the cookies `access_token`, `refresh_token` and
/// `csrf_token` come with it).
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    pub user: UserView,
    /// A short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
    /// The value to send as `X-CSRF-Token` with cookie-authenticated unsafe requests.
    pub csrf_token: String,
}

/// The body of a login or refresh answer, plus the cookies.
fn session_response(
    state: &AppState,
    jar: CookieJar,
    user: &UserState,
    session: &Session,
) -> impl IntoResponse {
    let csrf_token = state.csrf.issue(session.claims.sid);
    let jar = cookies::with_session(jar, session, &csrf_token, &state.config);
    let body = SessionBody {
        user: user.into(),
        access_token: session.access_token.clone(),
        token_type: "Bearer".into(),
        expires_in: state.config.auth.access_token_ttl.as_secs(),
        csrf_token,
    };
    (jar, Json(body))
}

/// Signs in: the session as cookies, the access token also in the body for Bearer clients.
/// Wrong email and wrong password answer alike; so do registered and unknown addresses when the
/// login throttle refuses (423).
#[utoipa::path(
    post,
    path = "/api/auth/login",
    tag = "auth",
    description = "Every attempt is counted by the login throttle before the password is \
                   checked (per address and source: the `device_id` cookie of a device that \
                   signed in before, else the client IP; see ARCHITECTURE.md). A success sets \
                   the `device_id` cookie as well.",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in; sets the session cookies and `device_id`.", body = SessionBody),
        (status = 401, description = "`unauthorized` (wrong email or password), `totp_required` (2FA is on and no `totp_code` was sent) or `invalid_totp`.", body = ErrorBody),
        (status = 423, description = "`account_locked`: too many failed attempts for this address from this source (or from unknown sources in all); the same answer for unknown addresses.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until an attempt from this source is accepted again."))),
    )
)]
async fn login(
    State(state): State<AppState>,
    Meta(meta): Meta,
    jar: CookieJar,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, session, device_id) = state
        .identity
        .login(
            &body.email,
            &body.password,
            body.totp_code.as_deref(),
            device(&jar).as_deref(),
            &meta,
        )
        .await?;
    let jar = jar.add(device_cookie(device_id, &state.config));
    Ok(session_response(&state, jar, &user, &session))
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: Option<String>,
}

/// Refresh token from the body (API clients; no CSRF needed) or the cookie (browsers; the
/// request is cookie-authenticated, so it needs the CSRF header).
#[utoipa::path(
    post,
    path = "/api/auth/refresh",
    tag = "auth",
    description = "Rotates the refresh token (from the body, or else the `refresh_token` cookie \
                   together with `X-CSRF-Token`); a reused one revokes its whole family. The body \
                   is optional.",
    request_body(content = Option<RefreshBody>, description = "Optional; empty means: use the cookie."),
    params(("X-CSRF-Token" = Option<String>, Header, description = "Needed when the refresh token comes from the cookie.")),
    responses(
        (status = 200, description = "A new session; sets the session cookies.", body = SessionBody),
        (status = 400, description = "`malformed_json`: the body is not a refresh request (also for unknown fields).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no, invalid, expired or reused refresh token.", body = ErrorBody),
        (status = 403, description = "`csrf_failed`: the cookie's refresh token without a matching X-CSRF-Token.", body = ErrorBody),
    )
)]
async fn refresh(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    jar: CookieJar,
    RawBody(body): RawBody,
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
            // The CSRF token must be one of the refresh token's session.
            let Some(family) = state.identity.sessions.family_of(&cookie).await? else {
                return Err(ApiError::Unauthorized(
                    "refresh token is invalid or expired".into(),
                ));
            };
            if !csrf_satisfied(&method, &headers, &state, family) {
                return Err(ApiError::CsrfFailed(
                    "X-CSRF-Token header must match the csrf_token cookie of this session".into(),
                ));
            }
            cookie
        }
    };
    let (user, session) = state.identity.refresh(&token).await?;
    Ok(session_response(&state, jar, &user, &session))
}

/// Ends the session: every access token of it, its refresh family and its sockets, on every
/// instance; clears the cookies.
#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    description = "Works with or without a valid session (Bearer, or the cookies; a \
                   cookie-authenticated logout with a refresh cookie needs `X-CSRF-Token`).",
    params(("X-CSRF-Token" = Option<String>, Header, description = "Needed for a cookie session.")),
    responses(
        (status = 200, description = "`{\"status\":\"logged_out\"}`; clears the cookies.", body = StatusBody),
        (status = 403, description = "`csrf_failed`.", body = ErrorBody),
    )
)]
async fn logout(
    State(state): State<AppState>,
    MaybeAuthUser(user): MaybeAuthUser,
    method: Method,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<impl IntoResponse, ApiError> {
    let refresh = jar.get(REFRESH_COOKIE).map(|c| c.value().to_owned());
    let bearer = user.as_ref().is_some_and(|u| !u.via_cookie);
    if let (Some(token), false) = (&refresh, bearer) {
        // A cookie logout ends the refresh token's session: it needs that session's CSRF
        // token. An unknown refresh token ends nothing, so it needs none (the cookies are
        // cleared all the same).
        if let Some(family) = state.identity.sessions.family_of(token).await? {
            if !csrf_satisfied(&method, &headers, &state, family) {
                return Err(ApiError::CsrfFailed(
                    "X-CSRF-Token header must match the csrf_token cookie of this session".into(),
                ));
            }
        }
    }
    state
        .identity
        .logout(user.as_ref().map(|u| &u.claims), refresh.as_deref())
        .await?;
    let jar = cookies::cleared(jar, &state.config);
    Ok((
        jar,
        Json(StatusBody {
            status: "logged_out".into(),
        }),
    ))
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller.", body = UserBody))
)]
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<UserBody>, ApiError> {
    let user = state.identity.user(user.user_id()).await?;
    Ok(Json(UserBody::from(&user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    name: String,
}

/// Changes the caller's name.
#[utoipa::path(
    put,
    path = "/api/auth/profile",
    tag = "auth",
    security(("bearer" = [])),
    request_body = ProfileBody,
    responses((status = 200, description = "The updated user.", body = UserBody))
)]
async fn update_profile(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<ProfileBody>,
) -> Result<Json<UserBody>, ApiError> {
    let updated = state
        .identity
        .update_profile(user.user_id(), &body.name, &meta)
        .await?;
    Ok(Json(UserBody::from(&updated)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
    /// A current TOTP code; required when 2FA is on.
    totp_code: Option<String>,
}

/// The step-up refusals shared by the sensitive changes (change-password, 2FA setup and
/// disable), each counted by the login throttle and recorded as `LoginFailed`
/// (`step_up_failed` / `step_up_locked`) on the caller's logins stream.
const STEP_UP: &str = "Needs a step-up: `current_password` (and a current `totp_code`/`code` \
                       when 2FA is on), counted by the login throttle like a login; each \
                       failure is recorded on the caller's logins stream (`LoginFailed`, reason \
                       `step_up_failed`, or `step_up_locked` when the throttle refuses).";

/// Changes the caller's password.
#[utoipa::path(
    post,
    path = "/api/auth/change-password",
    tag = "auth",
    description = STEP_UP,
    security(("bearer" = [])),
    request_body = ChangePasswordBody,
    responses(
        (status = 200, description = "`{\"status\":\"password_changed\"}`.", body = StatusBody),
        (status = 401, description = "`unauthorized` (credentials), `totp_required` (2FA is on and no `totp_code`) or `invalid_totp`.", body = ErrorBody),
        (status = 422, description = "`validation_error`: `current_password` is wrong (or missing), or `new_password` breaks a rule.", body = ErrorBody),
        (status = 423, description = "`account_locked`: the login throttle refuses, with `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until an attempt is accepted again."))),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    jar: CookieJar,
    ApiJson(body): ApiJson<ChangePasswordBody>,
) -> Result<Json<StatusBody>, ApiError> {
    state
        .identity
        .change_password(
            user.user_id(),
            &body.current_password,
            &body.new_password,
            body.totp_code.as_deref(),
            device(&jar).as_deref(),
            &meta,
        )
        .await?;
    Ok(Json(StatusBody {
        status: "password_changed".into(),
    }))
}

/// A new TOTP secret for enrolment (2FA is on only after `2fa/verify`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetupBody {
    /// Base32.
    pub secret: String,
    pub otpauth_url: String,
}

/// Whether 2FA is on.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpStateBody {
    pub enabled: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpSetupRequest {
    current_password: String,
}

/// Starts 2FA enrolment.
#[utoipa::path(
    post,
    path = "/api/auth/2fa/setup",
    tag = "auth",
    description = STEP_UP,
    security(("bearer" = [])),
    request_body = TotpSetupRequest,
    responses(
        (status = 200, description = "The secret to enrol.", body = TotpSetupBody),
        (status = 409, description = "`invalid_state`: 2FA is already on.", body = ErrorBody),
        (status = 422, description = "`validation_error`: `current_password` is wrong or missing.", body = ErrorBody),
        (status = 423, description = "`account_locked`: the login throttle refuses, with `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until an attempt is accepted again."))),
    )
)]
async fn totp_setup(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    jar: CookieJar,
    ApiJson(body): ApiJson<TotpSetupRequest>,
) -> Result<Json<TotpSetupBody>, ApiError> {
    let (secret, url) = state
        .identity
        .totp_setup(
            user.user_id(),
            &body.current_password,
            device(&jar).as_deref(),
            &meta,
        )
        .await?;
    Ok(Json(TotpSetupBody {
        secret,
        otpauth_url: url,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

/// Turns 2FA on with a code of the enrolled secret; every other session of the caller ends.
#[utoipa::path(
    post,
    path = "/api/auth/2fa/verify",
    tag = "auth",
    security(("bearer" = [])),
    request_body = CodeBody,
    responses(
        (status = 200, description = "`{\"enabled\":true}`.", body = TotpStateBody),
        (status = 401, description = "`unauthorized` or `invalid_totp`.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: no enrolment started, or 2FA already on.", body = ErrorBody),
    )
)]
async fn totp_verify(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Json<TotpStateBody>, ApiError> {
    state
        .identity
        .totp_verify(user.user_id(), user.claims.sid, &body.code, &meta)
        .await?;
    Ok(Json(TotpStateBody { enabled: true }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpDisableBody {
    current_password: String,
    /// A current TOTP code.
    code: String,
}

/// Turns 2FA off with the current password and a current code.
#[utoipa::path(
    post,
    path = "/api/auth/2fa/disable",
    tag = "auth",
    description = STEP_UP,
    security(("bearer" = [])),
    request_body = TotpDisableBody,
    responses(
        (status = 200, description = "`{\"enabled\":false}`.", body = TotpStateBody),
        (status = 401, description = "`unauthorized`, `totp_required` (an empty `code`) or `invalid_totp`.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: 2FA is off.", body = ErrorBody),
        (status = 422, description = "`validation_error`: `current_password` is wrong, or a field is missing.", body = ErrorBody),
        (status = 423, description = "`account_locked`: the login throttle refuses, with `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until an attempt is accepted again."))),
    )
)]
async fn totp_disable(
    State(state): State<AppState>,
    user: AuthUser,
    Meta(meta): Meta,
    jar: CookieJar,
    ApiJson(body): ApiJson<TotpDisableBody>,
) -> Result<Json<TotpStateBody>, ApiError> {
    state
        .identity
        .totp_disable(
            user.user_id(),
            &body.current_password,
            &body.code,
            device(&jar).as_deref(),
            &meta,
        )
        .await?;
    Ok(Json(TotpStateBody { enabled: false }))
}

/// Whether 2FA is on for the caller.
#[utoipa::path(
    get,
    path = "/api/auth/2fa/status",
    tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "2FA state.", body = TotpStateBody))
)]
async fn totp_status(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<TotpStateBody>, ApiError> {
    let user = state.identity.user(user.user_id()).await?;
    Ok(Json(TotpStateBody {
        enabled: user.totp_enabled,
    }))
}
