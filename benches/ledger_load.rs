//! End-to-end load over HTTP on loopback: funded users with Bearer tokens and many concurrent
//! clients issuing P2P transfers against the real service and MongoDB.
//!
//! `cargo bench --bench ledger_load` prints, in one run on one mongod: the raw `insert_many`
//! reference (docs/s); saturated transfers/s with p50/p99 latency; p50/p99 latency at half that
//! rate; projection lag p50/p99 (answer → balance read model has applied the transfer); and a
//! single hot account's transfer rate. Every loop is bounded by a request count.
//!
//! `BENCH_CHECKPOINTS=on` gives the service a checkpoint signing key (issue 16: the notary
//! builds the log's Merkle tree and signs checkpoints beside the writers); `off` (the default)
//! runs it without. Compare the two by alternating runs against the same mongod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptovault::config::Config;
use cryptovault::startup::Application;
use reqwest::Client;
use serde_json::{json, Value};

#[path = "common.rs"]
mod common;
use common::{mongo_url, ms, percentile, raw_insert_many};

const USERS: usize = 64;
const CLIENTS: usize = 64;
const TRANSFERS_PER_CLIENT: usize = 60;

struct User {
    token: String,
    email: String,
}

async fn user(http: &Client, base: &str, i: usize) -> User {
    let email = format!("load{i}@example.com");
    let body = json!({ "email": email, "password": "load test password", "name": "Load" });
    http.post(format!("{base}/api/auth/signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let login: Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "email": email, "password": "load test password" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let funded = http
        .post(format!("{base}/api/wallet/deposits"))
        .bearer_auth(&token)
        .json(&json!({ "asset": "USD", "amount": "1000000" }))
        .send()
        .await
        .unwrap();
    assert_eq!(funded.status(), 201);
    User { token, email }
}

/// One transfer; returns (latency, position).
async fn transfer(http: &Client, base: &str, from: &User, to: &User) -> (Duration, u64) {
    let started = Instant::now();
    let response = http
        .post(format!("{base}/api/wallet/transfers"))
        .bearer_auth(&from.token)
        .json(&json!({ "to_email": to.email, "asset": "USD", "amount": "0.01" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let body: Value = response.json().await.unwrap();
    (started.elapsed(), body["position"].as_u64().unwrap())
}

/// `clients` concurrent clients, each `per_client` transfers, optionally paced to `rate` per
/// second in total. Senders are picked by `sender(client)`.
async fn run(
    base: &str,
    users: &Arc<Vec<User>>,
    clients: usize,
    per_client: usize,
    rate: Option<f64>,
    sender: fn(usize) -> usize,
    app: Option<&cryptovault::store::read_models::runner::ProjectionHandle>,
) -> (f64, Vec<Duration>, Vec<Duration>) {
    let http = Client::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, base, users, projection) =
                (http.clone(), base.to_owned(), users.clone(), app.cloned());
            tokio::spawn(async move {
                let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
                let mut latencies = Vec::new();
                let mut lags = Vec::new();
                let from = sender(c) % users.len();
                for n in 0..per_client {
                    if let Some(interval) = interval {
                        let due = started
                            + interval * n as u32
                            + interval.mul_f64(c as f64 / clients as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let to = (from + 1 + (c + n) % (users.len() - 1)) % users.len();
                    let (latency, position) =
                        transfer(&http, &base, &users[from], &users[to]).await;
                    latencies.push(latency);
                    if let (Some(projection), true) = (&projection, n % 5 == 0) {
                        let answered = Instant::now();
                        assert!(projection.wait_for(position, Duration::from_secs(30)).await);
                        lags.push(answered.elapsed());
                    }
                }
                (latencies, lags)
            })
        })
        .collect();
    let (mut latencies, mut lags) = (Vec::new(), Vec::new());
    for task in tasks {
        let (l, g) = task.await.unwrap();
        latencies.extend(l);
        lags.extend(g);
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    lags.sort();
    (rate, latencies, lags)
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
        let url = mongo_url();
        let db = format!("bench_ledger_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let mut vars: Vec<(&str, String)> = vec![
            ("MONGO_URL", url.clone()),
            ("DB_NAME", db.clone()),
            ("HOST", "127.0.0.1".into()),
            ("PORT", "0".into()),
            ("JWT_SECRET", uuid::Uuid::new_v4().to_string().repeat(2)),
            ("CSRF_SECRET", uuid::Uuid::new_v4().to_string().repeat(2)),
            ("EMAIL_INDEX_KEY", uuid::Uuid::new_v4().to_string().repeat(2)),
            ("RATE_LIMIT_PER_IP_PER_MIN", "10000000".into()),
            ("RATE_LIMIT_LOGIN_PER_MIN", "10000000".into()),
            ("RATE_LIMIT_PER_USER_PER_MIN", "10000000".into()),
            ("MAX_CONNECTIONS_PER_CLIENT", "4096".into()),
        ];
        match std::env::var("BENCH_CHECKPOINTS").as_deref() {
            Ok("on") => {
                let key = cryptovault_events::checkpoint::SignerKey::from_seed("bench.local/ledger", [1; 32]).unwrap();
                vars.push(("CHECKPOINT_SIGNING_KEY", key.to_private_string()));
                println!("checkpoints on (the notary builds the tree and signs)");
            }
            Ok("off") | Err(_) => println!("checkpoints off"),
            Ok(other) => panic!("BENCH_CHECKPOINTS must be on or off, not {other}"),
        }
        let config = Config::from_lookup(move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())).unwrap();
        let app = Application::build(config).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        let balances = app.state.balances.clone();
        let metrics = app.state.metrics.clone();
        tokio::spawn(app.run_until(std::future::pending()));

        let client = mongodb::Client::with_uri_str(&url).await.unwrap();
        let raw = raw_insert_many(&client, &db, "raw_events").await;
        println!("raw insert_many (batches of 100, w:majority j:true, sequential): {raw:>8.0} docs/s");

        let http = Client::new();
        let mut users = Vec::new();
        for i in 0..USERS {
            users.push(user(&http, &base, i).await);
        }
        let users = Arc::new(users);
        run(&base, &users, 16, 10, None, |c| c, None).await; // warm-up

        let (rate, latencies, _) = run(&base, &users, CLIENTS, TRANSFERS_PER_CLIENT, None, |c| c, None).await;
        println!(
            "transfers, {CLIENTS} clients, saturated: {rate:>8.0} transfers/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({:.0}% of raw insert rate)",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            100.0 * rate / raw
        );
        let half = rate / 2.0;
        let (paced, latencies, lags) = run(&base, &users, CLIENTS, TRANSFERS_PER_CLIENT / 2, Some(half), |c| c, Some(&balances)).await;
        println!(
            "transfers at half load ({half:.0}/s target, {paced:.0}/s achieved): p50 {:>6.2} ms  p99 {:>6.2} ms",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99))
        );
        println!(
            "projection lag (answer -> balances applied), {} samples: p50 {:>6.2} ms  p99 {:>6.2} ms",
            lags.len(),
            ms(percentile(&lags, 0.5)),
            ms(percentile(&lags, 0.99))
        );
        let (hot, latencies, _) = run(&base, &users, 32, 20, None, |_| 0, None).await;
        println!(
            "hot account, 32 clients sending from one account: {hot:>8.0} transfers/s  p99 {:>6.2} ms",
            ms(percentile(&latencies, 0.99))
        );
        // How often a decision had to be re-run because its account changed meanwhile.
        for line in metrics.render().lines().filter(|l| l.starts_with("ledger_command_conflicts_total")) {
            println!("{line}");
        }
        client.database(&db).drop().await.unwrap();
    });
    // Leave without dropping the runtime: background tasks (MongoDB pools, projectors) would
    // otherwise be torn down mid-flight and print spurious panics.
    std::process::exit(0);
}
