//! The predecessor's web client against this service (issue 15): its market list
//! (`GET /api/crypto`), its background pings, its runtime configuration (`GET /api/config`) and
//! its price socket protocol on `/ws/prices`, next to the native frames.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, TestDb};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn get_text(base: &str, path: &str) -> (StatusCode, String, String) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.unwrap())
}

/// One entry of `GET /api/crypto` with its numbers as their literal JSON text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoin<'a> {
    id: String,
    symbol: String,
    name: String,
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    change_24h: &'a RawValue,
    #[serde(borrow)]
    market_cap: &'a RawValue,
    #[serde(borrow)]
    volume_24h: &'a RawValue,
    #[serde(borrow)]
    image: &'a RawValue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList<'a> {
    #[serde(borrow)]
    cryptocurrencies: Vec<RawCoin<'a>>,
}

/// The predecessor's slug and name of each default asset but USD.
const EXPECTED: [(&str, &str, &str); 6] = [
    ("USDC", "usd-coin", "USD Coin"),
    ("USDT", "tether", "Tether"),
    ("BTC", "bitcoin", "Bitcoin"),
    ("BNB", "binancecoin", "BNB"),
    ("SOL", "solana", "Solana"),
    ("ETH", "ethereum", "Ethereum"),
];

/// `GET /api/prices` quotes by asset, as their decimal strings.
fn quotes(prices: &Value) -> BTreeMap<String, String> {
    prices["prices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["asset"].as_str().unwrap().to_owned(),
                q["usd"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `/api/crypto` together with the `/api/prices` snapshot it was answered from: `/api/prices`
/// is read before and after, until both reads name the same snapshot.
async fn crypto_with_its_snapshot(base: &str) -> (String, Value) {
    for _ in 0..50 {
        let (_, _, before) = get_text(base, "/api/prices").await;
        let (status, content_type, crypto) = get_text(base, "/api/crypto").await;
        assert_eq!(status, StatusCode::OK, "{crypto}");
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let (_, _, after) = get_text(base, "/api/prices").await;
        if before == after {
            return (crypto, serde_json::from_str(&after).unwrap());
        }
    }
    panic!("the prices never stood still for three requests");
}

/// The change the client should see: from `reference` to `price`, in percent, half-even to
/// 2 places, written with 2.
fn expected_change(reference: &str, price: &str) -> String {
    let (reference, price): (Decimal, Decimal) =
        (reference.parse().unwrap(), price.parse().unwrap());
    let mut change = ((price - reference) / reference * Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
    if change.is_zero() {
        change = Decimal::ZERO;
    }
    change.rescale(2);
    change.to_string()
}

/// Asserts every field of `/api/crypto` (`text`) against `snapshot` (`GET /api/prices`);
/// returns the `change_24h` texts by symbol.
fn check_crypto(text: &str, snapshot: &Value) -> BTreeMap<String, String> {
    let quotes = quotes(snapshot);
    let list: RawList = serde_json::from_str(text).unwrap();
    let value: Value = serde_json::from_str(text).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 1, "{text}");
    assert_eq!(list.cryptocurrencies.len(), EXPECTED.len(), "{text}");
    let reference = cryptovault::prices::simulated_prices(EXPECTED.iter().map(|e| e.0), 0);
    // In the snapshot's order, every asset but USD.
    let symbols: Vec<&str> = list
        .cryptocurrencies
        .iter()
        .map(|c| c.symbol.as_str())
        .collect();
    let snapshot_order: Vec<&str> = snapshot["prices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["asset"].as_str().unwrap())
        .filter(|a| *a != "USD")
        .collect();
    assert_eq!(symbols, snapshot_order);
    let mut changes = BTreeMap::new();
    for (coin, json) in list
        .cryptocurrencies
        .iter()
        .zip(value["cryptocurrencies"].as_array().unwrap())
    {
        let symbol = coin.symbol.as_str();
        let (_, id, name) = EXPECTED
            .iter()
            .find(|e| e.0 == symbol)
            .unwrap_or_else(|| panic!("{symbol}"));
        assert_eq!(
            (coin.id.as_str(), coin.name.as_str()),
            (*id, *name),
            "{symbol}"
        );
        // JSON types: numbers and nulls.
        assert!(json["price"].is_number(), "{json}");
        assert!(json["change_24h"].is_number(), "{json}");
        for null in ["market_cap", "volume_24h", "image"] {
            assert!(json[null].is_null(), "{null}: {json}");
        }
        assert_eq!(coin.market_cap.get(), "null");
        assert_eq!(coin.volume_24h.get(), "null");
        assert_eq!(coin.image.get(), "null");
        // The price is the quote of /api/prices, digit for digit.
        assert_eq!(coin.price.get(), quotes[symbol], "{symbol}");
        // The change is from the first quote of the process (the simulated feed's start).
        let start = reference.iter().find(|q| q.asset == symbol).unwrap();
        assert_eq!(
            coin.change_24h.get(),
            expected_change(&start.usd.to_string(), coin.price.get()),
            "{symbol}"
        );
        changes.insert(symbol.to_owned(), coin.change_24h.get().to_owned());
    }
    assert!(!text.contains("\"USD\""), "{text}");
    changes
}

#[tokio::test]
async fn predecessor_crypto_lists_every_asset_with_the_exact_quote_and_its_change() {
    let t = TestDb::new("pred_crypto").await;
    // Right after start (the feed has not moved): the starting quotes, no change.
    let still = spawn_app(&t, &[("PRICE_INTERVAL_MS", "3600000")]).await;
    let (text, snapshot) = crypto_with_its_snapshot(&still).await;
    let changes = check_crypto(&text, &snapshot);
    assert!(changes.values().all(|c| c == "0.00"), "{changes:?}");
    assert!(text.contains(r#""price":60000,"#), "{text}");

    // A moving feed: the change from the first quote, exactly; dollars stay at 0.00.
    let moving = spawn_app(&t, &[("PRICE_INTERVAL_MS", "150")]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (text, snapshot) = crypto_with_its_snapshot(&moving).await;
    let changes = check_crypto(&text, &snapshot);
    assert_eq!(changes["USDT"], "0.00");
    assert_eq!(changes["USDC"], "0.00");
    assert!(
        ["BTC", "ETH", "BNB", "SOL"]
            .iter()
            .any(|s| changes[*s] != "0.00"),
        "the walk moved: {changes:?} ({text})"
    );
    t.drop_database().await;
}

#[tokio::test]
async fn predecessor_pings_answer_ok() {
    let t = TestDb::new("pred_pings").await;
    let base = spawn_app(&t, &[]).await;
    for path in ["/csrf", "/ping", "/api/ping"] {
        let response = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{path} sets nothing"
        );
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("application/json"), "{path}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"status":"ok"}"#,
            "{path}"
        );
    }
    t.drop_database().await;
}

async fn config(base: &str) -> Value {
    let (status, _, text) = get_text(base, "/api/config").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn predecessor_runtime_config_keys_are_answered_and_unset_urls_left_out() {
    let t = TestDb::new("pred_config").await;
    let plain = config(&spawn_app(&t, &[]).await).await;
    // The native keys are all still there.
    for key in [
        "assets",
        "limits",
        "features",
        "access_token_ttl_secs",
        "environment",
    ] {
        assert!(plain.get(key).is_some(), "{key}: {plain}");
    }
    assert_eq!(plain["environment"], "test");
    assert_eq!(plain["socketIoPath"], "/socket.io");
    assert_eq!(plain["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(plain["preferRelativeApi"], false);
    assert_eq!(
        plain["sentry"],
        serde_json::json!({"enabled": false, "dsn": null, "environment": "test"})
    );
    for key in ["appUrl", "apiBaseUrl", "wsBaseUrl"] {
        assert!(
            plain.get(key).is_none(),
            "{key} is left out when unset: {plain}"
        );
    }

    let derived = config(
        &spawn_app(
            &t,
            &[
                ("APP_URL", "https://app.example.com"),
                ("PUBLIC_API_URL", "https://api.example.com"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(derived["appUrl"], "https://app.example.com");
    assert_eq!(derived["apiBaseUrl"], "https://api.example.com");
    assert_eq!(derived["wsBaseUrl"], "wss://api.example.com");

    let plain_http =
        config(&spawn_app(&t, &[("PUBLIC_API_URL", "http://127.0.0.1:8000")]).await).await;
    assert_eq!(plain_http["wsBaseUrl"], "ws://127.0.0.1:8000");
    assert!(plain_http.get("appUrl").is_none(), "{plain_http}");

    let explicit = config(
        &spawn_app(
            &t,
            &[
                ("PUBLIC_API_URL", "https://api.example.com"),
                ("PUBLIC_WS_URL", "wss://live.example.com"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(explicit["apiBaseUrl"], "https://api.example.com");
    assert_eq!(explicit["wsBaseUrl"], "wss://live.example.com");

    // Only a WebSocket URL: the API base stays the client's own.
    let ws_only = config(&spawn_app(&t, &[("PUBLIC_WS_URL", "ws://localhost:9000")]).await).await;
    assert_eq!(ws_only["wsBaseUrl"], "ws://localhost:9000");
    assert!(ws_only.get("apiBaseUrl").is_none(), "{ws_only}");
    t.drop_database().await;
}

async fn connect(base: &str) -> Socket {
    let url = format!("{}/ws/prices", base.replacen("http://", "ws://", 1));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next JSON text frame within `wait`; `None` when none comes (or the socket ends).
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

/// Every JSON text frame that arrives within `wait`.
async fn frames_for(socket: &mut Socket, wait: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut frames = Vec::new();
    while let Some(frame) = next_json(socket, deadline - tokio::time::Instant::now()).await {
        frames.push(frame);
    }
    frames
}

/// The keys of the object `frame`, sorted.
fn keys(frame: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = frame
        .as_object()
        .unwrap_or_else(|| panic!("{frame}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn assert_native(frame: &Value) {
    assert_eq!(
        keys(frame),
        ["as_of", "degraded", "prices", "source"],
        "{frame}"
    );
}

async fn send_text(socket: &mut Socket, text: &str) {
    socket.send(Message::Text(text.into())).await.unwrap();
}

#[tokio::test]
async fn ws_prices_native_clients_keep_their_snapshots_and_never_get_a_typed_frame() {
    let t = TestDb::new("pred_ws_native").await;
    let still = spawn_app(&t, &[("PRICE_INTERVAL_MS", "3600000")]).await;
    let (_, _, prices) = get_text(&still, "/api/prices").await;
    let prices: Value = serde_json::from_str(&prices).unwrap();
    let mut socket = connect(&still).await;
    let first = next_json(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(first, prices, "the snapshot of GET /api/prices");
    assert_native(&first);
    // Garbage, unknown types, other shapes, binary: never a typed frame, never a close.
    for garbage in [
        "not json",
        "{",
        r#"{"type":"subscribe","assets":["btc"]}"#,
        r#"["ping"]"#,
        r#"{"type":42}"#,
    ] {
        send_text(&mut socket, garbage).await;
    }
    socket
        .send(Message::Binary(b"{\"type\":\"ping\"}".to_vec().into()))
        .await
        .unwrap();
    for frame in frames_for(&mut socket, Duration::from_millis(800)).await {
        assert_native(&frame);
        assert_eq!(frame, prices);
    }
    // Still open: a ping is answered.
    send_text(&mut socket, r#"{"type":"ping"}"#).await;
    let frames = frames_for(&mut socket, Duration::from_millis(800)).await;
    assert!(
        frames.iter().any(|f| f["type"] == "pong"),
        "the socket survived the garbage: {frames:?}"
    );

    // A moving feed: only native frames, one per change, in order.
    let moving = spawn_app(&t, &[("PRICE_INTERVAL_MS", "150")]).await;
    let mut socket = connect(&moving).await;
    let frames = frames_for(&mut socket, Duration::from_millis(1500)).await;
    assert!(frames.len() >= 4, "{frames:?}");
    frames.iter().for_each(assert_native);
    for pair in frames.windows(2) {
        assert!(
            pair[0]["as_of"].as_str() < pair[1]["as_of"].as_str(),
            "{pair:?}"
        );
    }
    socket.send(Message::Close(None)).await.unwrap();
    t.drop_database().await;
}

/// The `prices` of a native frame as the typed frame keys them: lower-case code → decimal.
fn lower_case_quotes(native: &Value) -> Value {
    Value::Object(
        quotes(native)
            .into_iter()
            .map(|(asset, usd)| (asset.to_ascii_lowercase(), Value::String(usd)))
            .collect(),
    )
}

#[tokio::test]
async fn ws_prices_speaks_the_predecessors_protocol_after_a_ping() {
    let t = TestDb::new("pred_ws_legacy").await;
    let base = spawn_app(&t, &[("PRICE_INTERVAL_MS", "200")]).await;
    let mut socket = connect(&base).await;
    let first = next_json(&mut socket, Duration::from_secs(5))
        .await
        .unwrap();
    assert_native(&first);

    // The old client's first ping: pong, then status once, then a price update at once (its
    // "live" badge), and from then on one with every native snapshot.
    send_text(&mut socket, r#"{"type":"ping"}"#).await;
    let frames = frames_for(&mut socket, Duration::from_millis(1500)).await;
    let kinds: Vec<&str> = frames
        .iter()
        .map(|f| f.get("type").and_then(Value::as_str).unwrap_or("native"))
        .collect();
    let position = |kind: &str| kinds.iter().position(|k| *k == kind);
    let (pong, status, update) = (
        position("pong").unwrap_or_else(|| panic!("{kinds:?}")),
        position("status").unwrap_or_else(|| panic!("{kinds:?}")),
        position("price_update").unwrap_or_else(|| panic!("{kinds:?}")),
    );
    assert!(pong < status && status < update, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "status").count(), 1);
    assert!(
        kinds.iter().filter(|k| **k == "price_update").count() >= 3,
        "an update with every change: {kinds:?}"
    );
    let status_frame = &frames[status];
    assert_eq!(status_frame["status"], "connected");
    assert_eq!(status_frame["source"], "simulated");
    assert!(frames[pong]["timestamp"].is_string());

    // Every price update carries the quotes of the native snapshot of its instant, as
    // lower-case codes and decimal strings; every native snapshot of the connection has its
    // update after the ping.
    let natives: BTreeMap<String, &Value> = frames
        .iter()
        .filter(|f| f.get("type").is_none())
        .map(|f| {
            assert_native(f);
            (f["as_of"].as_str().unwrap().to_owned(), f)
        })
        .collect();
    let mut checked = 0;
    for update in frames.iter().filter(|f| f["type"] == "price_update") {
        assert_eq!(
            keys(update),
            ["prices", "source", "timestamp", "type"],
            "{update}"
        );
        assert_eq!(update["source"], "simulated");
        let prices = update["prices"].as_object().unwrap();
        assert_eq!(prices.len(), quotes(&first).len(), "{update}");
        for (key, value) in prices {
            assert_eq!(key, &key.to_ascii_lowercase());
            let text = value.as_str().unwrap_or_else(|| panic!("{update}"));
            text.parse::<Decimal>().unwrap();
        }
        let timestamp = update["timestamp"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(timestamp).unwrap();
        let native = natives
            .get(timestamp)
            .copied()
            .or_else(|| (first["as_of"] == timestamp).then_some(&first))
            .unwrap_or_else(|| panic!("no native snapshot of {timestamp}"));
        assert_eq!(update["prices"], lower_case_quotes(native), "{update}");
        checked += 1;
    }
    assert!(checked >= 3);

    // Each later ping: a pong and an update at once, no second status. Garbage is ignored.
    send_text(&mut socket, "garbage").await;
    send_text(&mut socket, r#"{"type":"ping"}"#).await;
    let frames = frames_for(&mut socket, Duration::from_millis(700)).await;
    assert!(frames.iter().any(|f| f["type"] == "pong"), "{frames:?}");
    assert!(frames.iter().any(|f| f["type"] == "price_update"));
    assert!(!frames.iter().any(|f| f["type"] == "status"), "{frames:?}");
    socket.send(Message::Close(None)).await.unwrap();
    t.drop_database().await;
}
