//! The ledger under concurrency: hot accounts (one process and two), decisions on a stale
//! account cache, and the bank test with two service instances on one database.

use bson::doc;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    admin, balance, fold_log, nonzero, position, post, signed_up as user, spawn_app,
    stored_balances, wait_for_projection, TestDb,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_account_exactly_ten_of_sixty_four_transfers_succeed() {
    hot_account_exactly_ten_succeed("ledger_hot", 1, 64).await;
}

/// Commands on one account queue behind each other's in-flight batches, deciding on the state
/// those batches will leave. When another instance debits the account meanwhile, queued
/// batches fail and must be decided again on stored state: still exactly ten succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_account_on_two_instances_exactly_ten_of_forty_transfers_succeed() {
    hot_account_exactly_ten_succeed("ledger_hot_two", 2, 40).await;
}

/// An account funded with 10 BTC; `attempts` concurrent transfers of 1 BTC out of it, spread
/// over `instances` service instances on one database. Exactly ten succeed, every other one is
/// refused with `insufficient_funds`, and the balances end exact.
async fn hot_account_exactly_ten_succeed(name: &str, instances: usize, attempts: usize) {
    let t = TestDb::new(name).await;
    let mut bases = Vec::new();
    for _ in 0..instances {
        bases.push(spawn_app(&t, &[]).await);
    }
    let sender = user(&bases[0], "hot@example.com").await;
    let receiver = user(&bases[0], "cold@example.com").await;
    let (status, _) = post(
        &bases[0],
        &sender,
        "/api/wallet/deposits",
        json!({ "asset": "BTC", "amount": "10" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let transfers = (0..attempts).map(|i| {
        let (base, sender) = (bases[i % instances].clone(), sender.clone());
        async move {
            post(
                &base,
                &sender,
                "/api/wallet/transfers",
                json!({ "to_email": "cold@example.com", "asset": "BTC", "amount": "1" }),
            )
            .await
        }
    });
    let results = futures::future::join_all(transfers).await;
    let ok: Vec<u64> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, b)| position(b))
        .collect();
    assert_eq!(
        ok.len(),
        10,
        "{:?}",
        results.iter().map(|(s, _)| s.as_u16()).collect::<Vec<_>>()
    );
    assert!(results
        .iter()
        .filter(|(s, _)| *s != StatusCode::CREATED)
        .all(|(s, b)| *s == StatusCode::UNPROCESSABLE_ENTITY
            && b["error"]["code"] == "insufficient_funds"));
    let last = *ok.iter().max().unwrap();
    let (first, last_instance) = (&bases[0], &bases[instances - 1]);
    assert_eq!(
        balance(last_instance, &sender, "BTC", last).await.0,
        "0.00000000"
    );
    assert_eq!(
        balance(first, &receiver, "BTC", last).await.0,
        "10.00000000"
    );
    t.drop_database().await;
}

/// Decisions start from the in-process account cache; these are the two ways it can be behind
/// the log, and the outcome must be as if it had read: another instance debited the account
/// (the append conflicts, the decision is re-run on the stored state), and credits it has not
/// seen (the refusal is confirmed on the stored state, which accepts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_from_a_stale_account_cache_end_as_if_it_had_read() {
    let t = TestDb::new("ledger_cache").await;
    let (a, b) = (spawn_app(&t, &[]).await, spawn_app(&t, &[]).await);
    let sender = user(&a, "cache-sender@example.com").await;
    user(&a, "cache-receiver@example.com").await;
    let send = |base: &str, amount: &str| {
        let (base, sender, amount) = (base.to_owned(), sender.clone(), amount.to_owned());
        async move {
            post(
                &base,
                &sender,
                "/api/wallet/transfers",
                json!({ "to_email": "cache-receiver@example.com", "asset": "BTC", "amount": amount }),
            )
            .await
        }
    };
    let deposit = |base: &str, amount: &str| {
        let (base, sender, amount) = (base.to_owned(), sender.clone(), amount.to_owned());
        async move {
            post(
                &base,
                &sender,
                "/api/wallet/deposits",
                json!({ "asset": "BTC", "amount": amount }),
            )
            .await
        }
    };
    assert_eq!(deposit(&a, "10").await.0, StatusCode::CREATED);
    // A caches the account at 6 available; B debits 5 behind A's back (1 left).
    assert_eq!(send(&a, "4").await.0, StatusCode::CREATED);
    assert_eq!(send(&b, "5").await.0, StatusCode::CREATED);
    // A's cache says 6: the append conflicts and the re-run on stored state refuses.
    let (status, body) = send(&a, "5").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_funds");
    // Money in that A's cache has not seen: a deposit through B, then the whole of it.
    assert_eq!(send(&a, "1").await.0, StatusCode::CREATED);
    assert_eq!(deposit(&b, "3").await.0, StatusCode::CREATED);
    let (status, body) = send(&a, "3").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let last = position(&body);
    let (status, body) = send(&a, "0.00000001").await;
    assert_eq!(
        body["error"]["code"], "insufficient_funds",
        "{status} {body}"
    );

    assert_eq!(
        balance(&a, &sender, "BTC", last).await,
        (
            "0.00000000".into(),
            "0.00000000".into(),
            "0.00000000".into()
        )
    );
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_test_with_two_service_instances_keeps_every_invariant() {
    let t = TestDb::new("ledger_bank").await;
    let instances = [spawn_app(&t, &[]).await, spawn_app(&t, &[]).await];
    let mut users = Vec::new();
    for i in 0..50 {
        users.push(user(&instances[i % 2], &format!("bank{i}@example.com")).await);
    }
    let root = admin(&t, &instances[0], "bank-admin@example.com").await;
    let users = std::sync::Arc::new(users);

    // 16 tasks, each a bounded sequence of random commands against either instance.
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let (users, instances, root) = (users.clone(), instances.clone(), root.clone());
            tokio::spawn(async move {
                use rand::{RngExt, SeedableRng};
                // Seeded per task: a failing run can be replayed.
                let mut rng = rand::rngs::StdRng::seed_from_u64(task);
                let mut acknowledged: Vec<(String, String)> = Vec::new(); // (kind, id)
                for _ in 0..30 {
                    let base = &instances[rng.random_range(0..2)];
                    let me = &users[rng.random_range(0..users.len())];
                    let asset = ["USD", "BTC"][rng.random_range(0..2)];
                    let amount = format!("{}.{:02}", rng.random_range(0..50), rng.random_range(1..100));
                    match rng.random_range(0..4) {
                        0 => {
                            let (s, b) = post(base, me, "/api/wallet/deposits", json!({ "asset": asset, "amount": amount })).await;
                            assert_eq!(s, StatusCode::CREATED, "{b}");
                            acknowledged.push(("deposit".into(), b["deposit"]["id"].as_str().unwrap().into()));
                        }
                        1 | 2 => {
                            let to = &users[rng.random_range(0..users.len())];
                            if to.id == me.id {
                                continue;
                            }
                            let (s, b) = post(base, me, "/api/wallet/transfers", json!({ "to_email": to.email, "asset": asset, "amount": amount })).await;
                            match s {
                                StatusCode::CREATED => acknowledged.push(("transfer".into(), b["transfer"]["id"].as_str().unwrap().into())),
                                _ => assert_eq!(b["error"]["code"], "insufficient_funds", "{b}"),
                            }
                        }
                        _ => {
                            let (s, b) = post(base, me, "/api/wallet/withdrawals", json!({ "asset": asset, "amount": amount, "address": format!("addr-{task}") })).await;
                            if s != StatusCode::CREATED {
                                assert_eq!(b["error"]["code"], "insufficient_funds", "{b}");
                                continue;
                            }
                            let id = b["withdrawal"]["id"].as_str().unwrap().to_owned();
                            acknowledged.push(("withdrawal".into(), id.clone()));
                            let path = |a: &str| format!("/api/admin/withdrawals/{id}/{a}");
                            match rng.random_range(0..3) {
                                0 => {
                                    assert_eq!(post(base, &root, &path("approve"), json!({})).await.0, StatusCode::OK);
                                    assert_eq!(post(base, &root, &path("complete"), json!({})).await.0, StatusCode::OK);
                                }
                                1 => assert_eq!(post(base, &root, &path("reject"), json!({})).await.0, StatusCode::OK),
                                _ => {} // stays pending: held
                            }
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }

    // Each acknowledged command is in the log exactly once.
    let events = t.db().collection::<bson::Document>("events");
    for (kind, id) in &acknowledged {
        let (event_type, field) = match kind.as_str() {
            "deposit" => ("FundsDeposited", "payload.deposit_id"),
            "transfer" => ("TransferSent", "payload.transfer_id"),
            _ => ("WithdrawalRequested", "payload.withdrawal_id"),
        };
        let n = events
            .count_documents(doc! { "event_type": event_type, field: id })
            .await
            .unwrap();
        assert_eq!(n, 1, "{kind} {id} appears {n} times");
    }

    // Zero-sum per asset, no negative balance, and the read model equals a fresh fold.
    let fold = fold_log(&t).await;
    for (asset, sum) in fold.sums() {
        assert!(sum.is_zero(), "{asset} sums to {sum}");
    }
    for ((owner, asset), row) in &fold.rows {
        if !owner.starts_with("system:") {
            assert!(
                !row.available.is_negative() && !row.held.is_negative(),
                "{owner} {asset}: {row:?}"
            );
        }
    }
    wait_for_projection(&t, "balances").await;
    assert_eq!(stored_balances(&t).await, nonzero(&fold));
    assert!(t.store().await.verify().await.unwrap().is_intact());
    t.drop_database().await;
}
