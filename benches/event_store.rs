//! Event store throughput against raw `insert_many`, on one mongod, in one run.
//!
//! `cargo bench --bench event_store` (starts the local replica set through `scripts/mongo.sh`
//! unless `MONGO_URL` is set). Every loop is bounded by an event count. Prints:
//! raw `insert_many` docs/s (batches of 100, w: majority, j: true), the store's append rate with
//! 1, 16 and 256 concurrent callers appending single events, p50/p99 append latency at 16
//! callers, and the store/raw ratio at 256 callers — once, then as the median of five
//! back-to-back (raw, store) pairs.
//!
//! `CV_BENCH_CHECKPOINTS=alternate` (issue 16) measures instead the Merkle tree's cost: the
//! store's append rate at 256 callers with a [`Notary`] following the log (it takes the new
//! events from the writer, stores their subtrees and signs checkpoints) against the same
//! without one,
//! alternated round by round on the same mongod (`CV_BENCH_ROUNDS` pairs, default 10), each
//! mode on its own database. After every "on" round it reports how far the stored tree is
//! behind the log and how long it takes to catch up (the next round starts only then), so a
//! tree that falls behind cannot pass for a cheap one. With `CV_BENCH_MONGOD_PID` it also
//! reports the CPU seconds the bench process and mongod spent per round.
//! `CV_BENCH_PER_CALLER` (default 100) sets the appends per caller and round;
//! `CV_BENCH_CHECKPOINT_EVERY` (default 1000, the production default) the notary's
//! `CHECKPOINT_EVERY_EVENTS`.

use std::time::{Duration, Instant};

use cryptovault::config::CheckpointSettings;
use cryptovault::notary::Notary;
use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion, StoreConfig};
use cryptovault_events::checkpoint::SignerKey;
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

