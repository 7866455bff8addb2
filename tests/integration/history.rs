//! Transaction history (`GET /api/transactions`, `/{id}`, `/api/wallet/deposits`): rows,
//! filters, access control, errors, and cursor pages under concurrent inserts.

use std::collections::HashSet;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{admin, get_json as get, position, post, signed_up, spawn_app, TestDb};

fn types(body: &Value) -> Vec<&str> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn history_rows_filters_and_access_control() {
    let t = TestDb::new("history").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let bob = signed_up(&base, "bob@example.com").await;
    let boss = admin(&t, &base, "boss@example.com").await;

    let (status, btc) = post(
        &base,
        &alice,
        "/api/wallet/deposits",
        json!({"asset": "BTC", "amount": "1.5"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let deposit_id = btc["deposit"]["id"].as_str().unwrap().to_owned();
    post(
        &base,
        &alice,
        "/api/wallet/deposits",
        json!({"asset": "USD", "amount": "100"}),
    )
    .await;
    let (status, transfer) = post(
        &base,
        &alice,
        "/api/wallet/transfers",
        json!({"to_email": "bob@example.com", "asset": "BTC", "amount": "0.5", "note": "rent"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let transfer_id = transfer["transfer"]["id"].as_str().unwrap().to_owned();
    let (_, withdrawal) = post(
        &base,
        &alice,
        "/api/wallet/withdrawals",
        json!({"asset": "USD", "amount": "10", "address": "bank-account-1"}),
    )
    .await;
    let withdrawal_id = withdrawal["withdrawal"]["id"].as_str().unwrap().to_owned();
    let last = position(&withdrawal);

    let (status, list) = get(
        &base,
        &alice,
        &format!("/api/transactions?min_position={last}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        types(&list),
        ["withdrawal", "transfer_out", "deposit", "deposit"]
    );
    assert!(list["next_cursor"].is_null());
    let out = &list["items"][1];
    assert_eq!(out["id"], transfer_id.as_str());
    assert_eq!(out["amount"], "0.50000000");
    assert_eq!(out["status"], "completed");
    assert_eq!(out["counterparty_id"], bob.id.as_str());
    assert_eq!(out["note"], "rent");
    assert_eq!(list["items"][0]["status"], "pending");
    assert_eq!(list["items"][0]["address"], "bank-account-1");
    assert_eq!(list["items"][3]["amount"], "1.50000000");
    let positions: Vec<u64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "newest first: {positions:?}"
    );

    let (_, bobs) = get(
        &base,
        &bob,
        &format!("/api/transactions?min_position={last}"),
    )
    .await;
    assert_eq!(types(&bobs), ["transfer_in"]);
    assert_eq!(bobs["items"][0]["counterparty_id"], alice.id.as_str());
    assert_eq!(bobs["items"][0]["id"], transfer_id.as_str());

    // Filters.
    let (_, deposits) = get(&base, &alice, "/api/transactions?type=deposit").await;
    assert_eq!(types(&deposits), ["deposit", "deposit"]);
    let (_, btc_only) = get(&base, &alice, "/api/transactions?asset=BTC").await;
    assert_eq!(types(&btc_only), ["transfer_out", "deposit"]);
    let (_, none) = get(
        &base,
        &alice,
        "/api/transactions?type=transfer_out&asset=USD",
    )
    .await;
    assert_eq!(types(&none), Vec::<&str>::new());
    let transfer_at = out["created_at"].as_str().unwrap().to_owned();
    let encoded = transfer_at.replace('+', "%2B");
    let (_, since) = get(&base, &alice, &format!("/api/transactions?from={encoded}")).await;
    assert_eq!(types(&since), ["withdrawal", "transfer_out"]);
    let (_, before) = get(&base, &alice, &format!("/api/transactions?to={encoded}")).await;
    assert_eq!(types(&before), ["deposit", "deposit"]);
    let (_, wallet_deposits) = get(&base, &alice, "/api/wallet/deposits").await;
    assert_eq!(types(&wallet_deposits), ["deposit", "deposit"]);
    let (_, wallet_withdrawals) = get(&base, &alice, "/api/wallet/withdrawals").await;
    assert_eq!(types(&wallet_withdrawals), ["withdrawal"]);
    assert_eq!(wallet_withdrawals["items"][0]["id"], withdrawal_id.as_str());

    // One transaction; another user's is not found.
    let (status, one) = get(&base, &alice, &format!("/api/transactions/{transfer_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["transaction"]["type"], "transfer_out");
    let (_, theirs) = get(&base, &bob, &format!("/api/transactions/{transfer_id}")).await;
    assert_eq!(theirs["transaction"]["type"], "transfer_in");
    for id in [
        deposit_id.as_str(),
        "0190c5a6-0000-7000-8000-000000000000",
        "not-a-uuid",
    ] {
        let (status, body) = get(&base, &bob, &format!("/api/transactions/{id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }

    // Status changes update the row in place.
    let (status, approved) = post(
        &base,
        &boss,
        &format!("/api/admin/withdrawals/{withdrawal_id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let (_, row) = get(
        &base,
        &alice,
        &format!(
            "/api/transactions/{withdrawal_id}?min_position={}",
            position(&approved)
        ),
    )
    .await;
    assert_eq!(row["transaction"]["status"], "approved");
    assert_eq!(row["transaction"]["position"], list["items"][0]["position"]);

    // Bad parameters: 422 naming the parameter, never a 500.
    for (query, field) in [
        ("type=bogus", "type"),
        ("asset=DOGE", "asset"),
        ("cursor=zzz", "cursor"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("from=yesterday", "from"),
        ("min_position=-1", "min_position"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
    ] {
        let (status, body) = get(&base, &alice, &format!("/api/transactions?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["code"], "validation_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{query}: {body}"
        );
    }
    let (status, body) = get(&base, &alice, "/api/transactions?colour=red").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = Client::new()
        .get(format!("{base}/api/transactions"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cursor_pages_never_skip_or_repeat_under_concurrent_inserts() {
    let t = TestDb::new("history_pages").await;
    let base = spawn_app(&t, &[]).await;
    let carol = signed_up(&base, "carol@example.com").await;
    let mut initial = HashSet::new();
    let mut last = 0;
    for n in 1..=30 {
        let (status, body) = post(
            &base,
            &carol,
            "/api/wallet/deposits",
            json!({"asset": "USD", "amount": format!("{n}")}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        initial.insert(body["deposit"]["id"].as_str().unwrap().to_owned());
        last = position(&body);
    }
    // Keep inserting while paging.
    let writer = {
        let (base, carol) = (base.clone(), carol.clone());
        tokio::spawn(async move {
            for n in 1..=30 {
                post(
                    &base,
                    &carol,
                    "/api/wallet/deposits",
                    json!({"asset": "BTC", "amount": format!("0.{n:02}")}),
                )
                .await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut positions = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/api/transactions?limit=7&min_position={last}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(&base, &carol, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
            positions.push(item["position"].as_u64().unwrap());
        }
        pages += 1;
        assert!(pages < 100, "paging must end");
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a row was repeated");
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{positions:?}");
    for id in &initial {
        assert!(seen.contains(id), "row {id} was skipped");
    }
    t.drop_database().await;
}
