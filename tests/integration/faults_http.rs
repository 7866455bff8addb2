//! Faults answer 503, never 500 (README "HTTP endpoints", ARCHITECTURE.md "Invariants").
//!
//! The service under test gets a MongoDB client of its own `appName` (in its `MONGO_URL`), and
//! the server's `failCommand` fail point (the test mongod runs with `enableTestCommands`) makes
//! the commands it runs fail — lock timeouts, aborted transactions, elections, write conflicts,
//! dropped connections — while the test's own client is untouched. Every refused request must
//! be 503 `unavailable` with `Retry-After` in the shared error shape, must write nothing, and
//! its retry with the same `Idempotency-Key` once the fault is gone must apply the command
//! exactly once. The last test stops a private mongod outright.

use std::time::{Duration, Instant};

use bson::{doc, Document};
use reqwest::{Client as Http, Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    admin, event_count, logged_in, mongo_url, signed_up, spawn_app, TestDb, TestUser, PASSWORD,
};

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    if url.contains('?') {
        format!("{url}&{param}")
    } else {
        format!("{}/?{param}", url.trim_end_matches('/'))
    }
}

/// Sets the `failCommand` fail point of the shared test mongod to `alwaysOn` with `data`, for
/// the client named `app_name` only.
async fn fail(t: &TestDb, app_name: &str, mut data: Document) {
    data.insert("appName", app_name);
    t.client
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": "alwaysOn", "data": data })
        .await
        .expect("fail points need mongod with enableTestCommands (scripts/test.sh starts it so)");
}

/// Turns the fail point off; returns how often it fired since mongod started.
async fn heal(t: &TestDb) -> i64 {
    let reply = t
        .client
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": "off" })
        .await
        .unwrap();
    reply
        .get_i64("count")
        .or_else(|_| reply.get_i32("count").map(i64::from))
        .unwrap_or(0)
}

/// One HTTP request of the test: who sends it, where, with which body and key. Each send gets
/// a fresh `X-Request-ID`, which the service records in the metadata of every event it writes.
#[derive(Clone)]
struct Call {
    what: &'static str,
    method: Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
    key: Option<String>,
}

impl Call {
    fn get(what: &'static str, user: &TestUser, path: &str) -> Self {
        Self {
            what,
            method: Method::GET,
            path: path.to_owned(),
            token: Some(user.token.clone()),
            body: None,
            key: None,
        }
    }

    /// A POST with a fresh `Idempotency-Key`.
    fn keyed(what: &'static str, user: &TestUser, path: &str, body: Value) -> Self {
        Self {
            what,
            method: Method::POST,
            path: path.to_owned(),
            token: Some(user.token.clone()),
            body: Some(body),
            key: Some(Uuid::new_v4().to_string()),
        }
    }

    /// An unauthenticated POST without a key (signup, login).
    fn public(what: &'static str, path: &str, body: Value) -> Self {
        Self {
            what,
            method: Method::POST,
            path: path.to_owned(),
            token: None,
            body: Some(body),
            key: None,
        }
    }

    async fn send(&self, base: &str) -> Answer {
        let request_id = format!("faults-{}", Uuid::new_v4().simple());
        let mut request = Http::new()
            .request(self.method.clone(), format!("{base}{}", self.path))
            .header("x-request-id", &request_id)
            .timeout(Duration::from_secs(40));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = &self.key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = &self.body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let replayed = response.headers().contains_key("idempotent-replayed");
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            request_id,
            status,
            retry_after,
            replayed,
            body,
        }
    }
}

struct Answer {
    request_id: String,
    status: StatusCode,
    retry_after: Option<String>,
    replayed: bool,
    body: Value,
}

impl Answer {
    /// 503 `unavailable`, `Retry-After` of at least a second, the shared error shape.
    fn assert_unavailable(&self, context: &str) {
        assert_eq!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{context}: {}",
            self.body
        );
        let error = &self.body["error"];
        assert_eq!(error["code"], "unavailable", "{context}: {}", self.body);
        assert!(error["message"].is_string(), "{context}: {}", self.body);
        assert_eq!(error["request_id"], self.request_id.as_str(), "{context}");
        let retry_after: u64 = self
            .retry_after
            .as_deref()
            .unwrap_or_else(|| panic!("{context}: 503 without Retry-After"))
            .parse()
            .unwrap_or_else(|_| panic!("{context}: Retry-After is not a number of seconds"));
        assert!(retry_after >= 1, "{context}");
    }
}

