//! The session cookies: `access_token` (HttpOnly, path `/`), `refresh_token` (HttpOnly, path
//! `/api/auth`, so it only travels to the auth routes) and `csrf_token` (readable by the page's
//! script, path `/`). With `USE_CROSS_SITE_COOKIES=true` they are `Secure; SameSite=None`
//! (the UI lives on another site); otherwise `SameSite=Lax`, and `Secure` in production.

use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use crate::config::{Config, Environment};
use crate::identity::Session;

pub const ACCESS_COOKIE: &str = "access_token";
pub const REFRESH_COOKIE: &str = "refresh_token";
pub const CSRF_COOKIE: &str = "csrf_token";
pub const CSRF_HEADER: &str = "x-csrf-token";
const REFRESH_PATH: &str = "/api/auth";

fn base(
    name: &'static str,
    value: String,
    path: &'static str,
    http_only: bool,
    config: &Config,
) -> Cookie<'static> {
    let cross_site = config.use_cross_site_cookies;
    Cookie::build((name, value))
        .path(path)
        .http_only(http_only)
        .secure(cross_site || config.environment == Environment::Production)
        .same_site(if cross_site {
            SameSite::None
        } else {
            SameSite::Lax
        })
        .build()
}

/// Sets all three cookies for a new or refreshed session.
pub fn with_session(
    jar: CookieJar,
    session: &Session,
    csrf_token: &str,
    config: &Config,
) -> CookieJar {
    let access_age = time::Duration::seconds(config.auth.access_token_ttl.as_secs() as i64);
    let refresh_age = time::Duration::seconds(config.auth.refresh_token_ttl.as_secs() as i64);
    let mut access = base(
        ACCESS_COOKIE,
        session.access_token.clone(),
        "/",
        true,
        config,
    );
    access.set_max_age(access_age);
    let mut refresh = base(
        REFRESH_COOKIE,
        session.refresh.token.clone(),
        REFRESH_PATH,
        true,
        config,
    );
    refresh.set_max_age(refresh_age);
    let mut csrf = base(CSRF_COOKIE, csrf_token.to_owned(), "/", false, config);
    csrf.set_max_age(refresh_age);
    jar.add(access).add(refresh).add(csrf)
}

/// Expires all three cookies.
pub fn cleared(jar: CookieJar, config: &Config) -> CookieJar {
    jar.remove(base(ACCESS_COOKIE, String::new(), "/", true, config))
        .remove(base(
            REFRESH_COOKIE,
            String::new(),
            REFRESH_PATH,
            true,
            config,
        ))
        .remove(base(CSRF_COOKIE, String::new(), "/", false, config))
}
