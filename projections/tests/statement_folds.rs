//! Property tests of the statement and as-of folds over random ledger histories: for any split
//! of the history into "before the period" and "in the period", opening + movements = closing,
//! the closing balance equals the double-entry fold of the whole history, and every transaction
//! gets exactly one history row per side.

use chrono::{TimeZone, Utc};
use cryptovault_events::ledger::{
    FundsDeposited, TransferReceived, TransferSent, WithdrawalCompleted, WithdrawalRejected,
    WithdrawalRequested,
};
use cryptovault_events::{DomainEvent, EventEnvelope, EventMetadata, NewEvent, GENESIS_HASH};
use cryptovault_projections::balances::Balances;
use cryptovault_projections::entries::{balances_of, entries, Entry, RunningBalance};
use cryptovault_projections::history::{history_change, HistoryChange};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Step {
    Deposit(usize, i64),
    Transfer(usize, usize, i64),
    /// Request a withdrawal, then complete (true) or reject (false) it.
    Withdraw(usize, i64, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 1..1_000_000i64).prop_map(|(u, a)| Step::Deposit(u, a)),
        (0..3usize, 0..3usize, 1..500_000i64).prop_map(|(f, t, a)| Step::Transfer(f, t, a)),
        (0..3usize, 1..500_000i64, any::<bool>()).prop_map(|(u, a, c)| Step::Withdraw(u, a, c)),
    ]
}

fn user(i: usize) -> Uuid {
    Uuid::from_u128(i as u128 + 1)
}

/// `a` in units of 10⁻⁸, or (when `big`) a 28-digit amount with 18 decimals near 10¹⁰ that
/// depends on `a`: a few of them take a balance past 7.9·10¹⁰, where a `rust_decimal` sum
/// starts dropping digits.
fn amount(a: i64, big: bool) -> Decimal {
    if big {
        Decimal::from_i128_with_scale(9_999_999_999_999_999_999_999_000_000 + a as i128, 18)
    } else {
        Decimal::new(a, 8)
    }
}

/// The events of `steps`, in order. Amounts are in units of 10^-8 BTC (or big, see
/// [`amount`]); balances are not checked (the folds must be right whatever the history).
fn new_events(steps: &[Step], big: bool) -> Vec<NewEvent> {
    let meta = EventMetadata::default();
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let btc = || "BTC".to_owned();
    let mut out = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        let at = t0 + chrono::Duration::seconds(n as i64);
        match *step {
            Step::Deposit(u, a) => out.push(
                FundsDeposited {
                    deposit_id: Uuid::now_v7(),
                    user_id: user(u),
                    asset: btc(),
                    amount: amount(a, big),
                }
                .into_new_event(Uuid::now_v7(), at, meta.clone()),
            ),
            Step::Transfer(f, t, a) if f != t => {
                let (transfer_id, amount) = (Uuid::now_v7(), amount(a, big));
                let (from_user, to_user) = (user(f), user(t));
                out.push(
                    TransferSent {
                        transfer_id,
                        from_user,
                        to_user,
                        asset: btc(),
                        amount,
                        note: None,
                    }
                    .into_new_event(Uuid::now_v7(), at, meta.clone()),
                );
                out.push(
                    TransferReceived {
                        transfer_id,
                        from_user,
                        to_user,
                        asset: btc(),
                        amount,
                        note: None,
                    }
                    .into_new_event(Uuid::now_v7(), at, meta.clone()),
                );
            }
            Step::Transfer(..) => {}
            Step::Withdraw(u, a, complete) => {
                let (withdrawal_id, user_id, amount) = (Uuid::now_v7(), user(u), amount(a, big));
                out.push(
                    WithdrawalRequested {
                        withdrawal_id,
                        user_id,
                        asset: btc(),
                        amount,
                        address: "x".into(),
                    }
                    .into_new_event(Uuid::now_v7(), at, meta.clone()),
                );
                out.push(if complete {
                    WithdrawalCompleted {
                        withdrawal_id,
                        user_id,
                        asset: btc(),
                        amount,
                        completed_by: user(0),
                    }
                    .into_new_event(Uuid::now_v7(), at, meta.clone())
                } else {
                    WithdrawalRejected {
                        withdrawal_id,
                        user_id,
                        asset: btc(),
                        amount,
                        rejected_by: user(0),
                        reason: None,
                    }
                    .into_new_event(Uuid::now_v7(), at, meta.clone())
                });
            }
        }
    }
    out
}

