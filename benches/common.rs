//! Shared by the benchmarks: the MongoDB URL, the raw `insert_many` reference, percentiles.

use std::time::{Duration, Instant};

use bson::Document;
use cryptovault::store::document::to_document;
use cryptovault::store::writer::durable_write_concern;
use cryptovault_events::{EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
use mongodb::Client;
use serde_json::json;

pub const RAW_BATCH: usize = 100;
pub const RAW_BATCHES: usize = 200;

/// `MONGO_URL`, or the local replica set started through `scripts/mongo.sh`.
pub fn mongo_url() -> String {
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

/// An event shaped like a deposit.
pub fn event(caller: usize, n: usize) -> NewEvent {
    NewEvent::new(
        uuid::Uuid::now_v7(),
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

/// Sequential `insert_many` of sealed event documents (batches of 100, w: majority, j: true)
/// into `collection`; documents are built before the clock starts. Returns docs/s.
pub async fn raw_insert_many(client: &Client, db: &str, collection: &str) -> f64 {
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

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
