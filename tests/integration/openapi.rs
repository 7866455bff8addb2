//! The OpenAPI document (`GET /api/openapi.json`) and the docs page (`GET /docs`): every
//! operation of the document reaches a handler (no entry without its route; the other way round
//! is `http::openapi::tests::no_route_is_registered_outside_the_openapi_router`), and the docs
//! page loads nothing from elsewhere.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{spawn_app, TestDb};

/// A value for a path parameter that the route's handler accepts as such.
fn path_value(name: &str) -> &'static str {
    match name {
        "action" => "approve",
        "file" => "swagger-ui.css",
        "stream_id" => "account-00000000-0000-0000-0000-000000000000",
        _ => "00000000-0000-0000-0000-000000000000",
    }
}

#[tokio::test]
async fn every_documented_operation_reaches_its_handler() {
    let t = TestDb::new("openapi").await;
    let base = spawn_app(&t, &[]).await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let mut checked = 0;
    for (template, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let mut path = template.clone();
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().unwrap();
                    path = path.replace(&format!("{{{name}}}"), path_value(name));
                }
            }
            assert!(
                !path.contains('{'),
                "{method} {template}: unfilled parameter"
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = http.request(method.clone(), format!("{base}{path}"));
            if operation.get("requestBody").is_some() {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let what = format!("{method} {path} answered {status}");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
            let declared = operation["responses"]
                .as_object()
                .unwrap()
                .contains_key(status.as_str());
            let text = response.text().await.unwrap();
            assert!(
                declared,
                "{what}, which the document does not declare: {text}"
            );
            if status == StatusCode::NOT_FOUND {
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_ne!(
                    body["error"]["message"], "no such route",
                    "{what}: the fallback answered"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 63);
    t.drop_database().await;
}

/// The `src` and `href` attribute values of an HTML page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in html.split(attribute).skip(1) {
            found.push(piece.split('"').next().unwrap().to_owned());
        }
    }
    found
}

#[tokio::test]
async fn the_docs_page_and_every_asset_it_references_are_served_by_the_service() {
    let t = TestDb::new("docs").await;
    let base = spawn_app(&t, &[]).await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("http"), "{csp}");
    assert!(headers.contains_key("x-content-type-options"));
    let html = page.text().await.unwrap();
    let assets = references(&html);
    assert!(assets.len() >= 5, "{html}");
    for asset in assets {
        assert!(
            asset.starts_with("/docs/"),
            "{asset}: every asset of /docs comes from this service"
        );
        let response = http.get(format!("{base}{asset}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{asset}");
        if asset.ends_with("swagger-initializer.js") {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("/api/openapi.json"), "{text}");
            assert!(!text.contains("petstore"), "{text}");
        }
    }
    // Every other response keeps the strict policy.
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(
        health.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    );
    let missing = http
        .get(format!("{base}/docs/secrets.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    t.drop_database().await;
}
