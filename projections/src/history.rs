//! The transaction-history fold: what each ledger event does to a user's list of
//! transactions (`GET /api/transactions`).
//!
//! A transaction row is created by the event that starts it and keeps that event's `position`
//! for life (a withdrawal's later status changes update the row, never its position), so a
//! listing ordered by position is stable: rows only ever appear above the newest one.

use chrono::{DateTime, Utc};
use cryptovault_events::ledger::LedgerEvent;
use cryptovault_events::EventEnvelope;
use rust_decimal::Decimal;
use uuid::Uuid;

/// The `type` of a transaction row, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    Deposit,
    Withdrawal,
    TransferIn,
    TransferOut,
}

impl TransactionKind {
    pub const ALL: [Self; 4] = [
        Self::Deposit,
        Self::Withdrawal,
        Self::TransferIn,
        Self::TransferOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
            Self::TransferIn => "transfer_in",
            Self::TransferOut => "transfer_out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One user's view of one transaction, as first recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionRow {
    /// The deposit, withdrawal or transfer id (a transfer has one row per side).
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: TransactionKind,
    pub asset: String,
    /// Positive, in the asset's unit.
    pub amount: Decimal,
    pub status: &'static str,
    /// The other user of a transfer.
    pub counterparty: Option<Uuid>,
    pub note: Option<String>,
    /// A withdrawal's destination address.
    pub address: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Position of the creating event; the row's sort key.
    pub position: u64,
}

/// A change to the history read model.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryChange {
    Insert(TransactionRow),
    /// A withdrawal moved to `status` (`approved`, `completed`, `rejected`).
    Status {
        user_id: Uuid,
        id: Uuid,
        status: &'static str,
        at: DateTime<Utc>,
    },
}

/// What `event` changes in the history (nothing for non-ledger events).
pub fn history_change(event: &EventEnvelope) -> Option<HistoryChange> {
    let row = |id, user_id, kind, asset: &str, amount, status| TransactionRow {
        id,
        user_id,
        kind,
        asset: asset.to_owned(),
        amount,
        status,
        counterparty: None,
        note: None,
        address: None,
        created_at: event.occurred_at,
        position: event.position,
    };
    let status = |user_id, id, status| HistoryChange::Status {
        user_id,
        id,
        status,
        at: event.occurred_at,
    };
    let ledger_event = match LedgerEvent::decode(event) {
        Ok(Some(ledger_event)) => ledger_event,
        // Not a ledger event, or one that does not decode (the invariant checker reports it).
        Ok(None) | Err(_) => return None,
    };
    match ledger_event {
        LedgerEvent::FundsDeposited(e) => Some(HistoryChange::Insert(row(
            e.deposit_id,
            e.user_id,
            TransactionKind::Deposit,
            &e.asset,
            e.amount,
            "completed",
        ))),
        LedgerEvent::WithdrawalRequested(e) => Some(HistoryChange::Insert(TransactionRow {
            address: Some(e.address.clone()),
            ..row(
                e.withdrawal_id,
                e.user_id,
                TransactionKind::Withdrawal,
                &e.asset,
                e.amount,
                "pending",
            )
        })),
        LedgerEvent::WithdrawalApproved(e) => Some(status(e.user_id, e.withdrawal_id, "approved")),
        LedgerEvent::WithdrawalCompleted(e) => {
            Some(status(e.user_id, e.withdrawal_id, "completed"))
        }
        LedgerEvent::WithdrawalRejected(e) => Some(status(e.user_id, e.withdrawal_id, "rejected")),
        LedgerEvent::TransferSent(e) => Some(HistoryChange::Insert(TransactionRow {
            counterparty: Some(e.to_user),
            note: e.note.clone(),
            ..row(
                e.transfer_id,
                e.from_user,
                TransactionKind::TransferOut,
                &e.asset,
                e.amount,
                "completed",
            )
        })),
        LedgerEvent::TransferReceived(e) => Some(HistoryChange::Insert(TransactionRow {
            counterparty: Some(e.from_user),
            note: e.note.clone(),
            ..row(
                e.transfer_id,
                e.to_user,
                TransactionKind::TransferIn,
                &e.asset,
                e.amount,
                "completed",
            )
        })),
        // The index event of a withdrawal stream: the request already made the row.
        LedgerEvent::WithdrawalOpened(_) => None,
    }
}
