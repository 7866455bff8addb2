//! The predecessor client's history calls (`predecessor-api.md` §3): `GET /api/transactions`
//! with `skip` (offset pages, its `type` values, `transactions` + `total`) and
//! `GET /api/wallet/transfers`. Writes go to one service instance, reads to a second one on
//! the same database.

use std::collections::HashSet;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{position, post, signed_up, spawn_app, TestDb, TestUser, PASSWORD};

/// `GET base+path` as `user` (Bearer): the status, the raw body text and the parsed body.
async fn get(base: &str, user: &TestUser, path: &str) -> (StatusCode, String, Value) {
    let response = Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, text, body)
}

fn rows<'a>(body: &'a Value, key: &str) -> &'a Vec<Value> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is an array: {body}"))
}

fn ids(body: &Value, key: &str) -> Vec<String> {
    rows(body, key)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The JSON number literals of `field` in the raw text, in order (string values, such as the
/// native items' amounts, are left out).
fn literals(text: &str, field: &str) -> Vec<String> {
    let needle = format!("\"{field}\":");
    text.match_indices(&needle)
        .map(|(at, _)| {
            text[at + needle.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-' || *c == '.')
                .collect::<String>()
        })
        .filter(|literal| !literal.is_empty())
        .collect()
}

fn assert_rejected(status: StatusCode, body: &Value, field: &str, what: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    assert_eq!(body["error"]["code"], "validation_error", "{what}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(field), "{what}: {message}");
}

async fn rename(base: &str, user: &TestUser, name: &str) {
    let response = Client::new()
        .put(format!("{base}/api/auth/profile"))
        .bearer_auth(&user.token)
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn write(base: &str, user: &TestUser, path: &str, body: Value) -> Value {
    let (status, answer) = post(base, user, path, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{path} {body}: {answer}");
    answer
}

/// Logs `email` in and returns only its `access_token` cookie (what a browser keeps).
async fn access_cookie(base: &str, email: &str) -> String {
    let response = Client::new()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .cookies()
        .find(|c| c.name() == "access_token")
        .expect("login sets the access_token cookie");
    format!("access_token={}", cookie.value())
}

#[tokio::test]
async fn offset_pages_old_types_and_transfers_across_instances() {
    let t = TestDb::new("pred_history").await;
    let writer = spawn_app(&t, &[]).await;
    let reader = spawn_app(&t, &[]).await;
    let alice = signed_up(&writer, "alice@example.com").await;
    let bob = signed_up(&writer, "bob@example.com").await;
    rename(&writer, &alice, "Alice Liddell").await;
    rename(&writer, &bob, "Bob Builder").await;

    let deposits = "/api/wallet/deposits";
    write(
        &writer,
        &alice,
        deposits,
        json!({"asset": "USD", "amount": "100"}),
    )
    .await;
    write(
        &writer,
        &alice,
        deposits,
        json!({"asset": "ETH", "amount": "1.000000000000000001"}),
    )
    .await;
    write(
        &writer,
        &alice,
        deposits,
        json!({"asset": "BTC", "amount": "0.5"}),
    )
    .await;
    write(
        &writer,
        &bob,
        deposits,
        json!({"asset": "USD", "amount": "50"}),
    )
    .await;
    let transfers = "/api/wallet/transfers";
    let rent = write(
        &writer,
        &alice,
        transfers,
        json!({"to_email": "bob@example.com", "asset": "USD", "amount": "10.25", "note": "rent"}),
    )
    .await;
    let lunch = write(
        &writer,
        &bob,
        transfers,
        json!({"to_email": "alice@example.com", "asset": "USD", "amount": "3", "note": "lunch"}),
    )
    .await;
    let wei = write(
        &writer,
        &alice,
        transfers,
        json!({"to_email": "bob@example.com", "asset": "ETH", "amount": "0.000000000000000001"}),
    )
    .await;
    let withdrawal = write(
        &writer,
        &alice,
        "/api/wallet/withdrawals",
        json!({"asset": "USD", "amount": "20", "address": "bank-account-0000000001"}),
    )
    .await;
    let last = position(&withdrawal);

    // The native listing on the reading instance (read-your-writes across instances): no
    // offset keys without `skip`.
    let (status, _, native) = get(
        &reader,
        &alice,
        &format!("/api/transactions?limit=200&min_position={last}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{native}");
    let keys: HashSet<&str> = native
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, HashSet::from(["items", "next_cursor", "position"]));
    let all = ids(&native, "items");
    assert_eq!(all.len(), 7);
    assert_eq!(all[0], withdrawal["withdrawal"]["id"].as_str().unwrap());
    assert_eq!(all[1], wei["transfer"]["id"].as_str().unwrap());
    assert_eq!(all[2], lunch["transfer"]["id"].as_str().unwrap());
    assert_eq!(all[3], rent["transfer"]["id"].as_str().unwrap());

    // The dashboard's call: the native keys unchanged, plus `transactions` and `total`.
    let (status, text, page) = get(&reader, &alice, "/api/transactions?skip=0&limit=5").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 7);
    assert!(page["total"].is_u64());
    assert_eq!(ids(&page, "items"), all[..5]);
    assert_eq!(ids(&page, "transactions"), all[..5]);
    assert!(page["position"].as_u64().unwrap() >= last);
    assert!(page["next_cursor"].is_string(), "rows follow: {page}");
    let old = rows(&page, "transactions");
    let native_items = rows(&native, "items");
    for (row, native_row) in old.iter().zip(native_items) {
        let keys: HashSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            HashSet::from(["id", "type", "symbol", "amount", "status", "createdAt"]),
            "{row}"
        );
        assert!(row["id"].is_string() && row["type"].is_string() && row["status"].is_string());
        assert!(row["amount"].is_number(), "{row}");
        assert_eq!(row["symbol"], native_row["asset"]);
        assert_eq!(row["status"], native_row["status"]);
        let created = row["createdAt"].as_str().unwrap();
        let created = chrono::DateTime::parse_from_rfc3339(created).unwrap();
        let native_created = native_row["created_at"].as_str().unwrap();
        let native_created = chrono::DateTime::parse_from_rfc3339(native_created).unwrap();
        assert_eq!(created, native_created);
    }
    let types: Vec<&str> = old.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["withdraw", "transfer", "transfer", "transfer", "deposit"]
    );
    let statuses: Vec<&str> = old.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "pending",
            "completed",
            "completed",
            "completed",
            "completed"
        ]
    );
    // Signed, with the asset's exact digits: checked on the text, never through an f64.
    assert_eq!(
        literals(&text, "amount"),
        [
            "-20.00",
            "-0.000000000000000001",
            "3.00",
            "-10.25",
            "0.50000000"
        ]
    );
    assert_eq!(
        literals(&text, "total"),
        ["7"],
        "total is a JSON integer: {text}"
    );

    // Offset pages neither skip nor repeat rows; past the end an empty page, same total.
    let mut paged = Vec::new();
    for skip in [0, 3, 6] {
        let (status, _, page) = get(
            &reader,
            &alice,
            &format!("/api/transactions?skip={skip}&limit=3"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 7);
        assert_eq!(ids(&page, "transactions"), ids(&page, "items"));
        assert_eq!(page["next_cursor"].is_null(), skip == 6, "{page}");
        paged.extend(ids(&page, "transactions"));
    }
    assert_eq!(paged, all);
    let (_, text, page) = get(&reader, &alice, "/api/transactions?skip=3&limit=20").await;
    assert_eq!(ids(&page, "transactions"), all[3..]);
    assert_eq!(
        literals(&text, "amount"),
        ["-10.25", "0.50000000", "1.000000000000000001", "100.00"]
    );
    for skip in [7, 100_000] {
        let (status, _, page) = get(
            &reader,
            &alice,
            &format!("/api/transactions?skip={skip}&limit=20"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(rows(&page, "transactions").is_empty());
        assert!(rows(&page, "items").is_empty());
        assert_eq!(page["total"], 7);
        assert!(page["next_cursor"].is_null());
    }
    // An offset page's cursor continues as a cursor page.
    let (_, _, first) = get(&reader, &alice, "/api/transactions?skip=0&limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, _, rest) = get(
        &reader,
        &alice,
        &format!("/api/transactions?cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&rest, "items"), all[2..]);
    assert!(rest.get("total").is_none());

    // Every `type`, native and the old client's.
    for (kind, expected, old_types) in [
        ("deposit", 3, vec!["deposit"]),
        ("withdrawal", 1, vec!["withdraw"]),
        ("withdraw", 1, vec!["withdraw"]),
        ("transfer", 3, vec!["transfer"]),
        ("transfer_in", 1, vec!["transfer"]),
        ("transfer_out", 2, vec!["transfer"]),
        ("buy", 0, vec![]),
        ("sell", 0, vec![]),
    ] {
        let (status, _, page) = get(
            &reader,
            &alice,
            &format!("/api/transactions?skip=0&limit=20&type={kind}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {page}");
        assert_eq!(page["total"], expected, "{kind}");
        let old = rows(&page, "transactions");
        assert_eq!(old.len(), expected, "{kind}");
        let seen: HashSet<&str> = old.iter().map(|r| r["type"].as_str().unwrap()).collect();
        assert_eq!(seen, old_types.into_iter().collect(), "{kind}");
        // The same filter on a cursor page.
        let (status, _, native) =
            get(&reader, &alice, &format!("/api/transactions?type={kind}")).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {native}");
        assert_eq!(ids(&native, "items"), ids(&page, "transactions"), "{kind}");
        assert!(native.get("total").is_none() && native.get("transactions").is_none());
    }
    let (_, _, transfers_only) = get(&reader, &alice, "/api/transactions?type=transfer").await;
    let native_types: Vec<&str> = rows(&transfers_only, "items")
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        native_types,
        ["transfer_out", "transfer_in", "transfer_out"]
    );
    let (_, _, page) = get(
        &reader,
        &alice,
        "/api/transactions?skip=1&limit=1&type=transfer&asset=USD",
    )
    .await;
    assert_eq!(page["total"], 2);
    assert_eq!(ids(&page, "transactions"), [all[3].clone()]);

    // Rejections name the parameter.
    let with_cursor = format!("skip=0&cursor={cursor}");
    for (query, field) in [
        ("skip=-1", "skip"),
        ("skip=x", "skip"),
        ("skip=1.5", "skip"),
        ("skip=100001", "skip"),
        (with_cursor.as_str(), "skip"),
        ("skip=0&type=trade", "type"),
        ("type=Transfer", "type"),
        ("skip=0&limit=0", "limit"),
        ("skip=0&limit=201", "limit"),
    ] {
        let (status, _, body) = get(&reader, &alice, &format!("/api/transactions?{query}")).await;
        assert_rejected(status, &body, field, query);
    }

    // The P2P page's list: both directions, newest first, the other party by name.
    let (status, text, list) = get(&reader, &alice, "/api/wallet/transfers?skip=0&limit=50").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let keys: HashSet<&str> = list
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, HashSet::from(["transfers", "total"]));
    assert_eq!(list["total"], 3);
    assert_eq!(ids(&list, "transfers"), all[1..4]);
    let bob_party = json!({"email": "bob@example.com", "name": "Bob Builder"});
    let expected = [
        ("ETH", "sent", Value::Null),
        ("USD", "received", json!("lunch")),
        ("USD", "sent", json!("rent")),
    ];
    for (row, (currency, direction, note)) in rows(&list, "transfers").iter().zip(expected) {
        assert_eq!(row["currency"], currency, "{row}");
        assert_eq!(row["direction"], direction, "{row}");
        assert_eq!(row["note"], note, "{row}");
        assert_eq!(row["otherParty"], bob_party, "{row}");
        assert_eq!(row["status"], "completed");
        assert!(row["amount"].is_number());
        assert!(chrono::DateTime::parse_from_rfc3339(row["createdAt"].as_str().unwrap()).is_ok());
        assert_eq!(row.as_object().unwrap().len(), 8, "{row}");
    }
    assert_eq!(
        literals(&text, "amount"),
        ["0.000000000000000001", "3.00", "10.25"]
    );
    let (_, _, bobs) = get(&reader, &bob, "/api/wallet/transfers").await;
    assert_eq!(bobs["total"], 3);
    let directions: Vec<&str> = rows(&bobs, "transfers")
        .iter()
        .map(|r| r["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["received", "sent", "received"]);
    assert_eq!(
        bobs["transfers"][0]["otherParty"],
        json!({"email": "alice@example.com", "name": "Alice Liddell"})
    );
    let mut paged = Vec::new();
    for skip in 0..4 {
        let (_, _, page) = get(
            &reader,
            &alice,
            &format!("/api/wallet/transfers?skip={skip}&limit=1"),
        )
        .await;
        assert_eq!(page["total"], 3);
        paged.extend(ids(&page, "transfers"));
    }
    assert_eq!(paged, all[1..4]);
    for (query, field) in [
        ("skip=-1", "skip"),
        ("skip=x", "skip"),
        ("skip=100001", "skip"),
        ("limit=0", "limit"),
        ("limit=51", "limit"),
        ("type=transfer", "type"),
    ] {
        let (status, _, body) =
            get(&reader, &alice, &format!("/api/wallet/transfers?{query}")).await;
        assert_rejected(status, &body, field, query);
    }

    // The old client's way: the access_token cookie only, no Authorization header.
    let cookie = access_cookie(&reader, "alice@example.com").await;
    for path in [
        "/api/wallet/transfers?skip=0&limit=50",
        "/api/transactions?skip=0&limit=5",
    ] {
        let response = Client::new()
            .get(format!("{reader}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["total"].as_u64().unwrap() >= 3, "{path}: {body}");
    }
    let response = Client::new()
        .get(format!("{reader}/api/wallet/transfers"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Bob's personal data erased: the page shows what the identity service holds for him.
    let out = t
        .cli(&[
            "admin",
            "erase-user",
            &bob.id,
            "--reason",
            "erasure request 1",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, list) = get(&reader, &alice, "/api/wallet/transfers").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    for row in rows(&list, "transfers") {
        assert_eq!(
            row["otherParty"],
            json!({"email": "[erased]", "name": "[erased]"})
        );
    }
    t.drop_database().await;
}

/// The offset page and the count read the history's indexes: the filter by a set of kinds
/// merges the `{user_id, type, position: -1}` index's ranges in position order (no in-memory
/// sort), and the count is an index scan.
#[tokio::test]
async fn offset_pages_and_counts_use_the_history_indexes() {
    use cryptovault::store::read_models::HistoryFilter;
    use cryptovault_projections::history::TransactionKind;
    let t = TestDb::new("pred_history_plan").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let answer = write(
        &base,
        &alice,
        "/api/wallet/deposits",
        json!({"asset": "USD", "amount": "1"}),
    )
    .await;
    let (status, _, _) = get(
        &base,
        &alice,
        &format!(
            "/api/transactions?skip=0&min_position={}",
            position(&answer)
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let user_id = alice.id.parse().unwrap();
    let filters = [
        (None, None),
        (Some(vec![TransactionKind::Deposit]), None),
        (
            Some(vec![
                TransactionKind::TransferIn,
                TransactionKind::TransferOut,
            ]),
            None,
        ),
        (None, Some("USD".to_owned())),
        (
            Some(vec![
                TransactionKind::TransferIn,
                TransactionKind::TransferOut,
            ]),
            Some("USD".to_owned()),
        ),
    ];
    for (kinds, asset) in filters {
        let filter = HistoryFilter {
            user_id,
            kinds,
            asset,
            created: (None, None),
        };
        let find = t
            .db()
            .run_command(bson::doc! {
                "explain": {
                    "find": "transactions",
                    "filter": filter.query(),
                    "sort": { "position": -1 },
                    "hint": filter.index(),
                    "skip": 20_i64,
                    "limit": 20_i64,
                },
            })
            .await
            .unwrap();
        let plan = find.get_document("queryPlanner").unwrap();
        let text = format!("{plan}");
        assert!(text.contains("IXSCAN"), "{filter:?}: {text}");
        assert!(
            !text.contains("\"SORT\""),
            "{filter:?}: sorted in memory: {text}"
        );
        if filter.kinds.as_ref().is_some_and(|k| k.len() > 1) {
            assert!(text.contains("SORT_MERGE"), "{filter:?}: {text}");
        }
        let count = t
            .db()
            .run_command(bson::doc! {
                "explain": {
                    "aggregate": "transactions",
                    "pipeline": [
                        { "$match": filter.query() },
                        { "$group": { "_id": 1, "n": { "$sum": 1 } } },
                    ],
                    "hint": filter.index(),
                    "cursor": {},
                },
            })
            .await
            .unwrap();
        let text = format!("{count}");
        assert!(
            text.contains("IXSCAN") || text.contains("COUNT_SCAN"),
            "{filter:?}: {text}"
        );
        assert!(!text.contains("COLLSCAN"), "{filter:?}: {text}");
    }
    t.drop_database().await;
}
