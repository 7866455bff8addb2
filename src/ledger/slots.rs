//! Per-account coordination of commands inside one process.
//!
//! Commands on one account decide one at a time ([`AccountSlots::decide`]); once a command has
//! queued its batch it lets the next one decide while its batch is in flight ([`InFlight`]),
//! so several commands on one account share a group commit. A command that must decide on the
//! stored state waits until no batch of the account is in flight ([`Deciding::settle`]), so
//! that it reads a state that includes them. Across processes nothing is coordinated here:
//! expected versions settle those races.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, RwLock};

type SlotMap = Arc<Mutex<HashMap<String, Arc<Slot>>>>;

#[derive(Default)]
struct Slot {
    /// Held by the command that is deciding.
    decide: Arc<tokio::sync::Mutex<()>>,
    /// Read-held by every queued batch until its outcome is known.
    in_flight: Arc<RwLock<()>>,
}

/// The slots of the accounts that have a command deciding or in flight; a slot is dropped as
/// soon as nobody holds it.
#[derive(Clone, Default)]
pub struct AccountSlots {
    slots: SlotMap,
}

impl AccountSlots {
    /// Waits for the account's turn to decide.
    pub async fn decide(&self, account: &str) -> Deciding {
        let slot = self
            .slots
            .lock()
            .expect("slot map poisoned")
            .entry(account.to_owned())
            .or_default()
            .clone();
        let turn = crate::telemetry::warn_if_slow(
            "ledger: account lock",
            slot.decide.clone().lock_owned(),
        )
        .await;
        Deciding {
            _turn: turn,
            holder: Holder {
                account: account.to_owned(),
                slot: Some(slot),
                slots: self.slots.clone(),
            },
        }
    }
}

/// The account's turn to decide.
pub struct Deciding {
    // Declared first: released before the holder checks whether the slot is still used.
    _turn: OwnedMutexGuard<()>,
    holder: Holder,
}

impl Deciding {
    /// Waits until every batch queued by earlier commands of this account has its outcome.
    pub async fn settle(&self) {
        let in_flight = self.holder.slot().in_flight.clone();
        drop(
            crate::telemetry::warn_if_slow(
                "ledger: queued batches settle",
                in_flight.write_owned(),
            )
            .await,
        );
    }

    /// This command has queued its batch: the next command may decide; the batch counts as in
    /// flight until the returned guard is dropped.
    pub async fn queued(self) -> InFlight {
        let Deciding { _turn, holder } = self;
        // Never waits: writers (`settle`) only run during a turn, and this is the turn.
        let flight = holder.slot().in_flight.clone().read_owned().await;
        drop(_turn);
        InFlight {
            _flight: flight,
            _holder: holder,
        }
    }
}

/// A queued batch whose outcome is not known yet.
pub struct InFlight {
    _flight: OwnedRwLockReadGuard<()>,
    _holder: Holder,
}

/// A reference to an account's slot that removes the slot from the map when it is the last.
struct Holder {
    account: String,
    slot: Option<Arc<Slot>>,
    slots: SlotMap,
}

impl Holder {
    fn slot(&self) -> &Slot {
        self.slot
            .as_deref()
            .expect("a holder has its slot until dropped")
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().expect("slot map poisoned");
        if let Some(slot) = self.slot.take() {
            // The map's reference and this one: nobody else holds the slot.
            if Arc::strong_count(&slot) == 2 {
                slots.remove(&self.account);
            }
            // Dropped while the map is locked, so two holders dropping at once cannot both
            // see the other's reference.
            drop(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_next_command_decides_while_a_batch_is_in_flight_and_settle_waits_for_it() {
        let slots = AccountSlots::default();
        let first = slots.decide("a").await.queued().await;
        let second = slots.decide("a").await;
        let settled = tokio::time::timeout(Duration::from_millis(50), second.settle()).await;
        assert!(
            settled.is_err(),
            "settle returned while a batch was in flight"
        );
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.settle())
            .await
            .expect("settle returns once nothing is in flight");
        drop(second);
        assert!(
            slots.slots.lock().unwrap().is_empty(),
            "unused slots are dropped"
        );
    }

    #[tokio::test]
    async fn commands_on_one_account_decide_one_at_a_time() {
        let slots = AccountSlots::default();
        let turn = slots.decide("a").await;
        let other_account =
            tokio::time::timeout(Duration::from_millis(50), slots.decide("b")).await;
        assert!(other_account.is_ok(), "another account is not blocked");
        let same = tokio::time::timeout(Duration::from_millis(50), slots.decide("a")).await;
        assert!(
            same.is_err(),
            "a second turn on one account while the first decides"
        );
        drop(turn);
    }
}
