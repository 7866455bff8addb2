//! The edge of the service (issue 14, findings 7, 8, 9, 15): one `Authorization` parser for the
//! extractor and the limiter, the client IP behind trusted proxies only, connection timeouts and
//! bounds, operational endpoints behind a token, `Cache-Control: no-store`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{signed_up, spawn_app, TestDb};

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works on Linux).
fn from(ip: [u8; 4]) -> Client {
    Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

/// Finding 9: `Bearer`, `BEARER` and `bearer` with two spaces (and a tab) are one credential for
/// the extractor and for the per-user limiter alike, so no spelling escapes the limit.
#[tokio::test]
async fn every_spelling_of_the_bearer_scheme_counts_against_the_per_user_limit() {
    let t = TestDb::new("edge_bearer").await;
    let base = spawn_app(&t, &[("RATE_LIMIT_PER_USER_PER_MIN", "3")]).await;
    let user = signed_up(&base, "bearer-forms@example.com").await;
    let client = Client::new();
    let forms = [
        format!("BEARER {}", user.token),
        format!("bearer  {}", user.token),
        format!("Bearer\t{}", user.token),
        format!("Bearer {}", user.token),
    ];
    let mut statuses = Vec::new();
    for form in &forms {
        let response = client
            .get(format!("{base}/api/wallet/balance"))
            .header("Authorization", form)
            .send()
            .await
            .unwrap();
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "each form authenticates, and each counts against the limit of 3"
    );
    // Not a credential: no scheme separator, another scheme, an empty token.
    for bad in [
        format!("Bearer{}", user.token),
        format!("Basic {}", user.token),
        "Bearer ".to_owned(),
    ] {
        let response = client
            .get(format!("{base}/api/auth/me"))
            .header("Authorization", bad.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    t.drop_database().await;
}

/// Finding 8: behind a trusted proxy (here the loopback address 127.0.0.1) the client is the
/// address the proxy appended — the rightmost untrusted `X-Forwarded-For` entry — whatever the
/// client wrote to the left of it; a peer that is not a trusted proxy is itself the client.
#[tokio::test]
async fn a_client_chosen_forwarded_for_entry_does_not_change_the_rate_limit_key() {
    let t = TestDb::new("edge_xff").await;
    let base = spawn_app(
        &t,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8"),
            ("RATE_LIMIT_PER_IP_PER_MIN", "3"),
        ],
    )
    .await;
    let proxy = from([127, 0, 0, 1]);
    let health = |client: &Client, xff: String| {
        client
            .get(format!("{base}/health"))
            .header("X-Forwarded-For", xff)
            .send()
    };
    // The client 203.0.113.7 writes a new leftmost entry each time; the proxies (10.1.2.3, then
    // 127.0.0.1, the peer) appended the rest.
    for i in 0..3 {
        let xff = format!("198.51.100.{i}, 203.0.113.7, 10.1.2.3");
        let status = health(&proxy, xff).await.unwrap().status();
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
    let status = health(&proxy, "192.0.2.99, 203.0.113.7, 10.1.2.3".into())
        .await
        .unwrap()
        .status();
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the leftmost entry chose no new key"
    );
    // Another client behind the same proxy has its own budget.
    let status = health(&proxy, "203.0.113.8".into()).await.unwrap().status();
    assert_eq!(status, StatusCode::OK);
    // A peer that is no trusted proxy cannot claim to be someone else: its X-Forwarded-For is
    // ignored (its key is 127.0.0.2, not the exhausted 203.0.113.7).
    let stranger = from([127, 0, 0, 2]);
    let status = health(&stranger, "203.0.113.7".into())
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    t.drop_database().await;
}

/// Finding 8: the old switch that trusted the leftmost entry is refused with a message naming
/// its replacement.
#[test]
fn trust_proxy_headers_true_is_refused_naming_trusted_proxies() {
    let vars = [
        ("MONGO_URL", "mongodb://127.0.0.1:27017/?replicaSet=rs0"),
        ("JWT_SECRET", crate::helpers::TEST_JWT_SECRET),
        ("CSRF_SECRET", crate::helpers::TEST_CSRF_SECRET),
        ("EMAIL_INDEX_KEY", crate::helpers::TEST_EMAIL_INDEX_KEY),
        ("TRUST_PROXY_HEADERS", "true"),
    ];
    let err = cryptovault::config::Config::from_lookup(|name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("TRUST_PROXY_HEADERS") && err.contains("TRUSTED_PROXIES"),
        "{err}"
    );
}

// ---- Finding 7: connection timeouts and bounds, over raw TCP ----

fn addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

/// A connection from `local` to the app.
async fn connect_from(base: &str, local: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("bind a loopback source address");
    socket.connect(addr(base)).await.unwrap()
}

/// Whether the server closed `stream` (EOF or reset) within `wait`; `false` if it is still open.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or similar answer before the close is fine; keep reading for the close.
            Ok(Ok(_)) => continue,
        }
    }
}

