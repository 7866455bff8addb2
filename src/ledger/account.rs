//! One user's account in one asset: the state folded from its stream and the decisions that
//! produce new events. Pure: no I/O, no clock. Deciding is separate from applying: a decision
//! checks the rules and returns events; `apply` only folds.

use std::collections::HashMap;

use cryptovault_events::ledger::{
    is_credits_stream, FundsDeposited, TransferReceived, TransferSent, WithdrawalApproved,
    WithdrawalCompleted, WithdrawalRejected, WithdrawalRequested,
};
use cryptovault_events::{DomainEvent, EventEnvelope};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::store::ExpectedVersion;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStatus {
    Pending,
    Approved,
    Completed,
    Rejected,
}

impl WithdrawalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
        }
    }

    /// The status named by [`Self::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Completed,
            Self::Rejected,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    pub amount: Decimal,
    pub status: WithdrawalStatus,
}

/// Invariant (kept by the decisions below, checked by the property tests): `available >= 0`
/// and `held >= 0`, and `held` is the sum of the pending and approved withdrawals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub user_id: Uuid,
    pub asset: String,
    pub available: Decimal,
    pub held: Decimal,
    pub withdrawals: HashMap<Uuid, Withdrawal>,
    /// Version of the last folded event of the `account-…` stream (0: none): the expected
    /// version of the next debit.
    pub version: u64,
    /// Id of the event at `version`, when known (a state started from a snapshot does not know
    /// it until it folds an event). See [`AccountState::expected_version`].
    pub last_event: Option<Uuid>,
    /// Version of the last folded event of the `credits-…` stream (0: none).
    pub credits_version: u64,
}

/// Why a ledger command was refused. Nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient funds: {available} {asset} available, {requested} requested")]
    InsufficientFunds {
        asset: String,
        available: Decimal,
        requested: Decimal,
    },
    #[error("withdrawal {id} is {status}; cannot {action}")]
    InvalidTransition {
        id: Uuid,
        status: &'static str,
        action: &'static str,
    },
    #[error("withdrawal {0} not found")]
    UnknownWithdrawal(Uuid),
    #[error("cannot transfer to yourself")]
    SelfTransfer,
}

impl AccountState {
    pub fn new(user_id: Uuid, asset: &str) -> Self {
        Self {
            user_id,
            asset: asset.to_owned(),
            available: Decimal::ZERO,
            held: Decimal::ZERO,
            withdrawals: HashMap::new(),
            version: 0,
            last_event: None,
            credits_version: 0,
        }
    }

    /// The expectation a debit decided on this state appends with: the last folded event of the
    /// `account-…` stream by id and version. A cached state may include batches this process
    /// has queued but not committed; naming the event makes a decision behind a batch that
    /// fails conflict, even if another writer's event took that version meanwhile. A bare
    /// version is used only when the id is unknown, i.e. the state came from a snapshot — a
    /// fold of committed events, whose versions never change meaning.
    pub fn expected_version(&self) -> ExpectedVersion {
        match (self.version, self.last_event) {
            (0, _) => ExpectedVersion::NoStream,
            (version, Some(event_id)) => ExpectedVersion::Event { version, event_id },
            (version, None) => ExpectedVersion::Exact(version),
        }
    }

    pub fn fold(user_id: Uuid, asset: &str, events: &[EventEnvelope]) -> Self {
        let mut state = Self::new(user_id, asset);
        for event in events {
            state.apply(event);
        }
        state
    }

    pub fn total(&self) -> Decimal {
        self.available + self.held
    }

    /// Folds one event of this account's `account-…` or `credits-…` stream. Changing what it
    /// does changes the meaning of stored snapshots: bump `snapshot::FORMAT` with it.
    pub fn apply(&mut self, event: &EventEnvelope) {
        if is_credits_stream(&event.stream_id) {
            self.credits_version = event.stream_version;
        } else {
            self.version = event.stream_version;
            self.last_event = Some(event.event_id);
        }
        if let Ok(e) = FundsDeposited::from_envelope(event) {
            self.available += e.amount;
        } else if let Ok(e) = WithdrawalRequested::from_envelope(event) {
            self.available -= e.amount;
            self.held += e.amount;
            self.withdrawals.insert(
                e.withdrawal_id,
                Withdrawal {
                    amount: e.amount,
                    status: WithdrawalStatus::Pending,
                },
            );
        } else if let Ok(e) = WithdrawalApproved::from_envelope(event) {
            self.set_status(e.withdrawal_id, WithdrawalStatus::Approved);
        } else if let Ok(e) = WithdrawalCompleted::from_envelope(event) {
            self.held -= e.amount;
            self.set_status(e.withdrawal_id, WithdrawalStatus::Completed);
        } else if let Ok(e) = WithdrawalRejected::from_envelope(event) {
            self.held -= e.amount;
            self.available += e.amount;
            self.set_status(e.withdrawal_id, WithdrawalStatus::Rejected);
        } else if let Ok(e) = TransferSent::from_envelope(event) {
            self.available -= e.amount;
        } else if let Ok(e) = TransferReceived::from_envelope(event) {
            self.available += e.amount;
        }
    }

