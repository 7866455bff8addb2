//! The service skeleton over real HTTP: health, readiness, metrics, request ids, errors.

use crate::helpers::TestDb;

async fn spawn_app(t: &TestDb) -> String {
    crate::helpers::spawn_app(t, &[]).await
}

/// A minimal HTTP/1.1 GET over a raw socket (keeps the test free of an HTTP client crate).
async fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let t = TestDb::new("http_ops").await;
    let base = spawn_app(&t).await;

    let (status, head, body) = get(&base, "/health", &[]).await;
    assert_eq!(status, 200);
    assert!(head.contains("x-request-id: "), "{head}");
    assert!(body.contains("\"ok\""));

    let (status, _, body) = get(&base, "/ready", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"mongodb\":\"ok\""));

    let (status, _, body) = get(&base, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("http_requests_total"), "{body}");
    assert!(
        body.contains("http_request_duration_seconds_bucket"),
        "{body}"
    );
    t.drop_database().await;
}

#[tokio::test]
async fn a_valid_incoming_request_id_is_kept_and_an_invalid_one_replaced() {
    let t = TestDb::new("http_reqid").await;
    let base = spawn_app(&t).await;
    let (_, head, _) = get(&base, "/health", &[("X-Request-ID", "client-id-42")]).await;
    assert!(head.contains("x-request-id: client-id-42"), "{head}");
    let (_, head, _) = get(&base, "/health", &[("X-Request-ID", "bad id with spaces")]).await;
    assert!(!head.contains("bad id"), "{head}");
    assert!(head.contains("x-request-id: "));
    t.drop_database().await;
}

#[tokio::test]
async fn unknown_routes_answer_in_the_error_shape_with_the_request_id() {
    let t = TestDb::new("http_404").await;
    let base = spawn_app(&t).await;
    let (status, _, body) = get(&base, "/nope", &[("X-Request-ID", "rid-404")]).await;
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["request_id"], "rid-404");
    t.drop_database().await;
}

/// A `min_position` beyond the log head names no answer the service ever gave: 422 naming the
/// parameter at once, not a wait that ends in 503 `projection_lag`. (The request time limit is
/// proved with a slow database: `faults_http.rs::a_write_cut_off_by_the_request_timeout_…`.)
#[tokio::test]
async fn a_min_position_beyond_the_log_head_is_422_at_once() {
    let t = TestDb::new("http_min_position").await;
    let base = crate::helpers::spawn_app(&t, &[("READ_YOUR_WRITES_TIMEOUT_MS", "10000")]).await;
    let user = crate::helpers::signed_up(&base, "ahead@example.com").await;
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{base}/api/wallet/balance?min_position=999999"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("min_position")),
        "{body}"
    );
    t.drop_database().await;
}
