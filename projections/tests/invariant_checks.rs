//! The per-position invariant checker (`invariants.rs`): the histories the issue names (a
//! transient overdraft, a rejected withdrawal later completed, 19 decimals) are caught at their
//! position although the final balances are fine; property tests: a random valid history has
//! no violation, and one injected bad event is reported at exactly its position.

use std::collections::{BTreeSet, HashMap};

use chrono::{TimeZone, Utc};
use cryptovault_events::ledger::{
    FundsDeposited, TransferReceived, TransferSent, WithdrawalApproved, WithdrawalCompleted,
    WithdrawalOpened, WithdrawalRejected, WithdrawalRequested,
};
use cryptovault_events::{
    DomainEvent, EventEnvelope, EventMetadata, NewEvent, Units, GENESIS_HASH,
};
use cryptovault_projections::balances::Balances;
use cryptovault_projections::invariants::{
    InvariantChecker, ReportBuilder, Violation, ViolationKind,
};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

fn user(i: usize) -> Uuid {
    Uuid::from_u128(i as u128 + 1)
}

fn at(n: usize) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(n as i64)
}

fn units(text: &str) -> Units {
    text.parse().unwrap()
}

fn dec(u: Units) -> rust_decimal::Decimal {
    u.to_decimal().expect("test amounts fit a Decimal")
}