/// One `GET /health` on an open connection, keep-alive: the status code.
async fn get_health(stream: &mut TcpStream) -> u16 {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the head and the whole (small, fixed-length) body are in.
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer");
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return head[9..12].parse().unwrap();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s")
}

/// A connection that sends half a request line and then nothing is closed once the header
/// timeout passes (today it was held for minutes, unseen by the rate limiter).
#[tokio::test]
async fn a_half_sent_request_line_is_closed_after_the_header_timeout() {
    let t = TestDb::new("edge_slowloris").await;
    let base = spawn_app(
        &t,
        &[
            ("HTTP_HEADER_TIMEOUT_SECS", "1"),
            ("HTTP_IDLE_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let mut slow = connect_from(&base, [127, 0, 0, 1]).await;
    slow.write_all(b"GET /hea").await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut slow, Duration::from_secs(4)).await,
        "still open after 4 s with a 1 s header timeout"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // One that sends nothing at all is closed too.
    let mut silent = connect_from(&base, [127, 0, 0, 1]).await;
    assert!(closed_within(&mut silent, Duration::from_secs(4)).await);
    // Normal requests and keep-alive still work: two answers on one connection.
    let mut normal = connect_from(&base, [127, 0, 0, 1]).await;
    assert_eq!(get_health(&mut normal).await, 200);
    assert_eq!(get_health(&mut normal).await, 200);
    t.drop_database().await;
}

/// `MAX_CONNECTIONS_PER_CLIENT` open connections from one client are held; one more is closed
/// at once; another client still gets in.
#[tokio::test]
async fn connections_over_the_per_client_bound_are_refused_and_others_held() {
    let t = TestDb::new("edge_conns").await;
    let base = spawn_app(
        &t,
        &[
            ("MAX_CONNECTIONS_PER_CLIENT", "3"),
            ("HTTP_HEADER_TIMEOUT_SECS", "20"),
            ("HTTP_IDLE_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&base, [127, 0, 0, 5]).await);
    }
    // Give the server time to accept all three before the fourth.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = connect_from(&base, [127, 0, 0, 5]).await;
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "the fourth connection from one client is refused"
    );
    for stream in &mut held {
        assert!(!closed_within(stream, Duration::from_millis(100)).await);
        assert_eq!(get_health(stream).await, 200, "the held ones still answer");
    }
    let mut other = connect_from(&base, [127, 0, 0, 6]).await;
    assert_eq!(get_health(&mut other).await, 200, "another client gets in");
    // Once one closes, its client may connect again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from(&base, [127, 0, 0, 5]).await;
    assert_eq!(get_health(&mut again).await, 200);
    // The refusal is counted.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_connections_refused_total{reason=\"per_client\"}")),
        "{metrics}"
    );
    t.drop_database().await;
}
// ---- Finding 15: operational data and caching ----

/// A random key of 64 hex digits (production refuses weak ones).
fn random_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[tokio::test]
async fn operational_data_needs_the_ops_token_in_production() {
    let t = TestDb::new("edge_ops").await;
    let (jwt, csrf, ops, index) = (random_key(), random_key(), random_key(), random_key());
    let production = [
        ("ENVIRONMENT", "production"),
        ("JWT_SECRET", jwt.as_str()),
        ("CSRF_SECRET", csrf.as_str()),
        ("EMAIL_INDEX_KEY", index.as_str()),
    ];
    let mut with_token = production.to_vec();
    with_token.push(("OPS_TOKEN", ops.as_str()));
    let base = spawn_app(&t, &with_token).await;
    let client = Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        get("/metrics", None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/metrics", Some("not-the-ops-token-0123456789abcdef"))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let metrics = get("/metrics", Some(&ops)).await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("http_requests_total"));
    // Readiness for a load balancer without the token: the status and nothing else.
    let ready = get("/ready", None).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "status": "ready" }));
    let ready: serde_json::Value = get("/ready", Some(&ops))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ready["projections"].is_object(), "{ready}");
    let health = get("/health", None).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "status": "ok" }));

    // Production without OPS_TOKEN: no metrics at all.
    let t2 = TestDb::new("edge_ops_closed").await;
    let closed = spawn_app(&t2, &production).await;
    let response = client
        .get(format!("{closed}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    t.drop_database().await;
    t2.drop_database().await;
}

fn no_store(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("no-store"))
}

