//! Event store throughput against raw `insert_many`, on one mongod, in one run.
//!
//! `cargo bench --bench event_store` (starts the local replica set through `scripts/mongo.sh`
//! unless `MONGO_URL` is set). Every loop is bounded by an event count. Prints:
//! raw `insert_many` docs/s (batches of 100, w: majority, j: true), the store's append rate with
//! 1, 16 and 256 concurrent callers appending single events, p50/p99 append latency at 16
//! callers, and the store/raw ratio at 256 callers.

use std::time::{Duration, Instant};

use bson::Document;
use cryptovault::store::document::to_document;
use cryptovault::store::writer::durable_write_concern;
use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion, StoreConfig};
use cryptovault_events::{EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
use mongodb::Client;
use serde_json::json;

const RAW_BATCH: usize = 100;
const RAW_BATCHES: usize = 200;

fn event(caller: usize, n: usize) -> NewEvent {
    NewEvent::new(
        "FundsDeposited",
        1,
        chrono::Utc::now(),
        EventMetadata {
            request_id: Some(uuid::Uuid::now_v7().to_string()),
            actor: Some(format!("user:{caller}")),
            ip: Some("127.0.0.1".into()),
            ..EventMetadata::default()
        },
        json!({ "deposit_id": uuid::Uuid::now_v7().to_string(), "user_id": caller, "asset": "BTC", "amount": format!("{n}.00150000") }),
    )
}

fn mongo_url() -> String {
    if let Ok(url) = std::env::var("MONGO_URL") {
        return url;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mongo.sh");
    let out = std::process::Command::new(script)
        .arg("start")
        .output()
        .expect("run scripts/mongo.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Sequential `insert_many` of sealed event documents, as the store would store them.
async fn raw_insert_many(client: &Client, db: &str, collection: &str) -> f64 {
    let coll = client.database(db).collection_with_options::<Document>(
        collection,
        mongodb::options::CollectionOptions::builder()
            .write_concern(durable_write_concern())
            .build(),
    );
    let mut position = 0u64;
    let mut prev = GENESIS_HASH.to_owned();
    let mut batches = Vec::with_capacity(RAW_BATCHES);
    for b in 0..RAW_BATCHES {
        let docs: Vec<Document> = (0..RAW_BATCH)
            .map(|i| {
                position += 1;
                let sealed = EventEnvelope::seal(
                    event(b, i),
                    format!("account-{b}"),
                    i as u64 + 1,
                    position,
                    prev.clone(),
                );
                prev.clone_from(&sealed.hash);
                to_document(&sealed).unwrap()
            })
            .collect();
        batches.push(docs);
    }
    let started = Instant::now();
    for docs in batches {
        coll.insert_many(docs).await.unwrap();
    }
    (RAW_BATCHES * RAW_BATCH) as f64 / started.elapsed().as_secs_f64()
}

/// `callers` tasks each appending `per_caller` single events to their own stream.
async fn store_appends(
    store: &EventStore,
    callers: usize,
    per_caller: usize,
) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_caller);
                for n in 0..per_caller {
                    let batch = AppendBatch::single(
                        format!("bench-{callers}-{caller}"),
                        ExpectedVersion::Any,
                        vec![event(caller, n)],
                    );
                    let t = Instant::now();
                    store.append(batch).await.expect("append");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(callers * per_caller);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = (callers * per_caller) as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    // `cargo test --benches` runs this binary without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::with_uri_str(mongo_url()).await.unwrap();
        let db = format!("bench_store_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let store = EventStore::open(&client, &db, StoreConfig::default()).await.unwrap();
        // Warm-up: connections, collections, WiredTiger cache.
        store_appends(&store, 16, 20).await;
        let raw = raw_insert_many(&client, &db, "raw_events").await;
        println!("raw insert_many (batches of {RAW_BATCH}, w:majority j:true, sequential): {raw:>9.0} docs/s");
        let schema_db = format!("{db}_schema");
        EventStore::open(&client, &schema_db, StoreConfig::default()).await.unwrap();
        let raw_schema = raw_insert_many(&client, &schema_db, "events").await;
        client.database(&schema_db).drop().await.unwrap();
        println!("raw insert_many into a collection with the store's indexes and validator: {raw_schema:>9.0} docs/s");

        let mut at_256 = 0.0;
        for (callers, per_caller) in [(1usize, 300usize), (16, 300), (256, 80)] {
            let (rate, latencies) = store_appends(&store, callers, per_caller).await;
            println!(
                "store append, {callers:>3} callers x {per_caller:>3} single events: {rate:>9.0} events/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
                percentile(&latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            );
            if callers == 256 {
                at_256 = rate;
            }
        }
        println!("ratio store(256 callers) / raw insert_many, plain collection: {:.2}", at_256 / raw);
        println!("ratio store(256 callers) / raw insert_many, store's indexes and validator: {:.2}", at_256 / raw_schema);
        client.database(&db).drop().await.unwrap();
    });
}
