//! `cryptovault replay` rebuilds every read model beside the live one and swaps it in while
//! the service keeps serving: readers never see a half-built model, writes keep succeeding,
//! and the result equals a fresh fold of the log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bson::{doc, Document};
use cryptovault_projections::audit::audit_row;
use cryptovault_projections::entries::entries;
use cryptovault_projections::history::{history_change, HistoryChange};
use futures::TryStreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    admin, fold_log, nonzero, post, signed_up, spawn_app, stored_balances, wait_for_projection,
    TestDb,
};

async fn all(t: &TestDb, collection: &str) -> Vec<Document> {
    t.db()
        .collection::<Document>(collection)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_while_serving_swaps_in_identical_read_models() {
    let t = TestDb::new("replay").await;
    let base = spawn_app(&t, &[]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    let bob = signed_up(&base, "bob@example.com").await;
    let carol = signed_up(&base, "carol@example.com").await;
    let boss = admin(&t, &base, "boss@example.com").await;
    for user in [&alice, &bob] {
        let (status, body) = post(
            &base,
            user,
            "/api/wallet/deposits",
            json!({"asset": "USD", "amount": "1000"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, deposit) = post(
        &base,
        &carol,
        "/api/wallet/deposits",
        json!({"asset": "USD", "amount": "42"}),
    )
    .await;
    let carol_position = deposit["position"].as_u64().unwrap();
    for (n, action) in ["complete", "reject", "approve"].iter().enumerate() {
        let (_, w) = post(
            &base,
            &alice,
            "/api/wallet/withdrawals",
            json!({"asset": "USD", "amount": format!("{}", n + 1), "address": "acct"}),
        )
        .await;
        let id = w["withdrawal"]["id"].as_str().unwrap().to_owned();
        if *action == "complete" {
            post(
                &base,
                &boss,
                &format!("/api/admin/withdrawals/{id}/approve"),
                json!({}),
            )
            .await;
        }
        let (status, body) = post(
            &base,
            &boss,
            &format!("/api/admin/withdrawals/{id}/{action}"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for n in 0..40 {
        let (from, to) = if n % 2 == 0 {
            (&alice, "bob@example.com")
        } else {
            (&bob, "alice@example.com")
        };
        let (status, body) = post(
            &base,
            from,
            "/api/wallet/transfers",
            json!({"to_email": to, "asset": "USD", "amount": "1.25"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "transfer {n}: {body}");
    }

    // While the replay runs: writes continue, and Carol's reads must always see her complete
    // history and balance (a half-built model would show less).
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (base, alice, stop) = (base.clone(), alice.clone(), stop.clone());
        tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) && written < 2_000 {
                let (status, body) = post(
                    &base,
                    &alice,
                    "/api/wallet/transfers",
                    json!({"to_email": "bob@example.com", "asset": "USD", "amount": "0.01"}),
                )
                .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                written += 1;
            }
            written
        })
    };
    let reader = {
        let (base, carol, stop, reads) = (base.clone(), carol.clone(), stop.clone(), reads.clone());
        tokio::spawn(async move {
            let client = Client::new();
            while !stop.load(Ordering::Relaxed) && reads.load(Ordering::Relaxed) < 20_000 {
                let balance: Value = client
                    .get(format!(
                        "{base}/api/wallet/balance?min_position={carol_position}"
                    ))
                    .bearer_auth(&carol.token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let usd = balance["balances"]
                    .as_array()
                    .expect("balances")
                    .iter()
                    .find(|b| b["asset"] == "USD")
                    .unwrap()
                    .clone();
                assert_eq!(usd["total"], "42.00", "{balance}");
                let history = client
                    .get(format!(
                        "{base}/api/transactions?min_position={carol_position}"
                    ))
                    .bearer_auth(&carol.token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(history.status(), StatusCode::OK);
                let history: Value = history.json().await.unwrap();
                assert_eq!(history["items"].as_array().unwrap().len(), 1, "{history}");
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let out = t.cli(&["replay", "--quiet"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["balances", "withdrawals", "transactions", "audit"] {
        assert!(stdout.contains(&format!("{name}: replayed")), "{stdout}");
    }
    assert!(stdout.contains("events/s"));
    stop.store(true, Ordering::Relaxed);
    let written = traffic.await.unwrap();
    reader.await.unwrap();
    assert!(written > 0 && reads.load(Ordering::Relaxed) > 0);

    // Quiesced: every read model equals a fresh fold of the whole log.
    for name in ["balances", "withdrawals", "transactions", "audit"] {
        wait_for_projection(&t, name).await;
    }
    assert_eq!(stored_balances(&t).await, nonzero(&fold_log(&t).await));
    let log = t.store().await.read_all(1, 100_000).await.unwrap();
    let mut expected: BTreeMap<String, (String, String, String, i64)> = BTreeMap::new();
    for event in &log {
        match history_change(event) {
            Some(HistoryChange::Insert(row)) => {
                expected.insert(
                    format!("{}:{}", row.user_id, row.id),
                    (
                        row.kind.as_str().to_owned(),
                        row.status.to_owned(),
                        row.amount.to_string(),
                        row.position as i64,
                    ),
                );
            }
            Some(HistoryChange::Status {
                user_id,
                id,
                status,
                ..
            }) => {
                expected.get_mut(&format!("{user_id}:{id}")).unwrap().1 = status.to_owned();
            }
            None => {}
        }
    }
    let stored: BTreeMap<String, (String, String, String, i64)> = all(&t, "transactions")
        .await
        .iter()
        .map(|d| {
            let s = |k| d.get_str(k).unwrap().to_owned();
            (
                s("_id"),
                (
                    s("type"),
                    s("status"),
                    s("amount"),
                    d.get_i64("position").unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(stored, expected);
    let withdrawals = all(&t, "withdrawals").await;
    assert_eq!(withdrawals.len(), 3);
    for w in &withdrawals {
        let key = format!(
            "{}:{}",
            w.get_str("user_id").unwrap(),
            w.get_str("_id").unwrap()
        );
        assert_eq!(w.get_str("status").unwrap(), expected[&key].1);
    }
    let entry_count: usize = log.iter().map(|e| entries(e).unwrap().len()).sum();
    assert_eq!(all(&t, "ledger_entries").await.len(), entry_count);
    let audit_count = log.iter().filter_map(audit_row).count();
    assert_eq!(all(&t, "audit_logs").await.len(), audit_count);
    let names = t.db().list_collection_names().await.unwrap();
    assert!(names.iter().all(|n| !n.ends_with("__replay")), "{names:?}");

    // A second replay of a projection while one runs (here: a claim left by one) is refused;
    // --force takes over.
    t.db()
        .collection::<Document>("projection_checkpoints")
        .insert_one(doc! { "_id": "audit__replay", "position": 0_i64, "txn": 0_i64, "replay_started_at": bson::DateTime::now() })
        .await
        .unwrap();
    let out = t.cli(&["replay", "--quiet", "--projection", "audit"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = t
        .cli(&["replay", "--quiet", "--projection", "audit", "--force"])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims = t
        .db()
        .collection::<Document>("projection_checkpoints")
        .count_documents(doc! { "_id": "audit__replay" })
        .await
        .unwrap();
    assert_eq!(claims, 0, "the claim is released");

    // A single projection can be replayed too; unknown names are refused.
    let out = t
        .cli(&["replay", "--quiet", "--projection", "balances"])
        .await;
    assert!(out.status.success());
    let out = t.cli(&["replay", "--projection", "nope"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--projection"));
    t.drop_database().await;
}
