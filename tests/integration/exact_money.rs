//! Exact money end to end: balances past the 28 digits of a `rust_decimal` (and past the 34 of
//! MongoDB's `Decimal128` at 18 decimals) are exact in every answer — balance, read model,
//! statements (CSV and JSON), `as_of` — the last wei cannot be spent twice, and a result that
//! cannot be held is refused with 422 `balance_limit` without writing anything.

use bson::doc;
use chrono::{SecondsFormat, Utc};
use cryptovault::store::{AppendBatch, ExpectedVersion};
use cryptovault_events::ledger::{credits_stream, FundsDeposited};
use cryptovault_events::{DomainEvent, EventMetadata};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    admin, balance, event_count, get_json, position, post, signed_up, spawn_app,
    wait_for_projection, TestDb, TestUser,
};

/// The largest ETH amount under the default `MAX_AMOUNT` (1e9) at 18 decimals.
const BIG: &str = "999999999.999999999999999999";
/// 85 × [`BIG`], exactly (a `rust_decimal` sum gives 84999999999.99999999999999992).
const SUM: &str = "84999999999.999999999999999915";

async fn export(base: &str, user: &TestUser, body: Value) -> String {
    let response = Client::new()
        .post(format!("{base}/api/transactions/export"))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// The stored `available` and `held` of a balance row in 10⁻¹⁸, recombined from their integer
/// limbs (`whole·10¹⁸ + atto`, each limb a `Decimal128` integer, not normalised: each chunk
/// of the projector `$inc`s its own); `None` for what is not stored that way.
async fn stored_raw(t: &TestDb, owner: &str, asset: &str) -> (Option<i128>, Option<i128>) {
    let row = t
        .db()
        .collection::<bson::Document>("balances")
        .find_one(doc! { "owner": owner, "asset": asset })
        .await
        .unwrap()
        .expect("a balance row");
    // Absent limbs (and an absent field) are zero: the projector `$inc`s only limbs that change.
    let value = |field: &str| {
        let limbs = match row.get(field) {
            None => return Some(0),
            Some(bson::Bson::Document(limbs)) => limbs,
            Some(_) => return None,
        };
        let limb = |part: &str| match limbs.get(part) {
            None => Some(0),
            Some(bson::Bson::Decimal128(d)) => d.to_string().parse::<i128>().ok(),
            Some(_) => None,
        };
        limb("whole")?
            .checked_mul(10i128.pow(18))?
            .checked_add(limb("atto")?)
    };
    (value("available"), value("held"))
}

/// `text` (a decimal with at most 18 places) in 10⁻¹⁸.
fn raw(text: &str) -> i128 {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = format!("{whole}{fraction:0<18}");
    digits.parse().unwrap()
}

/// The opening and closing balance of the ETH section of a CSV statement, and every running
/// balance in between (as text).
fn csv_balances(text: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[0] == "ETH")
        .map(|r| r[7].to_owned())
        .collect()
}

/// The ETH statement of `user` as (CSV balances, JSON opening, JSON closing, JSON running).
async fn statement_balances(base: &str, user: &TestUser, head: u64) -> (Vec<String>, Value) {
    let csv = export(
        base,
        user,
        json!({"format": "csv", "asset": "ETH", "min_position": head}),
    )
    .await;
    let json_text = export(
        base,
        user,
        json!({"format": "json", "asset": "ETH", "min_position": head}),
    )
    .await;
    let statement: Value = serde_json::from_str(&json_text).unwrap();
    (
        csv_balances(&csv),
        statement["statement"]["assets"][0].clone(),
    )
}

