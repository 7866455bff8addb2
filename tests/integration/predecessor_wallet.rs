//! Issue 15: the predecessor's web client's wallet calls (`predecessor-api.md` §3), replayed as
//! it sends them — cookies and `X-CSRF-Token` only, JSON-number amounts, lower-case currencies —
//! over two service instances on one database. Every field the client reads is asserted with
//! its JSON type and exact value (digits read from the raw answer text), and every rejection
//! writes nothing.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;

use super::browser::{number_text, Browser};
use super::helpers::{event_count, spawn_app, TestDb};

fn decimal(text: &str) -> Decimal {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_clients_wallet_calls_work_with_cookies_and_exact_numbers() {
    let t = TestDb::new("pred_wallet").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    let alice = Browser::new(&a);
    let login = alice.sign_up_and_log_in("alice@example.com", "Alice").await;
    // §2: `user` with `createdAt` ("Member since").
    let user = &login.json["user"];
    assert!(
        user["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok(),
        "{user}"
    );
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["name"], "Alice");
    let created_at = user["createdAt"].as_str().expect("createdAt is a string");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("createdAt is RFC 3339");
    let me = alice.at(&b).get("/api/auth/me").await;
    assert_eq!(me.json["user"]["createdAt"], created_at, "{me:?}");
    let bob = Browser::new(&b);
    bob.sign_up_and_log_in("bob@example.com", "Bob").await;

    // Deposit: a USD invoice "paid" in btc, the amount a JSON number.
    let deposit = alice
        .post(
            "/api/wallet/deposit/create",
            r#"{"amount": 100.25, "currency": "btc"}"#,
        )
        .await;
    assert_eq!(deposit.status, StatusCode::CREATED, "{deposit:?}");
    assert_eq!(number_text(&deposit.text, "/amount"), "100.25");
    assert_eq!(deposit.json["currency"], "btc");
    assert_eq!(deposit.json["success"], true);
    assert_eq!(deposit.json["mock"], true);
    assert_eq!(deposit.json["status"], "completed");
    assert!(deposit.json["orderId"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .is_ok());
    assert!(deposit.json["payAddress"].is_null() && deposit.json["paymentUrl"].is_null());
    assert_eq!(deposit.json["deposit"]["asset"], "USD");
    assert_eq!(deposit.json["deposit"]["amount"], "100.25");

    // An ETH amount no f64 holds, deposited natively, sent on with the old call as a number.
    let native = alice
        .post(
            "/api/wallet/deposits",
            r#"{"asset": "ETH", "amount": "1.000000000000000002"}"#,
        )
        .await;
    assert_eq!(native.status, StatusCode::CREATED, "{native:?}");

    // The P2P page reads `wallet.balances` (available amounts, numbers) on the other instance.
    let balance = alice
        .at(&b)
        .eventually("/api/wallet/balance", |a| {
            a.json["wallet"]["balances"]["ETH"].is_number()
                && a.json["wallet"]["balances"]["USD"].as_f64() == Some(100.25)
                && a.json["wallet"]["balances"]["ETH"].as_f64() == Some(1.0)
        })
        .await;
    assert_eq!(
        number_text(&balance.text, "/wallet/balances/ETH"),
        "1.000000000000000002"
    );
    assert_eq!(number_text(&balance.text, "/wallet/balances/USD"), "100.25");
    assert_eq!(
        number_text(&balance.text, "/wallet/balances/USDC"),
        "0.000000"
    );
    // The native keys are all still there.
    assert!(balance.json["balances"].is_array() && balance.json["position"].is_u64());

    // Transfer: upper-case currency, number amount, a note; the page shows `message`.
    let transfer = alice
        .post(
            "/api/wallet/transfer",
            r#"{"recipient_email": "bob@example.com", "amount": 0.000000000000000001, "currency": "ETH", "note": "dust"}"#,
        )
        .await;
    assert_eq!(transfer.status, StatusCode::CREATED, "{transfer:?}");
    assert!(transfer.json["message"]
        .as_str()
        .unwrap()
        .contains("bob@example.com"));
    assert_eq!(
        number_text(&transfer.text, "/transfer/amount"),
        "0.000000000000000001"
    );
    let usd = alice
        .post(
            "/api/wallet/transfer",
            r#"{"recipient_email": "bob@example.com", "amount": 25.5, "currency": "usd"}"#,
        )
        .await;
    assert_eq!(usd.status, StatusCode::CREATED, "{usd:?}");
    let bobs = bob
        .at(&a)
        .eventually("/api/wallet/balance", |a| {
            a.json["wallet"]["balances"]["USD"].as_f64() == Some(25.5)
                && a.json["wallet"]["balances"]["ETH"].as_f64() > Some(0.0)
        })
        .await;
    assert_eq!(number_text(&bobs.text, "/wallet/balances/USD"), "25.50");
    assert_eq!(
        number_text(&bobs.text, "/wallet/balances/ETH"),
        "0.000000000000000001"
    );

    // Withdraw: lower-case currency, an address of at least 20 characters; success only.
    let withdraw = alice
        .post(
            "/api/wallet/withdraw",
            r#"{"amount": 10.05, "currency": "usd", "address": "0x1234567890abcdef1234"}"#,
        )
        .await;
    assert_eq!(withdraw.status, StatusCode::CREATED, "{withdraw:?}");
    assert_eq!(withdraw.json["success"], true);
    assert_eq!(withdraw.json["withdrawal"]["status"], "pending");
    assert_eq!(number_text(&withdraw.text, "/withdrawal/amount"), "10.05");

    // Portfolio: available + held, valued at the quote it names, and a total that adds up.
    let portfolio = alice
        .at(&b)
        .eventually("/api/portfolio", |a| {
            a.json["portfolio"]["holdings"].as_array().is_some_and(|h| {
                h.iter()
                    .any(|h| h["symbol"] == "USD" && h["amount"].as_f64() == Some(74.75))
            })
        })
        .await;
    let holdings = portfolio.json["portfolio"]["holdings"].as_array().unwrap();
    assert_eq!(holdings.len(), 2, "{portfolio:?}");
    let mut total = Decimal::ZERO;
    for (i, holding) in holdings.iter().enumerate() {
        let field =
            |name: &str| number_text(&portfolio.text, &format!("/portfolio/holdings/{i}/{name}"));
        let (amount, price, value) = (
            decimal(&field("amount")),
            decimal(&field("price")),
            decimal(&field("value")),
        );
        assert!(holding["symbol"].is_string() && holding["name"].is_string());
        assert_eq!(
            value,
            (amount * price)
                .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven),
            "{holding}"
        );
        total += value;
        match holding["symbol"].as_str().unwrap() {
            // 100.25 − 25.50 sent; the 10.05 withdrawal is held, still Alice's.
            "USD" => assert_eq!(field("amount"), "74.75"),
            "ETH" => assert_eq!(field("amount"), "1.000000000000000001"),
            other => panic!("unexpected holding {other}"),
        }
    }
    assert_eq!(
        decimal(&number_text(&portfolio.text, "/portfolio/totalBalance")),
        total
    );
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rejected_old_client_call_is_a_clear_error_and_writes_nothing() {
    let t = TestDb::new("pred_wallet_reject").await;
    let base = spawn_app(&t, &[]).await;
    let alice = Browser::new(&base);
    alice.sign_up_and_log_in("alice@example.com", "Alice").await;
    Browser::new(&base)
        .sign_up_and_log_in("bob@example.com", "Bob")
        .await;
    let funded = alice
        .post(
            "/api/wallet/deposit/create",
            r#"{"amount": 50, "currency": "usdc"}"#,
        )
        .await;
    assert_eq!(funded.status, StatusCode::CREATED, "{funded:?}");
    let written = event_count(&t).await;

    let cases: &[(&str, &str, StatusCode, &str, &str)] = &[
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 1e3, "currency": "btc"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": -20, "currency": "btc"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 0, "currency": "btc"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 9.99, "currency": "btc"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 10.001, "currency": "btc"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": "ten", "currency": "btc"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 20, "currency": "doge"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "currency",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 20}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "currency",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 20, "currency": "btc", "extra": 1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "extra",
        ),
        (
            "/api/wallet/deposit/create",
            r#"[20, "btc"]"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "body",
        ),
        (
            "/api/wallet/deposit/create",
            r#"{"amount": 20, "currency": "btc""#,
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "",
        ),
        (
            "/api/wallet/transfer",
            r#"{"recipient_email": "nobody@example.com", "amount": 1, "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "recipient_email",
        ),
        (
            "/api/wallet/transfer",
            r#"{"recipient_email": "alice@example.com", "amount": 1, "currency": "USDC"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "",
        ),
        (
            "/api/wallet/transfer",
            r#"{"recipient_email": "bob@example.com", "amount": 50.01, "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
            "",
        ),
        (
            "/api/wallet/transfer",
            r#"{"recipient_email": "bob@example.com", "amount": 0.001, "currency": "USD"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/transfer",
            r#"{"recipient_email": "bob@example.com", "amount": 1, "currency": "USDC", "note": 5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "note",
        ),
        (
            "/api/wallet/withdraw",
            r#"{"amount": 1, "currency": "usdc", "address": ""}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "address",
        ),
        (
            "/api/wallet/withdraw",
            r#"{"amount": 1E2, "currency": "usdc", "address": "0x1234567890abcdef1234"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "amount",
        ),
        (
            "/api/wallet/withdraw",
            r#"{"amount": 60, "currency": "usd", "address": "0x1234567890abcdef1234"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
            "",
        ),
    ];
    for (path, body, status, code, field) in cases {
        let answer = alice.post(path, body).await;
        assert_eq!(answer.status, *status, "{path} {body}: {answer:?}");
        assert_eq!(
            answer.json["error"]["code"], *code,
            "{path} {body}: {answer:?}"
        );
        let message = answer.json["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{path} {body}: {message}");
    }
    // Cookies without the CSRF header: refused before anything runs.
    let no_csrf = alice
        .send(
            reqwest::Method::POST,
            "/api/wallet/transfer",
            Some(r#"{"recipient_email": "bob@example.com", "amount": 1, "currency": "USDC"}"#),
            &[("X-CSRF-Token", "forged")],
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN, "{no_csrf:?}");
    assert_eq!(no_csrf.json["error"]["code"], "csrf_failed");
    assert_eq!(
        event_count(&t).await,
        written,
        "a rejected call wrote events"
    );

    // An Idempotency-Key works as on the native routes: one transfer, the same answer (with
    // its exact digits) again, another body under the key 409.
    let send = |body: &'static str| {
        let alice = alice.clone();
        async move {
            alice
                .send(
                    reqwest::Method::POST,
                    "/api/wallet/transfer",
                    Some(body),
                    &[("Idempotency-Key", "pay-bob-1")],
                )
                .await
        }
    };
    let body = r#"{"recipient_email": "bob@example.com", "amount": 1.01, "currency": "USD"}"#;
    let first = send(body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let written = event_count(&t).await;
    let again = send(body).await;
    assert_eq!((again.status, &again.text), (first.status, &first.text));
    assert_eq!(number_text(&again.text, "/transfer/amount"), "1.01");
    let other =
        send(r#"{"recipient_email": "bob@example.com", "amount": 2, "currency": "USD"}"#).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{other:?}");
    assert_eq!(event_count(&t).await, written, "a replay wrote events");

    // With DEPOSITS_MODE=provider the old deposit is refused like the native one.
    let provider = spawn_app(
        &t,
        &[
            ("DEPOSITS_MODE", "provider"),
            (
                "DEPOSIT_WEBHOOK_SECRET",
                "test-webhook-secret-0123456789abcdef0123",
            ),
        ],
    )
    .await;
    let refused = alice
        .at(&provider)
        .post(
            "/api/wallet/deposit/create",
            r#"{"amount": 20, "currency": "btc"}"#,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    assert_eq!(event_count(&t).await, written);
    let _: Value = refused.json;
    t.drop_database().await;
}
