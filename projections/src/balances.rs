//! The balance read model: `available` and `held` per (account, asset), from the ledger's
//! double-entry postings. System accounts appear per user, as
//! `system:external_deposits:<user>` and `system:withdrawals_paid:<user>` (each bounded by that
//! user's credits, so every row fits [`Units`]), and the zero-sum invariant can be checked on
//! the read model too.
//!
//! Money is [`Units`] with checked arithmetic: an amount that cannot be held exactly (more than
//! 18 decimals, or beyond ±1.7·10²⁰ — only a tampered log has one) or a sum that would leave the
//! range is never rounded: the fold reports it ([`Unrepresentable`]) and leaves the rows it
//! would have changed as they were.

use std::collections::BTreeMap;

use cryptovault_events::ledger::{postings, Account, Posting};
use cryptovault_events::{EventEnvelope, Units, UnitsSum};

/// Key of a balance row: the account owner (a user id, or `system:…`) and the asset.
pub type BalanceKey = (String, String);

/// A change to one balance row, or a row's balance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceDelta {
    pub available: Units,
    pub held: Units,
}

impl BalanceDelta {
    /// `available + held`, if it fits.
    pub fn total(&self) -> Option<Units> {
        self.available.checked_add(self.held)
    }

    /// This row moved by `delta`, if both results fit.
    pub fn checked_add(&self, delta: &BalanceDelta) -> Option<BalanceDelta> {
        Some(BalanceDelta {
            available: self.available.checked_add(delta.available)?,
            held: self.held.checked_add(delta.held)?,
        })
    }
}

/// An event a fold could not apply exactly: an amount or a result that [`Units`] cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: {what}")]
pub struct Unrepresentable {
    pub position: u64,
    pub what: String,
}

/// The owner string of an account.
pub fn owner(account: &Account) -> String {
    match account {
        Account::Available(user) | Account::Held(user) => user.to_string(),
        Account::ExternalDeposits(user) => format!("system:external_deposits:{user}"),
        Account::WithdrawalsPaid(user) => format!("system:withdrawals_paid:{user}"),
    }
}

/// A posting's amount in [`Units`], exactly, or why not.
pub fn posting_units(posting: &Posting, event: &EventEnvelope) -> Result<Units, Unrepresentable> {
    Units::from_decimal(posting.amount).ok_or_else(|| Unrepresentable {
        position: event.position,
        what: format!(
            "{} amount {} cannot be held exactly (at most 18 decimals, within ±1.7e20)",
            posting.asset, posting.amount
        ),
    })
}

/// The change one event makes to each balance row.
pub fn event_deltas(
    event: &EventEnvelope,
) -> Result<BTreeMap<BalanceKey, BalanceDelta>, Unrepresentable> {
    let mut out: BTreeMap<BalanceKey, BalanceDelta> = BTreeMap::new();
    for posting in postings(event) {
        let amount = posting_units(&posting, event)?;
        let key = (owner(&posting.account), posting.asset.clone());
        let row = out.entry(key).or_default();
        let change = match posting.account {
            Account::Held(_) => BalanceDelta {
                available: Units::ZERO,
                held: amount,
            },
            _ => BalanceDelta {
                available: amount,
                held: Units::ZERO,
            },
        };
        *row = row.checked_add(&change).ok_or_else(|| Unrepresentable {
            position: event.position,
            what: format!("{} postings of one account beyond ±1.7e20", posting.asset),
        })?;
    }
    Ok(out)
}

/// The net change of a run of events to each balance row (rows that net to zero are kept: the
/// row's existence is itself information), and the rows that met an event they cannot apply
/// exactly (with the first such event). A row in `unrepresentable` has none of that event's
/// change in `rows`; the projector marks it so that readers refuse it rather than show a
/// rounded or partial balance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deltas {
    pub rows: BTreeMap<BalanceKey, BalanceDelta>,
    pub unrepresentable: BTreeMap<BalanceKey, Unrepresentable>,
}

/// The [`Deltas`] of `events`.
pub fn deltas<'a>(events: impl IntoIterator<Item = &'a EventEnvelope>) -> Deltas {
    let mut out = Deltas::default();
    for event in events {
        match event_deltas(event) {
            Ok(changes) => {
                for (key, change) in changes {
                    let row = out.rows.entry(key.clone()).or_default();
                    match row.checked_add(&change) {
                        Some(sum) => *row = sum,
                        None => {
                            out.unrepresentable
                                .entry(key)
                                .or_insert_with(|| Unrepresentable {
                                    position: event.position,
                                    what: "a balance change beyond ±1.7e20".into(),
                                });
                        }
                    }
                }
            }
            Err(error) => {
                for posting in postings(event) {
                    out.unrepresentable
                        .entry((owner(&posting.account), posting.asset))
                        .or_insert_with(|| error.clone());
                }
            }
        }
    }
    out
}