async fn as_of_now(base: &str, user: &TestUser, head: u64) -> Value {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let (status, body) = get_json(
        base,
        user,
        &format!("/api/wallet/balance?as_of={now}&min_position={head}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "ETH")
        .unwrap()
        .clone()
}

#[tokio::test]
async fn eighty_five_maximal_deposits_are_exact_everywhere_and_the_last_wei_is_spent_once() {
    let t = TestDb::new("exact_money").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let bob = signed_up(&base, "bob@example.com").await;
    let boss = admin(&t, &base, "boss@example.com").await;
    let mut head = 0;
    for _ in 0..85 {
        let (status, body) = post(
            &base,
            &alice,
            "/api/wallet/deposits",
            json!({"asset": "ETH", "amount": BIG}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        head = position(&body);
    }

    // The balance answer (from the read model).
    let (available, held, total) = balance(&base, &alice, "ETH", head).await;
    assert_eq!(
        (available.as_str(), held.as_str(), total.as_str()),
        (SUM, "0.000000000000000000", SUM)
    );
    // The read model holds it exactly (integer limbs: whole units and 10^-18), and the
    // deposits' system account (per user) holds exactly minus it.
    wait_for_projection(&t, "balances").await;
    assert_eq!(
        stored_raw(&t, &alice.id, "ETH").await,
        (Some(raw(SUM)), Some(0))
    );
    assert_eq!(
        stored_raw(&t, &format!("system:external_deposits:{}", alice.id), "ETH").await,
        (Some(-raw(SUM)), Some(0))
    );
    // A statement, CSV and JSON: every running balance and the closing balance.
    let (csv, section) = statement_balances(&base, &alice, head).await;
    assert_eq!(csv.len(), 85 + 2, "opening, 85 deposits, closing");
    assert_eq!(csv[0], "0.000000000000000000");
    assert_eq!(csv[84], "83999999999.999999999999999916");
    assert_eq!(csv[85], SUM);
    assert_eq!(csv[86], SUM, "closing balance");
    assert_eq!(section["closing_balance"], SUM);
    assert_eq!(section["movements"][84]["balance"], SUM);
    assert_eq!(section["movement_count"], 85);
    // As of now (sums of the ledger entries).
    let as_of = as_of_now(&base, &alice, head).await;
    assert_eq!(as_of["available"], SUM);
    assert_eq!(as_of["total"], SUM);
    // The opening balance of a period that starts now is the same sum.
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let later = export(
        &base,
        &alice,
        json!({"format": "csv", "asset": "ETH", "from": now, "min_position": head}),
    )
    .await;
    assert_eq!(csv_balances(&later), [SUM, SUM], "opening and closing");

    // Drain exactly: 84 transfers to Bob and one withdrawal (a hold), paid out.
    for _ in 0..84 {
        let (status, body) = post(
            &base,
            &alice,
            "/api/wallet/transfers",
            json!({"to_email": "bob@example.com", "asset": "ETH", "amount": BIG}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        head = position(&body);
    }
    let (status, body) = post(
        &base,
        &alice,
        "/api/wallet/withdrawals",
        json!({"asset": "ETH", "amount": BIG, "address": "0xexample"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let withdrawal = body["withdrawal"]["id"].as_str().unwrap().to_owned();
    head = head.max(position(&body));
    let (available, held, _) = balance(&base, &alice, "ETH", head).await;
    assert_eq!(
        (available.as_str(), held.as_str()),
        ("0.000000000000000000", BIG)
    );

    // Nothing is left to spend: one wei (and five) is refused, and nothing is written.
    let before = event_count(&t).await;
    for wei in ["0.000000000000000001", "0.000000000000000005"] {
        // Each body names only its endpoint's fields: unknown fields are refused (422).
        for (path, request) in [
            (
                "/api/wallet/transfers",
                json!({"to_email": "bob@example.com", "asset": "ETH", "amount": wei}),
            ),
            (
                "/api/wallet/withdrawals",
                json!({"asset": "ETH", "amount": wei, "address": "0xexample"}),
            ),
        ] {
            let (status, body) = post(&base, &alice, path, request).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {wei}: {body}"
            );
            assert_eq!(body["error"]["code"], "insufficient_funds", "{body}");
        }
    }
    assert_eq!(event_count(&t).await, before, "a refusal writes nothing");

    for action in ["approve", "complete"] {
        let (status, body) = post(
            &base,
            &boss,
            &format!("/api/admin/withdrawals/{withdrawal}/{action}"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        head = head.max(position(&body));
    }
    let (available, held, total) = balance(&base, &alice, "ETH", head).await;
    assert_eq!(
        (available.as_str(), held.as_str(), total.as_str()),
        (
            "0.000000000000000000",
            "0.000000000000000000",
            "0.000000000000000000"
        )
    );
    let (csv, section) = statement_balances(&base, &alice, head).await;
    assert_eq!(csv.last().unwrap(), "0.000000000000000000");
    assert_eq!(section["closing_balance"], "0.000000000000000000");
    assert_eq!(section["movement_count"], 85 + 85);
    let as_of = as_of_now(&base, &alice, head).await;
    assert_eq!(as_of["total"], "0.000000000000000000");

    // Bob received 84 × BIG exactly.
    let bobs = "83999999999.999999999999999916";
    let (available, _, _) = balance(&base, &bob, "ETH", head).await;
    assert_eq!(available, bobs);
    let (csv, section) = statement_balances(&base, &bob, head).await;
    assert_eq!(csv.last().unwrap(), bobs);
    assert_eq!(section["closing_balance"], bobs);
    assert_eq!(as_of_now(&base, &bob, head).await["available"], bobs);

    // The verifier agrees: the ledger sums to zero, nobody is negative.
    let verify = t.cli(&["verify", "--json"]).await;
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    t.drop_database().await;
}

/// With `MAX_AMOUNT` 1e20 one account holds at most one credit (2 × 1e20 > 1.7e20, the
/// largest balance held exactly). Credits beyond that are refused by the credits stream's cap
/// (`Assets::credit_cap`); an account that got past it anyway — here a credit appended around
/// the service, as a process without the cap would — can only be refused: every command on it
/// is 422 `balance_limit` and writes nothing, the read model keeps the sum exactly (it never
/// rounds) and the balance is not shown as a rounded figure, and `verify` reports it.
#[tokio::test]
async fn a_balance_beyond_the_representation_is_refused_with_422_and_nothing_written() {
    let t = TestDb::new("balance_limit").await;
    let max = "100000000000000000000";
    let base = spawn_app(&t, &[("ASSETS", "USD:2"), ("MAX_AMOUNT", max)]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let bob = signed_up(&base, "bob@example.com").await;
    let (status, body) = post(
        &base,
        &alice,
        "/api/wallet/deposits",
        json!({"asset": "USD", "amount": max}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post(
        &base,
        &alice,
        "/api/wallet/withdrawals",
        json!({"asset": "USD", "amount": "1", "address": "acct-1"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let withdrawal = body["withdrawal"]["id"].as_str().unwrap().to_owned();
    let (available, held, total) = balance(&base, &alice, "USD", position(&body)).await;
    assert_eq!(
        (available.as_str(), held.as_str(), total.as_str()),
        (
            "99999999999999999999.00",
            "1.00",
            "100000000000000000000.00"
        )
    );

    // A second credit of 1e20 around the service: 2e20 cannot be held.
    let alice_id: Uuid = alice.id.parse().unwrap();
    let credit = FundsDeposited {
        deposit_id: Uuid::now_v7(),
        user_id: alice_id,
        asset: "USD".into(),
        amount: max.parse().unwrap(),
    };
    t.store()
        .await
        .append(AppendBatch::single(
            credits_stream(alice_id, "USD"),
            ExpectedVersion::Any,
            vec![credit.into_new_event(uuid::Uuid::now_v7(), Utc::now(), EventMetadata::default())],
        ))
        .await
        .unwrap();

    // A service process that has not cached Alice's account (a cached decision has not seen
    // the credit; once credits are capped by their stream, none can be appended).
    let base = spawn_app(&t, &[("ASSETS", "USD:2"), ("MAX_AMOUNT", max)]).await;
    let boss = admin(&t, &base, "boss@example.com").await;
    let before = event_count(&t).await;
    let refusals = [
        (
            &alice,
            "/api/wallet/transfers".to_owned(),
            json!({"to_email": "bob@example.com", "asset": "USD", "amount": "1"}),
        ),
        (
            &alice,
            "/api/wallet/withdrawals".to_owned(),
            json!({"asset": "USD", "amount": "1", "address": "acct-1"}),
        ),
        (
            &boss,
            format!("/api/admin/withdrawals/{withdrawal}/approve"),
            json!({}),
        ),
    ];
    for (user, path, body) in refusals {
        let (status, answer) = post(&base, user, &path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "balance_limit", "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("amount"), "{message}");
    }
    assert_eq!(event_count(&t).await, before, "a refusal writes nothing");

    // The read model added the limbs exactly (2e20 - 1 available is beyond an i128 of
    // 10^-18, so the whole units are compared).
    wait_for_projection(&t, "balances").await;
    let row = t
        .db()
        .collection::<bson::Document>("balances")
        .find_one(doc! { "owner": &alice.id, "asset": "USD" })
        .await
        .unwrap()
        .unwrap();
    let whole = |field: &str| {
        let limbs = row.get_document(field).unwrap();
        let limb = |part| limbs.get(part).map_or("0".to_owned(), |l| l.to_string());
        (limb("whole"), limb("atto"))
    };
    assert_eq!(
        whole("available"),
        ("199999999999999999999".into(), "0".into())
    );
    assert_eq!(whole("held"), ("1".into(), "0".into()));
    // The balance is not shown as a rounded figure.
    let (status, answer) = get_json(&base, &alice, "/api/wallet/balance").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    // Bob is not affected.
    let (available, _, _) = balance(&base, &bob, "USD", 0).await;
    assert_eq!(available, "0.00");
    // The verifier names the event it cannot hold.
    let verify = t.cli(&["verify"]).await;
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(!verify.status.success(), "{report}");
    assert!(report.contains("beyond"), "{report}");
    t.drop_database().await;
}

/// The credits cap, on two instances: with `MAX_AMOUNT` 1e20 an account takes one credit. A
/// second deposit through the other instance and a transfer to the account are refused with
/// 422 `balance_limit`, and nothing is written; the store checks the cap atomically
/// (`ExpectedVersion::FewerThan` on the credits stream), whichever process appends.
#[tokio::test]
async fn credits_past_the_cap_are_refused_on_every_instance_and_write_nothing() {
    let t = TestDb::new("credit_cap").await;
    let max = "100000000000000000000";
    let config = [("ASSETS", "USD:2"), ("MAX_AMOUNT", max)];
    let a = spawn_app(&t, &config).await;
    let b = spawn_app(&t, &config).await;
    let alice = signed_up(&a, "alice@example.com").await;
    let carol = signed_up(&a, "carol@example.com").await;
    for (base, user) in [(&a, &alice), (&b, &carol)] {
        let (status, body) = post(
            base,
            user,
            "/api/wallet/deposits",
            json!({"asset": "USD", "amount": max}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let before = event_count(&t).await;
    let refusals = [
        (
            &b,
            &alice,
            "/api/wallet/deposits",
            json!({"asset": "USD", "amount": "1"}),
        ),
        (
            &a,
            &alice,
            "/api/wallet/deposits",
            json!({"asset": "USD", "amount": "0.01"}),
        ),
        (
            &a,
            &carol,
            "/api/wallet/transfers",
            json!({"to_email": "alice@example.com", "asset": "USD", "amount": "1"}),
        ),
        (
            &b,
            &carol,
            "/api/wallet/transfers",
            json!({"to_email": "alice@example.com", "asset": "USD", "amount": "1"}),
        ),
    ];
    for (base, user, path, body) in refusals {
        let (status, answer) = post(base, user, path, body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("balance_limit")),
            "{path}: {answer}"
        );
    }
    assert_eq!(event_count(&t).await, before, "a refusal writes nothing");
    let (available, _, _) = balance(&b, &alice, "USD", before).await;
    assert_eq!(available, "100000000000000000000.00");
    t.drop_database().await;
}
