//! The read side at a million events, in one run on one mongod:
//!
//! 1. seeds a log of `CV_BENCH_EVENTS` (default 1,000,000) ledger events — deposits to one
//!    "whale" account and transfers from it — as sealed, hash-chained documents;
//! 2. the raw cursor read rate of that `events` collection (documents/s, decoded to BSON);
//! 3. `replay` of each projection (events/s, and the ratio to the raw read rate);
//! 4. `GET /api/transactions` latency (p50/p99) for the whale, whose history has ~1M rows;
//! 5. `cryptovault export` of the whale's statement (~1M rows): rows/s and the export
//!    process's peak RSS.
//!
//! `cargo bench --bench read_side`. Every loop is bounded.

use std::time::Instant;

use bson::{doc, Document};
use cryptovault::config::Config;
use cryptovault::identity::RequestMeta;
use cryptovault::ledger::amount::Assets;
use cryptovault::ledger::service::Ledger;
use cryptovault::startup::Application;
use cryptovault::store::document::to_document;
use cryptovault::store::read_models::replay::replay;
use cryptovault::store::read_models::{audit, balances, transactions, withdrawals};
use cryptovault::store::snapshots::{self as snapshot_store, SnapshotStore};
use cryptovault::store::{EventStore, StoreConfig};
use cryptovault_events::ledger::{
    account_stream, credits_stream, FundsDeposited, TransferReceived, TransferSent,
};
use cryptovault_events::{DomainEvent, EventEnvelope, EventMetadata};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

#[path = "common.rs"]
#[allow(dead_code)] // this bench needs only part of the shared helpers
mod common;
use common::{mongo_url, ms, percentile};

const SEED_BATCH: usize = 2_000;
const LIST_REQUESTS: usize = 2_000;
const PASSWORD: &str = "bench password 123";

/// Inserts the seeded log after the current head, continuing the hash chain; returns the
/// number of events the whale's statement will have.
async fn seed(
    db: &mongodb::Database,
    store: &EventStore,
    whale: Uuid,
    bob: Uuid,
    events: usize,
) -> usize {
    let (head, head_hash) = store.head().await.unwrap();
    let collection = db.collection::<Document>("events");
    let start = chrono::Utc::now() - chrono::Duration::milliseconds(events as i64 + 10_000);
    let (mut position, mut prev) = (head, head_hash);
    let (mut credits_version, mut account_version, mut bob_version) = (0u64, 0u64, 0u64);
    let mut movements = 0;
    let mut batch = Vec::with_capacity(SEED_BATCH);
    let meta = EventMetadata {
        actor: Some(whale.to_string()),
        ip: Some("127.0.0.1".into()),
        ..EventMetadata::default()
    };
    let mut written = 0;
    while written < events {
        let at = start + chrono::Duration::milliseconds(written as i64);
        // Nine deposits, then one transfer (two events).
        let new: Vec<(String, u64, cryptovault_events::NewEvent)> = if written % 11 < 9 {
            credits_version += 1;
            let e = FundsDeposited {
                deposit_id: Uuid::now_v7(),
                user_id: whale,
                asset: "USD".into(),
                amount: Decimal::new(100, 2),
            };
            vec![(
                credits_stream(whale, "USD"),
                credits_version,
                e.into_new_event(Uuid::now_v7(), at, meta.clone()),
            )]
        } else {
            account_version += 1;
            bob_version += 1;
            let transfer_id = Uuid::now_v7();
            let amount = Decimal::new(1, 2);
            let sent = TransferSent {
                transfer_id,
                from_user: whale,
                to_user: bob,
                asset: "USD".into(),
                amount,
                note: None,
            };
            let received = TransferReceived {
                transfer_id,
                from_user: whale,
                to_user: bob,
                asset: "USD".into(),
                amount,
                note: None,
            };
            vec![
                (
                    account_stream(whale, "USD"),
                    account_version,
                    sent.into_new_event(Uuid::now_v7(), at, meta.clone()),
                ),
                (
                    credits_stream(bob, "USD"),
                    bob_version,
                    received.into_new_event(Uuid::now_v7(), at, meta.clone()),
                ),
            ]
        };
        movements += 1;
        for (stream, version, event) in new {
            position += 1;
            let sealed = EventEnvelope::seal(event, stream, version, position, prev.clone());
            prev.clone_from(&sealed.hash);
            batch.push(to_document(&sealed).unwrap());
            written += 1;
        }
        if batch.len() >= SEED_BATCH {
            collection
                .insert_many(std::mem::take(&mut batch))
                .await
                .unwrap();
        }
    }
    if !batch.is_empty() {
        collection.insert_many(batch).await.unwrap();
    }
    db.collection::<Document>("event_store_meta")
        .update_one(
            doc! { "_id": "head" },
            doc! { "$set": { "position": position as i64, "hash": &prev } },
        )
        .await
        .unwrap();
    movements
}

