//! The bank test under faults, against a real three-member replica set of its own.
//!
//! Two `cryptovault serve` OS processes share one database on a private three-member set
//! (`scripts/mongo.sh` with `CV_MONGO_MEMBERS=3`, on free ports from 27141 and with its data in
//! a temporary directory). Clients send random deposits, transfers, withdrawals and admin
//! transitions, each with its own `Idempotency-Key`, to either instance at random, while the test
//! kills each service instance with SIGKILL (and restarts it on the same port) and kills the
//! set's primary with `kill -9` (and restarts it later). An answer that is not definite — a 5xx,
//! a timeout, a connection error, a 409 "still in progress" — is retried with the same key on
//! either instance until it is 2xx or 4xx. Afterwards: no 500 was ever answered; every
//! acknowledged command is in the log exactly once and every refused one wrote nothing; the log
//! keeps every invariant at every position (`InvariantChecker`, and `cryptovault verify` exits
//! 0); the balances and withdrawals read models equal a fresh fold; both instances answer the
//! same balances.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cryptovault::ledger::service::CommandIds;
use cryptovault_events::EventEnvelope;
use cryptovault_projections::balances::Balances;
use cryptovault_projections::invariants::InvariantChecker;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    logged_in, nonzero, signed_up, stored_balances, wait_for_projection, TestDb, TestUser,
    TEST_CSRF_SECRET, TEST_JWT_SECRET,
};

/// The first port tried for the set (members on PORT, PORT+1, PORT+2); clear of the suite's
/// 27118, the private nodes 27119 and 27131, and the `CV_MONGO_MEMBERS=3` run's 27121–27123.
const FIRST_PORT: u16 = 27141;
const USERS: usize = 20;
const CLIENTS: u64 = 6;
const COMMANDS_PER_CLIENT: usize = 40;
/// The longest one command is retried before the test gives up on it (a record held by a
/// killed instance goes stale after 30 s).
const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- the replica set

/// A private three-member set, stopped on drop (also when the test panics), its directory
/// deleted — except, when the test fails, the members' and the service instances' logs.
struct ReplicaSet {
    port: u16,
    root: Option<tempfile::TempDir>,
}

impl ReplicaSet {
    fn new() -> Self {
        let port = free_port_triple();
        let base = std::env::var("CV_MONGO_RUN_ROOT").unwrap_or_else(|_| "/tmp".into());
        std::fs::create_dir_all(&base).unwrap();
        let root = tempfile::Builder::new()
            .prefix("bank-faults-")
            .tempdir_in(base)
            .expect("a data directory");
        Self {
            port,
            root: Some(root),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.as_ref().unwrap().path().to_owned()
    }

    /// Runs `scripts/mongo.sh ARGS` for this set; its stdout, or its stderr as the error.
    fn mongo(&self, args: &[&str]) -> Result<String, String> {
        let root = self.dir().to_string_lossy().into_owned();
        crate::helpers::mongo_sh(
            args,
            &[
                ("CV_MONGO_MEMBERS", "3".into()),
                ("CV_MONGO_PORT", self.port.to_string()),
                ("CV_MONGO_RUN_ROOT", root),
                ("CV_MONGO_CACHE_GB", "0.25".into()),
                ("CV_MONGO_OPLOG_MB", "256".into()),
                ("CV_MONGO_ELECTION_TIMEOUT_MS", "3000".into()),
                // No fail points on this set.
                ("CV_MONGO_TEST_COMMANDS", "".into()),
            ],
        )
    }

    async fn run(self: &Arc<Self>, args: &[&str]) -> Result<String, String> {
        let (set, args): (_, Vec<String>) =
            (self.clone(), args.iter().map(|a| a.to_string()).collect());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            set.mongo(&args)
        })
        .await
        .unwrap()
    }
}

impl Drop for ReplicaSet {
    fn drop(&mut self) {
        let _ = self.mongo(&["stop"]);
        if std::thread::panicking() {
            // Keep the logs (the members' and the instances'), not the members' data.
            if let Some(root) = self.root.take() {
                let root = root.keep();
                for member in 0..3 {
                    let data = root.join(format!("rs3-{}/member-{member}/data", self.port));
                    let _ = std::fs::remove_dir_all(data);
                }
                eprintln!("bank_faults: logs kept in {}", root.display());
            }
        }
    }
}

