//! The ledger over HTTP and against the store: commands, rejections, concurrency, read models,
//! idempotency. Real MongoDB throughout.

use std::collections::HashSet;
use std::time::Duration;

use bson::doc;
use cryptovault::store::read_models::balances::BalancesModel;
use cryptovault::store::read_models::runner;
use reqwest::{Client, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::helpers::{
    admin, balance, event_count, fold_log, nonzero, position, post, signed_up as user, spawn_app,
    stored_balances, wait_for_projection, TestDb, TestUser as User,
};

#[tokio::test]
async fn every_command_works_and_every_rejection_writes_nothing() {
    let t = TestDb::new("ledger_cmds").await;
    let base = spawn_app(&t, &[]).await;
    let alice = user(&base, "alice@example.com").await;
    let bob = user(&base, "bob@example.com").await;
    let root = admin(&t, &base, "root@example.com").await;

    // Deposit, then read it back (waiting for the projection to reach the write).
    let (status, body) = post(
        &base,
        &alice,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "100.50" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["deposit"]["amount"], "100.50");
    assert_eq!(body["deposit"]["status"], "completed");
    assert_eq!(
        balance(&base, &alice, "USD", position(&body)).await,
        ("100.50".into(), "0.00".into(), "100.50".into())
    );

    // Rejections: 422 naming the field, nothing written.
    let before = event_count(&t).await;
    for (body, field) in [
        (json!({ "asset": "USD", "amount": 1.5 }), "amount"),
        (json!({ "asset": "USD", "amount": "abc" }), "amount"),
        (json!({ "asset": "USD", "amount": "0" }), "amount"),
        (json!({ "asset": "USD", "amount": "-5" }), "amount"),
        (json!({ "asset": "USD", "amount": "1e5" }), "amount"),
        (json!({ "asset": "USD", "amount": "1.001" }), "amount"),
        (json!({ "asset": "USD", "amount": "2000000000" }), "amount"),
        (json!({ "asset": "DOGE", "amount": "1" }), "asset"),
        (json!({ "asset": "USD" }), "amount"),
        (json!({ "amount": "1" }), "asset"),
    ] {
        let (status, answer) = post(&base, &alice, "/api/wallet/deposits", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(answer["error"]["code"], "validation_error");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{body} → {answer}"
        );
    }
    let (status, answer) = post(
        &base,
        &alice,
        "/api/wallet/withdrawals",
        json!({ "asset": "USD", "amount": "1000", "address": "addr-1" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"]["code"], "insufficient_funds");
    let (status, answer) = post(
        &base,
        &alice,
        "/api/wallet/transfers",
        json!({ "to_email": "alice@example.com", "asset": "USD", "amount": "1" }),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_error"))
    );
    let (status, answer) = post(
        &base,
        &alice,
        "/api/wallet/transfers",
        json!({ "to_email": "nobody@example.com", "asset": "USD", "amount": "1" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("to_email"));
    let (status, answer) = post(
        &base,
        &alice,
        "/api/wallet/transfers",
        json!({ "to_email": "bob@example.com", "asset": "USD", "amount": "100.51" }),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds"))
    );
    assert_eq!(
        event_count(&t).await,
        before,
        "a rejected command wrote events"
    );

    // Withdrawal: hold, then the admin's state machine.
    let (status, body) = post(
        &base,
        &alice,
        "/api/wallet/withdrawals",
        json!({ "asset": "USD", "amount": "30", "address": "addr-1" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["withdrawal"]["status"], "pending");
    let w = body["withdrawal"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        balance(&base, &alice, "USD", position(&body)).await,
        ("70.50".into(), "30.00".into(), "100.50".into())
    );

    let act = |action: &'static str, id: String, who: User| {
        let base = base.clone();
        async move {
            post(
                &base,
                &who,
                &format!("/api/admin/withdrawals/{id}/{action}"),
                json!({}),
            )
            .await
        }
    };
    assert_eq!(
        act("approve", w.clone(), alice.clone()).await.0,
        StatusCode::FORBIDDEN,
        "users cannot approve"
    );
    let before = event_count(&t).await;
    let (status, answer) = act("complete", w.clone(), root.clone()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "complete before approve"
    );
    assert_eq!(
        act("approve", w.clone(), root.clone()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        act("approve", w.clone(), root.clone()).await.0,
        StatusCode::CONFLICT,
        "approve twice"
    );
    let (status, body) = act("complete", w.clone(), root.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        act("complete", w.clone(), root.clone()).await.0,
        StatusCode::CONFLICT,
        "complete twice"
    );
    assert_eq!(
        act("reject", w.clone(), root.clone()).await.0,
        StatusCode::CONFLICT,
        "reject after complete"
    );
    assert_eq!(
        event_count(&t).await,
        before + 2,
        "only approve and complete wrote"
    );
    assert_eq!(
        balance(&base, &alice, "USD", position(&body)).await,
        ("70.50".into(), "0.00".into(), "70.50".into())
    );
    let unknown = uuid::Uuid::now_v7();
    assert_eq!(
        act("approve", unknown.to_string(), root.clone()).await.0,
        StatusCode::NOT_FOUND
    );

    // A rejected withdrawal releases the hold.
    let (_, body) = post(
        &base,
        &alice,
        "/api/wallet/withdrawals",
        json!({ "asset": "USD", "amount": "10", "address": "addr-2" }),
    )
    .await;
    let w2 = body["withdrawal"]["id"].as_str().unwrap().to_owned();
    let (status, body) = act("reject", w2.clone(), root.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        act("complete", w2, root.clone()).await.0,
        StatusCode::CONFLICT,
        "complete after reject"
    );
    assert_eq!(
        balance(&base, &alice, "USD", position(&body)).await.0,
        "70.50"
    );

    // Transfer by email.
    let (status, body) = post(&base, &alice, "/api/wallet/transfers", json!({ "to_email": "Bob@Example.com", "asset": "USD", "amount": "20.25", "note": "lunch" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["transfer"]["status"], "completed");
    assert_eq!(
        balance(&base, &alice, "USD", position(&body)).await.0,
        "50.25"
    );
    assert_eq!(
        balance(&base, &bob, "USD", position(&body)).await.0,
        "20.25"
    );

    // The admin queue.
    let queue: Value = Client::new()
        .get(format!(
            "{base}/api/admin/withdrawals?status=completed&min_position={}",
            position(&body)
        ))
        .bearer_auth(&root.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = queue["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], w.as_str());
    assert_eq!(items[0]["user_id"], alice.id.as_str());
    let _ = bob.email;
    t.drop_database().await;
}

/// Runners insert the rows an event creates (cheaper than upserts). A row that exists already
/// (a reset racing its runner leaves such rows) must not stop the projection: the chunk is
/// applied again with upserts, which keep the existing row.
#[tokio::test]
async fn a_row_that_exists_already_does_not_stop_its_projection() {
    let t = TestDb::new("ledger_row_exists").await;
    let base = spawn_app(&t, &[]).await;
    let alice = user(&base, "exists@example.com").await;
    wait_for_projection(&t, "audit").await;
    let next = t.store().await.head().await.unwrap().0 + 1;
    t.db()
        .collection::<bson::Document>("audit_logs")
        .insert_one(doc! { "_id": next as i64, "action": "placed by the test" })
        .await
        .unwrap();
    let (status, body) = post(
        &base,
        &alice,
        "/api/wallet/deposits",
        json!({ "asset": "BTC", "amount": "1" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(position(&body), next);
    wait_for_projection(&t, "audit").await;
    let row = t
        .db()
        .collection::<bson::Document>("audit_logs")
        .find_one(doc! { "_id": next as i64 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get_str("action").unwrap(), "placed by the test");
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_stream_resumes_and_matches_a_fresh_rebuild() {
    use cryptovault::identity::RequestMeta;
    use cryptovault::ledger::amount::Assets;
    use cryptovault::ledger::service::{CommandIds, Ledger, TransferRequest};
    use cryptovault::store::snapshots::SnapshotStore;
    let t = TestDb::new("ledger_kill").await;
    // 3,000 ledger events straight through the ledger service (no HTTP), so the log is several
    // projection chunks long.
    let ledger = Ledger::new(
        t.store().await,
        Assets::default(),
        SnapshotStore::new(&t.db()),
    );
    let users: Vec<uuid::Uuid> = (0..20).map(|_| uuid::Uuid::now_v7()).collect();
    let meta = RequestMeta::default();
    futures::future::join_all((0..2000).map(|i| {
        let (ledger, meta, user) = (&ledger, &meta, users[i % users.len()]);
        async move {
            ledger
                .deposit(
                    user,
                    "SOL",
                    Decimal::new(i as i64 + 1, 1),
                    CommandIds::fresh(),
                    meta,
                )
                .await
                .unwrap()
        }
    }))
    .await;
    futures::future::join_all((0..1000).map(|i| {
        let (ledger, meta) = (&ledger, &meta);
        let request = TransferRequest {
            from: users[i % users.len()],
            to: users[(i + 1) % users.len()],
            asset: "SOL".into(),
            amount: Decimal::new(1, 2),
            note: None,
        };
        async move {
            ledger
                .transfer(&request, CommandIds::fresh(), meta)
                .await
                .unwrap()
        }
    }))
    .await;
    let head = t.store().await.head().await.unwrap().0;

    // A runner in its own runtime, shut down as soon as it has applied part of the log: its
    // tasks are dropped wherever they are, possibly inside a transaction.
    let (client, db, name) = (t.client.clone(), t.db(), t.name.clone());
    let partial = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let partial = rt.block_on(async {
            let store = cryptovault::store::EventStore::open(&client, &name, Default::default())
                .await
                .unwrap();
            runner::spawn(client.clone(), db.clone(), store, BalancesModel)
                .await
                .unwrap();
            loop {
                let checkpoint = runner::stored_checkpoint(&db, "balances").await.unwrap();
                if checkpoint > 0 {
                    return checkpoint;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        rt.shutdown_background();
        partial
    })
    .join()
    .unwrap();
    assert!(
        partial < head,
        "the kill came too late to be mid-stream ({partial} of {head})"
    );

    // A new runner picks up from the stored checkpoint. (A transaction the dead runner left
    // open holds the checkpoint until mongod's transaction lifetime limit, 10 s, expires it.)
    runner::spawn(t.client.clone(), t.db(), t.store().await, BalancesModel)
        .await
        .unwrap();
    wait_for_projection(&t, "balances").await;
    let resumed = stored_balances(&t).await;
    let fold = fold_log(&t).await;
    assert_eq!(resumed.clone(), nonzero(&fold));

    // And a rebuild from position 0 gives the same read model.
    runner::reset::<BalancesModel>(&t.db()).await.unwrap();
    runner::spawn(t.client.clone(), t.db(), t.store().await, BalancesModel)
        .await
        .unwrap();
    wait_for_projection(&t, "balances").await;
    assert_eq!(stored_balances(&t).await, resumed);
    t.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_apply_once_concurrently_and_across_a_restart() {
    let t = TestDb::new("ledger_idem").await;
    let base = spawn_app(&t, &[]).await;
    let u = user(&base, "idem@example.com").await;
    let send = |base: String, key: &'static str, amount: &'static str| {
        let token = u.token.clone();
        async move {
            let response = Client::new()
                .post(format!("{base}/api/wallet/deposits"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&json!({ "asset": "ETH", "amount": amount }))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let deposits = || async {
        t.db()
            .collection::<bson::Document>("events")
            .count_documents(doc! { "event_type": "FundsDeposited" })
            .await
            .unwrap()
    };

    let first = send(base.clone(), "key-1", "1.5").await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(send(base.clone(), "key-1", "1.5").await, first);
    assert_eq!(deposits().await, 1);
    let (status, body) = send(base.clone(), "key-1", "2").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );

    // Concurrent duplicates: one applies, all get its answer.
    let answers =
        futures::future::join_all((0..8).map(|_| send(base.clone(), "key-2", "0.25"))).await;
    let distinct: HashSet<String> = answers.iter().map(|(s, b)| format!("{s}{b}")).collect();
    assert_eq!(distinct.len(), 1, "{answers:?}");
    assert_eq!(deposits().await, 2);

    // A new service instance (as after a restart) still knows the key.
    let restarted = spawn_app(&t, &[]).await;
    assert_eq!(send(restarted, "key-1", "1.5").await, first);
    assert_eq!(deposits().await, 2);
    t.drop_database().await;
}

/// Finding 6 of issue 14: event ids derive from (user, key, request) forever, so a key must be
/// remembered forever too. After everything the retention rule lets MongoDB forget has been
/// forgotten (every record's `expires_at` moved into the past and the TTL monitor run), a reused
/// key still answers the original answer, or 409 for another body — never a new 201, never 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_idempotency_key_after_the_retention_window_is_the_first_answer_or_409() {
    let t = TestDb::new("ledger_idem_expiry").await;
    let base = spawn_app(&t, &[]).await;
    let u = user(&base, "idem-expiry@example.com").await;
    let send = |path: &'static str, key: &'static str, body: Value| {
        let (token, base) = (u.token.clone(), base.clone());
        async move {
            let response = Client::new()
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let deposit = |amount: &str| json!({ "asset": "ETH", "amount": amount });
    let events = || async {
        t.db()
            .collection::<bson::Document>("events")
            .count_documents(doc! { "stream_id": { "$regex": "^account-" } })
            .await
            .unwrap()
    };
    let first = send("/api/wallet/deposits", "reused", deposit("1.5")).await;
    assert_eq!(first.0, StatusCode::CREATED, "{first:?}");
    let withdrawal = send(
        "/api/wallet/withdrawals",
        "reused-w",
        json!({ "asset": "ETH", "amount": "0.5", "address": "0xabc" }),
    )
    .await;
    assert_eq!(withdrawal.0, StatusCode::CREATED, "{withdrawal:?}");
    // A refusal wrote nothing: its record expires (refusals must not pile up for ever).
    let refused = send("/api/wallet/deposits", "refused", deposit("0")).await;
    assert_eq!(refused.0, StatusCode::UNPROCESSABLE_ENTITY, "{refused:?}");
    let written = events().await;

    // Time passes: whatever carries an expiry is past it, and MongoDB's TTL monitor removes it.
    // The test server starts with `ttlMonitorSleepSecs=1` (scripts/mongo.sh): a value set at run
    // time only takes effect after the monitor's current sleep (60 s by default) ends.
    let admin = t.client.database("admin");
    admin
        .run_command(doc! { "setParameter": 1, "ttlMonitorSleepSecs": 1 })
        .await
        .unwrap();
    let keys = t.db().collection::<bson::Document>("idempotency_keys");
    keys.update_many(
        doc! { "expires_at": { "$exists": true } },
        doc! { "$set": { "expires_at": bson::DateTime::from_millis(0) } },
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while keys
        .count_documents(doc! { "expires_at": { "$exists": true } })
        .await
        .unwrap()
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the TTL monitor did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Another body under the key: 409, never a success for a command that did not run.
    let other = send("/api/wallet/deposits", "reused", deposit("2")).await;
    assert_eq!(
        (other.0, other.1["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict")),
        "another body under a used key: {other:?}"
    );
    // The same request again: the first answer (or 409), nothing written.
    let again = send("/api/wallet/deposits", "reused", deposit("1.5")).await;
    assert!(
        again == first || again.0 == StatusCode::CONFLICT,
        "same key and body after the window: {again:?}, first was {first:?}"
    );
    // The key of the withdrawal, reused on another route.
    let elsewhere = send("/api/wallet/deposits", "reused-w", deposit("3")).await;
    assert_eq!(
        (elsewhere.0, elsewhere.1["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict")),
        "a key reused on another route: {elsewhere:?}"
    );
    assert_eq!(events().await, written, "a reused key wrote events");
    // The refused request's key was forgotten with the window: it may serve a new request.
    let reused = send("/api/wallet/deposits", "refused", deposit("4")).await;
    assert_eq!(reused.0, StatusCode::CREATED, "{reused:?}");
    t.drop_database().await;
}