/// `events` sealed into a hash-chained log at positions 1, 2, …
fn seal(events: Vec<NewEvent>) -> Vec<EventEnvelope> {
    let mut prev = GENESIS_HASH.to_owned();
    events
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

fn new_event<E: DomainEvent>(e: E, n: usize) -> NewEvent {
    e.into_new_event(Uuid::now_v7(), at(n), EventMetadata::default())
}

fn deposit(u: Uuid, asset: &str, amount: Units) -> FundsDeposited {
    FundsDeposited {
        deposit_id: Uuid::now_v7(),
        user_id: u,
        asset: asset.into(),
        amount: dec(amount),
    }
}

fn sent(from: Uuid, to: Uuid, asset: &str, amount: Units) -> TransferSent {
    TransferSent {
        transfer_id: Uuid::now_v7(),
        from_user: from,
        to_user: to,
        asset: asset.into(),
        amount: dec(amount),
        note: None,
    }
}

fn check_all(log: &[EventEnvelope]) -> Vec<Violation> {
    let mut checker = InvariantChecker::new();
    log.iter().flat_map(|e| checker.push(e)).collect()
}

fn final_balances_problems(log: &[EventEnvelope]) -> Vec<String> {
    let mut fold = Balances::default();
    for e in log {
        fold.apply(e);
    }
    fold.problems()
}

fn kinds_at(violations: &[Violation]) -> BTreeSet<(u64, ViolationKind)> {
    violations.iter().map(|v| (v.position, v.kind)).collect()
}

#[test]
fn a_transient_overdraft_covered_later_is_reported_at_its_position() {
    let (ann, ben) = (user(0), user(1));
    let log = seal(vec![
        new_event(deposit(ann, "USD", units("10")), 0),
        new_event(sent(ann, ben, "USD", units("25")), 1), // ann -15
        new_event(deposit(ann, "USD", units("20")), 2),   // ann 5: covered
    ]);
    assert!(
        final_balances_problems(&log).is_empty(),
        "the final balances are fine"
    );
    let found = check_all(&log);
    assert_eq!(
        kinds_at(&found),
        BTreeSet::from([(2, ViolationKind::NegativeBalance)]),
        "{found:#?}"
    );
    assert_eq!(found[0].account.as_ref().unwrap().owner, ann.to_string());
    assert!(found[0].detail.contains("available is -15"), "{}", found[0]);
}

#[test]
fn a_rejected_withdrawal_completed_later_is_an_illegal_transition() {
    let ann = user(0);
    let w = Uuid::now_v7();
    let amount = units("100");
    let requested = WithdrawalRequested {
        withdrawal_id: w,
        user_id: ann,
        asset: "USD".into(),
        amount: dec(amount),
        address: "x".into(),
    };
    let log = seal(vec![
        new_event(deposit(ann, "USD", amount), 0),
        new_event(requested.clone(), 1),
        new_event(
            WithdrawalOpened {
                withdrawal_id: w,
                user_id: ann,
                asset: "USD".into(),
            },
            2,
        ),
        new_event(
            WithdrawalRejected {
                withdrawal_id: w,
                user_id: ann,
                asset: "USD".into(),
                amount: dec(amount),
                rejected_by: user(9),
                reason: None,
            },
            3,
        ),
        new_event(
            WithdrawalCompleted {
                withdrawal_id: w,
                user_id: ann,
                asset: "USD".into(),
                amount: dec(amount),
                completed_by: user(9),
            },
            4,
        ), // held -100
        // The balance restored: a new request moves available 100 into held again (held 0).
        new_event(
            WithdrawalRequested {
                withdrawal_id: Uuid::now_v7(),
                ..requested
            },
            5,
        ),
    ]);
    assert!(final_balances_problems(&log).is_empty());
    let found = check_all(&log);
    assert_eq!(
        kinds_at(&found),
        BTreeSet::from([
            (5, ViolationKind::IllegalTransition),
            (5, ViolationKind::NegativeBalance),
        ]),
        "{found:#?}"
    );
    let illegal = found
        .iter()
        .find(|v| v.kind == ViolationKind::IllegalTransition)
        .unwrap();
    assert_eq!(illegal.withdrawal, Some(w));
    assert!(
        illegal.detail.contains("completed while rejected"),
        "{illegal}"
    );
}

#[test]
fn an_amount_with_nineteen_decimals_is_unrepresentable() {
    let ann = user(0);
    let mut e = new_event(deposit(ann, "ETH", units("1")), 0);
    e.payload["amount"] = json!("0.0000000000000000001");
    // 30 decimals: a Decimal would silently round this one while decoding.
    let mut rounded = new_event(deposit(ann, "ETH", units("1")), 1);
    rounded.payload["amount"] = json!("1.000000000000000000000000000001");
    let log = seal(vec![e, rounded]);
    let found = check_all(&log);
    assert_eq!(
        kinds_at(&found),
        BTreeSet::from([
            (1, ViolationKind::Unrepresentable),
            (2, ViolationKind::Unrepresentable)
        ]),
        "{found:#?}"
    );
    assert!(found[0].detail.contains("0.0000000000000000001"));
}

#[test]
fn trailing_zeros_past_eighteen_places_are_exact() {
    let mut e = new_event(deposit(user(0), "ETH", units("1")), 0);
    e.payload["amount"] = json!("1.50000000000000000000");
    assert!(check_all(&seal(vec![e])).is_empty());
}

#[test]
fn overflowing_balances_and_oversized_amounts_are_unrepresentable() {
    let ann = user(0);
    let big = units("100000000000000000000"); // 1e20; two of them overflow ±1.7e20
    let mut huge = new_event(deposit(ann, "BTC", units("1")), 2);
    huge.payload["amount"] = json!("1000000000000000000000"); // 1e21
    let log = seal(vec![
        new_event(deposit(ann, "BTC", big), 0),
        new_event(deposit(ann, "BTC", big), 1),
        huge,
    ]);
    let found = check_all(&log);
    assert!(
        found
            .iter()
            .all(|v| v.kind == ViolationKind::Unrepresentable),
        "{found:#?}"
    );
    let positions: BTreeSet<u64> = found.iter().map(|v| v.position).collect();
    assert_eq!(positions, BTreeSet::from([2, 3]), "{found:#?}");
}

#[test]
fn undecodable_payloads_and_non_positive_amounts_are_unbalanced_postings() {
    let ann = user(0);
    let mut broken = new_event(deposit(ann, "USD", units("1")), 0);
    broken.payload.as_object_mut().unwrap().remove("user_id");
    let mut zero = new_event(deposit(ann, "USD", units("1")), 1);
    zero.payload["amount"] = json!("0");
    let mut wrong_version = new_event(deposit(ann, "USD", units("1")), 2);
    wrong_version.schema_version = 7;
    let log = seal(vec![broken, zero, wrong_version]);
    let found = check_all(&log);
    assert_eq!(
        kinds_at(&found),
        BTreeSet::from([
            (1, ViolationKind::UnbalancedPosting),
            (2, ViolationKind::UnbalancedPosting),
            (3, ViolationKind::UnbalancedPosting),
        ]),
        "{found:#?}"
    );
}

#[test]
fn the_withdrawal_state_machine_is_enforced() {
    let (ann, ben) = (user(0), user(1));
    let (w, unknown) = (Uuid::now_v7(), Uuid::now_v7());
    let amount = units("3");
    let approved = |id, by_user| WithdrawalApproved {
        withdrawal_id: id,
        user_id: by_user,
        asset: "USD".into(),
        approved_by: user(9),
    };
    let completed = |amount: Units| WithdrawalCompleted {
        withdrawal_id: w,
        user_id: ann,
        asset: "USD".into(),
        amount: dec(amount),
        completed_by: user(9),
    };
    let log = seal(vec![
        new_event(deposit(ann, "USD", units("10")), 0),
        new_event(
            WithdrawalRequested {
                withdrawal_id: w,
                user_id: ann,
                asset: "USD".into(),
                amount: dec(amount),
                address: "x".into(),
            },
            1,
        ),
        new_event(approved(unknown, ann), 2), // 3: unknown withdrawal
        new_event(approved(w, ben), 3),       // 4: another user's
        new_event(completed(amount), 4),      // 5: complete before approve
        new_event(approved(w, ann), 5),       // 6: legal
        new_event(approved(w, ann), 6),       // 7: approved twice
        new_event(completed(units("2")), 7),  // 8: another amount (its postings still apply)
    ]);
    let found = check_all(&log);
    let illegal: BTreeSet<u64> = found
        .iter()
        .filter(|v| v.kind == ViolationKind::IllegalTransition)
        .map(|v| v.position)
        .collect();
    assert_eq!(illegal, BTreeSet::from([3, 4, 5, 7, 8]), "{found:#?}");
    assert!(found
        .iter()
        .any(|v| v.position == 8 && v.detail.contains("amount 2, but 3")));
}

#[test]
fn system_accounts_may_be_negative_and_the_summary_names_the_first_position_per_kind() {
    let (ann, ben) = (user(0), user(1));
    let mut unrepresentable = new_event(deposit(ann, "USD", units("1")), 3);
    unrepresentable.payload["amount"] = json!("0.0000000000000000001");
    let log = seal(vec![
        new_event(deposit(ann, "USD", units("5")), 0), // system:external_deposits -5
        new_event(sent(ann, ben, "USD", units("6")), 1), // 2: ann -1
        new_event(sent(ann, ben, "USD", units("1")), 2), // 3: ann -2
        unrepresentable,                               // 4
    ]);
    let mut report = ReportBuilder::new();
    for e in &log {
        report.push(e);
    }
    let report = report.finish();
    assert_eq!(report.summary.events_checked, 4);
    assert_eq!(report.summary.violation_count, 3);
    assert_eq!(report.summary.first_positions["negative_balance"], 2);
    assert_eq!(report.summary.first_positions["unrepresentable"], 4);
    assert_eq!(report.summary.counts["negative_balance"], 2);
    assert_eq!(report.violations.len(), 3);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["first_positions"]["negative_balance"], 2);
    assert_eq!(json["violations"][0]["kind"], "negative_balance");
    assert_eq!(json["violations"][0]["position"], 2);
}