#[tokio::test]
async fn answers_with_tokens_secrets_or_personal_data_are_not_stored() {
    let t = TestDb::new("edge_nostore").await;
    let base = spawn_app(&t, &[]).await;
    let browser = Client::builder().cookie_store(true).build().unwrap();
    let signup = browser
        .post(format!("{base}/api/auth/signup"))
        .json(&serde_json::json!({
            "email": "nostore@example.com", "password": crate::helpers::PASSWORD, "name": "N S"
        }))
        .send()
        .await
        .unwrap();
    assert!(no_store(&signup), "signup");
    let login = browser
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({
            "email": "nostore@example.com", "password": crate::helpers::PASSWORD
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(no_store(&login), "login");
    let body: serde_json::Value = login.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let csrf = body["csrf_token"].as_str().unwrap_or_default().to_owned();
    let refresh = browser
        .post(format!("{base}/api/auth/refresh"))
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert!(no_store(&refresh), "refresh ({})", refresh.status());
    let bearer = Client::new();
    for (method, path) in [
        ("GET", "/api/auth/me"),
        ("GET", "/api/wallet/balance"),
        ("POST", "/api/auth/2fa/setup"),
        ("GET", "/api/transactions"),
    ] {
        let request = match method {
            "GET" => bearer.get(format!("{base}{path}")),
            _ => bearer
                .post(format!("{base}{path}"))
                .json(&serde_json::json!({})),
        };
        let response = request.bearer_auth(&token).send().await.unwrap();
        assert!(no_store(&response), "{path} ({})", response.status());
    }
    // Errors too (a 401 says who is not signed in, and may echo input).
    let response = bearer
        .get(format!("{base}/api/auth/me"))
        .send()
        .await
        .unwrap();
    assert!(no_store(&response), "401");
    t.drop_database().await;
}

/// Graceful shutdown with the own accept loop (the behaviour `axum::serve` had): a request in flight is answered, an idle
/// keep-alive connection is closed, and `run_until` returns; nothing is accepted afterwards.
#[tokio::test]
async fn shutdown_finishes_requests_closes_idle_connections_and_returns() {
    use cryptovault::config::Config;
    use cryptovault::startup::Application;
    let t = TestDb::new("edge_shutdown").await;
    let vars: std::collections::HashMap<&str, String> = [
        ("MONGO_URL", crate::helpers::mongo_url()),
        ("DB_NAME", t.name.clone()),
        ("HOST", "127.0.0.1".into()),
        ("PORT", "0".into()),
        ("JWT_SECRET", crate::helpers::TEST_JWT_SECRET.into()),
        ("CSRF_SECRET", crate::helpers::TEST_CSRF_SECRET.into()),
        (
            "EMAIL_INDEX_KEY",
            crate::helpers::TEST_EMAIL_INDEX_KEY.into(),
        ),
        ("ENVIRONMENT", "test".into()),
    ]
    .into_iter()
    .collect();
    let config = Config::from_lookup(move |name: &str| vars.get(name).cloned()).unwrap();
    let app = Application::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let mut idle = connect_from(&base, [127, 0, 0, 1]).await;
    assert_eq!(get_health(&mut idle).await, 200);
    // A request in flight at shutdown: its head half sent, the rest after the signal.
    let mut busy = connect_from(&base, [127, 0, 0, 1]).await;
    busy.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        closed_within(&mut idle, Duration::from_secs(2)).await,
        "the idle keep-alive connection is closed at shutdown"
    );
    busy.write_all(b"\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_string(&mut answer))
        .await
        .expect("the request in flight is answered and the connection closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("run_until returns once connections are done")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr(&base)).await.is_err(),
        "no longer accepting"
    );
    t.drop_database().await;
}

/// A client that pipelines requests and then stops reading their answers stalls the
/// connection: the answers fill the socket buffers and no byte moves. After
/// `HTTP_IDLE_TIMEOUT_SECS` the server closes it instead of holding it (and its slot) for good.
#[tokio::test]
async fn a_connection_whose_client_stops_reading_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const REQUESTS: usize = 400;
    let t = crate::helpers::TestDb::new("edge_idle").await;
    let base = crate::helpers::spawn_app(
        &t,
        &[
            ("HTTP_HEADER_TIMEOUT_SECS", "1"),
            ("REQUEST_TIMEOUT_SECS", "1"),
            ("HTTP_IDLE_TIMEOUT_SECS", "2"),
        ],
    )
    .await;
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    // 400 answers of the OpenAPI document (over 100 KB each) are far more than the buffers hold.
    let request = format!("GET /api/openapi.json HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.repeat(REQUESTS).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    // Now read what is there: the server has given up on the connection, so the answers end
    // (EOF or reset) before all of them arrived.
    let (mut answers, mut tail, mut closed) = (0usize, Vec::<u8>::new(), false);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer))
                .await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                tail.extend_from_slice(&buffer[..n]);
                answers += tail.windows(12).filter(|w| w == b"HTTP/1.1 200").count();
                let keep = tail.len().saturating_sub(11);
                tail.drain(..keep);
            }
            Err(_) => break,
        }
    }
    assert!(
        closed && answers < REQUESTS,
        "the stalled connection was held: {answers} of {REQUESTS} answers, closed: {closed}"
    );
    t.drop_database().await;
}
