//! Issue 15: one browser session of the predecessor's web client, end to end, as its pages
//! drive it (`predecessor-api.md`): page-load traffic, sign-up and login, a deposit, the
//! dashboard's portfolio value and latest transactions, a P2P transfer, the transfer and
//! transaction lists with offsets, a withdrawal request, live prices over `/ws/prices`, an
//! access token that expires mid-session (the refresh interceptor), and logout. Cookies and
//! `X-CSRF-Token` only; the session moves between two service instances on one database, as
//! behind a load balancer.

use std::collections::HashSet;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::browser::{number_text, Answer, Browser};
use super::helpers::{spawn_app, TestDb};

/// Access tokens that expire during the test, so the refresh interceptor has to run.
const ACCESS_TTL_SECS: u64 = 3;

/// What every page load sends before anything else; each answers 200 (or, for `me` before
/// login, 401 after a refresh that fails — the client then shows the login page).
async fn page_load(browser: &Browser) -> Answer {
    for path in ["/api/config", "/csrf", "/api/crypto", "/api/ping", "/ping"] {
        let answer = browser.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {answer:?}");
    }
    browser.get("/api/auth/me").await
}

fn ids(answer: &Answer, list: &str) -> Vec<String> {
    answer.json[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {answer:?}"))
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_session_of_the_old_client_end_to_end() {
    let t = TestDb::new("pred_session").await;
    let ttl = ACCESS_TTL_SECS.to_string();
    let settings = [("ACCESS_TOKEN_TTL_SECS", ttl.as_str())];
    let (a, b) = (
        spawn_app(&t, &settings).await,
        spawn_app(&t, &settings).await,
    );
    let alice = Browser::new(&a);
    let me = page_load(&alice).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{me:?}");
    alice.sign_up_and_log_in("alice@example.com", "Alice").await;
    let me = page_load(&alice.at(&b)).await;
    assert_eq!(me.status, StatusCode::OK, "{me:?}");
    assert_eq!(me.json["user"]["email"], "alice@example.com");
    let bob = Browser::new(&b);
    bob.sign_up_and_log_in("bob@example.com", "Bob").await;

    // Deposit page: four invoices of USD, paid in different currencies.
    for (amount, currency) in [
        ("100", "btc"),
        ("20.50", "eth"),
        ("10", "usdt"),
        ("15.25", "usdc"),
    ] {
        let body = format!(r#"{{"amount": {amount}, "currency": "{currency}"}}"#);
        let deposit = alice.post("/api/wallet/deposit/create", &body).await;
        assert_eq!(deposit.status, StatusCode::CREATED, "{deposit:?}");
        assert_eq!(number_text(&deposit.text, "/amount"), amount);
    }

    // Dashboard: the portfolio is worth the deposits; the latest five transactions.
    let portfolio = alice
        .at(&b)
        .eventually("/api/portfolio", |a| {
            a.json["portfolio"]["totalBalance"].as_f64() == Some(145.75)
        })
        .await;
    assert_eq!(
        number_text(&portfolio.text, "/portfolio/totalBalance"),
        "145.75"
    );
    let latest = alice.get("/api/transactions?skip=0&limit=5").await;
    assert_eq!(latest.status, StatusCode::OK, "{latest:?}");
    let rows = latest.json["transactions"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{latest:?}");
    for row in rows {
        assert_eq!(row["type"], "deposit");
        assert!(row["id"].is_string() && row["amount"].is_number());
        chrono::DateTime::parse_from_rfc3339(row["createdAt"].as_str().unwrap()).unwrap();
    }
    assert_eq!(latest.json["total"], 4);
    // Newest first: the last invoice.
    assert_eq!(number_text(&latest.text, "/transactions/0/amount"), "15.25");

    // P2P: the page checks the available amount, then sends.
    let wallet = alice.at(&b).get("/api/wallet/balance").await;
    assert_eq!(number_text(&wallet.text, "/wallet/balances/USD"), "145.75");
    let sent = alice
        .at(&b)
        .post(
            "/api/wallet/transfer",
            r#"{"recipient_email":"bob@example.com","amount":45.75,"currency":"USD","note":"rent"}"#,
        )
        .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{sent:?}");
    assert!(sent.json["message"].is_string());
    let transfers = alice
        .eventually("/api/wallet/transfers?skip=0&limit=50", |a| {
            a.json["total"] == 1
        })
        .await;
    let transfer = &transfers.json["transfers"][0];
    assert_eq!(transfer["direction"], "sent");
    assert_eq!(transfer["currency"], "USD");
    assert_eq!(transfer["note"], "rent");
    assert_eq!(transfer["otherParty"]["email"], "bob@example.com");
    assert_eq!(transfer["otherParty"]["name"], "Bob");
    assert_eq!(number_text(&transfers.text, "/transfers/0/amount"), "45.75");
    let received = bob
        .at(&a)
        .eventually("/api/wallet/transfers?skip=0&limit=50", |a| {
            a.json["total"] == 1
        })
        .await;
    assert_eq!(received.json["transfers"][0]["direction"], "received");
    assert_eq!(
        received.json["transfers"][0]["otherParty"]["email"],
        "alice@example.com"
    );

    // Withdraw page: a pending request, listed as a negative amount.
    let withdraw = alice
        .post(
            "/api/wallet/withdraw",
            r#"{"amount":30,"currency":"usd","address":"bc1qexampleaddress000000"}"#,
        )
        .await;
    assert_eq!(withdraw.status, StatusCode::CREATED, "{withdraw:?}");
    let withdrawals = alice
        .at(&b)
        .eventually("/api/transactions?skip=0&limit=20&type=withdraw", |a| {
            a.json["total"] == 1
        })
        .await;
    assert_eq!(withdrawals.json["transactions"][0]["status"], "pending");
    assert_eq!(
        number_text(&withdrawals.text, "/transactions/0/amount"),
        "-30.00"
    );

    // Transactions page: pages of two by offset neither skip nor repeat a row.
    let all = alice.get("/api/transactions?skip=0&limit=20").await;
    assert_eq!(all.json["total"], 6, "{all:?}");
    let mut seen = Vec::new();
    for skip in (0..6).step_by(2) {
        let page = alice
            .at(if skip % 4 == 0 { &a } else { &b })
            .get(&format!("/api/transactions?skip={skip}&limit=2"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        seen.extend(ids(&page, "transactions"));
    }
    assert_eq!(seen, ids(&all, "transactions"));
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 6);
    let transfer_rows = alice
        .get("/api/transactions?skip=0&limit=20&type=transfer")
        .await;
    assert_eq!(transfer_rows.json["total"], 1);
    assert_eq!(
        number_text(&transfer_rows.text, "/transactions/0/amount"),
        "-45.75"
    );

    // Live prices: the page's socket pings on open and acts on `price_update`.
    let url = format!("{}/ws/prices", a.replacen("http://", "ws://", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
        .send(Message::Text(r#"{"type":"ping"}"#.into()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut types = HashSet::new();
    let mut btc = None;
    while btc.is_none() {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a price_update within 10 s")
            .unwrap()
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if let Some(kind) = frame["type"].as_str() {
            types.insert(kind.to_owned());
            if kind == "price_update" {
                btc = frame["prices"]["btc"].as_str().map(str::to_owned);
            }
        }
    }
    assert!(types.contains("pong"), "{types:?}");
    btc.unwrap().parse::<rust_decimal::Decimal>().unwrap();

    // The access token expires; the next call is refused, refreshed once, and replayed.
    tokio::time::sleep(Duration::from_secs(ACCESS_TTL_SECS + 1)).await;
    let before = alice.refreshes();
    let after_expiry = alice.at(&b).get("/api/portfolio").await;
    assert_eq!(after_expiry.status, StatusCode::OK, "{after_expiry:?}");
    assert_eq!(alice.refreshes(), before + 1);
    let still = alice
        .post(
            "/api/wallet/transfer",
            r#"{"recipient_email":"bob@example.com","amount":0.25,"currency":"usd"}"#,
        )
        .await;
    assert_eq!(still.status, StatusCode::CREATED, "{still:?}");

    // Logout ends the session on every instance.
    let logout = alice
        .call(reqwest::Method::POST, "/api/auth/logout", None)
        .await;
    assert_eq!(logout.status, StatusCode::OK, "{logout:?}");
    let gone = alice.at(&b).get("/api/auth/me").await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{gone:?}");
    t.drop_database().await;
}
