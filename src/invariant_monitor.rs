//! The continuous invariant checker: an operator's alarm, not a batch job. It follows the log
//! from position 0 with the same pure checker as `cryptovault verify`
//! (`cryptovault_projections::invariants`), and for every violation increments
//! `ledger_invariant_violations_total{kind}` and logs the position at error level;
//! `ledger_invariant_checked_position` is the last position it has checked.
//!
//! Why from position 0 at every start rather than from a persisted checkpoint: the checker's
//! state is every (user, asset) balance and every withdrawal ever requested; a checkpoint is
//! only exact together with all of that state, written atomically with it — a second balances
//! read model plus the withdrawals, re-written as they change. Reading the log again is simpler
//! and exact; its cost is one sequential read of the `events` collection per process start, in
//! the background (the service serves meanwhile; violations in the history are counted again
//! by the new process): the subscription reads in batches of 1,000, the checker itself is a few
//! hash-map updates per event (figures: ARCHITECTURE.md, "Invariants at every position").
//!
//! Rules it keeps:
//! - the subscription is polled by a task of its own (`SubscriptionFeed`), per the rule in
//!   ARCHITECTURE.md ("never leave a MongoDB operation suspended while the same task runs
//!   another one") — this task runs none, but it must stay true if it ever does;
//! - it never stops the service: a bad event is counted and logged, a read error is retried
//!   from the last checked position (the state up to there is exact), and a panic restarts the
//!   checker from position 0.

use std::time::Duration;

use cryptovault_projections::invariants::{InvariantChecker, ViolationKind};
use futures::StreamExt;

use crate::store::read_models::runner::SubscriptionFeed;
use crate::store::EventStore;

/// Counter of violations found, label `kind` (`negative_balance`, `illegal_transition`,
/// `unbalanced_posting`, `unrepresentable`).
pub const VIOLATIONS: &str = "ledger_invariant_violations_total";
/// Gauge: the last position the monitor has checked.
pub const CHECKED_POSITION: &str = "ledger_invariant_checked_position";
/// Counter of failed reads of the log (each retried from the last checked position).
pub const READ_FAILURES: &str = "ledger_invariant_monitor_read_failures_total";

/// How long to wait before reading again after the log could not be read.
const RETRY: Duration = Duration::from_secs(5);

/// Starts the monitor in the background. Each kind's counter exists (at 0) from the start, so
/// an alert on its increase sees the first violation.
pub fn spawn(store: EventStore) -> tokio::task::JoinHandle<()> {
    // The counter and gauge handles below are taken once: the recorder must be installed
    // first, or they would stay bound to the no-op recorder for good.
    crate::telemetry::metrics_handle();
    for kind in ViolationKind::ALL {
        metrics::counter!(VIOLATIONS, "kind" => kind.as_str()).increment(0);
    }
    tokio::spawn(supervise(store))
}

/// Runs [`follow`]; restarts it from position 0 if it panics (a checker bug must not end the
/// alarm silently, nor the service).
async fn supervise(store: EventStore) {
    loop {
        match tokio::spawn(follow(store.clone())).await {
            Ok(()) => return,
            Err(error) if error.is_panic() => {
                tracing::error!(
                    %error,
                    "invariant monitor panicked; restarting it from position 0"
                );
                tokio::time::sleep(RETRY).await;
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
    }
}

/// Follows the log forever from position 0.
async fn follow(store: EventStore) {
    let mut checker = InvariantChecker::new();
    let checked = metrics::gauge!(CHECKED_POSITION);
    let counters =
        ViolationKind::ALL.map(|kind| metrics::counter!(VIOLATIONS, "kind" => kind.as_str()));
    loop {
        let from = checker.summary().last_position;
        let mut feed = SubscriptionFeed::start(&store, from);
        while let Some(item) = feed.next().await {
            let event = match item {
                Ok(event) => event,
                Err(error) => {
                    metrics::counter!(READ_FAILURES).increment(1);
                    tracing::error!(
                        %error,
                        after_position = from.max(checker.summary().last_position),
                        "invariant monitor cannot read the log; retrying in {} s",
                        RETRY.as_secs()
                    );
                    break;
                }
            };
            for violation in checker.push(&event) {
                let index = ViolationKind::ALL
                    .iter()
                    .position(|k| *k == violation.kind)
                    .expect("every kind is in ALL");
                counters[index].increment(1);
                tracing::error!(
                    position = violation.position,
                    kind = violation.kind.as_str(),
                    event_type = %violation.event_type,
                    account = ?violation.account,
                    withdrawal = ?violation.withdrawal,
                    detail = %violation.detail,
                    "ledger invariant violated at position {}: {}",
                    violation.position,
                    violation.kind
                );
            }
            checked.set(event.position as f64);
        }
        drop(feed);
        tokio::time::sleep(RETRY).await;
    }
}
