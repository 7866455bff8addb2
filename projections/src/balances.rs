//! The balance read model: `available` and `held` per (account, asset), from the ledger's
//! double-entry postings. System accounts appear as `system:external_deposits` and
//! `system:withdrawals_paid`, so the zero-sum invariant can be checked on the read model too.

use std::collections::BTreeMap;

use cryptovault_events::ledger::{postings, Account};
use cryptovault_events::EventEnvelope;
use rust_decimal::Decimal;

/// Key of a balance row: the account owner (a user id, or `system:…`) and the asset.
pub type BalanceKey = (String, String);

/// A change to one balance row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceDelta {
    pub available: Decimal,
    pub held: Decimal,
}

/// The owner string of an account.
pub fn owner(account: &Account) -> String {
    match account {
        Account::Available(user) | Account::Held(user) => user.to_string(),
        Account::ExternalDeposits => "system:external_deposits".to_owned(),
        Account::WithdrawalsPaid => "system:withdrawals_paid".to_owned(),
    }
}

/// The net change `events` make to each balance row (rows that net to zero are kept: the
/// row's existence is itself information).
pub fn deltas<'a>(
    events: impl IntoIterator<Item = &'a EventEnvelope>,
) -> BTreeMap<BalanceKey, BalanceDelta> {
    let mut out: BTreeMap<BalanceKey, BalanceDelta> = BTreeMap::new();
    for event in events {
        for posting in postings(event) {
            let row = out
                .entry((owner(&posting.account), posting.asset.clone()))
                .or_default();
            match posting.account {
                Account::Held(_) => row.held += posting.amount,
                _ => row.available += posting.amount,
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
}

impl Balances {
    pub fn apply(&mut self, event: &EventEnvelope) {
        for (key, delta) in deltas([event]) {
            let row = self.rows.entry(key).or_default();
            row.available += delta.available;
            row.held += delta.held;
        }
        self.last_position = event.position;
    }

    /// Per asset, the sum of every row; all zero when the ledger balances.
    pub fn sums(&self) -> BTreeMap<String, Decimal> {
        let mut sums = BTreeMap::new();
        for ((_, asset), row) in &self.rows {
            *sums.entry(asset.clone()).or_insert(Decimal::ZERO) += row.available + row.held;
        }
        sums
    }
}

impl Balances {
    /// What breaks the ledger invariants in this fold: an asset whose accounts do not sum to
    /// zero, or a user balance (`available` or `held`) below zero. Empty when all hold.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .sums()
            .into_iter()
            .filter(|(_, sum)| !sum.is_zero())
            .map(|(asset, sum)| format!("{asset} sums to {sum} over all accounts, not 0"))
            .collect();
        for ((owner, asset), row) in &self.rows {
            if !owner.starts_with("system:")
                && (row.available < Decimal::ZERO || row.held < Decimal::ZERO)
            {
                problems.push(format!(
                    "{owner} {asset}: available {} held {}",
                    row.available, row.held
                ));
            }
        }
        problems
    }
}