/// Three consecutive loopback ports, from [`FIRST_PORT`] on, that nothing listens on.
fn free_port_triple() -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    (FIRST_PORT..FIRST_PORT + 60)
        .step_by(3)
        .find(|&p| (p..p + 3).all(free))
        .expect("three free ports from 27141")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------- service instances

/// `cryptovault serve` as an OS process on a fixed port (so a restart takes the same address);
/// SIGKILLed on drop. Its stderr goes to `serve-<name>-<generation>.log` in the set's directory.
struct Instance {
    name: &'static str,
    port: u16,
    mongo_url: String,
    db: String,
    logs: PathBuf,
    generation: u32,
    child: Option<Child>,
}

impl Instance {
    fn new(name: &'static str, mongo_url: &str, db: &str, logs: PathBuf) -> Self {
        Self {
            name,
            port: free_port(),
            mongo_url: mongo_url.to_owned(),
            db: db.to_owned(),
            logs,
            generation: 0,
            child: None,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it answers `/health`.
    async fn start(&mut self) {
        for _ in 0..5 {
            self.generation += 1;
            let log = File::create(
                self.logs
                    .join(format!("serve-{}-{}.log", self.name, self.generation)),
            )
            .unwrap();
            // Waited for in `kill`/`Drop`.
            #[allow(clippy::zombie_processes)]
            let child = Command::new(env!("CARGO_BIN_EXE_cryptovault"))
                .arg("serve")
                .env("MONGO_URL", &self.mongo_url)
                .env("DB_NAME", &self.db)
                .env("HOST", "127.0.0.1")
                .env("PORT", self.port.to_string())
                .env("JWT_SECRET", TEST_JWT_SECRET)
                .env("CSRF_SECRET", TEST_CSRF_SECRET)
                .env("EMAIL_INDEX_KEY", crate::helpers::TEST_EMAIL_INDEX_KEY)
                .env("ENVIRONMENT", "test")
                .env("REQUEST_TIMEOUT_SECS", "10")
                .env("RATE_LIMIT_PER_IP_PER_MIN", "100000")
                .env("MAX_CONNECTIONS_PER_CLIENT", "4096")
                .env("RATE_LIMIT_LOGIN_PER_MIN", "100000")
                .env("RATE_LIMIT_PER_USER_PER_MIN", "100000")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("start cryptovault serve");
            self.child = Some(child);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if let Ok(r) = reqwest::get(format!("{}/health", self.base())).await {
                    if r.status().is_success() {
                        return;
                    }
                }
                if let Ok(Some(_)) = self.child.as_mut().unwrap().try_wait() {
                    break; // exited (e.g. the port not yet free): start it again
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "cryptovault serve {} did not start (see its logs)",
            self.name
        );
    }

    /// SIGKILL: no shutdown, requests in flight are cut off.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the `cryptovault` binary with `args` against the set's database.
async fn cli(url: &str, db: &str, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let (url, db) = (url.to_owned(), db.to_owned());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cryptovault"))
            .args(&args)
            .env("MONGO_URL", url)
            .env("DB_NAME", db)
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("CSRF_SECRET", TEST_CSRF_SECRET)
            .env("EMAIL_INDEX_KEY", crate::helpers::TEST_EMAIL_INDEX_KEY)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the cryptovault binary")
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------- commands and retries

/// What happened to the requests, over the whole run.
#[derive(Default)]
struct Stats {
    attempts: AtomicU64,
    unavailable_503: AtomicU64,
    other_5xx: AtomicU64,
    timeouts: AtomicU64,
    connection_errors: AtomicU64,
    in_progress_409: AtomicU64,
    /// Commands that needed more than one attempt.
    ambiguous_commands: AtomicU64,
    /// Every 500 answered, with its body (must stay empty).
    internal_errors: Mutex<Vec<String>>,
}

impl Stats {
    fn line(&self) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "attempts {}, 503 {}, other 5xx {}, timeouts {}, connection errors {}, 409 in progress {}, ambiguous commands {}, 500 {}",
            n(&self.attempts),
            n(&self.unavailable_503),
            n(&self.other_5xx),
            n(&self.timeouts),
            n(&self.connection_errors),
            n(&self.in_progress_409),
            n(&self.ambiguous_commands),
            self.internal_errors.lock().unwrap().len()
        )
    }
}

/// A command with a definite answer.
#[derive(Debug, Clone)]
struct Outcome {
    kind: &'static str,
    actor: Uuid,
    key: String,
    /// The request's hash (route and body), part of the ids derived from the key.
    request_hash: String,
    status: StatusCode,
    body: Value,
}

/// Sends `POST path` with `body` and a fresh `Idempotency-Key` to a random instance, retrying
/// every answer that is not definite with the same key (on a random instance again, with
/// backoff) until it is 2xx or 4xx. Panics after [`COMMAND_DEADLINE`].
/// The HTTP client, the instances' base URLs, and the statistics every command adds to.
#[derive(Clone)]
struct Clients {
    http: reqwest::Client,
    bases: Arc<Vec<String>>,
    stats: Arc<Stats>,
}

async fn command(
    clients: &Clients,
    rng: &mut rand::rngs::StdRng,
    kind: &'static str,
    user: &TestUser,
    path: &str,
    body: Value,
) -> Outcome {
    use rand::RngExt;
    let Clients { http, bases, stats } = clients;
    let key = Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if attempt == 2 {
            stats.ambiguous_commands.fetch_add(1, Ordering::Relaxed);
        }
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let base = &bases[rng.random_range(0..bases.len())];
        let sent = http
            .post(format!("{base}{path}"))
            .bearer_auth(&user.token)
            .header("idempotency-key", &key)
            .timeout(Duration::from_secs(15))
            .json(&body)
            .send()
            .await;
        let why = match sent {
            Ok(response) => {
                let status = response.status();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                let in_progress =
                    status == StatusCode::CONFLICT && answer["error"]["code"] == "conflict";
                if status == StatusCode::INTERNAL_SERVER_ERROR {
                    stats
                        .internal_errors
                        .lock()
                        .unwrap()
                        .push(format!("{kind} {path} via {base}: {answer}"));
                }
                if (status.is_success() || status.is_client_error()) && !in_progress {
                    return Outcome {
                        kind,
                        actor: user.id.parse().unwrap(),
                        key,
                        request_hash: cryptovault::idempotency::request_hash("POST", path, &body),
                        status,
                        body: answer,
                    };
                }
                if in_progress {
                    stats.in_progress_409.fetch_add(1, Ordering::Relaxed);
                } else if status == StatusCode::SERVICE_UNAVAILABLE {
                    stats.unavailable_503.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.other_5xx.fetch_add(1, Ordering::Relaxed);
                }
                format!("{status} {answer}")
            }
            Err(error) => {
                if error.is_timeout() {
                    stats.timeouts.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                }
                format!("{error}")
            }
        };
        assert!(
            started.elapsed() < COMMAND_DEADLINE,
            "{kind} {path} (key {key}) got no definite answer within {COMMAND_DEADLINE:?}; last: {why}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// One client: a bounded, seeded sequence of random commands.
async fn client_load(
    seed: u64,
    clients: Clients,
    users: Arc<Vec<TestUser>>,
    root: TestUser,
) -> (Vec<Outcome>, Instant) {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for _ in 0..COMMANDS_PER_CLIENT {
        // Paced so that the load spans the faults (about 30 s).
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
        let me = &users[rng.random_range(0..users.len())];
        let asset = ["USD", "BTC"][rng.random_range(0..2)];
        let amount = format!(
            "{}.{:02}",
            rng.random_range(0..40),
            rng.random_range(1..100)
        );
        match rng.random_range(0..5) {
            0 => {
                let body = json!({ "asset": asset, "amount": amount });
                out.push(
                    command(
                        &clients,
                        &mut rng,
                        "deposit",
                        me,
                        "/api/wallet/deposits",
                        body,
                    )
                    .await,
                );
            }
            1 | 2 => {
                let to = &users[rng.random_range(0..users.len())];
                if to.id == me.id {
                    continue;
                }
                let body = json!({ "to_email": to.email, "asset": asset, "amount": amount });
                out.push(
                    command(
                        &clients,
                        &mut rng,
                        "transfer",
                        me,
                        "/api/wallet/transfers",
                        body,
                    )
                    .await,
                );
            }
            _ => {
                let body =
                    json!({ "asset": asset, "amount": amount, "address": format!("addr-{seed}") });
                let requested = command(
                    &clients,
                    &mut rng,
                    "withdrawal",
                    me,
                    "/api/wallet/withdrawals",
                    body,
                )
                .await;
                let id = requested.body["withdrawal"]["id"]
                    .as_str()
                    .map(str::to_owned);
                out.push(requested);
                let Some(id) = id else { continue };
                let path = |a: &str| format!("/api/admin/withdrawals/{id}/{a}");
                match rng.random_range(0..3) {
                    0 => {
                        for (kind, action) in [("approve", "approve"), ("complete", "complete")] {
                            let done =
                                command(&clients, &mut rng, kind, &root, &path(action), json!({}))
                                    .await;
                            out.push(done);
                        }
                    }
                    1 => {
                        let done = command(
                            &clients,
                            &mut rng,
                            "reject",
                            &root,
                            &path("reject"),
                            json!({}),
                        )
                        .await;
                        out.push(done);
                    }
                    _ => {} // stays pending: held
                }
            }
        }
    }
    (out, Instant::now())
}

// ---------------------------------------------------------------- checks

/// The whole log in position order.
async fn whole_log(t: &TestDb) -> Vec<EventEnvelope> {
    let store = t.store().await;
    let mut out: Vec<EventEnvelope> = Vec::new();
    loop {
        let events = store.read_all(out.len() as u64 + 1, 5000).await.unwrap();
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
}

/// The event type and payload field naming the entity each kind of command acts on, and the
/// entity's id in a 2xx answer.
fn expected_event(outcome: &Outcome) -> (&'static str, &'static str, String) {
    let (event_type, field, entity) = match outcome.kind {
        "deposit" => ("FundsDeposited", "deposit_id", "deposit"),
        "transfer" => ("TransferSent", "transfer_id", "transfer"),
        "withdrawal" => ("WithdrawalRequested", "withdrawal_id", "withdrawal"),
        "approve" => ("WithdrawalApproved", "withdrawal_id", "withdrawal"),
        "complete" => ("WithdrawalCompleted", "withdrawal_id", "withdrawal"),
        "reject" => ("WithdrawalRejected", "withdrawal_id", "withdrawal"),
        other => panic!("unknown kind {other}"),
    };
    let id = outcome.body[entity]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (event_type, field, id)
}

/// Acknowledged commands are in the log exactly once (by the entity id of the answer, and by the
/// event id derived from the key); refused ones wrote nothing.
fn assert_exactly_once(log: &[EventEnvelope], outcomes: &[Outcome]) {
    let mut by_id: BTreeMap<Uuid, Vec<&EventEnvelope>> = BTreeMap::new();
    for event in log {
        by_id.entry(event.event_id).or_default().push(event);
    }
    let mut problems = Vec::new();
    for outcome in outcomes {
        let derived =
            CommandIds::from_key(outcome.actor, &outcome.key, &outcome.request_hash).event_id(0);
        let found = by_id.get(&derived).map(Vec::as_slice).unwrap_or(&[]);
        let (event_type, field, id) = expected_event(outcome);
        if outcome.status.is_success() {
            let n = log
                .iter()
                .filter(|e| e.event_type == event_type && e.payload[field] == id.as_str())
                .count();
            if n != 1 {
                problems.push(format!(
                    "acknowledged {} {id} ({event_type}) appears {n} times",
                    outcome.kind
                ));
            }
            if found.len() != 1 || found[0].event_type != event_type {
                problems.push(format!(
                    "acknowledged {} {id}: the event derived from its key is {:?}",
                    outcome.kind,
                    found
                        .iter()
                        .map(|e| (e.position, &e.event_type))
                        .collect::<Vec<_>>()
                ));
            }
        } else {
            let code = outcome.body["error"]["code"].as_str().unwrap_or_default();
            let expected = match outcome.kind {
                "deposit" => &[][..],
                "transfer" | "withdrawal" => &["insufficient_funds"][..],
                _ => &["invalid_state"][..],
            };
            if !expected.contains(&code) {
                problems.push(format!(
                    "{} answered {} {}",
                    outcome.kind, outcome.status, outcome.body
                ));
            }
            if !found.is_empty() {
                problems.push(format!(
                    "refused {} ({} {}) wrote events at {:?}",
                    outcome.kind,
                    outcome.status,
                    outcome.body,
                    found.iter().map(|e| e.position).collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );
}

/// Every read model this test checks equals a fresh fold of `log`. The one place that knows how
/// balances are stored (`helpers::stored_balances`) and folded (`helpers::nonzero`).
async fn assert_read_models_equal_a_fresh_fold(t: &TestDb, fold: &Balances, log: &[EventEnvelope]) {
    wait_for_projection(t, "balances").await;
    assert_eq!(
        stored_balances(t).await,
        nonzero(fold),
        "the balances read model differs from a fresh fold"
    );

    // Withdrawals: each one's status, as the log's account streams tell it.
    wait_for_projection(t, "withdrawals").await;
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for event in log.iter().filter(|e| e.stream_id.starts_with("account-")) {
        let status = match event.event_type.as_str() {
            "WithdrawalRequested" => "pending",
            "WithdrawalApproved" => "approved",
            "WithdrawalCompleted" => "completed",
            "WithdrawalRejected" => "rejected",
            _ => continue,
        };
        let id = event.payload["withdrawal_id"].as_str().unwrap().to_owned();
        expected.insert(id, status.to_owned());
    }
    use futures::TryStreamExt;
    let rows: Vec<bson::Document> = t
        .db()
        .collection("withdrawals")
        .find(bson::doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let stored: BTreeMap<String, String> = rows
        .iter()
        .map(|r| {
            (
                r.get_str("_id").unwrap().to_owned(),
                r.get_str("status").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        stored, expected,
        "the withdrawals read model differs from the log"
    );
}

/// `GET /api/wallet/balance?min_position=` as `user`, retried while not definite.
async fn balances_via(base: &str, user: &TestUser, min_position: u64) -> Value {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = http
            .get(format!(
                "{base}/api/wallet/balance?min_position={min_position}"
            ))
            .bearer_auth(&user.token)
            .timeout(Duration::from_secs(15))
            .send()
            .await
        {
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
            if status.is_success() {
                return body["balances"].clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no balance for {} from {base}", user.email);
}

/// The values of every series of metric `name` in a Prometheus text page.
fn metric_values(page: &str, name: &str) -> Vec<(String, f64)> {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let next = series[name.len()..].chars().next();
            if !matches!(next, None | Some('{')) {
                return None;
            }
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The running service's own checker (`invariant_monitor.rs`, which re-read the log from
/// position 0 when each instance started) reached `head` and counted no violation.
async fn assert_monitor_is_clean(base: &str, head: u64) {
    let started = Instant::now();
    loop {
        let page = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let checked = metric_values(&page, "ledger_invariant_checked_position")
            .first()
            .map(|(_, v)| *v as u64)
            .unwrap_or(0);
        if checked >= head {
            let violations: Vec<_> = metric_values(&page, "ledger_invariant_violations_total")
                .into_iter()
                .filter(|(_, v)| *v != 0.0)
                .collect();
            assert!(violations.is_empty(), "{base}: {violations:?}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{base}: the invariant monitor checked only up to {checked} of {head}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service instances' warnings and errors, counted by level and message (shown with the
/// test's output: the first thing to read when an assertion fails).
fn log_summary(dir: &std::path::Path) -> String {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("serve-") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let level = v["level"].as_str().unwrap_or("?").to_owned();
            let message = v["message"]
                .as_str()
                .or(v["fields"]["message"].as_str())
                .unwrap_or("?");
            let message: String = message.chars().take(120).collect();
            *counts.entry((level, message)).or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|((level, message), n)| format!("  {n:>4} {level} {message}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_test_under_instance_and_primary_kills_on_a_three_member_set() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let test_started = Instant::now();
    let set = Arc::new(tokio::task::spawn_blocking(ReplicaSet::new).await.unwrap());
    let url = set.run(&["start"]).await.expect("the set starts");
    let service_url = format!("{url}&serverSelectionTimeoutMS=3000&heartbeatFrequencyMS=500");
    let t = TestDb {
        client: mongodb::Client::with_uri_str(&service_url).await.unwrap(),
        name: format!(
            "t_bank_faults_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        ),
    };
    let mut a = Instance::new("a", &service_url, &t.name, set.dir());
    let mut b = Instance::new("b", &service_url, &t.name, set.dir());
    a.start().await;
    b.start().await;
    let bases = Arc::new(vec![a.base(), b.base()]);
    eprintln!(
        "bank_faults: set on {url}, instances {bases:?}, ready after {:?}",
        test_started.elapsed()
    );

    // Users, an admin, and their funds (before any fault).
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(signed_up(&bases[i % 2], &format!("bank{i}@example.com")).await);
    }
    signed_up(&bases[0], "bank-admin@example.com").await;
    let out = cli(
        &service_url,
        &t.name,
        &[
            "admin",
            "grant",
            "--email",
            "bank-admin@example.com",
            "--role",
            "admin",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = logged_in(&bases[1], "bank-admin@example.com").await;
    let stats = Arc::new(Stats::default());
    let clients = Clients {
        http: reqwest::Client::new(),
        bases: bases.clone(),
        stats: stats.clone(),
    };
    let mut outcomes = Vec::new();
    {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1000);
        for user in &users {
            for (asset, amount) in [("USD", "80.00"), ("BTC", "80.00")] {
                let funded = command(
                    &clients,
                    &mut rng,
                    "deposit",
                    user,
                    "/api/wallet/deposits",
                    json!({ "asset": asset, "amount": amount }),
                )
                .await;
                assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.body);
                outcomes.push(funded);
            }
        }
    }
    let users = Arc::new(users);

    // The load, and the faults while it runs.
    let load_started = Instant::now();
    let loads: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            tokio::spawn(client_load(
                seed,
                clients.clone(),
                users.clone(),
                root.clone(),
            ))
        })
        .collect();
    // Each fault at its time from the start of the load (later when the machine is slow),
    // noted with when it was done.
    let mut faults: Vec<String> = Vec::new();
    let mut note = |what: String| {
        faults.push(format!("{:.1?}: {what}", load_started.elapsed()));
    };
    let at = |s: u64| tokio::time::sleep_until((load_started + Duration::from_secs(s)).into());
    at(3).await;
    b.kill();
    note("kill -9 instance b".into());
    at(6).await;
    b.start().await;
    note("instance b restarted".into());
    at(9).await;
    let primary = set.run(&["primary"]).await.expect("a primary");
    set.run(&["kill-member", &primary])
        .await
        .expect("kill the primary");
    note(format!("kill -9 member {primary} (the primary)"));
    at(18).await;
    set.run(&["start-member", &primary])
        .await
        .expect("restart the old primary");
    note(format!("member {primary} back"));
    at(20).await;
    a.kill();
    note("kill -9 instance a".into());
    at(23).await;
    a.start().await;
    note("instance a restarted".into());
    let last_fault = load_started.elapsed();
    let mut load_ended = load_started;
    for load in loads {
        let (done, ended) = load.await.unwrap();
        outcomes.extend(done);
        load_ended = load_ended.max(ended);
    }
    let load_time = load_started.elapsed();
    let acknowledged = outcomes.iter().filter(|o| o.status.is_success()).count();
    eprintln!(
        "bank_faults: the instances logged:\n{}",
        log_summary(&set.dir())
    );
    eprintln!(
        "bank_faults: load of {} commands ({acknowledged} acknowledged) in {load_time:?}; faults: {faults:?}; {}",
        outcomes.len(),
        stats.line()
    );
    assert!(
        load_ended - load_started > last_fault,
        "the load ended before the last fault ({last_fault:?}): the faults did not all hit it"
    );

    assert!(
        stats.ambiguous_commands.load(Ordering::Relaxed) > 0,
        "no command was ever retried: the faults missed the load"
    );

    // No 500 was ever answered.
    let internal = stats.internal_errors.lock().unwrap().clone();
    assert!(internal.is_empty(), "500 answers: {internal:#?}");

    // Exactly once, and refusals wrote nothing.
    let log = whole_log(&t).await;
    assert_exactly_once(&log, &outcomes);

    // Every invariant at every position, in this process and by `cryptovault verify`.
    let mut checker = InvariantChecker::new();
    let mut violations = Vec::new();
    for event in &log {
        violations.extend(checker.push(event).into_iter().map(|v| v.to_string()));
    }
    assert!(violations.is_empty(), "violations: {violations:#?}");
    assert_eq!(checker.summary().events_checked, log.len() as u64);
    let verify = cli(&service_url, &t.name, &["verify"]).await;
    assert!(
        verify.status.success(),
        "cryptovault verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let head = log.last().map(|e| e.position).unwrap_or(0);
    for base in bases.iter() {
        assert_monitor_is_clean(base, head).await;
    }

    // Conservation per asset.
    let mut fold = Balances::default();
    for event in &log {
        fold.apply(event);
    }
    for (asset, sum) in fold.sums() {
        assert!(sum.is_zero(), "{asset} sums to {sum}");
    }

    // The read models are a fresh fold, and both instances answer the same balances.
    assert_read_models_equal_a_fresh_fold(&t, &fold, &log).await;
    for user in users.iter() {
        let (from_a, from_b) = (
            balances_via(&bases[0], user, head).await,
            balances_via(&bases[1], user, head).await,
        );
        assert_eq!(from_a, from_b, "{}: the instances disagree", user.email);
    }
    eprintln!(
        "bank_faults: {} events checked; test took {:?}",
        log.len(),
        test_started.elapsed()
    );
    drop((a, b));
    let _ = t.db().drop().await;
}