/// Documents/s of a plain cursor over the whole `events` collection in position order.
async fn raw_read_rate(db: &mongodb::Database) -> (u64, f64) {
    let started = Instant::now();
    let mut cursor = db
        .collection::<Document>("events")
        .find(doc! {})
        .sort(doc! { "position": 1 })
        .batch_size(10_000)
        .await
        .unwrap();
    let mut count = 0u64;
    while let Some(document) = cursor.try_next().await.unwrap() {
        std::hint::black_box(&document);
        count += 1;
    }
    (count, count as f64 / started.elapsed().as_secs_f64())
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events: usize = std::env::var("CV_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = mongo_url();
        let db_name = format!("bench_read_{}", &Uuid::now_v7().simple().to_string()[20..]);
        let (jwt, csrf) = (Uuid::new_v4().to_string().repeat(2), Uuid::new_v4().to_string().repeat(2));
        let vars: Vec<(&str, String)> = vec![
            ("MONGO_URL", url.clone()),
            ("DB_NAME", db_name.clone()),
            ("HOST", "127.0.0.1".into()),
            ("PORT", "0".into()),
            ("JWT_SECRET", jwt.clone()),
            ("CSRF_SECRET", csrf.clone()),
            ("EMAIL_INDEX_KEY", format!("index-{csrf}")),
            ("RATE_LIMIT_PER_IP_PER_MIN", "10000000".into()),
            ("RATE_LIMIT_LOGIN_PER_MIN", "10000000".into()),
            ("RATE_LIMIT_PER_USER_PER_MIN", "10000000".into()),
            ("MAX_CONNECTIONS_PER_CLIENT", "4096".into()),
        ];
        let config = Config::from_lookup(move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())).unwrap();
        let client = cryptovault::startup::connect(&config.store).await.unwrap();
        let store = EventStore::open(&client, &db_name, StoreConfig::default()).await.unwrap();
        let db = client.database(&db_name);
        let identity = cryptovault::startup::identity(&config, store.clone(), &db).await.unwrap();
        let whale = identity.signup("whale@example.com", PASSWORD, "Whale", &RequestMeta::default()).await.unwrap().user_id;
        let bob = identity.signup("bob@example.com", PASSWORD, "Bob", &RequestMeta::default()).await.unwrap().user_id;

        let started = Instant::now();
        let movements = seed(&db, &store, whale, bob, events).await;
        let head = store.head().await.unwrap().0;
        println!("seeded {head} events ({movements} movements of one account) in {:.1} s", started.elapsed().as_secs_f64());

        // A decision on the whale after a restart: its account folded from the whole log, then
        // (another process) from the snapshot that first fold stored.
        let ledger = || Ledger::new(store.clone(), Assets::default(), SnapshotStore::new(&db));
        let started = Instant::now();
        let cold = ledger().account(whale, "USD").await.unwrap();
        let from_log = started.elapsed();
        let snapshots = db.collection::<Document>(snapshot_store::COLLECTION);
        let id = cryptovault_events::ledger::account_stream(whale, "USD");
        let mut stored = false;
        for _ in 0..600 {
            let found = snapshots.find_one(doc! { "_id": &id }).await.unwrap();
            stored = found.is_some_and(|s| s.get_i64("credits_version") == Ok(cold.credits_version() as i64));
            if stored {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(stored, "the first load stored no snapshot within a minute");
        let started = Instant::now();
        let warm = ledger().account(whale, "USD").await.unwrap();
        let from_snapshot = started.elapsed();
        assert_eq!(warm, cold);
        println!(
            "whale's account ({} events) loaded by a process without it cached: from the log {:.2} s, from its snapshot {:.2} ms",
            cold.version() + cold.credits_version(),
            from_log.as_secs_f64(),
            ms(from_snapshot)
        );

        let (read, raw) = raw_read_rate(&db).await;
        println!("raw cursor read of {read} event documents: {raw:>9.0} docs/s");
        macro_rules! replay_one {
            ($model:expr) => {{
                let report = replay(&client, &db, &store, $model, Default::default(), |_, _| {}).await.unwrap();
                println!(
                    "replay {:<12} {:>9.0} events/s  ({:.2} s, {:>3.0}% of raw read)",
                    report.projection, report.events_per_second, report.seconds, 100.0 * report.events_per_second / raw
                );
            }};
        }
        replay_one!(balances::BalancesModel);
        replay_one!(withdrawals::WithdrawalsModel);
        replay_one!(transactions::TransactionsModel);
        replay_one!(audit::AuditModel);

        // The service on the rebuilt read models.
        let app = Application::build(config).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until(std::future::pending()));
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({ "email": "whale@example.com", "password": PASSWORD }))
            .send().await.unwrap().json().await.unwrap();
        let token = login["access_token"].as_str().unwrap().to_owned();
        let rows = db.collection::<Document>("transactions").count_documents(doc! { "user_id": whale.to_string() }).await.unwrap();
        let mut latencies = Vec::with_capacity(LIST_REQUESTS);
        for n in 0..LIST_REQUESTS {
            // First pages, deep pages (a cursor anywhere in the history) and filtered pages.
            let cursor = cryptovault::http::paging::encode_cursor(rand::random_range(1..=head));
            let path = match n % 4 {
                0 => "/api/transactions?limit=50".to_owned(),
                1 => format!("/api/transactions?limit=50&cursor={cursor}"),
                2 => format!("/api/transactions?limit=50&type=transfer_out&cursor={cursor}"),
                _ => "/api/transactions?limit=50&asset=USD&type=deposit".to_owned(),
            };
            let sent = Instant::now();
            let response = http.get(format!("{base}{path}")).bearer_auth(&token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            latencies.push(sent.elapsed());
        }
        latencies.sort();
        println!(
            "GET /api/transactions over {rows} history rows, {LIST_REQUESTS} requests: p50 {:.2} ms  p99 {:.2} ms",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99))
        );

        // The export as an operator runs it: its own process, so its memory is its own.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("statement.csv");
        let started = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cryptovault"))
            .args(["export", "--email", "whale@example.com", "--format", "csv", "--asset", "USD", "--output"])
            .arg(&file)
            .env("MONGO_URL", &url)
            .env("DB_NAME", &db_name)
            .env("JWT_SECRET", &jwt)
            .env("CSRF_SECRET", &csrf)
            .env("EMAIL_INDEX_KEY", format!("index-{csrf}"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let peak: f64 = stderr
            .split("peak RSS ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN);
        let lines = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&file).unwrap())).count();
        let statement_rows = lines - 3; // header, opening, closing
        println!(
            "export of {statement_rows} statement rows (CSV, {:.0} MB): {:>9.0} rows/s  ({:.2} s wall, process start included), peak RSS {:.1} MB",
            std::fs::metadata(&file).unwrap().len() as f64 / 1e6,
            statement_rows as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            peak / 1_048_576.0
        );
        db.drop().await.unwrap();
    });
    std::process::exit(0);
}
