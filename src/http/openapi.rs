//! The OpenAPI 3.1 document and the docs page.
//!
//! The document is generated: every route is registered through `utoipa_axum`'s `routes!`
//! (see `http/mod.rs`), which adds the handler's `#[utoipa::path]` entry together with the route,
//! so a route cannot exist without its entry nor an entry without its route. [`complete`] adds
//! what every operation shares, by one rule each, so that the handlers only declare what is
//! particular to them:
//! - an operation whose `security` names `bearer` also accepts the `access_token` cookie; an
//!   unsafe method with the cookie also needs the CSRF pair (`csrf_token` cookie and
//!   `X-CSRF-Token` header, see `http/extract.rs`); such operations answer 401 and 403;
//! - an operation with a body answers 400 (`malformed_json`), 413 and 422; one with
//!   parameters 422;
//! - every operation can answer 429 (rate limits), 503 (`unavailable`, `timeout`) and 500.
//!
//! `GET /docs` is Swagger UI, served from the files that the `utoipa-swagger-ui` crate embeds at
//! build time from the crates.io crate `utoipa-swagger-ui-vendored` (feature `vendored`: nothing
//! is downloaded, nothing is loaded from a CDN). Its responses carry their own, relaxed CSP
//! (scripts and styles from this origin, inline styles, `data:` images), which the security
//! headers layer leaves alone; every other response keeps `default-src 'none'`.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi, Ref, RefOr, Response as SpecResponse,
    ResponseBuilder, Type,
};
use utoipa::Modify;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::views::{ErrorBody, ErrorDetail};
use super::AppState;

/// The document's fixed parts; the paths come from the routers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "CryptoVault Ledger",
        description = "An event-sourced ledger. Amounts and balances are decimal strings with \
                       the asset's places (`GET /api/config`), never JSON numbers. Errors are \
                       `{\"error\":{\"code\",\"message\",\"request_id\"}}`. Write endpoints \
                       accept an `Idempotency-Key`; reads accept `min_position` \
                       (read-your-writes)."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Health, readiness, metrics, public configuration"),
        (name = "auth", description = "Signup, login, sessions, profile, 2FA"),
        (name = "wallet", description = "Deposits, withdrawals, transfers, balances"),
        (name = "transactions", description = "History and statements"),
        (name = "admin", description = "User and withdrawal administration (admin role)"),
        (name = "audit", description = "The raw log, its verification, audit logs (auditor or admin role)"),
        (name = "proofs", description = "The verifiable log: the checkpoint signing key (public), signed checkpoints, inclusion and consistency proofs (auditor or admin role), receipts of a user's own transactions"),
        (name = "live", description = "Prices and WebSockets"),
        (name = "predecessor", description = "Routes only the predecessor's web client calls: its wallet writes (JSON-number amounts), portfolio, transfer list, market list and background pings; thin adapters over the native commands and queries"),
        (name = "docs", description = "This document and its docs page"),
    )
)]
pub struct ApiDoc;

/// Names of the security schemes.
pub const BEARER: &str = "bearer";
pub const ACCESS_COOKIE: &str = "access_cookie";
pub const CSRF_COOKIE: &str = "csrf_cookie";
pub const CSRF_HEADER: &str = "csrf_header";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `access_token` of a login or refresh answer. Exempt from CSRF.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCESS_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::cookies::ACCESS_COOKIE,
                "The HttpOnly session cookie set by login and refresh.",
            ))),
        );
        components.add_security_scheme(
            CSRF_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::cookies::CSRF_COOKIE,
                "The signed CSRF cookie set by login and refresh; its value goes in X-CSRF-Token.",
            ))),
        );
        components.add_security_scheme(
            CSRF_HEADER,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "Equal to the csrf_token cookie; needed by cookie-authenticated unsafe requests.",
            ))),
        );
    }
}

/// The complete document: the routes' entries plus what every operation shares (module docs).
pub fn complete(mut openapi: OpenApi) -> OpenApi {
    for (_, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            (HttpMethod::Get, item.get.as_mut()),
            (HttpMethod::Put, item.put.as_mut()),
            (HttpMethod::Post, item.post.as_mut()),
            (HttpMethod::Delete, item.delete.as_mut()),
            (HttpMethod::Patch, item.patch.as_mut()),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                complete_operation(&method, operation);
            }
        }
    }
    openapi
}