    fn set_status(&mut self, id: Uuid, status: WithdrawalStatus) {
        if let Some(w) = self.withdrawals.get_mut(&id) {
            w.status = status;
        }
    }

    fn ensure_available(&self, amount: Decimal) -> Result<(), Refusal> {
        if amount > self.available {
            return Err(Refusal::InsufficientFunds {
                asset: self.asset.clone(),
                available: self.available,
                requested: amount,
            });
        }
        Ok(())
    }

    fn withdrawal(&self, id: Uuid) -> Result<&Withdrawal, Refusal> {
        self.withdrawals
            .get(&id)
            .ok_or(Refusal::UnknownWithdrawal(id))
    }

    // ---- decisions ------------------------------------------------------------------------

    pub fn deposit(&self, deposit_id: Uuid, amount: Decimal) -> FundsDeposited {
        FundsDeposited {
            deposit_id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount,
        }
    }

    pub fn request_withdrawal(
        &self,
        withdrawal_id: Uuid,
        amount: Decimal,
        address: &str,
    ) -> Result<WithdrawalRequested, Refusal> {
        self.ensure_available(amount)?;
        Ok(WithdrawalRequested {
            withdrawal_id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount,
            address: address.to_owned(),
        })
    }

    pub fn approve(&self, id: Uuid, admin: Uuid) -> Result<WithdrawalApproved, Refusal> {
        let w = self.withdrawal(id)?;
        if w.status != WithdrawalStatus::Pending {
            return Err(Refusal::InvalidTransition {
                id,
                status: w.status.as_str(),
                action: "approve",
            });
        }
        Ok(WithdrawalApproved {
            withdrawal_id: id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            approved_by: admin,
        })
    }

    pub fn complete(&self, id: Uuid, admin: Uuid) -> Result<WithdrawalCompleted, Refusal> {
        let w = self.withdrawal(id)?;
        if w.status != WithdrawalStatus::Approved {
            return Err(Refusal::InvalidTransition {
                id,
                status: w.status.as_str(),
                action: "complete (approve it first)",
            });
        }
        Ok(WithdrawalCompleted {
            withdrawal_id: id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount: w.amount,
            completed_by: admin,
        })
    }

    pub fn reject(
        &self,
        id: Uuid,
        admin: Uuid,
        reason: Option<String>,
    ) -> Result<WithdrawalRejected, Refusal> {
        let w = self.withdrawal(id)?;
        if !matches!(
            w.status,
            WithdrawalStatus::Pending | WithdrawalStatus::Approved
        ) {
            return Err(Refusal::InvalidTransition {
                id,
                status: w.status.as_str(),
                action: "reject",
            });
        }
        Ok(WithdrawalRejected {
            withdrawal_id: id,
            user_id: self.user_id,
            asset: self.asset.clone(),
            amount: w.amount,
            rejected_by: admin,
            reason,
        })
    }

