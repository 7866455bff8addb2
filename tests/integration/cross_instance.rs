//! Decisions on a cached account across service instances: a command decided behind a queued
//! batch must not commit unless that batch did, whatever another instance appended meanwhile.
//! Each scenario runs with two instances in this process, and the double spend once more with
//! two `cryptovault serve` OS processes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cryptovault_events::EventEnvelope;
use cryptovault_projections::invariants::InvariantChecker;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    admin, mongo_url, post, signed_up as user, spawn_app, TestDb, TestUser, TEST_CSRF_SECRET,
    TEST_JWT_SECRET,
};

/// Rounds per scenario; the old code broke the double spend in 10 of 10 rounds and the
/// withdrawal race in 17 of 20.
const ROUNDS: usize = 6;

/// The whole log in position order.
async fn whole_log(t: &TestDb) -> Vec<EventEnvelope> {
    let store = t.store().await;
    let mut out = Vec::new();
    loop {
        let events = store.read_all(out.len() as u64 + 1, 5000).await.unwrap();
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
}

/// What the per-position invariant checker finds in the log (every user balance at every
/// position, the withdrawal state machine, balanced postings).
fn violations(log: &[EventEnvelope]) -> Vec<String> {
    let mut checker = InvariantChecker::new();
    log.iter()
        .flat_map(|event| checker.push(event))
        .map(|v| format!("{v:?}"))
        .collect()
}

/// The event types of one withdrawal, in log order.
fn withdrawal_history(log: &[EventEnvelope], id: &str) -> Vec<String> {
    log.iter()
        .filter(|e| e.payload["withdrawal_id"] == id && e.stream_id.starts_with("account-"))
        .map(|e| e.event_type.clone())
        .collect()
}

async fn transfer(base: &str, from: &TestUser, to: &str, amount: &str) -> (StatusCode, Value) {
    post(
        base,
        from,
        "/api/wallet/transfers",
        json!({ "to_email": to, "asset": "USD", "amount": amount }),
    )
    .await
}

async fn withdraw(base: &str, from: &TestUser, amount: &str) -> (StatusCode, Value) {
    post(
        base,
        from,
        "/api/wallet/withdrawals",
        json!({ "asset": "USD", "amount": amount, "address": "bc1-test-address" }),
    )
    .await
}

/// One round of the reported double spend on instances `a` and `b`: 10.01 deposited; 0.01
/// sent through B (B caches the account); 10.00 through A (B's cache is now stale); then two
/// debits at once through B. Both must be refused: the account holds nothing.
async fn stale_cache_round(a: &str, b: &str, sender: &TestUser, to: &str, withdrawals: bool) {
    let (status, _) = post(
        a,
        sender,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "10.01" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(transfer(b, sender, to, "0.01").await.0, StatusCode::CREATED);
    assert_eq!(
        transfer(a, sender, to, "10.00").await.0,
        StatusCode::CREATED
    );
    let (first, second) = if withdrawals {
        tokio::join!(withdraw(b, sender, "1.00"), withdraw(b, sender, "9.00"))
    } else {
        tokio::join!(
            transfer(b, sender, to, "1.00"),
            transfer(b, sender, to, "9.00")
        )
    };
    for (status, body) in [first, second] {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds")),
            "a debit of money that is not there was answered {status}: {body}"
        );
    }
}

async fn double_spend_rounds(t: &TestDb, a: &str, b: &str) {
    for round in 0..ROUNDS {
        let sender = user(a, &format!("spender{round}@example.com")).await;
        let to = format!("payee{round}@example.com");
        user(a, &to).await;
        stale_cache_round(a, b, &sender, &to, round % 2 == 1).await;
    }
    let log = whole_log(t).await;
    let violations = violations(&log);
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_cache_on_another_instance_never_lets_money_be_spent_twice() {
    let t = TestDb::new("xi_spend").await;
    let a = spawn_app(&t, &[]).await;
    let b = spawn_app(&t, &[]).await;
    double_spend_rounds(&t, &a, &b).await;
    t.drop_database().await;
}

/// `cryptovault serve` as a child process on a free loopback port; killed on drop.
struct ServeProcess {
    child: Child,
    base: String,
}

impl ServeProcess {
    async fn start(t: &TestDb) -> Self {
        // HTTP clients need a TLS provider even for plain HTTP (the in-process apps install it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Waited for in `Drop`, which also kills it.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(env!("CARGO_BIN_EXE_cryptovault"))
            .arg("serve")
            .env("MONGO_URL", mongo_url())
            .env("DB_NAME", &t.name)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("JWT_SECRET", TEST_JWT_SECRET)
            .env("CSRF_SECRET", TEST_CSRF_SECRET)
            .env("EMAIL_INDEX_KEY", crate::helpers::TEST_EMAIL_INDEX_KEY)
            .env("ENVIRONMENT", "test")
            .env("RATE_LIMIT_PER_IP_PER_MIN", "100000")
            .env("MAX_CONNECTIONS_PER_CLIENT", "4096")
            .env("RATE_LIMIT_LOGIN_PER_MIN", "100000")
            .env("RATE_LIMIT_PER_USER_PER_MIN", "100000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start cryptovault serve");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(format!("{base}/health")).await {
                if r.status().is_success() {
                    return Self { child, base };
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cryptovault serve did not answer /health within 30 s");
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_cache_in_another_os_process_never_lets_money_be_spent_twice() {
    let t = TestDb::new("xi_spend_proc").await;
    let a = ServeProcess::start(&t).await;
    let b = ServeProcess::start(&t).await;
    double_spend_rounds(&t, &a.base, &b.base).await;
    drop((a, b));
    t.drop_database().await;
}

/// Two admins behind a load balancer: `reject` goes to A, then `approve` and, 2 ms later,
/// `complete` go to B, whose cache still shows the withdrawal pending. The withdrawal ends
/// rejected (its hold refunded) and is never completed; each transition happens at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_withdrawal_is_never_both_rejected_and_completed_across_instances() {
    let t = TestDb::new("xi_withdrawal").await;
    let a = spawn_app(&t, &[]).await;
    let b = spawn_app(&t, &[]).await;
    let boss = admin(&t, &a, "boss@example.com").await;
    let owner = user(&a, "owner@example.com").await;
    let (status, _) = post(
        &a,
        &owner,
        "/api/wallet/deposits",
        json!({ "asset": "USD", "amount": "100" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut ids = Vec::new();
    for _ in 0..ROUNDS {
        // Requested through B: B caches the account with the withdrawal pending.
        let (status, body) = withdraw(&b, &owner, "0.40").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["withdrawal"]["id"].as_str().unwrap().to_owned();
        let path = |action: &str| format!("/api/admin/withdrawals/{id}/{action}");
        let (status, body) = post(&a, &boss, &path("reject"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (approve_path, complete_path) = (path("approve"), path("complete"));
        let (approve, complete) = tokio::join!(post(&b, &boss, &approve_path, json!({})), async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            post(&b, &boss, &complete_path, json!({})).await
        });
        for (status, body) in [approve, complete] {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("invalid_state")),
                "a transition of a rejected withdrawal was answered {status}: {body}"
            );
        }
        ids.push(id);
    }
    let log = whole_log(&t).await;
    for id in &ids {
        assert_eq!(
            withdrawal_history(&log, id),
            ["WithdrawalRequested", "WithdrawalRejected"],
            "withdrawal {id}"
        );
    }
    let violations = violations(&log);
    assert!(violations.is_empty(), "{violations:?}");
    t.drop_database().await;
}
