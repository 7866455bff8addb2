//! Proof latency at a million events (issue 16).
//!
//! `cargo bench --bench proofs` (starts the local replica set through `scripts/mongo.sh` unless
//! `MONGO_URL` is set). Fills a fresh database with `BENCH_PROOF_EVENTS` events (default
//! 1,000,000) through `EventStore::append` in batches of 500 from 8 callers, then starts a
//! [`Notary`] and times how long it takes to build the stored Merkle tree over all of them and
//! sign a checkpoint of it. Then it times `inclusion_proof(random index, size)` and
//! `consistency_proof(random old size, size)`, `BENCH_PROOF_REQUESTS` (default 5,000) of each
//! sequentially and as many again from 16 concurrent callers, and prints p50/p99/max. A sample
//! of the proofs is verified against the signed checkpoint's root. Every loop is bounded by a
//! count; the database is dropped at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptovault::config::CheckpointSettings;
use cryptovault::notary::{rules, Notary};
use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion, StoreConfig};
use cryptovault_events::checkpoint::SignerKey;
use cryptovault_events::merkle;
use mongodb::Client;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;
use common::{event, mongo_url, ms, percentile};

const FILL_BATCH: usize = 500;
const FILL_CALLERS: usize = 8;
const CONCURRENT: usize = 16;
/// The longest the tree may take to cover the filled log.
const BUILD_LIMIT: Duration = Duration::from_secs(3600);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

/// splitmix64: reproducible random positions without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}

fn report(label: &str, mut latencies: Vec<Duration>, elapsed: Duration) {
    latencies.sort();
    println!(
        "{label:<44} {:>6} requests {:>7.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
}

#[derive(Clone, Copy)]
enum Proof {
    Inclusion,
    Consistency,
}

/// `requests` proofs of `kind` against the tree of `size` leaves from `callers` tasks.
async fn proofs(
    notary: &Notary,
    kind: Proof,
    size: u64,
    requests: usize,
    callers: usize,
    print: bool,
) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let notary = notary.clone();
            let count = requests / callers + usize::from(caller < requests % callers);
            tokio::spawn(async move {
                let mut rng = Rng(caller as u64 * 7919 + size);
                let mut latencies = Vec::with_capacity(count);
                for _ in 0..count {
                    let t = Instant::now();
                    match kind {
                        Proof::Inclusion => {
                            notary
                                .inclusion_proof(rng.below(size), size)
                                .await
                                .expect("proof");
                        }
                        Proof::Consistency => {
                            notary
                                .consistency_proof(1 + rng.below(size - 1), size)
                                .await
                                .expect("proof");
                        }
                    }
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let label = format!(
        "{} proof, {callers:>2} caller{}",
        match kind {
            Proof::Inclusion => "inclusion",
            Proof::Consistency => "consistency",
        },
        if callers == 1 { "" } else { "s" }
    );
    if print {
        report(&label, latencies, started.elapsed());
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let total = env_number("BENCH_PROOF_EVENTS", 1_000_000);
        let requests = env_number("BENCH_PROOF_REQUESTS", 5_000);
        assert!(total >= 2 && requests >= 1);
        let client = Client::with_uri_str(mongo_url()).await.unwrap();
        let db = format!("bench_proofs_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let store = EventStore::open(&client, &db, StoreConfig::default()).await.unwrap();

        // Fill: batches of FILL_BATCH events (5 streams of 100) from FILL_CALLERS tasks.
        let batches = total.div_ceil(FILL_BATCH);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let fillers: Vec<_> = (0..FILL_CALLERS)
            .map(|_| {
                let (store, next) = (store.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= batches {
                            break;
                        }
                        let events = FILL_BATCH.min(total - b * FILL_BATCH);
                        let mut batch = AppendBatch::default();
                        for (s, chunk) in (0..events).collect::<Vec<_>>().chunks(100).enumerate() {
                            batch = batch.with(
                                format!("bench-{}", (b * 5 + s) % 20_000),
                                ExpectedVersion::Any,
                                chunk.iter().map(|n| event(b, *n)).collect(),
                            );
                        }
                        store.append(batch).await.expect("append");
                        if (b + 1) % 200 == 0 {
                            eprintln!("filled {} batches of {batches}", b + 1);
                        }
                    }
                })
            })
            .collect();
        for filler in fillers {
            filler.await.unwrap();
        }
        let fill = started.elapsed();
        let (log_head, _) = store.head().await.unwrap();
        assert_eq!(log_head, total as u64);
        println!(
            "filled {total} events in {:.1} s ({:.0} events/s, batches of {FILL_BATCH}, {FILL_CALLERS} callers)",
            fill.as_secs_f64(),
            total as f64 / fill.as_secs_f64()
        );

        // Build: a notary on the full log; every checkpoint interval as in production.
        let settings = CheckpointSettings {
            signer: Some(Arc::new(SignerKey::from_seed("bench.local/ledger", [1; 32]).unwrap())),
            retired: Vec::new(),
            every_events: 1000,
            every: Duration::from_secs(10),
        };
        let started = Instant::now();
        let notary = Notary::start(store.clone(), &client.database(&db), &settings).unwrap();
        let mut last_report = Instant::now();
        let size = loop {
            let size = notary.tree().head().await.unwrap().size;
            if size >= log_head {
                break size;
            }
            assert!(started.elapsed() < BUILD_LIMIT, "the tree is stuck at {size} of {log_head}");
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("tree at {size} of {log_head} after {:.0} s", started.elapsed().as_secs_f64());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let built = started.elapsed();
        println!(
            "tree built over {size} events in {:.1} s ({:.0} events/s)",
            built.as_secs_f64(),
            size as f64 / built.as_secs_f64()
        );
        let checkpoint = notary.sync(true).await.unwrap().expect("a checkpoint");
        assert_eq!(checkpoint.size, size);
        println!(
            "checkpoint of {size} signed {:.1} s after the notary started",
            started.elapsed().as_secs_f64()
        );

        // A sample of proofs verified against the signed root.
        let mut rng = Rng(42);
        for _ in 0..20 {
            let index = rng.below(size);
            let proof = notary.inclusion_proof(index, size).await.unwrap();
            let events = store.read_all(index + 1, 1).await.unwrap();
            let leaf = rules::leaf_hash(&events[0]).unwrap();
            merkle::verify_inclusion(&leaf, index, size, &proof, &checkpoint.root)
                .expect("inclusion proof verifies");
        }
        println!("20 random inclusion proofs verified against the checkpoint's root");

        // Warm-up, then the measured requests.
        proofs(&notary, Proof::Inclusion, size, 200, 1, false).await;
        proofs(&notary, Proof::Consistency, size, 200, 1, false).await;
        for callers in [1, CONCURRENT] {
            proofs(&notary, Proof::Inclusion, size, requests, callers, true).await;
            proofs(&notary, Proof::Consistency, size, requests, callers, true).await;
        }
        client.database(&db).drop().await.unwrap();
        println!("dropped {db}");
    });
    std::process::exit(0);
}