/// Events whose metadata names `request_id`: what that request wrote.
async fn written_by(t: &TestDb, request_id: &str) -> u64 {
    t.db()
        .collection::<Document>("events")
        .count_documents(doc! { "metadata.request_id": request_id })
        .await
        .unwrap()
}

/// Events carrying `id` as their deposit, withdrawal or transfer id.
async fn events_of(t: &TestDb, id: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let filter = doc! { "$or": [
        { "payload.deposit_id": id },
        { "payload.withdrawal_id": id },
        { "payload.transfer_id": id },
    ] };
    let found: Vec<Document> = t
        .db()
        .collection::<Document>("events")
        .find(filter)
        .sort(doc! { "position": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    found
        .iter()
        .map(|e| e.get_str("event_type").unwrap().to_owned())
        .collect()
}

/// The id a write answer names (`{"deposit":{"id"}}`, `{"withdrawal":…}`, `{"transfer":…}`).
fn command_id(body: &Value) -> String {
    ["deposit", "withdrawal", "transfer"]
        .iter()
        .find_map(|k| body[k]["id"].as_str())
        .unwrap_or_else(|| panic!("no command id in {body}"))
        .to_owned()
}

/// The service on the shared test mongod, with a MongoDB client named for this test only.
async fn faulty_app(prefix: &str) -> (TestDb, String, String) {
    faulty_app_with(prefix, &[]).await
}

async fn faulty_app_with(prefix: &str, overrides: &[(&str, &str)]) -> (TestDb, String, String) {
    let t = TestDb::new(prefix).await;
    let app_name = format!("cv-{}", t.name);
    // A short heartbeat: after "shutting down" errors the driver forgets the server until its
    // monitor sees it again (by default up to 10 s later).
    let url = with_param(
        &mongo_url(),
        &format!("appName={app_name}&heartbeatFrequencyMS=500"),
    );
    let mut overrides = overrides.to_vec();
    overrides.push(("MONGO_URL", url.as_str()));
    let base = spawn_app(&t, &overrides).await;
    (t, base, app_name)
}

/// `GET /ready`.
fn ready() -> Call {
    Call {
        what: "ready",
        method: Method::GET,
        path: "/ready".into(),
        token: None,
        body: None,
        key: None,
    }
}

/// Waits until `/ready` is 200 (projections caught up, MongoDB answering).
async fn until_ready(base: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let status = Http::new()
            .get(format!("{base}/ready"))
            .send()
            .await
            .map(|r| r.status());
        if matches!(status, Ok(StatusCode::OK)) {
            return;
        }
        assert!(Instant::now() < deadline, "not ready: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A service with users, money and pending withdrawals, for the fault rounds.
struct Fixture {
    t: TestDb,
    base: String,
    app_name: String,
    alice: TestUser,
    boss: TestUser,
    /// Pending withdrawals of alice, one for each round that approves one.
    pending: Vec<String>,
}

/// A fault and the requests that meet it.
type Round = (&'static str, Document, Vec<Call>);

impl Fixture {
    async fn new(prefix: &str, pending_withdrawals: usize) -> Self {
        let (t, base, app_name) = faulty_app(prefix).await;
        let alice = signed_up(&base, "alice@example.com").await;
        signed_up(&base, "bob@example.com").await;
        let boss = admin(&t, &base, "boss@example.com").await;
        let funded = Call::keyed(
            "setup deposit",
            &alice,
            "/api/wallet/deposits",
            json!({ "asset": "USD", "amount": "1000.00" }),
        )
        .send(&base)
        .await;
        assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.body);
        let mut pending = Vec::new();
        for n in 0..pending_withdrawals {
            let answer = Call::keyed(
                "setup withdrawal",
                &alice,
                "/api/wallet/withdrawals",
                json!({ "asset": "USD", "amount": "5.00", "address": format!("bc1-setup-{n}") }),
            )
            .send(&base)
            .await;
            assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
            pending.push(command_id(&answer.body));
        }
        until_ready(&base, Duration::from_secs(10)).await;
        Self {
            t,
            base,
            app_name,
            alice,
            boss,
            pending,
        }
    }

    fn deposit(&self, asset: &str) -> Call {
        Call::keyed(
            "deposit",
            &self.alice,
            "/api/wallet/deposits",
            json!({ "asset": asset, "amount": "1.5" }),
        )
    }

    fn withdrawal(&self) -> Call {
        Call::keyed(
            "withdrawal",
            &self.alice,
            "/api/wallet/withdrawals",
            json!({ "asset": "USD", "amount": "2.00", "address": "bc1-faults" }),
        )
    }

    fn transfer(&self) -> Call {
        Call::keyed(
            "transfer",
            &self.alice,
            "/api/wallet/transfers",
            json!({ "to_email": "bob@example.com", "asset": "USD", "amount": "3.00" }),
        )
    }

    fn approve(&self, n: usize) -> Call {
        Call::keyed(
            "admin approve",
            &self.boss,
            &format!("/api/admin/withdrawals/{}/approve", self.pending[n]),
            json!({}),
        )
    }

    fn get(&self, what: &'static str, path: &str) -> Call {
        let user = if path.starts_with("/api/admin") || path.starts_with("/api/audit") {
            &self.boss
        } else {
            &self.alice
        };
        Call::get(what, user, path)
    }

    fn login(&self) -> Call {
        Call::public(
            "login",
            "/api/auth/login",
            json!({ "email": "bob@example.com", "password": PASSWORD }),
        )
    }

    fn signup(&self, email: &str) -> Call {
        Call::public(
            "signup",
            "/api/auth/signup",
            json!({ "email": email, "password": PASSWORD, "name": "Faulty" }),
        )
    }

    fn statement(&self) -> Call {
        Call::keyed(
            "statement",
            &self.alice,
            "/api/transactions/export",
            json!({ "format": "json" }),
        )
    }

    /// Each round: the fault on, every request 503 `unavailable` with `Retry-After`, nothing
    /// written; the fault off, each keyed command retried with its key applied exactly once (and
    /// a second retry replays the same answer, writing nothing).
    async fn refuse_then_apply_once(&self, rounds: Vec<Round>) {
        let t = &self.t;
        for (fault, data, calls) in rounds {
            let before = event_count(t).await;
            let fired_before = heal(t).await;
            fail(t, &self.app_name, data).await;
            let mut refused = Vec::new();
            for call in calls {
                let answer = call.send(&self.base).await;
                answer.assert_unavailable(&format!("{fault}: {} {}", call.what, call.path));
                refused.push((call, answer));
            }
            let fired = heal(t).await;
            assert!(fired > fired_before, "{fault}: the fail point never fired");
            for (call, answer) in &refused {
                assert_eq!(
                    written_by(t, &answer.request_id).await,
                    0,
                    "{fault}: the refused {} wrote events",
                    call.what
                );
            }
            assert_eq!(
                event_count(t).await,
                before,
                "{fault}: refused requests wrote"
            );

            until_ready(&self.base, Duration::from_secs(15)).await;
            let commands = refused
                .iter()
                .filter(|(c, _)| c.key.is_some() && c.what != "statement");
            for (call, _) in commands {
                let retry = call.send(&self.base).await;
                let expected = if call.path.starts_with("/api/admin/") {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                let context = format!("{fault}: retry of {}", call.what);
                assert_eq!(retry.status, expected, "{context}: {}", retry.body);
                assert!(!retry.replayed, "{context}: runs only now");
                let id = command_id(&retry.body);
                let events = events_of(t, &id).await;
                assert!(!events.is_empty(), "{context}: applied");
                let mut once = events.clone();
                once.dedup();
                assert_eq!(once, events, "{context}: applied once");
                let again = call.send(&self.base).await;
                assert_eq!(again.status, expected, "{context}, again");
                assert!(again.replayed, "{context}, again: replayed");
                assert_eq!(again.body, retry.body, "{context}, again: same answer");
                assert_eq!(
                    events_of(t, &id).await,
                    events,
                    "{context}, again: nothing new"
                );
            }
        }
    }

    /// The books still balance and bob can still log in; drops the database.
    async fn finish(self) {
        logged_in(&self.base, "bob@example.com").await;
        let out = self.t.cli(&["verify"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.t.drop_database().await;
    }
}

/// Reads, sign-up, login, the wallet's commands, the admin's, the auditor's and the statement
/// routes, and `/ready`, under faults of the commands every request starts with (`find`: the
/// session check, the user, the read models) and of `ping`: lock timeouts, an election
/// (`ShutdownInProgress`), connection resets.
#[tokio::test]
async fn read_faults_answer_503_with_retry_after_on_every_route_family() {
    let f = Fixture::new("faults_reads", 1).await;
    let rounds: Vec<Round> = vec![
        (
            "find: LockTimeout",
            doc! { "failCommands": ["find"], "errorCode": 24_i32 },
            vec![
                f.get("balance", "/api/wallet/balance"),
                f.get("history", "/api/transactions"),
                f.get("me", "/api/auth/me"),
                f.get("admin withdrawals", "/api/admin/withdrawals?status=pending"),
                f.get("audit events", "/api/audit/events?limit=5"),
                f.get("audit logs", "/api/admin/audit-logs"),
                f.login(),
                f.signup("carol@example.com"),
                f.deposit("USD"),
                f.withdrawal(),
                f.transfer(),
                f.approve(0),
                f.statement(),
            ],
        ),
        (
            "find: ShutdownInProgress (an election)",
            doc! { "failCommands": ["find"], "errorCode": 91_i32 },
            vec![
                f.get("balance", "/api/wallet/balance"),
                f.get("audit events", "/api/audit/events?limit=5"),
                f.deposit("USD"),
            ],
        ),
        (
            "find: connection reset",
            doc! { "failCommands": ["find"], "closeConnection": true },
            vec![
                f.get("history", "/api/transactions"),
                f.get("admin withdrawals", "/api/admin/withdrawals"),
                f.login(),
            ],
        ),
        (
            "ping: ShutdownInProgress",
            doc! { "failCommands": ["ping"], "errorCode": 91_i32 },
            vec![ready()],
        ),
    ];
    f.refuse_then_apply_once(rounds).await;
    f.finish().await;
}

/// The commands' writes under faults: the idempotency record's and the sessions' inserts, and
/// inside the store's transaction the version lookup (`aggregate`), the event inserts, the
/// head-slot update and the commit — `NotWritablePrimary`, `NoSuchTransaction`, `LockTimeout`,
/// a `WriteConflict` labelled `TransientTransactionError`, connection resets. Labels are left
/// out (`errorLabels: []`) where the store would rerun the transaction for its whole retry
/// budget; that case has a test of its own.
#[tokio::test]
async fn write_faults_answer_503_and_the_retries_apply_each_command_once() {
    let f = Fixture::new("faults_writes", 2).await;
    let rounds: Vec<Round> = vec![
        (
            "insert: NotWritablePrimary",
            doc! { "failCommands": ["insert"], "errorCode": 10107_i32, "errorLabels": [] },
            vec![
                f.deposit("USD"),
                f.withdrawal(),
                f.transfer(),
                f.approve(0),
                f.login(),
                f.signup("dave@example.com"),
            ],
        ),
        (
            "insert: NoSuchTransaction",
            doc! { "failCommands": ["insert"], "errorCode": 251_i32 },
            vec![f.deposit("USD")],
        ),
        (
            "insert: WriteConflict, TransientTransactionError",
            doc! { "failCommands": ["insert"], "errorCode": 112_i32,
            "errorLabels": ["TransientTransactionError"] },
            vec![f.withdrawal()],
        ),
        (
            "insert, update, commitTransaction: connection reset",
            doc! { "failCommands": ["insert", "update", "commitTransaction"], "closeConnection": true },
            vec![f.deposit("USD"), f.transfer()],
        ),
        (
            "aggregate: LockTimeout",
            doc! { "failCommands": ["aggregate"], "errorCode": 24_i32, "errorLabels": [] },
            // A new asset: its credits stream is not cached, the writer reads its version.
            vec![f.deposit("BTC"), f.signup("erin@example.com")],
        ),
        (
            "update: LockTimeout",
            doc! { "failCommands": ["update"], "errorCode": 24_i32, "errorLabels": [] },
            vec![f.withdrawal(), f.approve(1), f.transfer()],
        ),
        (
            "commitTransaction: LockTimeout",
            doc! { "failCommands": ["commitTransaction"], "errorCode": 24_i32, "errorLabels": [] },
            vec![f.deposit("ETH"), f.signup("frank@example.com")],
        ),
    ];
    f.refuse_then_apply_once(rounds).await;
    f.finish().await;
}

/// Write conflicts on every commit, beyond the store's retry budget (10 s): the keyed transfer
/// that meets them is 503 `unavailable` (not 500), writes nothing, and its retry with the same
/// key is applied exactly once.
#[tokio::test]
async fn write_conflicts_that_outlast_the_retries_answer_503_and_the_retry_applies_once() {
    let (t, base, app_name) = faulty_app("faults_conflicts").await;
    let alice = signed_up(&base, "alice@example.com").await;
    signed_up(&base, "bob@example.com").await;
    let funded = Call::keyed(
        "deposit",
        &alice,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "10.00" }),
    )
    .send(&base)
    .await;
    assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.body);
    until_ready(&base, Duration::from_secs(10)).await;
    let before = event_count(&t).await;
    let transfer = Call::keyed(
        "transfer",
        &alice,
        "/api/wallet/transfers",
        json!({ "to_email": "bob@example.com", "asset": "USD", "amount": "4.00" }),
    );
    fail(
        &t,
        &app_name,
        doc! { "failCommands": ["commitTransaction"], "errorCode": 112_i32,
        "errorLabels": ["TransientTransactionError"] },
    )
    .await;
    let refused = transfer.send(&base).await;
    heal(&t).await;
    refused.assert_unavailable("transfer");
    assert_eq!(event_count(&t).await, before, "nothing written");

    let retry = transfer.send(&base).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert!(!retry.replayed);
    let id = command_id(&retry.body);
    assert_eq!(
        events_of(&t, &id).await,
        vec!["TransferSent".to_owned(), "TransferReceived".to_owned()]
    );
    let again = transfer.send(&base).await;
    assert!(again.replayed);
    assert_eq!(again.body, retry.body);
    assert_eq!(events_of(&t, &id).await.len(), 2);
    t.drop_database().await;
}

/// A keyed command whose commit fails, and whose clean-up (the removal of its pending
/// idempotency record) fails too: once MongoDB is back, the retry with the same key runs the
/// command — it is neither stuck "in progress" (409) nor a 500.
#[tokio::test]
async fn a_retry_after_a_fault_that_also_failed_the_clean_up_is_not_stuck() {
    let (t, base, app_name) = faulty_app("faults_stuck").await;
    let alice = signed_up(&base, "alice@example.com").await;
    until_ready(&base, Duration::from_secs(10)).await;
    let deposit = Call::keyed(
        "deposit",
        &alice,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "7.00" }),
    );
    fail(
        &t,
        &app_name,
        doc! { "failCommands": ["commitTransaction", "delete", "update"], "errorCode": 24_i32,
        "errorLabels": [] },
    )
    .await;
    let refused = deposit.send(&base).await;
    heal(&t).await;
    refused.assert_unavailable("commit and clean-up failed");
    assert_eq!(written_by(&t, &refused.request_id).await, 0);

    let started = Instant::now();
    let retry = deposit.send(&base).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the retry waited {:?} for a request that had already failed",
        started.elapsed()
    );
    let id = command_id(&retry.body);
    assert_eq!(events_of(&t, &id).await, vec!["FundsDeposited".to_owned()]);
    let again = deposit.send(&base).await;
    assert!(again.replayed);
    assert_eq!(again.body, retry.body);
    assert_eq!(events_of(&t, &id).await.len(), 1);
    t.drop_database().await;
}

/// A keyed deposit whose commit is held up past `REQUEST_TIMEOUT_SECS`: the client gets 503
/// `timeout` (with `Retry-After`) while the commit goes on and succeeds. The handler was cut
/// off, yet its key is not left "in progress": the retry runs, recognises the committed
/// deposit, and answers 201 with it — one event in the log.
#[tokio::test]
async fn a_write_cut_off_by_the_request_timeout_frees_its_key_and_its_retry_applies_once() {
    let (t, base, app_name) =
        faulty_app_with("faults_cutoff", &[("REQUEST_TIMEOUT_SECS", "2")]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    until_ready(&base, Duration::from_secs(10)).await;
    let before = event_count(&t).await;
    let deposit = Call::keyed(
        "deposit",
        &alice,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "9.00" }),
    );
    fail(
        &t,
        &app_name,
        doc! { "failCommands": ["commitTransaction"], "blockConnection": true,
        "blockTimeMS": 3000_i32 },
    )
    .await;
    let cut_off = deposit.send(&base).await;
    heal(&t).await;
    assert_eq!(
        cut_off.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        cut_off.body
    );
    assert_eq!(cut_off.body["error"]["code"], "timeout", "{}", cut_off.body);
    assert!(
        cut_off.retry_after.is_some(),
        "503 timeout without Retry-After"
    );
    // The held-up commit goes through after all.
    let deadline = Instant::now() + Duration::from_secs(10);
    while event_count(&t).await == before {
        assert!(Instant::now() < deadline, "the held-up commit never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let retry = deposit.send(&base).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the retry waited {:?} for a request that had been cut off",
        started.elapsed()
    );
    let id = command_id(&retry.body);
    assert_eq!(events_of(&t, &id).await, vec!["FundsDeposited".to_owned()]);
    assert_eq!(event_count(&t).await, before + 1, "applied once");
    let again = deposit.send(&base).await;
    assert!(again.replayed);
    assert_eq!(again.body, retry.body);
    t.drop_database().await;
}

/// Runs `scripts/mongo.sh` for a private node on `port`, so stopping it disturbs no other test.
fn private_mongo(command: &str, port: u16) -> String {
    crate::helpers::mongo_sh(&[command], &[("CV_MONGO_PORT", port.to_string())])
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Stops the private node when the test ends, also when it fails half-way.
struct StopOnDrop(u16);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = crate::helpers::mongo_sh(&["stop"], &[("CV_MONGO_PORT", self.0.to_string())]);
    }
}

