//! Event store throughput against raw `insert_many`, on one mongod, in one run.
//!
//! `cargo bench --bench event_store` (starts the local replica set through `scripts/mongo.sh`
//! unless `MONGO_URL` is set). Every loop is bounded by an event count. Prints:
//! raw `insert_many` docs/s (batches of 100, w: majority, j: true), the store's append rate with
//! 1, 16 and 256 concurrent callers appending single events, p50/p99 append latency at 16
//! callers, and the store/raw ratio at 256 callers — once, then as the median of five
//! back-to-back (raw, store) pairs.

use std::time::{Duration, Instant};

use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion, StoreConfig};
use mongodb::Client;

#[path = "common.rs"]
mod common;
use common::{event, mongo_url, ms, percentile, raw_insert_many, RAW_BATCH};

/// Back-to-back (raw, store at 256 callers) pairs measured after the main figures.
const PAIRED_ROUNDS: usize = 5;

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

/// `CV_BENCH_DEPTHS=1,2`: the store's pipeline depths against each other on the same mongod,
/// alternated round by round (the machine's rate swings within minutes), each depth on its own
/// store and database; prints every round and the median per depth.
async fn compare_depths(client: &Client, db: &str, depths: &str) {
    let depths: Vec<usize> = depths
        .split(',')
        .map(|d| {
            d.trim()
                .parse()
                .expect("CV_BENCH_DEPTHS: comma-separated numbers")
        })
        .collect();
    let mut stores = Vec::new();
    for depth in &depths {
        let config = StoreConfig {
            pipeline_depth: *depth,
            ..StoreConfig::default()
        };
        let store = EventStore::open(client, &format!("{db}_d{depth}"), config)
            .await
            .unwrap();
        store_appends(&store, 16, 20).await;
        stores.push(store);
    }
    let mut rates: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); depths.len()];
    for round in 1..=PAIRED_ROUNDS {
        for (i, (depth, store)) in depths.iter().zip(&stores).enumerate() {
            let (one, one_latencies) = store_appends(store, 1, 200).await;
            let (sixteen, _) = store_appends(store, 16, 200).await;
            let (many, _) = store_appends(store, 256, 80).await;
            let p50 = ms(percentile(&one_latencies, 0.50));
            println!("round {round} depth {depth}: 1 caller {one:>6.0} events/s (p50 {p50:.2} ms), 16 callers {sixteen:>6.0}, 256 callers {many:>6.0} events/s");
            rates[i].push((one, sixteen, many));
        }
    }
    for (depth, rounds) in depths.iter().zip(&mut rates) {
        let median = |pick: fn(&(f64, f64, f64)) -> f64| {
            let mut v: Vec<f64> = rounds.iter().map(pick).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "depth {depth}, median of {PAIRED_ROUNDS} rounds: 1 caller {:.0}, 16 callers {:.0}, 256 callers {:.0} events/s",
            median(|r| r.0),
            median(|r| r.1),
            median(|r| r.2)
        );
    }
    for depth in &depths {
        client
            .database(&format!("{db}_d{depth}"))
            .drop()
            .await
            .unwrap();
    }
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
        if let Ok(depths) = std::env::var("CV_BENCH_DEPTHS") {
            compare_depths(&client, &db, &depths).await;
            std::process::exit(0);
        }
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
                ms(percentile(&latencies, 0.50)),
                ms(percentile(&latencies, 0.99)),
            );
            if callers == 256 {
                at_256 = rate;
            }
        }
        println!("ratio store(256 callers) / raw insert_many, plain collection: {:.2}", at_256 / raw);
        println!("ratio store(256 callers) / raw insert_many, store's indexes and validator: {:.2}", at_256 / raw_schema);

        // The machine's rate swings by ±20 % within minutes: measure the ratio again in rounds
        // of back-to-back pairs, so that each store figure is compared with a raw one taken
        // moments before it.
        let mut ratios = Vec::with_capacity(PAIRED_ROUNDS);
        for round in 1..=PAIRED_ROUNDS {
            let raw = raw_insert_many(&client, &db, &format!("raw_events_{round}")).await;
            let (rate, _) = store_appends(&store, 256, 80).await;
            println!("paired round {round}: raw {raw:>7.0} docs/s, store (256 callers) {rate:>7.0} events/s, ratio {:.2}", rate / raw);
            ratios.push(rate / raw);
        }
        ratios.sort_by(f64::total_cmp);
        println!("ratio store(256 callers) / raw insert_many, plain collection, median of {PAIRED_ROUNDS} paired rounds: {:.2}", ratios[PAIRED_ROUNDS / 2]);
        client.database(&db).drop().await.unwrap();
    });
    // Leave without dropping the runtime: background tasks (MongoDB pools, projectors) would
    // otherwise be torn down mid-flight and print spurious panics.
    std::process::exit(0);
}
