//! Ledger entries: each event's effect on each user's balance in one asset, the source of
//! statements and of balances "as of" an instant.
//!
//! Entries are derived from the double-entry postings ([`LedgerEvent::postings`]), so a statement can never disagree
//! with the ledger: summing a user's entries up to an instant gives exactly the balance the
//! balance fold gives for the events up to that instant.
//!
//! Money is [`Units`] (exact, checked): an amount that cannot be held exactly, or a running
//! balance that would leave the range, is an error, never a rounded value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cryptovault_events::ledger::{Account, LedgerEvent};
use cryptovault_events::{EventEnvelope, Units};
use uuid::Uuid;

use crate::balances::{posting_units, Unrepresentable};

/// What kind of movement an entry is, as statements name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Deposit,
    /// A withdrawal request placed a hold (available → held; total unchanged).
    WithdrawalHold,
    /// A completed withdrawal left the account (held ↓, total ↓).
    Withdrawal,
    /// A rejected withdrawal's hold was released (held → available; total unchanged).
    WithdrawalReleased,
    TransferIn,
    TransferOut,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::WithdrawalHold => "withdrawal_hold",
            Self::Withdrawal => "withdrawal",
            Self::WithdrawalReleased => "withdrawal_released",
            Self::TransferIn => "transfer_in",
            Self::TransferOut => "transfer_out",
        }
    }

    /// The kind named `text` (as [`Self::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Deposit,
            Self::WithdrawalHold,
            Self::Withdrawal,
            Self::WithdrawalReleased,
            Self::TransferIn,
            Self::TransferOut,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }

    /// Whether this kind changes the total balance (statements list only these).
    pub fn is_movement(self) -> bool {
        !matches!(self, Self::WithdrawalHold | Self::WithdrawalReleased)
    }
}

/// One event's net effect on one user's balance in one asset.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub user_id: Uuid,
    pub asset: String,
    pub kind: EntryKind,
    /// The deposit, withdrawal or transfer id.
    pub reference: Uuid,
    pub counterparty: Option<Uuid>,
    /// Change to `available` (signed).
    pub available: Units,
    /// Change to `held` (signed).
    pub held: Units,
    pub occurred_at: DateTime<Utc>,
    pub position: u64,
}

impl Entry {
    /// Change to the total balance (`available + held`). One event's entry always fits (its
    /// parts are single amounts); `None` only for values no event produces.
    pub fn total(&self) -> Option<Units> {
        self.available.checked_add(self.held)
    }
}

/// The kind, the reference (deposit, withdrawal or transfer id) and the counterparty of
/// `user_id`'s entry for `event`; `None` for events that make no entries.
fn entry_kind(event: &LedgerEvent, user_id: Uuid) -> Option<(EntryKind, Uuid, Option<Uuid>)> {
    match event {
        LedgerEvent::FundsDeposited(e) => Some((EntryKind::Deposit, e.deposit_id, None)),
        LedgerEvent::WithdrawalRequested(e) => {
            Some((EntryKind::WithdrawalHold, e.withdrawal_id, None))
        }
        LedgerEvent::WithdrawalCompleted(e) => Some((EntryKind::Withdrawal, e.withdrawal_id, None)),
        LedgerEvent::WithdrawalRejected(e) => {
            Some((EntryKind::WithdrawalReleased, e.withdrawal_id, None))
        }
        LedgerEvent::TransferSent(e) if e.from_user == user_id => {
            Some((EntryKind::TransferOut, e.transfer_id, Some(e.to_user)))
        }
        LedgerEvent::TransferSent(e) => {
            Some((EntryKind::TransferIn, e.transfer_id, Some(e.from_user)))
        }
        // No postings: TransferSent carries both sides of a transfer.
        LedgerEvent::TransferReceived(_)
        | LedgerEvent::WithdrawalApproved(_)
        | LedgerEvent::WithdrawalOpened(_) => None,
    }
}