    /// The two sides of a transfer from this account to `to_user` (same asset).
    pub fn transfer(
        &self,
        transfer_id: Uuid,
        to_user: Uuid,
        amount: Decimal,
        note: Option<String>,
    ) -> Result<(TransferSent, TransferReceived), Refusal> {
        if to_user == self.user_id {
            return Err(Refusal::SelfTransfer);
        }
        self.ensure_available(amount)?;
        let sent = TransferSent {
            transfer_id,
            from_user: self.user_id,
            to_user,
            asset: self.asset.clone(),
            amount,
            note: note.clone(),
        };
        let received = TransferReceived {
            transfer_id,
            from_user: self.user_id,
            to_user,
            asset: self.asset.clone(),
            amount,
            note,
        };
        Ok((sent, received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptovault_events::ledger::{account_stream, postings};
    use cryptovault_events::{EventMetadata, GENESIS_HASH};
    use proptest::prelude::*;

    /// An in-memory ledger of a few accounts in one asset, to run decisions and folds together.
    struct Sim {
        users: Vec<Uuid>,
        streams: HashMap<Uuid, Vec<EventEnvelope>>,
        position: u64,
        sum: Decimal,
    }

    impl Sim {
        fn new(n: usize) -> Self {
            let users: Vec<Uuid> = (0..n).map(|i| Uuid::from_u128(i as u128 + 1)).collect();
            Self {
                streams: users.iter().map(|u| (*u, Vec::new())).collect(),
                users,
                position: 0,
                sum: Decimal::ZERO,
            }
        }

        fn state(&self, user: Uuid) -> AccountState {
            AccountState::fold(user, "BTC", &self.streams[&user])
        }

        fn append<E: DomainEvent>(&mut self, user: Uuid, event: E) {
            let stream = self.streams.get_mut(&user).unwrap();
            self.position += 1;
            let sealed = EventEnvelope::seal(
                event.into_new_event(chrono::Utc::now(), EventMetadata::default()),
                account_stream(user, "BTC"),
                stream.len() as u64 + 1,
                self.position,
                GENESIS_HASH.into(),
            );
            let balance: Decimal = postings(&sealed).iter().map(|p| p.amount).sum();
            assert_eq!(
                balance,
                Decimal::ZERO,
                "postings of {} do not balance",
                sealed.event_type
            );
            self.sum += balance;
            stream.push(sealed);
        }
    }

    #[derive(Debug, Clone)]
    enum Command {
        Deposit(usize, u32),
        Withdraw(usize, u32),
        Approve(usize, usize),
        Complete(usize, usize),
        Reject(usize, usize),
        Transfer(usize, usize, u32),
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (0..4usize, 1..1000u32).prop_map(|(u, a)| Command::Deposit(u, a)),
            (0..4usize, 1..1000u32).prop_map(|(u, a)| Command::Withdraw(u, a)),
            (0..4usize, 0..8usize).prop_map(|(u, w)| Command::Approve(u, w)),
            (0..4usize, 0..8usize).prop_map(|(u, w)| Command::Complete(u, w)),
            (0..4usize, 0..8usize).prop_map(|(u, w)| Command::Reject(u, w)),
            (0..4usize, 0..4usize, 1..1000u32).prop_map(|(f, t, a)| Command::Transfer(f, t, a)),
        ]
    }

    proptest! {
        /// No sequence of commands takes a balance below zero, every event balances, and the
        /// folded state always equals the state the decisions saw plus their events.
        #[test]
        fn no_command_sequence_breaks_the_invariants(commands in prop::collection::vec(command(), 1..80)) {
            let mut sim = Sim::new(4);
            let mut withdrawals: Vec<(usize, Uuid)> = Vec::new();
            let admin = Uuid::from_u128(999);
            for (i, command) in commands.into_iter().enumerate() {
                let id = Uuid::from_u128(10_000 + i as u128);
                let cents = |a: u32| Decimal::new(a as i64, 2);
                match command {
                    Command::Deposit(u, a) => {
                        let user = sim.users[u];
                        let e = sim.state(user).deposit(id, cents(a));
                        sim.append(user, e);
                    }
                    Command::Withdraw(u, a) => {
                        let user = sim.users[u];
                        if let Ok(e) = sim.state(user).request_withdrawal(id, cents(a), "addr") {
                            sim.append(user, e);
                            withdrawals.push((u, id));
                        }
                    }
                    Command::Approve(u, w) | Command::Complete(u, w) | Command::Reject(u, w) => {
                        let Some(&(owner, wid)) = withdrawals.get(w) else { continue };
                        let user = sim.users[if u % 2 == 0 { owner } else { u }];
                        let state = sim.state(user);
                        match command {
                            Command::Approve(..) => { if let Ok(e) = state.approve(wid, admin) { sim.append(user, e) } }
                            Command::Complete(..) => { if let Ok(e) = state.complete(wid, admin) { sim.append(user, e) } }
                            _ => { if let Ok(e) = state.reject(wid, admin, None) { sim.append(user, e) } }
                        }
                    }
                    Command::Transfer(f, t, a) => {
                        let (from, to) = (sim.users[f], sim.users[t]);
                        match sim.state(from).transfer(id, to, cents(a), None) {
                            Ok((sent, received)) => {
                                sim.append(from, sent);
                                sim.append(to, received);
                            }
                            Err(Refusal::SelfTransfer) => prop_assert_eq!(f, t),
                            Err(_) => {}
                        }
                    }
                }
                for user in sim.users.clone() {
                    let state = sim.state(user);
                    prop_assert!(state.available >= Decimal::ZERO);
                    prop_assert!(state.held >= Decimal::ZERO);
                    let open: Decimal = state.withdrawals.values()
                        .filter(|w| matches!(w.status, WithdrawalStatus::Pending | WithdrawalStatus::Approved))
                        .map(|w| w.amount).sum();
                    prop_assert_eq!(state.held, open);
                }
                prop_assert_eq!(sim.sum, Decimal::ZERO);
            }
        }
    }
}