/// A whole balance read model folded in memory (for rebuild checks and verification).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balances {
    pub rows: BTreeMap<BalanceKey, BalanceDelta>,
    pub last_position: u64,
    /// Events this fold could not apply exactly (left out of `rows`; see [`Self::problems`]).
    pub unrepresentable: Vec<Unrepresentable>,
}

impl Balances {
    /// Applies `event` — all of its changes, or (when one of them cannot be held exactly)
    /// none, recording why.
    pub fn apply(&mut self, event: &EventEnvelope) {
        self.last_position = event.position;
        let changes = match event_deltas(event) {
            Ok(changes) => changes,
            Err(error) => return self.unrepresentable.push(error),
        };
        let mut results = Vec::with_capacity(changes.len());
        for (key, change) in changes {
            let current = self.rows.get(&key).copied().unwrap_or_default();
            match current.checked_add(&change) {
                Some(row) => results.push((key, row)),
                None => {
                    return self.unrepresentable.push(Unrepresentable {
                        position: event.position,
                        what: format!("{} {}: balance beyond ±1.7e20", key.0, key.1),
                    })
                }
            }
        }
        self.rows.extend(results);
    }

    /// Per asset, the exact sum of every row (`available + held`); all zero when the ledger
    /// balances.
    pub fn sums(&self) -> BTreeMap<String, UnitsSum> {
        let mut sums: BTreeMap<String, UnitsSum> = BTreeMap::new();
        for ((_, asset), row) in &self.rows {
            let sum = sums.entry(asset.clone()).or_default();
            sum.add(row.available);
            sum.add(row.held);
        }
        sums
    }

    /// What breaks the ledger invariants in this fold: an asset whose accounts do not sum to
    /// zero, a user balance (`available` or `held`) below zero, or an event whose money cannot
    /// be held exactly. Empty when all hold. Amounts are written in their shortest exact form;
    /// see [`Self::problems_with_places`].
    pub fn problems(&self) -> Vec<String> {
        self.problems_with_places(|_| 0)
    }

    /// [`Self::problems`] with balances written exactly with at least `places(asset)` decimals
    /// (the asset's precision: `-5.00` USD).
    pub fn problems_with_places(&self, places: impl Fn(&str) -> u32) -> Vec<String> {
        let mut problems: Vec<String> = self
            .sums()
            .into_iter()
            .filter(|(_, sum)| !sum.is_zero())
            .map(|(asset, sum)| format!("{asset} sums to {sum} over all accounts, not 0"))
            .collect();
        for ((owner, asset), row) in &self.rows {
            if !owner.starts_with("system:")
                && (row.available.is_negative() || row.held.is_negative())
            {
                problems.push(format!(
                    "{owner} {asset}: available {} held {}",
                    row.available.format(places(asset)),
                    row.held.format(places(asset))
                ));
            }
        }
        problems.extend(
            self.unrepresentable
                .iter()
                .map(|u| format!("not exact: {u}")),
        );
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptovault_events::ledger::{FundsDeposited, TransferSent, WithdrawalRequested};
    use cryptovault_events::{DomainEvent, EventMetadata, GENESIS_HASH};
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    fn sealed(event: impl DomainEvent, position: u64) -> EventEnvelope {
        EventEnvelope::seal(
            event.into_new_event(Uuid::now_v7(), chrono::Utc::now(), EventMetadata::default()),
            "s".into(),
            position,
            position,
            GENESIS_HASH.into(),
        )
    }

    fn deposit(user: Uuid, amount: &str, position: u64) -> EventEnvelope {
        sealed(
            FundsDeposited {
                deposit_id: Uuid::now_v7(),
                user_id: user,
                asset: "ETH".into(),
                amount: amount.parse().unwrap(),
            },
            position,
        )
    }

    fn units(text: &str) -> Units {
        text.parse().unwrap()
    }

    const BIG: &str = "999999999.999999999999999999";

    #[test]
    fn eighty_five_maximal_deposits_fold_exactly() {
        let user = Uuid::from_u128(1);
        let events: Vec<EventEnvelope> = (1..=85).map(|p| deposit(user, BIG, p)).collect();
        let mut fold = Balances::default();
        for event in &events {
            fold.apply(event);
        }
        let mine = fold.rows[&(user.to_string(), "ETH".into())];
        assert_eq!(mine.available, units("84999999999.999999999999999915"));
        let system = fold.rows[&(format!("system:external_deposits:{user}"), "ETH".into())];
        assert_eq!(system.available, units("-84999999999.999999999999999915"));
        assert!(fold.problems().is_empty(), "{:?}", fold.problems());
        // The projector's chunk deltas agree with the fold.
        let chunk = deltas(&events);
        assert!(chunk.unrepresentable.is_empty());
        assert_eq!(chunk.rows, fold.rows);
    }

    #[test]
    fn an_amount_that_cannot_be_held_is_reported_never_rounded() {
        let user = Uuid::from_u128(1);
        let good = deposit(user, "1", 1);
        // A tampered event: 19 decimals (a rust_decimal holds it; Units cannot).
        let tampered = deposit(user, "0.0000000000000000001", 2);
        let huge = deposit(user, "1000000000000000000000", 3); // 1e21 > 1.7e20
        let mut fold = Balances::default();
        for event in [&good, &tampered, &huge] {
            fold.apply(event);
        }
        assert_eq!(
            fold.rows[&(user.to_string(), "ETH".into())].available,
            units("1")
        );
        let problems = fold.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("position 2"), "{problems:?}");
        assert!(problems[1].contains("position 3"), "{problems:?}");
        let chunk = deltas([&good, &tampered]);
        assert_eq!(
            chunk.unrepresentable.len(),
            2,
            "the user's and the system row"
        );
        assert_eq!(
            chunk.rows[&(user.to_string(), "ETH".into())].available,
            units("1")
        );
    }