/// The user entries `event` makes (empty for events that move no user money, and for a ledger
/// event that does not decode), or why they cannot be held exactly.
pub fn entries(event: &EventEnvelope) -> Result<Vec<Entry>, Unrepresentable> {
    let Ok(Some(ledger_event)) = LedgerEvent::decode(event) else {
        return Ok(Vec::new());
    };
    let mut per_user: BTreeMap<(Uuid, String), (Units, Units)> = BTreeMap::new();
    for posting in ledger_event.postings() {
        let amount = posting_units(&posting, event)?;
        let overflow = || Unrepresentable {
            position: event.position,
            what: format!("{} postings of one user beyond ±1.7e20", posting.asset),
        };
        let (user, held) = match posting.account {
            Account::Available(user) => (user, false),
            Account::Held(user) => (user, true),
            Account::ExternalDeposits(_) | Account::WithdrawalsPaid(_) => continue,
        };
        let row = per_user.entry((user, posting.asset.clone())).or_default();
        let part = if held { &mut row.1 } else { &mut row.0 };
        *part = part.checked_add(amount).ok_or_else(overflow)?;
    }
    Ok(per_user
        .into_iter()
        .filter_map(|((user_id, asset), (available, held))| {
            let (kind, reference, counterparty) = entry_kind(&ledger_event, user_id)?;
            Some(Entry {
                user_id,
                asset,
                kind,
                reference,
                counterparty,
                available,
                held,
                occurred_at: event.occurred_at,
                position: event.position,
            })
        })
        .collect())
}

/// One line of a statement: a movement and the total balance after it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementLine {
    pub entry: Entry,
    /// Signed change to the total balance.
    pub amount: Units,
    /// Total balance after this movement.
    pub balance: Units,
}

/// A running balance left the range [`Units`] holds (no account's can, given the credits cap;
/// only a tampered log gets here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the running balance after movement {movement} is beyond ±1.7e20")]
pub struct BalanceOverflow {
    pub movement: u64,
}

/// A statement for one asset being written: starts at the opening balance and carries the
/// running total balance through the movements, in position order. Memory is constant,
/// whatever the number of movements. Exact: a balance that cannot be held is an error.
#[derive(Debug, Clone)]
pub struct RunningBalance {
    pub opening: Units,
    pub balance: Units,
    pub movements: u64,
}

impl RunningBalance {
    pub fn new(opening: Units) -> Self {
        Self {
            opening,
            balance: opening,
            movements: 0,
        }
    }

    /// The statement line for `entry`, or `None` when it does not change the total
    /// (holds and their release).
    pub fn push(&mut self, entry: Entry) -> Result<Option<StatementLine>, BalanceOverflow> {
        if !entry.kind.is_movement() {
            return Ok(None);
        }
        let amount = entry.total().ok_or(BalanceOverflow {
            movement: self.movements + 1,
        })?;
        let balance = self.add(amount)?;
        Ok(Some(StatementLine {
            entry,
            amount,
            balance,
        }))
    }

    /// Adds a movement of `amount` (signed change to the total); returns the balance after it.
    pub fn add(&mut self, amount: Units) -> Result<Units, BalanceOverflow> {
        self.balance = self.balance.checked_add(amount).ok_or(BalanceOverflow {
            movement: self.movements + 1,
        })?;
        self.movements += 1;
        Ok(self.balance)
    }

    /// The closing balance (equal to the opening plus every movement's amount).
    pub fn closing(&self) -> Units {
        self.balance
    }
}

/// `available` and `held` per asset for one user after `entries` (a balance "as of"); `None`
/// if a sum would leave the range.
pub fn balances_of<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Option<BTreeMap<String, (Units, Units)>> {
    let mut out: BTreeMap<String, (Units, Units)> = BTreeMap::new();
    for entry in entries {
        let row = out.entry(entry.asset.clone()).or_default();
        row.0 = row.0.checked_add(entry.available)?;
        row.1 = row.1.checked_add(entry.held)?;
    }
    Some(out)
}