#[test]
fn other_events_are_skipped() {
    let e = NewEvent::new(
        Uuid::now_v7(),
        "UserRegistered",
        1,
        at(0),
        EventMetadata::default(),
        json!({"amount": "-1"}),
    );
    assert!(check_all(&seal(vec![e])).is_empty());
}

// ---- property tests ----------------------------------------------------------------------

const ASSETS: [&str; 2] = ["BTC", "ETH"];
const USERS: usize = 3;

/// A choice the interpreter turns into valid events on the state it has reached.
#[derive(Debug, Clone)]
enum Choice {
    Deposit(usize, usize, u64),
    /// Send `percent` of the sender's available balance.
    Transfer(usize, usize, usize, u8),
    /// Request a withdrawal of `percent` of the available balance.
    Request(usize, usize, u8),
    Approve(usize),
    Complete(usize),
    Reject(usize),
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        (0..USERS, 0..2usize, 1..=u64::MAX).prop_map(|(u, a, x)| Choice::Deposit(u, a, x)),
        (0..USERS, 0..USERS, 0..2usize, 1..=100u8)
            .prop_map(|(f, t, a, p)| Choice::Transfer(f, t, a, p)),
        (0..USERS, 0..2usize, 1..=100u8).prop_map(|(u, a, p)| Choice::Request(u, a, p)),
        any::<usize>().prop_map(Choice::Approve),
        any::<usize>().prop_map(Choice::Complete),
        any::<usize>().prop_map(Choice::Reject),
    ]
}

