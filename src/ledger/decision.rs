//! What each ledger command appends, decided by pure code: a decision on an [`AccountState`]
//! returns its event *and* the [`AppendBatch`] that records it, with the expectations that make
//! it safe from any number of processes. No I/O, no clock (the time comes in through
//! [`Command`]).
//!
//! The two expectation rules live here and nowhere else:
//! - a **debit** (anything that can lower `available` or `held`) is appended to the account's
//!   `account-…` stream expecting the last event the decision saw
//!   ([`AccountState::expected_version`]): if anything else reached the stream first, the
//!   append conflicts and the decision is made again on fresh state;
//! - a **credit** goes to the `credits-…` stream of the credited account, expecting fewer events
//!   than the credit cap ([`ExpectedVersion::FewerThan`], `Assets::credit_cap`): a credit cannot
//!   lower a balance, so it needs no read, only the bound that keeps every balance exact.

use chrono::{DateTime, Utc};
use cryptovault_events::ledger::{
    account_stream, credits_stream, withdrawal_stream, FundsDeposited, TransferSent,
    WithdrawalOpened, WithdrawalRequested,
};
use cryptovault_events::{DomainEvent, EventMetadata, NewEvent};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::account::{AccountState, Refusal};
use crate::store::{AppendBatch, ExpectedVersion};

/// Ids for one command. With an idempotency key they are derived from (user, key, request), so
/// a retry after a lost answer produces the very same events, which the store recognises.
#[derive(Debug, Clone, Copy)]
pub struct CommandIds {
    pub entity_id: Uuid,
    /// Derived from the key: the command may already have been applied.
    pub derived: bool,
}

impl CommandIds {
    pub fn fresh() -> Self {
        Self {
            entity_id: Uuid::now_v7(),
            derived: false,
        }
    }

    /// `request_hash` is the request's [`crate::idempotency::request_hash`]: the ids name the
    /// key *and* what was asked. The same request retried gets the same ids (and the store
    /// recognises them); another request under the same key — possible once a failed attempt
    /// freed it — gets other ids. So an event id always names one content, which expectations
    /// by event id (`ExpectedVersion::Event`) rely on: otherwise a batch queued behind the first
    /// request's event would match a different event stored under the same id.
    pub fn from_key(user_id: Uuid, key: &str, request_hash: &str) -> Self {
        Self {
            entity_id: derive_id(&[user_id.as_bytes(), key.as_bytes(), request_hash.as_bytes()]),
            derived: true,
        }
    }

    /// The id of the `index`-th event of this command.
    pub fn event_id(&self, index: u8) -> Uuid {
        derive_id(&[self.entity_id.as_bytes(), &[index]])
    }
}

fn derive_id(parts: &[&[u8]]) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// Everything a decision needs besides the account: the command's ids, the metadata and time
/// its events carry, and the credit cap of the configured assets.
#[derive(Debug, Clone)]
pub struct Command {
    pub ids: CommandIds,
    pub metadata: EventMetadata,
    pub occurred_at: DateTime<Utc>,
    /// Events a `credits-…` stream may hold (`Assets::credit_cap`).
    pub credit_cap: u64,
}

impl Command {
    /// The command's `index`-th event, as appended.
    fn event<E: DomainEvent + Clone>(&self, event: &E, index: u8) -> NewEvent {
        event.clone().into_new_event(
            self.ids.event_id(index),
            self.occurred_at,
            self.metadata.clone(),
        )
    }

    /// The credit rule (module docs).
    fn credit_expectation(&self) -> ExpectedVersion {
        ExpectedVersion::FewerThan(self.credit_cap)
    }
}

/// A decided command: its main event (the answer) and the batch that records it.
#[derive(Debug, Clone)]
pub struct Decided<E> {
    pub event: E,
    pub batch: AppendBatch,
}

/// The batch of a debit of `account` by `event` (the debit rule, module docs).
fn debit<E: DomainEvent + Clone>(
    account: &AccountState,
    event: &E,
    command: &Command,
) -> AppendBatch {
    AppendBatch::single(
        account_stream(account.user_id(), account.asset()),
        account.expected_version(),
        vec![command.event(event, 0)],
    )
}

/// A deposit from outside: a credit, decided without reading the account.
pub fn deposit(
    user_id: Uuid,
    asset: &str,
    amount: Decimal,
    command: &Command,
) -> Decided<FundsDeposited> {
    let event = AccountState::new(user_id, asset).deposit(command.ids.entity_id, amount);
    let batch = AppendBatch::single(
        credits_stream(user_id, asset),
        command.credit_expectation(),
        vec![command.event(&event, 0)],
    );
    Decided { event, batch }
}

/// A withdrawal request: holds `amount` on the account and opens the withdrawal's own stream
/// (which must not exist yet), so an admin can find the account by withdrawal id.
pub fn request_withdrawal(
    account: &AccountState,
    amount: Decimal,
    address: &str,
    command: &Command,
) -> Result<Decided<WithdrawalRequested>, Refusal> {
    let event = account.request_withdrawal(command.ids.entity_id, amount, address)?;
    let opened = WithdrawalOpened {
        withdrawal_id: command.ids.entity_id,
        user_id: account.user_id(),
        asset: account.asset().to_owned(),
    };
    let batch = debit(account, &event, command).with(
        withdrawal_stream(command.ids.entity_id),
        ExpectedVersion::NoStream,
        vec![command.event(&opened, 1)],
    );
    Ok(Decided { event, batch })
}

/// An admin's transition of a withdrawal on `account` (approve, complete, reject: `decide`).
/// Every transition is a debit: completing pays the held money out, rejecting releases it, and
/// either must see the other's absence.
pub fn transition<E: DomainEvent + Clone>(
    account: &AccountState,
    decide: impl FnOnce(&AccountState) -> Result<E, Refusal>,
    command: &Command,
) -> Result<Decided<E>, Refusal> {
    let event = decide(account)?;
    let batch = debit(account, &event, command);
    Ok(Decided { event, batch })
}

/// A P2P transfer: a debit of the sender and a credit of the recipient in one atomic batch.
pub fn transfer(
    account: &AccountState,
    to: Uuid,
    amount: Decimal,
    note: Option<String>,
    command: &Command,
) -> Result<Decided<TransferSent>, Refusal> {
    let (sent, received) = account.transfer(command.ids.entity_id, to, amount, note)?;
    let batch = debit(account, &sent, command).with(
        credits_stream(to, account.asset()),
        command.credit_expectation(),
        vec![command.event(&received, 1)],
    );
    Ok(Decided { event: sent, batch })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event id names one content: the same request under a key gets the same ids (an
    /// idempotent retry); another request under the same key gets other ids, so it can never
    /// stand in for the first request's event in an `ExpectedVersion::Event`.
    #[test]
    fn ids_from_a_key_name_the_request_too() {
        let user = Uuid::now_v7();
        let first = CommandIds::from_key(user, "k1", "hash-a");
        assert_eq!(
            first.event_id(0),
            CommandIds::from_key(user, "k1", "hash-a").event_id(0)
        );
        assert_ne!(
            first.event_id(0),
            CommandIds::from_key(user, "k1", "hash-b").event_id(0)
        );
        assert_ne!(
            first.event_id(0),
            CommandIds::from_key(Uuid::now_v7(), "k1", "hash-a").event_id(0)
        );
        assert_ne!(first.event_id(0), first.event_id(1));
    }
}