/// `steps` sealed into a hash-chained log at positions 1, 2, …
fn log(steps: &[Step], big: bool) -> Vec<EventEnvelope> {
    let mut prev = GENESIS_HASH.to_owned();
    new_events(steps, big)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let position = i as u64 + 1;
            let sealed = EventEnvelope::seal(e, "s".into(), position, position, prev.clone());
            prev = sealed.hash.clone();
            sealed
        })
        .collect()
}

proptest! {
    #[test]
    fn opening_plus_movements_is_closing_and_equals_the_ledger(
        steps in prop::collection::vec(step(), 1..120),
        split in 0..240u64,
        who in 0..3usize,
        big in any::<bool>(),
    ) {
        let events = log(&steps, big);
        let me = user(who);
        let mine: Vec<Entry> = events
            .iter()
            .flat_map(|e| entries(e).unwrap())
            .filter(|e| e.user_id == me)
            .collect();
        let (available, held) = balances_of(mine.iter().filter(|e| e.position <= split))
            .unwrap()
            .get("BTC")
            .copied()
            .unwrap_or_default();
        let mut statement = RunningBalance::new(available.checked_add(held).unwrap());
        // The exact integer sum of the movements, in 10^-18.
        let mut sum: i128 = 0;
        for entry in mine.iter().filter(|e| e.position > split) {
            if let Some(line) = statement.push(entry.clone()).unwrap() {
                sum += line.amount.raw();
                prop_assert_eq!(line.balance.raw(), statement.opening.raw() + sum);
            }
        }
        prop_assert_eq!(statement.closing().raw(), statement.opening.raw() + sum);

        // The closing balance is the double-entry fold's balance for this user.
        let mut fold = Balances::default();
        for event in &events {
            fold.apply(event);
        }
        prop_assert!(fold.unrepresentable.is_empty());
        prop_assert!(fold.sums().values().all(|s| s.is_zero()));
        let row = fold.rows.get(&(me.to_string(), "BTC".to_owned())).copied().unwrap_or_default();
        prop_assert_eq!(Some(statement.closing()), row.total());
        let (all_available, all_held) = balances_of(&mine).unwrap().get("BTC").copied().unwrap_or_default();
        prop_assert_eq!((all_available, all_held), (row.available, row.held));
        // Past the limit of a rust_decimal, exactly: the user's movements as integers.
        let exact: i128 = mine
            .iter()
            .map(|e| e.available.raw() + e.held.raw())
            .sum();
        prop_assert_eq!(row.total().unwrap().raw(), exact);
    }

    #[test]
    fn history_has_one_row_per_side_and_final_statuses(steps in prop::collection::vec(step(), 1..40)) {
        let events = log(&steps, false);
        let mut rows = std::collections::BTreeMap::new();
        for event in &events {
            match history_change(event) {
                Some(HistoryChange::Insert(row)) => {
                    prop_assert!(rows.insert((row.user_id, row.id), row.status).is_none());
                }
                Some(HistoryChange::Status { user_id, id, status, .. }) => {
                    let current = rows.get_mut(&(user_id, id));
                    prop_assert!(current.is_some(), "a status change of an existing row");
                    *current.unwrap() = status;
                }
                None => {}
            }
        }
        let expected: usize = steps
            .iter()
            .map(|s| match s {
                Step::Transfer(f, t, _) if f == t => 0,
                Step::Transfer(..) => 2,
                _ => 1,
            })
            .sum();
        prop_assert_eq!(rows.len(), expected);
        prop_assert!(rows.values().all(|s| matches!(*s, "completed" | "rejected")));
    }
}
