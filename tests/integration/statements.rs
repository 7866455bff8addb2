//! Statements (CSV and JSON) and balances as of an instant, checked against the ledger.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use cryptovault::ledger::amount::Assets;
use cryptovault::statement::CSV_HEADER;
use cryptovault_projections::entries::{balances_of, entries, Entry};
use rand::RngExt;
use reqwest::{Client, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::helpers::{
    admin, balance, get_json, position, post, signed_up, spawn_app, TestDb, TestUser,
};

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn export(base: &str, user: &TestUser, body: Value) -> reqwest::Response {
    Client::new()
        .post(format!("{base}/api/transactions/export"))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn dec(value: &str) -> Decimal {
    Decimal::from_str(value).unwrap()
}

/// Checks a CSV statement's arithmetic; returns (opening, movement rows, closing) per asset.
fn check_csv(text: &str) -> Vec<(String, Decimal, Vec<csv::StringRecord>, Decimal)> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        &csv::StringRecord::from(CSV_HEADER.to_vec())
    );
    let mut sections = Vec::new();
    let mut current: Option<(String, Decimal, Vec<csv::StringRecord>, Decimal)> = None;
    for record in reader.records() {
        let record = record.unwrap();
        match &record[1] {
            "opening_balance" => {
                assert!(current.is_none());
                let opening = dec(&record[7]);
                current = Some((record[0].to_owned(), opening, Vec::new(), opening));
            }
            "closing_balance" => {
                let (asset, opening, rows, running) = current.take().expect("opening first");
                assert_eq!(asset, &record[0]);
                assert_eq!(running, dec(&record[7]), "closing = opening + movements");
                sections.push((asset, opening, rows, running));
            }
            _ => {
                let section = current.as_mut().expect("movements inside a section");
                section.3 += dec(&record[6]);
                assert_eq!(section.3, dec(&record[7]), "running balance of {record:?}");
                section.2.push(record);
            }
        }
    }
    assert!(current.is_none());
    sections
}