/// Callers and events per caller of one round of the checkpoint comparison.
const TREE_CALLERS: usize = 256;
/// Appends per caller and round (`CV_BENCH_PER_CALLER` overrides: longer rounds, less noise).
const TREE_PER_CALLER: usize = 100;
/// The longest a round waits for the tree to catch up with the log.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// CPU seconds (user + system) of process `pid` (`self` for this one), from `/proc`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// `CV_BENCH_CHECKPOINTS=alternate`: append rate at 256 callers with the notary (tree and
/// checkpoints) vs without, alternated on the same mongod.
async fn compare_checkpoints(client: &Client, db: &str) {
    let rounds: usize = std::env::var("CV_BENCH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("CV_BENCH_ROUNDS: a number"))
        .unwrap_or(10);
    let mongod = std::env::var("CV_BENCH_MONGOD_PID").ok();
    let per_caller: usize = std::env::var("CV_BENCH_PER_CALLER")
        .ok()
        .map(|n| n.parse().expect("CV_BENCH_PER_CALLER: a number"))
        .unwrap_or(TREE_PER_CALLER);
    let db_on = format!("{db}_on");
    let db_off = format!("{db}_off");
    let on = EventStore::open(client, &db_on, StoreConfig::default())
        .await
        .unwrap();
    let off = EventStore::open(client, &db_off, StoreConfig::default())
        .await
        .unwrap();
    let settings = CheckpointSettings {
        signer: Some(std::sync::Arc::new(
            SignerKey::from_seed("bench.local/ledger", [1; 32]).unwrap(),
        )),
        retired: Vec::new(),
        // `CV_BENCH_CHECKPOINT_EVERY` overrides the production default, to see what signing
        // costs apart from the tree.
        every_events: std::env::var("CV_BENCH_CHECKPOINT_EVERY")
            .ok()
            .map(|n| n.parse().expect("CV_BENCH_CHECKPOINT_EVERY: a number"))
            .unwrap_or(1000),
        every: Duration::from_secs(10),
    };
    let notary = Notary::start(on.clone(), &client.database(&db_on), &settings)
        .expect("a notary with a signing key");
    // Waits until the stored tree covers the log; returns (behind at the start, time taken).
    let catch_up = |store: EventStore, notary: Notary| async move {
        let (log_head, _) = store.head().await.unwrap();
        let behind = log_head - notary.tree().head().await.unwrap().size.min(log_head);
        let started = Instant::now();
        loop {
            let size = notary.tree().head().await.unwrap().size;
            if size >= log_head {
                break;
            }
            assert!(
                started.elapsed() < CATCH_UP_LIMIT,
                "the tree is stuck at {size} of {log_head} events"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (behind, started.elapsed())
    };
    // Warm-up of both: connections, collections, the first checkpoint.
    for _ in 0..2 {
        store_appends(&on, TREE_CALLERS, 10).await;
        store_appends(&off, TREE_CALLERS, 10).await;
    }
    catch_up(on.clone(), notary.clone()).await;
    println!(
        "checkpoints on vs off: {rounds} pairs of rounds, {TREE_CALLERS} callers x {per_caller} single events each, order alternating (on-off, off-on, ...)"
    );
    let (mut rates_on, mut rates_off, mut ratios, mut with_catch_up) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut behinds, mut catch_ups) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let on_first = round % 2 == 1;
        let mut pair = [0.0f64; 2];
        for step in 0..2 {
            let checkpoints = (step == 0) == on_first;
            let store = if checkpoints { &on } else { &off };
            let cpu_self = cpu_seconds("self");
            let cpu_mongod = mongod.as_deref().and_then(cpu_seconds);
            let started = Instant::now();
            let (rate, latencies) = store_appends(store, TREE_CALLERS, per_caller).await;
            let appended = started.elapsed();
            let mut line = format!(
                "round {round:>2} checkpoints {:<3}: {rate:>7.0} events/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                if checkpoints { "on" } else { "off" },
                ms(percentile(&latencies, 0.50)),
                ms(percentile(&latencies, 0.99)),
            );
            if checkpoints {
                let (behind, took) = catch_up(on.clone(), notary.clone()).await;
                let events = (TREE_CALLERS * per_caller) as f64;
                let overall = events / (appended + took).as_secs_f64();
                line.push_str(&format!(
                    "  tree behind at the end {behind:>6} events, caught up in {:>6.0} ms ({overall:.0} events/s counting the catch-up)",
                    ms(took)
                ));
                behinds.push(behind as f64);
                catch_ups.push(ms(took));
                with_catch_up.push(overall);
                rates_on.push(rate);
                pair[0] = rate;
            } else {
                rates_off.push(rate);
                pair[1] = rate;
            }
            if let (Some(before), Some(after)) = (cpu_self, cpu_seconds("self")) {
                line.push_str(&format!("  cpu bench {:.2} s", after - before));
            }
            if let (Some(before), Some(after)) =
                (cpu_mongod, mongod.as_deref().and_then(cpu_seconds))
            {
                line.push_str(&format!(" mongod {:.2} s", after - before));
            }
            println!("{line}");
        }
        ratios.push(pair[0] / pair[1]);
    }
    let (lo, hi) = range(&rates_on);
    println!(
        "checkpoints on : median {:.0} events/s (range {lo:.0}-{hi:.0})",
        median(&rates_on)
    );
    let (lo, hi) = range(&rates_off);
    println!(
        "checkpoints off: median {:.0} events/s (range {lo:.0}-{hi:.0})",
        median(&rates_off)
    );
    let (lo, hi) = range(&ratios);
    println!(
        "on/off ratio per pair: median {:.3} (range {lo:.3}-{hi:.3}); cost of the tree {:.1} %",
        median(&ratios),
        100.0 * (1.0 - median(&ratios))
    );
    let (lo, hi) = range(&with_catch_up);
    println!(
        "on, counting the catch-up: median {:.0} events/s (range {lo:.0}-{hi:.0}), {:.1} % below off's median",
        median(&with_catch_up),
        100.0 * (1.0 - median(&with_catch_up) / median(&rates_off))
    );
    let (lo, hi) = range(&behinds);
    let (clo, chi) = range(&catch_ups);
    println!(
        "tree behind the log at the end of an on round: median {:.0} events (range {lo:.0}-{hi:.0}); catch-up median {:.0} ms (range {clo:.0}-{chi:.0})",
        median(&behinds),
        median(&catch_ups)
    );
    let head = notary.tree().head().await.unwrap();
    let latest = notary.latest().await.unwrap().map_or(0, |c| c.size);
    println!(
        "tree at the end: {} leaves, latest checkpoint {latest}",
        head.size
    );
    client.database(&db_on).drop().await.unwrap();
    client.database(&db_off).drop().await.unwrap();
}

fn main() {
    // `cargo test --benches` runs this binary without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // The service's logs (the notary's refusals and retries) on stderr, by `RUST_LOG`.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
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
        if std::env::var("CV_BENCH_CHECKPOINTS").as_deref() == Ok("alternate") {
            compare_checkpoints(&client, &db).await;
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
