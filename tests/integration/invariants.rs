//! Invariants at every position, written around the ledger: a log whose *final* balances are
//! fine but which had a transient overdraft, a rejected withdrawal completed later (balance
//! restored by a new request) and an amount with 19 decimals. `cryptovault verify`,
//! `GET /api/audit/verify` and a running service's `/metrics` (the continuous checker) name
//! each; a clean log made by real commands has none.

use std::time::{Duration, Instant};

use cryptovault::store::{AppendBatch, EventStore, ExpectedVersion};
use cryptovault_events::ledger::{
    account_stream, credits_stream, withdrawal_stream, FundsDeposited, TransferReceived,
    TransferSent, WithdrawalCompleted, WithdrawalOpened, WithdrawalRejected, WithdrawalRequested,
};
use cryptovault_events::{DomainEvent, EventMetadata, NewEvent};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{admin, get_json, logged_in, position, post, signed_up, spawn_app, TestDb};

fn new_event<E: DomainEvent>(e: E) -> NewEvent {
    e.into_new_event(
        uuid::Uuid::now_v7(),
        chrono::Utc::now(),
        EventMetadata::default(),
    )
}

async fn append(store: &EventStore, batch: AppendBatch) -> Vec<u64> {
    let result = store.append(batch).await.unwrap();
    result.events.iter().map(|e| e.position).collect()
}

/// The positions and kinds the hand-made log must be reported with.
struct Expected {
    overdraft: u64,
    completed_after_reject: u64,
    nineteen_decimals: u64,
}

impl Expected {
    fn pairs(&self) -> Vec<(u64, &'static str)> {
        vec![
            (self.overdraft, "negative_balance"),
            (self.completed_after_reject, "illegal_transition"),
            (self.completed_after_reject, "negative_balance"),
            (self.nineteen_decimals, "unrepresentable"),
        ]
    }
}

/// Appends, straight through the store (bypassing the ledger's checks), a log whose final
/// balances are all non-negative and zero-sum, but which breaks the invariants on its way.
async fn broken_on_the_way(store: &EventStore) -> Expected {
    let (ann, ben, root) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let usd = || "USD".to_owned();
    let deposit = |user_id, amount: &str| FundsDeposited {
        deposit_id: Uuid::now_v7(),
        user_id,
        asset: usd(),
        amount: amount.parse().unwrap(),
    };
    append(
        store,
        AppendBatch::single(
            credits_stream(ann, "USD"),
            ExpectedVersion::Any,
            vec![new_event(deposit(ann, "10.00"))],
        ),
    )
    .await;
    // (a) A transfer of 25 from an account holding 10 (ann at -15), covered by a later
    // deposit of 20.
    let transfer_id = Uuid::now_v7();
    let amount: rust_decimal::Decimal = "25.00".parse().unwrap();
    let overdraft = append(
        store,
        AppendBatch::single(
            account_stream(ann, "USD"),
            ExpectedVersion::Any,
            vec![new_event(TransferSent {
                transfer_id,
                from_user: ann,
                to_user: ben,
                asset: usd(),
                amount,
                note: None,
            })],
        )
        .with(
            credits_stream(ben, "USD"),
            ExpectedVersion::Any,
            vec![new_event(TransferReceived {
                transfer_id,
                from_user: ann,
                to_user: ben,
                asset: usd(),
                amount,
                note: None,
            })],
        ),
    )
    .await[0];
    append(
        store,
        AppendBatch::single(
            credits_stream(ann, "USD"),
            ExpectedVersion::Any,
            vec![new_event(deposit(ann, "20.00"))],
        ),
    )
    .await;
    // (b) ben's withdrawal of 25: requested, rejected, then completed anyway (held -25); a new
    // request of 25 brings held back to 0.
    let request = |withdrawal_id| WithdrawalRequested {
        withdrawal_id,
        user_id: ben,
        asset: usd(),
        amount,
        address: "addr".into(),
    };
    let opened = |withdrawal_id| WithdrawalOpened {
        withdrawal_id,
        user_id: ben,
        asset: usd(),
    };
    let (w, w2) = (Uuid::now_v7(), Uuid::now_v7());
    append(
        store,
        AppendBatch::single(
            account_stream(ben, "USD"),
            ExpectedVersion::Any,
            vec![new_event(request(w))],
        )
        .with(
            withdrawal_stream(w),
            ExpectedVersion::NoStream,
            vec![new_event(opened(w))],
        ),
    )
    .await;
    append(
        store,
        AppendBatch::single(
            account_stream(ben, "USD"),
            ExpectedVersion::Any,
            vec![new_event(WithdrawalRejected {
                withdrawal_id: w,
                user_id: ben,
                asset: usd(),
                amount,
                rejected_by: root,
                reason: None,
            })],
        ),
    )
    .await;
    let completed_after_reject = append(
        store,
        AppendBatch::single(
            account_stream(ben, "USD"),
            ExpectedVersion::Any,
            vec![new_event(WithdrawalCompleted {
                withdrawal_id: w,
                user_id: ben,
                asset: usd(),
                amount,
                completed_by: root,
            })],
        ),
    )
    .await[0];
    append(
        store,
        AppendBatch::single(
            account_stream(ben, "USD"),
            ExpectedVersion::Any,
            vec![new_event(request(w2))],
        )
        .with(
            withdrawal_stream(w2),
            ExpectedVersion::NoStream,
            vec![new_event(opened(w2))],
        ),
    )
    .await;
    // (c) A deposit of 10^-19 ETH: one decimal more than any representation here holds.
    let mut tiny = new_event(FundsDeposited {
        deposit_id: Uuid::now_v7(),
        user_id: ann,
        asset: "ETH".into(),
        amount: "1".parse().unwrap(),
    });
    tiny.payload["amount"] = json!("0.0000000000000000001");
    let nineteen_decimals = append(
        store,
        AppendBatch::single(credits_stream(ann, "ETH"), ExpectedVersion::Any, vec![tiny]),
    )
    .await[0];
    Expected {
        overdraft,
        completed_after_reject,
        nineteen_decimals,
    }
}