/// What can be injected, and the kinds it must be reported with.
#[derive(Debug, Clone, Copy)]
enum Bad {
    /// Send more than the sender has to an outsider, who sends it straight back.
    TransientOverdraft,
    ApproveUnknown,
    ApproveTwice,
    ApproveNamingAnotherUser,
    NineteenDecimals,
    TooLarge,
    ZeroAmount,
    NegativeDeposit,
    Undecodable,
}

fn bad() -> impl Strategy<Value = Bad> {
    prop_oneof![
        Just(Bad::TransientOverdraft),
        Just(Bad::ApproveUnknown),
        Just(Bad::ApproveTwice),
        Just(Bad::ApproveNamingAnotherUser),
        Just(Bad::NineteenDecimals),
        Just(Bad::TooLarge),
        Just(Bad::ZeroAmount),
        Just(Bad::NegativeDeposit),
        Just(Bad::Undecodable),
    ]
}

#[derive(Debug, Clone)]
struct Pending {
    id: Uuid,
    user: Uuid,
    asset: &'static str,
    amount: Units,
}

#[derive(Default)]
struct Model {
    available: HashMap<(usize, usize), Units>,
    requested: Vec<Pending>,
    approved: Vec<Pending>,
    events: Vec<NewEvent>,
}

/// The largest amount of one event: a Decimal holds 28 significant digits.
const MAX_EVENT: i128 = 10i128.pow(27);

impl Model {
    fn push<E: DomainEvent>(&mut self, e: E) {
        let n = self.events.len();
        self.events.push(new_event(e, n));
    }

    fn avail(&mut self, u: usize, a: usize) -> &mut Units {
        self.available.entry((u, a)).or_default()
    }

