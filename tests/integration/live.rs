//! Live data: prices (simulated, CoinCap adapter against a loopback stand-in, degradation),
//! `/ws/prices`, `/ws/account` (own updates only), and `GET /api/config`.

use std::time::Duration;

use axum::routing::get;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{post, signed_up, spawn_app, TestDb, TestUser};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    base: &str,
    path: &str,
    user: Option<&TestUser>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("{}{path}", base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    if let Some(user) = user {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", user.token).parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next JSON text message, if one arrives within `wait`.
async fn next_json(socket: &mut Socket, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = message {
            return Some(serde_json::from_str(&text).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ws_account_pushes_own_updates_and_nothing_of_others() {
    let t = TestDb::new("ws_account").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let bob = signed_up(&base, "bob@example.com").await;
    signed_up(&base, "carol@example.com").await;
    let (status, _) = post(
        &base,
        &alice,
        "/api/wallet/deposits",
        json!({"asset": "BTC", "amount": "2"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    assert!(
        connect(&base, "/ws/account", None).await.is_err(),
        "anonymous sockets are refused"
    );
    // With the session cookie, only from this site or an allowed origin (no CSWSH).
    let with_cookie = |origin: &str| {
        let mut request = format!("{}/ws/account", base.replacen("http://", "ws://", 1))
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "cookie",
            format!("access_token={}", alice.token).parse().unwrap(),
        );
        headers.insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    assert!(
        with_cookie("https://evil.example").await.is_err(),
        "cross-site socket refused"
    );
    let mut same_site = with_cookie(&base)
        .await
        .expect("same-origin socket accepted")
        .0;
    let first = next_json(&mut same_site, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first["type"], "balance");
    let mut alices = connect(&base, "/ws/account", Some(&alice)).await.unwrap();
    let mut bobs = connect(&base, "/ws/account", Some(&bob)).await.unwrap();
    let first = next_json(&mut alices, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first["type"], "balance");
    let initial_bob = next_json(&mut bobs, Duration::from_secs(5)).await.unwrap();
    assert_eq!(initial_bob["type"], "balance");

    let (status, sent) = post(
        &base,
        &alice,
        "/api/wallet/transfers",
        json!({"to_email": "carol@example.com", "asset": "BTC", "amount": "0.5"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let transfer_id = sent["transfer"]["id"].as_str().unwrap();
    let (mut saw_transaction, mut saw_balance) = (false, false);
    while !(saw_transaction && saw_balance) {
        let message = next_json(&mut alices, Duration::from_secs(5))
            .await
            .expect("the update arrives within 5 s");
        match message["type"].as_str().unwrap() {
            // The deposit's row may be projected after the socket opened: Alice's own news too.
            "transaction" if message["transaction"]["type"] == "deposit" => {}
            "transaction" => {
                assert_eq!(message["transaction"]["id"], transfer_id);
                assert_eq!(message["transaction"]["type"], "transfer_out");
                saw_transaction = true;
            }
            "balance" => {
                let btc = message["balances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|b| b["asset"] == "BTC")
                    .unwrap()
                    .clone();
                if btc["available"] == "1.50000000" {
                    saw_balance = true;
                }
            }
            other => panic!("unexpected message {other}: {message}"),
        }
    }
    // Bob is not part of the transfer: nothing of it reaches him.
    assert_eq!(next_json(&mut bobs, Duration::from_millis(700)).await, None);
    alices.send(Message::Close(None)).await.unwrap();
    t.drop_database().await;
}

#[tokio::test]
async fn prices_are_served_and_streamed_and_config_is_public() {
    let t = TestDb::new("prices").await;
    let base = spawn_app(&t, &[("PRICE_INTERVAL_MS", "100")]).await;
    let prices: Value = reqwest::get(format!("{base}/api/prices"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prices["source"], "simulated");
    assert_eq!(prices["degraded"], false);
    let quotes = prices["prices"].as_array().unwrap();
    assert_eq!(quotes.len(), 7, "USD, USDC, USDT, BTC, BNB, SOL, ETH");
    assert!(quotes
        .iter()
        .any(|q| q["asset"] == "USD" && q["usd"] == "1"));
    assert!(quotes.iter().all(|q| q["usd"].is_string()));

    let mut socket = connect(&base, "/ws/prices", None).await.unwrap();
    let a = next_json(&mut socket, Duration::from_secs(3))
        .await
        .unwrap();
    let b = next_json(&mut socket, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(b["as_of"].as_str() > a["as_of"].as_str(), "{a} then {b}");

    let config: Value = reqwest::get(format!("{base}/api/config"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let assets = config["assets"].as_array().unwrap();
    assert!(assets.contains(&json!({"asset": "ETH", "precision": 18})));
    assert_eq!(
        config["limits"]["rate_limits_per_minute"]["per_user"],
        100_000
    );
    assert_eq!(config["features"]["price_feed"], "simulated");
    let text = config.to_string();
    assert!(!text.contains("test-jwt-secret") && !text.contains("test-csrf-secret"));
    t.drop_database().await;
}

#[tokio::test]
async fn the_coincap_adapter_reads_quotes_and_degrades_when_unreachable() {
    // A loopback stand-in for CoinCap's `GET /v2/assets`.
    let fake = axum::Router::new().route(
        "/v2/assets",
        get(|| async {
            axum::Json(json!({"data": [
                {"id": "bitcoin", "symbol": "BTC", "priceUsd": "91234.5678901234"},
                {"id": "ethereum", "symbol": "ETH", "priceUsd": "3100.10"},
                {"id": "binance-coin", "symbol": "BNB", "priceUsd": "610.5"},
                {"id": "solana", "symbol": "SOL", "priceUsd": "140.25"},
                {"id": "tether", "symbol": "USDT", "priceUsd": "1.0001"}
            ]}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_url = format!("http://{}/v2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, fake).await.unwrap() });

    let t = TestDb::new("coincap").await;
    let base = spawn_app(
        &t,
        &[
            ("PRICE_FEED", "coincap"),
            ("COINCAP_URL", &fake_url),
            ("PRICE_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let mut prices = Value::Null;
    for _ in 0..50 {
        prices = reqwest::get(format!("{base}/api/prices"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if prices["source"] == "coincap" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(prices["source"], "coincap", "{prices}");
    let btc = prices["prices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["asset"] == "BTC")
        .unwrap()
        .clone();
    assert_eq!(btc["usd"], "91234.56789012");

    // Nothing listens on this port: the simulated feed answers, marked degraded.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/v2", closed.local_addr().unwrap());
    drop(closed);
    let t2 = TestDb::new("coincap_down").await;
    let base = spawn_app(
        &t2,
        &[
            ("PRICE_FEED", "coincap"),
            ("COINCAP_URL", &dead_url),
            ("PRICE_INTERVAL_MS", "100"),
        ],
    )
    .await;
    // The first snapshot exists before any fetch; wait for one produced by a failed fetch.
    let first: Value = reqwest::get(format!("{base}/api/prices"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut prices = first.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        prices = reqwest::get(format!("{base}/api/prices"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if prices["as_of"] != first["as_of"] {
            break;
        }
    }
    assert_ne!(prices["as_of"], first["as_of"], "a refresh happened");
    assert_eq!(prices["source"], "simulated", "{prices}");
    assert_eq!(prices["degraded"], true);
    assert_eq!(prices["prices"].as_array().unwrap().len(), 7);
    t.drop_database().await;
    t2.drop_database().await;
}

#[tokio::test]
async fn an_account_socket_closes_when_its_access_token_expires() {
    let t = TestDb::new("ws_expiry").await;
    let base = spawn_app(&t, &[("ACCESS_TOKEN_TTL_SECS", "2")]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let mut socket = connect(&base, "/ws/account", Some(&alice)).await.unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(2))
            .await
            .unwrap()["type"],
        "balance"
    );
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the socket closes within the token's lifetime plus slack");
    let frame = closed.expect("a close frame with a reason");
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("expired"));
    t.drop_database().await;
}