#[tokio::test]
async fn statements_balance_to_the_last_decimal_in_csv_and_json() {
    let t = TestDb::new("statements").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let bob = signed_up(&base, "bob@example.com").await;
    let boss = admin(&t, &base, "boss@example.com").await;
    let deposit = |amount: &'static str, asset: &'static str| {
        let (base, alice) = (base.clone(), alice.clone());
        async move {
            let (status, body) = post(
                &base,
                &alice,
                "/api/wallet/deposits",
                json!({"asset": asset, "amount": amount}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED);
            body
        }
    };
    deposit("1.00000001", "BTC").await;
    deposit("2.5", "BTC").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let middle = Utc::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let transfer = |from: &TestUser, to: &str, amount: &str| {
        let (base, from, body) = (
            base.clone(),
            from.clone(),
            json!({"to_email": to, "asset": "BTC", "amount": amount}),
        );
        async move {
            let (status, body) = post(&base, &from, "/api/wallet/transfers", body).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    };
    transfer(&alice, "bob@example.com", "0.3").await;
    transfer(&bob, "alice@example.com", "0.1").await;
    let withdraw = |amount: &str| {
        let (base, alice) = (base.clone(), alice.clone());
        let body = json!({"asset": "BTC", "amount": amount, "address": "bc1qexample"});
        async move {
            let (_, body) = post(&base, &alice, "/api/wallet/withdrawals", body).await;
            body["withdrawal"]["id"].as_str().unwrap().to_owned()
        }
    };
    let paid = withdraw("0.2").await;
    for action in ["approve", "complete"] {
        let (status, _) = post(
            &base,
            &boss,
            &format!("/api/admin/withdrawals/{paid}/{action}"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let refused = withdraw("0.05").await;
    let (status, _) = post(
        &base,
        &boss,
        &format!("/api/admin/withdrawals/{refused}/reject"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let last = deposit("10", "USD").await;
    let head = position(&last);
    let (available, held, total) = balance(&base, &alice, "BTC", head).await;
    assert_eq!(
        (available.as_str(), held.as_str(), total.as_str()),
        ("3.10000001", "0.00000000", "3.10000001")
    );

    // CSV of BTC since the middle instant.
    let response = export(
        &base,
        &alice,
        json!({"format": "csv", "asset": "BTC", "from": at(middle), "min_position": head}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"statement-BTC-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let text = response.text().await.unwrap();
    let sections = check_csv(&text);
    assert_eq!(sections.len(), 1);
    let (asset, opening, rows, closing) = &sections[0];
    assert_eq!(asset, "BTC");
    assert_eq!(*opening, dec("3.50000001"), "{text}");
    let kinds: Vec<&str> = rows.iter().map(|r| &r[1]).collect();
    // Holds and their release move nothing between the user and the world: not statement lines.
    assert_eq!(
        kinds,
        ["transfer_out", "transfer_in", "withdrawal"],
        "{text}"
    );
    let amounts: Vec<Decimal> = rows.iter().map(|r| dec(&r[6])).collect();
    assert_eq!(amounts, [dec("-0.3"), dec("0.1"), dec("-0.2")]);
    assert_eq!(&rows[0][5], bob.id.as_str());
    assert_eq!(*closing, dec(&total));
    assert_eq!(&rows[2][4], paid.as_str());

    // The opening balance is the balance as of the start of the period.
    let (_, as_of) = get_json(
        &base,
        &alice,
        &format!(
            "/api/wallet/balance?as_of={}&min_position={head}",
            at(middle)
        ),
    )
    .await;
    let btc = as_of["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "BTC")
        .unwrap();
    assert_eq!(dec(btc["total"].as_str().unwrap()), *opening);

    // JSON of every asset over the whole history agrees with the CSV.
    let response = export(
        &base,
        &alice,
        json!({"format": "json", "min_position": head}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let statement: Value = response.json().await.expect("the JSON statement parses");
    let statement = &statement["statement"];
    assert_eq!(statement["email"], "alice@example.com");
    let sections = statement["assets"].as_array().unwrap();
    assert_eq!(sections.len(), Assets::default().iter().count());
    for section in sections {
        let mut running = dec(section["opening_balance"].as_str().unwrap());
        assert!(running.is_zero(), "no period start: opening is zero");
        for movement in section["movements"].as_array().unwrap() {
            running += dec(movement["amount"].as_str().unwrap());
            assert_eq!(running, dec(movement["balance"].as_str().unwrap()));
        }
        assert_eq!(running, dec(section["closing_balance"].as_str().unwrap()));
        assert_eq!(
            section["movement_count"],
            section["movements"].as_array().unwrap().len()
        );
        let (_, _, live_total) =
            balance(&base, &alice, section["asset"].as_str().unwrap(), head).await;
        assert_eq!(section["closing_balance"].as_str().unwrap(), live_total);
    }
    let usd = sections.iter().find(|s| s["asset"] == "USD").unwrap();
    assert_eq!(usd["closing_balance"], "10.00");

    // Bad requests.
    for (body, field) in [
        (json!({"format": "xml"}), "format"),
        (json!({"asset": "BTC"}), "format"),
        (json!({"format": "csv", "asset": "DOGE"}), "asset"),
        (
            json!({"format": "csv", "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
            "to",
        ),
        (json!({"format": "csv", "from": "last week"}), "from"),
    ] {
        let response = export(&base, &alice, body.clone()).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body}: {error}"
        );
    }
    t.drop_database().await;
}

#[tokio::test]
async fn balances_as_of_random_instants_equal_a_fold_of_the_log() {
    let t = TestDb::new("as_of").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let bob = signed_up(&base, "bob@example.com").await;
    let mut rng = rand::rng();
    let mut head = 0;
    for step in 0..16 {
        let (path, body) = match step % 4 {
            0 | 1 => (
                "/api/wallet/deposits",
                json!({"asset": "ETH", "amount": format!("{}.{:03}", rng.random_range(1..5), rng.random_range(0..1000))}),
            ),
            2 => (
                "/api/wallet/transfers",
                json!({"to_email": "bob@example.com", "asset": "ETH", "amount": "0.125"}),
            ),
            _ => (
                "/api/wallet/withdrawals",
                json!({"asset": "ETH", "amount": "0.5", "address": "0xabc"}),
            ),
        };
        let (status, response) = post(&base, &alice, path, body).await;
        assert_eq!(status, StatusCode::CREATED, "{response}");
        head = position(&response);
        tokio::time::sleep(Duration::from_millis(rng.random_range(2..12))).await;
    }
    let store = t.store().await;
    let log = store.read_all(1, 10_000).await.unwrap();
    let mine: Vec<Entry> = log
        .iter()
        .flat_map(|e| entries(e).unwrap())
        .filter(|e| e.user_id.to_string() == alice.id)
        .collect();
    let first = log.first().unwrap().occurred_at;
    let last = log.last().unwrap().occurred_at;
    let span = (last - first).num_milliseconds().max(1);
    let mut instants: Vec<DateTime<Utc>> = vec![
        first - chrono::Duration::seconds(1),
        last + chrono::Duration::seconds(1),
    ];
    for event in &log {
        instants.push(event.occurred_at);
        instants.push(event.occurred_at - chrono::Duration::milliseconds(1));
    }
    for _ in 0..10 {
        instants.push(first + chrono::Duration::milliseconds(rng.random_range(0..=span)));
    }
    let assets = Assets::default();
    for instant in instants {
        let (_, body) = get_json(
            &base,
            &alice,
            &format!(
                "/api/wallet/balance?as_of={}&min_position={head}",
                at(instant)
            ),
        )
        .await;
        let expected = balances_of(mine.iter().filter(|e| e.occurred_at <= instant)).unwrap();
        let (available, held) = expected.get("ETH").copied().unwrap_or_default();
        let eth = body["balances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["asset"] == "ETH")
            .unwrap();
        assert_eq!(
            eth["available"],
            assets.format_units(available, "ETH"),
            "at {instant}"
        );
        assert_eq!(
            eth["held"],
            assets.format_units(held, "ETH"),
            "at {instant}"
        );
    }
    // Bob's view never includes Alice's side.
    let (_, body) = get_json(
        &base,
        &bob,
        &format!("/api/wallet/balance?as_of={}&min_position={head}", at(last)),
    )
    .await;
    let eth = body["balances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["asset"] == "ETH")
        .unwrap();
    assert_eq!(eth["total"], assets.format(dec("0.5"), "ETH"));
    let bad = Client::new()
        .get(format!("{base}/api/wallet/balance?as_of=tomorrow"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    t.drop_database().await;
}

/// The peak RSS the export command reports on stderr ("peak RSS <n> bytes").
fn reported_peak_rss(stderr: &str) -> u64 {
    let after = stderr
        .split("peak RSS ")
        .nth(1)
        .expect("the export reports its peak RSS");
    after.split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_of_100_000_movements_streams_in_bounded_memory() {
    use cryptovault::store::{AppendBatch, ExpectedVersion};
    use cryptovault_events::ledger::{credits_stream, FundsDeposited};
    use cryptovault_events::{DomainEvent, EventMetadata};

    const MOVEMENTS: usize = 100_000;
    let t = TestDb::new("statement_100k").await;
    let base = spawn_app(&t, &[]).await;
    let dora = signed_up(&base, "dora@example.com").await;
    let user_id: uuid::Uuid = dora.id.parse().unwrap();
    let store = t.store().await;
    let batches: Vec<_> = (0..MOVEMENTS / 1000)
        .map(|b| {
            let events = (0..1000)
                .map(|i| {
                    FundsDeposited {
                        deposit_id: uuid::Uuid::now_v7(),
                        user_id,
                        asset: "USD".into(),
                        amount: Decimal::new(((b * 1000 + i) % 9_999 + 1) as i64, 2),
                    }
                    .into_new_event(
                        uuid::Uuid::now_v7(),
                        Utc::now(),
                        EventMetadata::default(),
                    )
                })
                .collect();
            AppendBatch::single(credits_stream(user_id, "USD"), ExpectedVersion::Any, events)
        })
        .collect();
    futures::future::join_all(batches.into_iter().map(|batch| {
        let store = store.clone();
        async move { store.append(batch).await.unwrap() }
    }))
    .await;
    let expected: Decimal = (0..MOVEMENTS)
        .map(|n| Decimal::new((n % 9_999 + 1) as i64, 2))
        .sum();
    // The service projects the entries; the export process then only reads them, so its peak
    // memory is the export's.
    crate::helpers::wait_for_projection(&t, "transactions").await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("statement.csv");
    let out = t
        .cli(&[
            "export",
            "--email",
            "dora@example.com",
            "--format",
            "csv",
            "--asset",
            "USD",
            "--output",
            file.to_str().unwrap(),
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = reported_peak_rss(&String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let sections = check_csv(&text);
    assert_eq!(sections.len(), 1);
    let (_, opening, rows, closing) = &sections[0];
    assert!(opening.is_zero());
    assert_eq!(rows.len(), MOVEMENTS);
    assert_eq!(*closing, expected);
    // The statement file alone is several MB; the exporting process (which also brought the
    // read model up to date) must stay far below a size that would mean "held it all".
    assert!(
        peak < 100 * 1024 * 1024,
        "peak RSS of the export process: {peak} bytes"
    );
    t.drop_database().await;
}