fn complete_operation(method: &HttpMethod, operation: &mut Operation) {
    let authenticated = operation.security.as_ref().is_some_and(|requirements| {
        requirements
            .iter()
            .any(|r| serde_json::to_value(r).is_ok_and(|v| v.get(BEARER).is_some()))
    });
    if authenticated {
        let cookie = if matches!(method, HttpMethod::Get) {
            SecurityRequirement::new(ACCESS_COOKIE, Vec::<String>::new())
        } else {
            SecurityRequirement::new(ACCESS_COOKIE, Vec::<String>::new())
                .add(CSRF_COOKIE, Vec::<String>::new())
                .add(CSRF_HEADER, Vec::<String>::new())
        };
        operation.security = Some(vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            cookie,
        ]);
    }
    let has_body = operation.request_body.is_some();
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let mut shared: Vec<(u16, &str)> = Vec::new();
    if has_body {
        shared.push((
            400,
            "`malformed_json`: the body is not JSON, or not `application/json`.",
        ));
        shared.push((
            413,
            "`payload_too_large`: the body exceeds `max_body_bytes`.",
        ));
    }
    if has_body || has_parameters {
        shared.push((
            422,
            "`validation_error`: a field or parameter breaks a rule; the message starts with its \
             name.",
        ));
    }
    if authenticated {
        shared.push((
            401,
            "`unauthorized`: missing, invalid, expired or revoked credentials.",
        ));
        shared.push((
            403,
            "`forbidden` (the role does not allow this) or `csrf_failed` (a cookie-authenticated \
             unsafe request without a matching X-CSRF-Token).",
        ));
    }
    shared.push((429, "`rate_limited`, with `Retry-After`."));
    shared.push((500, "`internal_error`: a bug; quote the request id."));
    shared.push((
        503,
        "`unavailable` (the database does not answer; retry, with the same Idempotency-Key for \
         a write), `timeout` (no answer within the request timeout) or `projection_lag` (a read \
         waited too long for `min_position`); with `Retry-After`. The proof routes also answer \
         `checkpoints_disabled` (no signing key configured) and `checkpoint_pending` (the tree \
         or the checkpoints have not reached what was asked for, or the notary refuses to \
         sign).",
    ));
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(status, description)));
    }
}

/// A response in the shared error shape.
pub fn error_response(status: u16, description: &str) -> SpecResponse {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if matches!(status, 423 | 429 | 503) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(1)),
                ))
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    response.build()
}

/// The routes of this module: the document itself and the docs page.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_asset))
}

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string(&super::openapi()).expect("the OpenAPI document serializes")
});

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object))
)]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// The CSP of the docs page and its assets: this origin only, plus inline styles and `data:`
/// images, which Swagger UI uses.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' \
    'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The files the docs page loads, each with its content type.
const DOCS_ASSETS: [(&str, &str); 7] = [
    ("swagger-ui.css", "text/css; charset=utf-8"),
    ("index.css", "text/css; charset=utf-8"),
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    (
        "swagger-ui-standalone-preset.js",
        "text/javascript; charset=utf-8",
    ),
    ("swagger-initializer.js", "text/javascript; charset=utf-8"),
    ("favicon-32x32.png", "image/png"),
    ("favicon-16x16.png", "image/png"),
];

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> =
        LazyLock::new(|| Arc::new(utoipa_swagger_ui::Config::new(["/api/openapi.json"])));
    CONFIG.clone()
}

fn docs_file(name: &str, content_type: &'static str) -> Result<Response, ApiError> {
    let file = utoipa_swagger_ui::serve(name, swagger_config())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("docs file {name}: {e}")))?
        .ok_or_else(|| ApiError::NotFound("no such docs file".into()))?;
    let mut bytes = file.bytes.into_owned();
    if name == "index.html" {
        // Served at `/docs` (no trailing slash): the page's relative links are made absolute.
        let text = String::from_utf8_lossy(&bytes)
            .replace("href=\"./", "href=\"/docs/")
            .replace("src=\"./", "src=\"/docs/")
            .replace("href=\"index.css\"", "href=\"/docs/index.css\"");
        bytes = text.into_bytes();
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCS_CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        bytes,
    )
        .into_response())
}