    #[test]
    fn a_balance_beyond_the_range_is_reported_and_left_unchanged() {
        let user = Uuid::from_u128(1);
        let max = "100000000000000000000"; // 1e20: two of them exceed 1.7e20
        let mut fold = Balances::default();
        fold.apply(&deposit(user, max, 1));
        fold.apply(&deposit(user, max, 2));
        assert_eq!(
            fold.rows[&(user.to_string(), "ETH".into())].available,
            units(max)
        );
        assert_eq!(fold.unrepresentable.len(), 1);
        assert_eq!(fold.unrepresentable[0].position, 2);
        // The zero-sum check still holds on what was applied.
        assert!(fold.sums().values().all(UnitsSum::is_zero));
    }

    #[test]
    fn sums_over_many_rows_near_the_limit_are_exact() {
        // Three users near the limit each, against their own system rows: an i128 running sum
        // in row order would overflow; the exact sum is zero.
        let mut fold = Balances::default();
        for n in 1..=3u128 {
            fold.apply(&deposit(
                Uuid::from_u128(n),
                "170000000000000000000",
                n as u64,
            ));
        }
        assert!(fold.problems().is_empty(), "{:?}", fold.problems());
        let mut broken = fold.clone();
        broken
            .rows
            .get_mut(&(Uuid::from_u128(2).to_string(), "ETH".into()))
            .unwrap()
            .available = Units::from_raw(-6);
        assert_eq!(broken.problems().len(), 2, "{:?}", broken.problems());
    }

    proptest! {
        /// Deposits, holds and transfers of 18-decimal amounts near MAX_AMOUNT, well past
        /// 7.9·10¹⁰ in total: the fold equals integer arithmetic on the amounts' 10⁻¹⁸.
        #[test]
        fn folds_are_exact_integer_sums(steps in prop::collection::vec((0..3u8, 1..=1_000_000_000_000_000_000_000_000_000i128), 1..200)) {
            let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
            let mut fold = Balances::default();
            let mut expected = [0i128; 3]; // a available, a held, b available
            let mut events = Vec::new();
            for (n, (kind, raw)) in steps.into_iter().enumerate() {
                let amount = Decimal::from_i128_with_scale(raw, 18);
                let position = n as u64 + 1;
                let event = match kind {
                    0 => {
                        expected[0] += raw;
                        sealed(FundsDeposited { deposit_id: Uuid::now_v7(), user_id: a, asset: "ETH".into(), amount }, position)
                    }
                    1 => {
                        expected[0] -= raw;
                        expected[1] += raw;
                        sealed(WithdrawalRequested { withdrawal_id: Uuid::now_v7(), user_id: a, asset: "ETH".into(), amount, address: "x".into() }, position)
                    }
                    _ => {
                        expected[0] -= raw;
                        expected[2] += raw;
                        sealed(TransferSent { transfer_id: Uuid::now_v7(), from_user: a, to_user: b, asset: "ETH".into(), amount, note: None }, position)
                    }
                };
                fold.apply(&event);
                events.push(event);
            }
            prop_assert!(fold.unrepresentable.is_empty());
            let row = |user: Uuid| fold.rows.get(&(user.to_string(), "ETH".to_owned())).copied().unwrap_or_default();
            prop_assert_eq!(row(a).available.raw(), expected[0]);
            prop_assert_eq!(row(a).held.raw(), expected[1]);
            prop_assert_eq!(row(b).available.raw(), expected[2]);
            prop_assert!(fold.sums().values().all(UnitsSum::is_zero));
            let chunk = deltas(&events);
            prop_assert_eq!(chunk.rows, fold.rows);
        }
    }
}
