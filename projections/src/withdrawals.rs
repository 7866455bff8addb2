//! The withdrawals fold: what each ledger event does to the `withdrawals` read model, one row
//! per withdrawal with its current status (the admin queue and the user's list).
//!
//! A row is created by the `WithdrawalRequested` event (status `pending`) and moved by the
//! lifecycle events (`approved`, `completed`, `rejected`); each change records the position
//! and time of the event that made it. Legality of the transitions is the invariant checker's
//! business ([`crate::invariants`]); this fold shows what the log says.

use chrono::{DateTime, Utc};
use cryptovault_events::ledger::LedgerEvent;
use cryptovault_events::EventEnvelope;
use rust_decimal::Decimal;
use uuid::Uuid;

/// A withdrawal as requested.
#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawalRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    /// Positive, in the asset's unit.
    pub amount: Decimal,
    pub address: String,
    /// `pending`.
    pub status: &'static str,
    pub requested_at: DateTime<Utc>,
    /// Position of the request.
    pub position: u64,
}

/// A change to the withdrawals read model.
#[derive(Debug, Clone, PartialEq)]
pub enum WithdrawalChange {
    /// A withdrawal was requested: its row (inserted, or replaced if already there).
    Requested(WithdrawalRow),
    /// The withdrawal moved to `status` (`approved`, `completed`, `rejected`) at `position`.
    Status {
        id: Uuid,
        status: &'static str,
        at: DateTime<Utc>,
        position: u64,
    },
}

/// What `event` changes in the withdrawals read model (nothing for other events, and for a
/// ledger event that does not decode — the invariant checker reports those).
pub fn withdrawal_change(event: &EventEnvelope) -> Option<WithdrawalChange> {
    let status = |id, status| WithdrawalChange::Status {
        id,
        status,
        at: event.occurred_at,
        position: event.position,
    };
    let ledger_event = match LedgerEvent::decode(event) {
        Ok(Some(ledger_event)) => ledger_event,
        Ok(None) | Err(_) => return None,
    };
    match ledger_event {
        LedgerEvent::WithdrawalRequested(e) => Some(WithdrawalChange::Requested(WithdrawalRow {
            id: e.withdrawal_id,
            user_id: e.user_id,
            asset: e.asset,
            amount: e.amount,
            address: e.address,
            status: "pending",
            requested_at: event.occurred_at,
            position: event.position,
        })),
        LedgerEvent::WithdrawalApproved(e) => Some(status(e.withdrawal_id, "approved")),
        LedgerEvent::WithdrawalCompleted(e) => Some(status(e.withdrawal_id, "completed")),
        LedgerEvent::WithdrawalRejected(e) => Some(status(e.withdrawal_id, "rejected")),
        // The index event of the withdrawal stream and the other money movements have no row.
        LedgerEvent::WithdrawalOpened(_)
        | LedgerEvent::FundsDeposited(_)
        | LedgerEvent::TransferSent(_)
        | LedgerEvent::TransferReceived(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cryptovault_events::ledger::{
        FundsDeposited, WithdrawalApproved, WithdrawalOpened, WithdrawalRequested,
    };
    use cryptovault_events::{DomainEvent, EventMetadata, GENESIS_HASH};

    fn sealed(event: impl DomainEvent, position: u64) -> EventEnvelope {
        let at = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        EventEnvelope::seal(
            event.into_new_event(
                Uuid::from_u128(position.into()),
                at,
                EventMetadata::default(),
            ),
            "s".into(),
            position,
            position,
            GENESIS_HASH.into(),
        )
    }

    #[test]
    fn a_request_makes_a_pending_row_and_lifecycle_events_move_its_status() {
        let (w, user) = (Uuid::from_u128(10), Uuid::from_u128(11));
        let requested = sealed(
            WithdrawalRequested {
                withdrawal_id: w,
                user_id: user,
                asset: "BTC".into(),
                amount: "0.25".parse().unwrap(),
                address: "bc1q".into(),
            },
            3,
        );
        assert_eq!(
            withdrawal_change(&requested),
            Some(WithdrawalChange::Requested(WithdrawalRow {
                id: w,
                user_id: user,
                asset: "BTC".into(),
                amount: "0.25".parse().unwrap(),
                address: "bc1q".into(),
                status: "pending",
                requested_at: requested.occurred_at,
                position: 3,
            }))
        );
        let approved = sealed(
            WithdrawalApproved {
                withdrawal_id: w,
                user_id: user,
                asset: "BTC".into(),
                approved_by: Uuid::from_u128(12),
            },
            5,
        );
        assert_eq!(
            withdrawal_change(&approved),
            Some(WithdrawalChange::Status {
                id: w,
                status: "approved",
                at: approved.occurred_at,
                position: 5,
            })
        );
    }

    #[test]
    fn other_events_change_nothing() {
        let opened = sealed(
            WithdrawalOpened {
                withdrawal_id: Uuid::from_u128(1),
                user_id: Uuid::from_u128(2),
                asset: "ETH".into(),
            },
            1,
        );
        let deposit = sealed(
            FundsDeposited {
                deposit_id: Uuid::from_u128(3),
                user_id: Uuid::from_u128(2),
                asset: "ETH".into(),
                amount: "1".parse().unwrap(),
            },
            2,
        );
        assert_eq!(withdrawal_change(&opened), None);
        assert_eq!(withdrawal_change(&deposit), None);
    }
}