/// The docs page (Swagger UI, served by this service).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses((status = 200, description = "The docs page.", content_type = "text/html", body = String))
)]
async fn docs_page() -> Result<Response, ApiError> {
    docs_file("index.html", "text/html; charset=utf-8")
}

/// A file of the docs page.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    params(("file" = String, Path, description = "A file the docs page references, e.g. `swagger-ui.css`.")),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/css"),
            (String = "text/javascript"),
            (String = "image/png"),
        )),
        (status = 404, description = "`not_found`: no such file.", body = ErrorBody),
    )
)]
async fn docs_asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (name, content_type) = DOCS_ASSETS
        .iter()
        .find(|(name, _)| *name == file)
        .ok_or_else(|| ApiError::NotFound("no such docs file".into()))?;
    docs_file(name, content_type)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(super::super::openapi()).expect("the document serializes")
    }

    /// Every `$ref` in `value`.
    fn refs(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("$ref", Value::String(target)) => {
                            found.insert(target.clone());
                        }
                        _ => refs(value, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let document = document();
        assert_eq!(document["openapi"], "3.1.0");
        let mut found = BTreeSet::new();
        refs(&document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(
                document["components"]["schemas"].get(name).is_some(),
                "{target} is not in components"
            );
        }
    }

    #[test]
    fn every_operation_declares_its_errors_and_its_security() {
        let document = document();
        let paths = document["paths"].as_object().expect("paths");
        let mut operations = 0;
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                operations += 1;
                let what = format!("{method} {path}");
                let responses = operation["responses"].as_object().expect("responses");
                for status in ["429", "500", "503"] {
                    assert!(responses.contains_key(status), "{what} lacks {status}");
                }
                let error = &responses["503"]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(error, "#/components/schemas/ErrorBody", "{what}");
                assert!(responses["503"]["headers"].get("Retry-After").is_some());
                if operation.get("requestBody").is_some() {
                    for status in ["400", "413", "422"] {
                        assert!(responses.contains_key(status), "{what} lacks {status}");
                    }
                }
                let security = operation.get("security").and_then(Value::as_array);
                if let Some(security) = security {
                    assert!(security.iter().any(|s| s.get(super::BEARER).is_some()));
                    let cookie = security
                        .iter()
                        .find(|s| s.get(super::ACCESS_COOKIE).is_some())
                        .unwrap_or_else(|| panic!("{what}: no cookie alternative"));
                    assert_eq!(
                        cookie.get(super::CSRF_HEADER).is_some(),
                        method != "get",
                        "{what}: CSRF exactly for unsafe methods"
                    );
                    for status in ["401", "403"] {
                        assert!(responses.contains_key(status), "{what} lacks {status}");
                    }
                }
            }
        }
        // 60 operations of the service, the document, the docs page and its files.
        assert_eq!(operations, 63, "{:#?}", paths.keys().collect::<Vec<_>>());
        let schemes = document["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        for scheme in [
            super::BEARER,
            super::ACCESS_COOKIE,
            super::CSRF_COOKIE,
            super::CSRF_HEADER,
        ] {
            assert!(schemes.contains_key(scheme), "{scheme}");
        }
    }

    /// Routes are registered only through `utoipa_axum`'s `routes!`, which adds the handler's
    /// OpenAPI entry with the route: a plain `.route(` would be a route without its entry.
    #[test]
    fn no_route_is_registered_outside_the_openapi_router() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![dir.join("startup.rs")];
        let mut dirs = vec![dir.join("http")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("a directory of src/http") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source file");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let plain_registrations = [
                    concat!(".", "route", "("),
                    concat!(".", "route_service", "("),
                    concat!(".", "nest", "("),
                    concat!(".", "nest_service", "("),
                ];
                for plain in plain_registrations {
                    assert!(
                        !code.contains(plain),
                        "{}:{}: `{plain}` registers a route without its OpenAPI entry; use \
                         `.routes(routes!(handler))`",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }

    #[test]
    fn docs_files_are_embedded_and_reference_only_this_service() {
        let page = super::docs_file("index.html", "text/html; charset=utf-8").expect("index");
        assert_eq!(page.status(), axum::http::StatusCode::OK);
        for (name, content_type) in super::DOCS_ASSETS {
            super::docs_file(name, content_type).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