    fn apply(&mut self, choice: &Choice) {
        match *choice {
            Choice::Deposit(u, a, x) => {
                // BTC amounts are whole 10^-8, ETH amounts use all 18 places.
                let raw = if a == 0 {
                    (x % 10u64.pow(12)) as i128 * 10i128.pow(10)
                } else {
                    x as i128 * 1_000_003
                }
                .clamp(1, MAX_EVENT);
                let amount = Units::from_raw(raw);
                *self.avail(u, a) = self.avail(u, a).checked_add(amount).unwrap();
                self.push(deposit(user(u), ASSETS[a], amount));
            }
            Choice::Transfer(f, t, a, percent) => {
                if f == t {
                    return;
                }
                let Some(amount) = self.share(f, a, percent) else {
                    return;
                };
                *self.avail(f, a) = self.avail(f, a).checked_sub(amount).unwrap();
                *self.avail(t, a) = self.avail(t, a).checked_add(amount).unwrap();
                let s = sent(user(f), user(t), ASSETS[a], amount);
                let r = TransferReceived {
                    transfer_id: s.transfer_id,
                    from_user: s.from_user,
                    to_user: s.to_user,
                    asset: s.asset.clone(),
                    amount: s.amount,
                    note: None,
                };
                self.push(s);
                self.push(r);
            }
            Choice::Request(u, a, percent) => {
                let Some(amount) = self.share(u, a, percent) else {
                    return;
                };
                *self.avail(u, a) = self.avail(u, a).checked_sub(amount).unwrap();
                let p = Pending {
                    id: Uuid::now_v7(),
                    user: user(u),
                    asset: ASSETS[a],
                    amount,
                };
                self.push(WithdrawalRequested {
                    withdrawal_id: p.id,
                    user_id: p.user,
                    asset: p.asset.into(),
                    amount: dec(amount),
                    address: "x".into(),
                });
                self.push(WithdrawalOpened {
                    withdrawal_id: p.id,
                    user_id: p.user,
                    asset: p.asset.into(),
                });
                self.requested.push(p);
            }
            Choice::Approve(k) => {
                if self.requested.is_empty() {
                    return;
                }
                let p = self.requested.remove(k % self.requested.len());
                self.push(WithdrawalApproved {
                    withdrawal_id: p.id,
                    user_id: p.user,
                    asset: p.asset.into(),
                    approved_by: user(9),
                });
                self.approved.push(p);
            }
            Choice::Complete(k) => {
                if self.approved.is_empty() {
                    return;
                }
                let p = self.approved.remove(k % self.approved.len());
                self.push(WithdrawalCompleted {
                    withdrawal_id: p.id,
                    user_id: p.user,
                    asset: p.asset.into(),
                    amount: dec(p.amount),
                    completed_by: user(9),
                });
            }
            Choice::Reject(k) => {
                // From requested or approved, alternately by k.
                let list = if k % 2 == 0 && !self.approved.is_empty() || self.requested.is_empty() {
                    &mut self.approved
                } else {
                    &mut self.requested
                };
                if list.is_empty() {
                    return;
                }
                let p = list.remove(k / 2 % list.len());
                let a = ASSETS.iter().position(|x| *x == p.asset).unwrap();
                let u = (0..USERS).find(|u| user(*u) == p.user).unwrap();
                *self.avail(u, a) = self.avail(u, a).checked_add(p.amount).unwrap();
                self.push(WithdrawalRejected {
                    withdrawal_id: p.id,
                    user_id: p.user,
                    asset: p.asset.into(),
                    amount: dec(p.amount),
                    rejected_by: user(9),
                    reason: None,
                });
            }
        }
    }

    /// `percent` of the available balance (BTC: whole 10^-8), if that is positive.
    fn share(&mut self, u: usize, a: usize, percent: u8) -> Option<Units> {
        let available = self.avail(u, a).raw();
        let mut raw = (available / 100 * percent as i128).min(MAX_EVENT);
        if a == 0 {
            raw -= raw % 10i128.pow(10);
        }
        (raw > 0).then(|| Units::from_raw(raw))
    }