/// The value of `ledger_invariant_violations_total{kind}` in a Prometheus text page (0 when
/// absent).
fn violations_metric(page: &str, kind: &str) -> f64 {
    let series = format!("ledger_invariant_violations_total{{kind=\"{kind}\"}}");
    page.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

fn checked_position_metric(page: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix("ledger_invariant_checked_position "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_page(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_verify_command_names_each_offending_position_and_kind() {
    let t = TestDb::new("invariants_cli").await;
    let store = t.store().await;
    let expected = broken_on_the_way(&store).await;

    let out = t.cli(&["verify"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("OK: 11 events"),
        "the chain is intact: {stdout}"
    );
    for (position, kind) in expected.pairs() {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("INVARIANT: position {position}: {kind} "))),
            "{kind} at {position} not named: {stdout}"
        );
    }
    for (kind, first) in [
        ("negative_balance", expected.overdraft),
        ("illegal_transition", expected.completed_after_reject),
        ("unrepresentable", expected.nineteen_decimals),
    ] {
        assert!(
            stdout.contains(&format!("FIRST {kind} at position {first}")),
            "{stdout}"
        );
    }
    // The final fold is fine but for the amount it cannot hold, which it names too.
    let double_entry: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DOUBLE ENTRY"))
        .collect();
    assert_eq!(double_entry.len(), 1, "{stdout}");
    assert!(
        double_entry[0].contains(&format!(
            "not exact: position {}",
            expected.nineteen_decimals
        )),
        "{stdout}"
    );

    let out = t.cli(&["verify", "--json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["chain"]["events_verified"], 11);
    assert_only_the_unheld_amount(&report["double_entry_problems"], expected.nineteen_decimals);
    let found: Vec<(u64, String)> = report["invariants"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["position"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let wanted: Vec<(u64, String)> = expected
        .pairs()
        .into_iter()
        .map(|(p, k)| (p, k.to_owned()))
        .collect();
    assert_eq!(found, wanted, "{report:#}");
    assert_eq!(
        report["invariants"]["first_positions"],
        json!({
            "negative_balance": expected.overdraft,
            "illegal_transition": expected.completed_after_reject,
            "unrepresentable": expected.nineteen_decimals,
        })
    );
    t.drop_database().await;
}

#[tokio::test]
async fn the_audit_api_and_a_running_services_metrics_report_the_same_violations() {
    let t = TestDb::new("invariants_api").await;
    let store = t.store().await;
    let expected = broken_on_the_way(&store).await;
    let before: Vec<f64> = ["negative_balance", "illegal_transition", "unrepresentable"]
        .iter()
        .map(|k| violations_metric(&cryptovault::telemetry::metrics_handle().render(), k))
        .collect();

    let base = spawn_app(&t, &[]).await;
    signed_up(&base, "audrey@example.com").await;
    t.grant("audrey@example.com", "auditor").await;
    let auditor = logged_in(&base, "audrey@example.com").await;
    let (status, body) = get_json(&base, &auditor, "/api/audit/verify").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["intact"], false, "{body:#}");
    assert_eq!(body["chain"]["first_break"], Value::Null);
    assert_only_the_unheld_amount(&body["double_entry_problems"], expected.nineteen_decimals);
    let found: Vec<(u64, &str)> = body["invariants"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["position"].as_u64().unwrap(), v["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(found, expected.pairs(), "{body:#}");
    assert_eq!(
        body["invariants"]["first_positions"]["illegal_transition"],
        expected.completed_after_reject
    );
    let transition = &body["invariants"]["violations"][1];
    assert!(transition["withdrawal"].is_string(), "{transition}");
    assert!(
        transition["detail"]
            .as_str()
            .unwrap()
            .contains("completed while rejected"),
        "{transition}"
    );

    // The continuous checker counts them (two negative balances, one each of the others) and
    // reports how far it has checked, within a few seconds.
    let head = store.head().await.unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = metrics_page(&base).await;
        let increase: Vec<f64> = ["negative_balance", "illegal_transition", "unrepresentable"]
            .iter()
            .zip(&before)
            .map(|(k, b)| violations_metric(&page, k) - b)
            .collect();
        if increase
            .iter()
            .zip([2.0, 1.0, 1.0])
            .all(|(i, want)| *i >= want)
            && checked_position_metric(&page) >= head as f64
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor did not report the violations: increases {increase:?}\n{}",
            page.lines()
                .filter(|l| l.starts_with("ledger_invariant"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.drop_database().await;
}

#[tokio::test]
async fn a_clean_log_from_real_commands_has_no_violation() {
    let t = TestDb::new("invariants_clean").await;
    let base = spawn_app(&t, &[]).await;
    let page = metrics_page(&base).await;
    let before_total: f64 = [
        "negative_balance",
        "illegal_transition",
        "unrepresentable",
        "unbalanced_posting",
    ]
    .iter()
    .map(|k| violations_metric(&page, k))
    .sum();
    let root = admin(&t, &base, "root@example.com").await;
    let ann = signed_up(&base, "ann@example.com").await;
    signed_up(&base, "ben@example.com").await;
    let ok = |(status, body): (StatusCode, Value)| {
        assert!(status.is_success(), "{status}: {body}");
        body
    };
    ok(post(
        &base,
        &ann,
        "/api/wallet/deposits",
        json!({"asset": "ETH", "amount": "1.000000000000000001"}),
    )
    .await);
    ok(post(
        &base,
        &ann,
        "/api/wallet/deposits",
        json!({"asset": "USD", "amount": "100.00"}),
    )
    .await);
    ok(post(
        &base,
        &ann,
        "/api/wallet/transfers",
        json!({"to_email": "ben@example.com", "asset": "USD", "amount": "40.25"}),
    )
    .await);
    let mut ids = Vec::new();
    for amount in ["10", "20", "29.75"] {
        let body = ok(post(
            &base,
            &ann,
            "/api/wallet/withdrawals",
            json!({"asset": "USD", "amount": amount, "address": "addr"}),
        )
        .await);
        ids.push(body["withdrawal"]["id"].as_str().unwrap().to_owned());
    }
    let act = |action: &str, id: &str| format!("/api/admin/withdrawals/{id}/{action}");
    ok(post(&base, &root, &act("approve", &ids[0]), json!({})).await);
    ok(post(&base, &root, &act("complete", &ids[0]), json!({})).await);
    ok(post(&base, &root, &act("reject", &ids[1]), json!({})).await);
    ok(post(&base, &root, &act("approve", &ids[2]), json!({})).await);
    let last = ok(post(&base, &root, &act("reject", &ids[2]), json!({})).await);
    // Refused commands write nothing, so they cannot break anything either.
    let (status, _) = post(&base, &root, &act("complete", &ids[1]), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let head = position(&last);

    let out = t.cli(&["verify"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("INVARIANT"), "{stdout}");

    // (admins may verify too)
    let (status, body) = get_json(&base, &root, "/api/audit/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["intact"], true, "{body:#}");
    assert_eq!(body["invariants"]["violations"], json!([]));
    assert_eq!(body["invariants"]["violation_count"], 0);

    // The continuous checker gets past the head without counting anything.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = metrics_page(&base).await;
        if checked_position_metric(&page) >= head as f64 {
            let total: f64 = [
                "negative_balance",
                "illegal_transition",
                "unrepresentable",
                "unbalanced_posting",
            ]
            .iter()
            .map(|k| violations_metric(&page, k))
            .sum();
            assert_eq!(total, before_total, "{page}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor did not reach {head}:\n{}",
            page.lines()
                .filter(|l| l.starts_with("ledger_invariant"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.drop_database().await;
}

/// The final-balance fold's problems: only the amount it cannot hold exactly, at `position`.
fn assert_only_the_unheld_amount(problems: &Value, position: u64) {
    let problems = problems
        .as_array()
        .expect("double_entry_problems is a list");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = problems[0].as_str().unwrap();
    assert!(
        problem.starts_with(&format!("not exact: position {position}:")),
        "{problem}"
    );
}