/// MongoDB really gone (its only node stopped): every route family and `/ready` answer 503
/// with `Retry-After` within the server-selection timeout; once the node is back, the same
/// requests succeed and a keyed deposit refused meanwhile is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mongod_gone_requests_answer_503_and_succeed_once_it_is_back() {
    const PORT: u16 = 27131;
    let url = tokio::task::spawn_blocking(|| private_mongo("start", PORT))
        .await
        .unwrap();
    let _node = StopOnDrop(PORT);
    let t = TestDb {
        client: mongodb::Client::with_uri_str(&url).await.unwrap(),
        name: format!("t_gone_{}", &Uuid::new_v4().simple().to_string()[..12]),
    };
    let service_url = with_param(&url, "serverSelectionTimeoutMS=1000");
    let base = spawn_app(&t, &[("MONGO_URL", service_url.as_str())]).await;
    let alice = signed_up(&base, "alice@example.com").await;
    signed_up(&base, "bob@example.com").await;
    let funded = Call::keyed(
        "deposit",
        &alice,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "50.00" }),
    )
    .send(&base)
    .await;
    assert_eq!(funded.status, StatusCode::CREATED);
    until_ready(&base, Duration::from_secs(10)).await;

    let calls = vec![
        Call::get("balance", &alice, "/api/wallet/balance"),
        Call::get("history", &alice, "/api/transactions"),
        Call::keyed(
            "deposit",
            &alice,
            "/api/wallet/deposits",
            json!({ "asset": "USD", "amount": "1.25" }),
        ),
        Call::keyed(
            "transfer",
            &alice,
            "/api/wallet/transfers",
            json!({ "to_email": "bob@example.com", "asset": "USD", "amount": "2.00" }),
        ),
        Call::public(
            "login",
            "/api/auth/login",
            json!({ "email": "alice@example.com", "password": PASSWORD }),
        ),
        ready(),
    ];

    tokio::task::spawn_blocking(|| private_mongo("stop", PORT))
        .await
        .unwrap();
    for call in &calls {
        let started = Instant::now();
        let answer = call.send(&base).await;
        answer.assert_unavailable(&format!("mongod gone: {}", call.what));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{}: answered after {:?}",
            call.what,
            started.elapsed()
        );
    }

    tokio::task::spawn_blocking(|| private_mongo("start", PORT))
        .await
        .unwrap();
    until_ready(&base, Duration::from_secs(20)).await;
    for call in &calls {
        let answer = call.send(&base).await;
        assert!(
            answer.status.is_success(),
            "{} after the restart: {} {}",
            call.what,
            answer.status,
            answer.body
        );
        if call.key.is_some() {
            assert!(!answer.replayed, "{} ran only now", call.what);
            let id = command_id(&answer.body);
            assert!(!events_of(&t, &id).await.is_empty());
            let again = call.send(&base).await;
            assert!(again.replayed, "{}: the retry replays", call.what);
            assert_eq!(again.body, answer.body);
        }
    }
    t.db().drop().await.unwrap();
}