    /// Appends `bad` on the current state (leaving the model's state as it was); returns the
    /// kinds it must be reported with.
    fn inject(&mut self, bad: Bad) -> BTreeSet<ViolationKind> {
        use ViolationKind::*;
        let outsider = Uuid::from_u128(1_000);
        let raw_deposit = |amount: serde_json::Value| {
            let mut e = new_event(deposit(user(0), "ETH", units("1")), 0);
            e.payload["amount"] = amount;
            e
        };
        match bad {
            Bad::TransientOverdraft => {
                // BTC deposits stay far below MAX_EVENT, so this amount fits one event.
                let amount = self.avail(0, 0).checked_add(units("0.00000001")).unwrap();
                assert!(amount.raw() <= MAX_EVENT);
                self.push(sent(user(0), outsider, "BTC", amount));
                let back = sent(outsider, user(0), "BTC", amount);
                self.push(back);
                // (the model keeps the user's balance: it comes back in full)
                BTreeSet::from([NegativeBalance])
            }
            Bad::ApproveUnknown => {
                self.push(WithdrawalApproved {
                    withdrawal_id: Uuid::now_v7(),
                    user_id: user(0),
                    asset: "BTC".into(),
                    approved_by: user(9),
                });
                BTreeSet::from([IllegalTransition])
            }
            Bad::ApproveTwice => {
                let id = self
                    .approved
                    .first()
                    .map(|p| p.id)
                    .unwrap_or_else(Uuid::now_v7);
                let p = self.approved.first().cloned();
                self.push(WithdrawalApproved {
                    withdrawal_id: id,
                    user_id: p.as_ref().map(|p| p.user).unwrap_or(user(0)),
                    asset: p.map(|p| p.asset).unwrap_or("BTC").into(),
                    approved_by: user(9),
                });
                BTreeSet::from([IllegalTransition])
            }
            Bad::ApproveNamingAnotherUser => {
                let p = self.requested.first().cloned();
                self.push(WithdrawalApproved {
                    withdrawal_id: p.as_ref().map(|p| p.id).unwrap_or_else(Uuid::now_v7),
                    user_id: outsider,
                    asset: p.map(|p| p.asset).unwrap_or("BTC").into(),
                    approved_by: user(9),
                });
                BTreeSet::from([IllegalTransition])
            }
            Bad::NineteenDecimals => {
                self.events
                    .push(raw_deposit(json!("1.0000000000000000001")));
                BTreeSet::from([Unrepresentable])
            }
            Bad::TooLarge => {
                self.events
                    .push(raw_deposit(json!("170141183460469231732")));
                BTreeSet::from([Unrepresentable])
            }
            Bad::ZeroAmount => {
                self.events.push(raw_deposit(json!("0.000")));
                BTreeSet::from([UnbalancedPosting])
            }
            Bad::NegativeDeposit => {
                let mut e = new_event(deposit(outsider, "BTC", units("1")), 0);
                e.payload["amount"] = json!("-1.5");
                self.events.push(e);
                BTreeSet::from([UnbalancedPosting, NegativeBalance])
            }
            Bad::Undecodable => {
                let mut e = raw_deposit(json!("1"));
                e.payload.as_object_mut().unwrap().remove("asset");
                self.events.push(e);
                BTreeSet::from([UnbalancedPosting])
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_random_valid_history_has_no_violation(choices in prop::collection::vec(choice(), 0..120)) {
        let mut model = Model::default();
        for c in &choices {
            model.apply(c);
        }
        let log = seal(model.events);
        let mut checker = InvariantChecker::new();
        for e in &log {
            let found = checker.push(e);
            prop_assert!(found.is_empty(), "{:#?}", found);
        }
        prop_assert!(checker.summary().is_clean());
        prop_assert_eq!(checker.summary().events_checked, log.len() as u64);
        prop_assert!(final_balances_problems(&log).is_empty());
    }

    #[test]
    fn one_injected_bad_event_is_reported_at_exactly_its_position(
        choices in prop::collection::vec(choice(), 0..80),
        at in 0..80usize,
        bad in bad(),
    ) {
        let mut model = Model::default();
        let at = at.min(choices.len());
        let mut expected = None;
        for (i, c) in choices.iter().enumerate() {
            if i == at {
                let position = model.events.len() as u64 + 1;
                expected = Some((position, model.inject(bad)));
            }
            model.apply(c);
        }
        if expected.is_none() {
            let position = model.events.len() as u64 + 1;
            expected = Some((position, model.inject(bad)));
        }
        let (position, kinds) = expected.unwrap();
        let log = seal(model.events);
        let mut report = ReportBuilder::new();
        let found: Vec<Violation> = log.iter().flat_map(|e| report.push(e)).collect();
        let report = report.finish();
        prop_assert!(!found.is_empty(), "{:?} not reported", bad);
        for v in &found {
            prop_assert_eq!(v.position, position, "{:?}: {:#?}", bad, found);
        }
        let found_kinds: BTreeSet<ViolationKind> = found.iter().map(|v| v.kind).collect();
        prop_assert_eq!(found_kinds, kinds.clone());
        for kind in kinds {
            prop_assert_eq!(report.summary.first_positions[kind.as_str()], position);
        }
    }
}
