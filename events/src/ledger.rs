//! Events of the ledger stream family.
//!
//! - `account-<user id>-<ASSET>`: what can lower one user's `available` in one asset (withdrawal
//!   requests and their lifecycle, transfers out). Commands decide on the folded account and
//!   append with this stream's version as the expected version, so no interleaving can take
//!   `available` below zero.
//! - `credits-<user id>-<ASSET>`: money coming in (deposits, transfers received), appended with
//!   any version. Credits only raise `available`, so a decision that has not seen the newest
//!   credit is merely conservative; keeping them apart means incoming money never makes a
//!   debit's expected version stale.
//! - `withdrawal-<id>`: one `WithdrawalOpened` naming the account that holds the withdrawal
//!   (so admin commands find the account from the id without a read model).
//!
//! [`LedgerEvent`] is the family; [`LedgerEvent::decode`] is the one place an envelope of it
//! becomes a typed event.
//!
//! Amounts are positive decimals in the asset's unit, serialized as strings. Every
//! balance-moving event implies balanced double-entry postings: see [`postings`].

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{not_decoded, payload, DecodeError, DomainEvent, EventFamily};
use crate::envelope::EventEnvelope;

/// External funds credited: `available += amount`; the external-funds system account is
/// debited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsDeposited {
    pub deposit_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Decimal,
}

/// A withdrawal placed a hold: `available -= amount`, `held += amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRequested {
    pub withdrawal_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Decimal,
    pub address: String,
}

/// An admin approved a pending withdrawal. No balance changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalApproved {
    pub withdrawal_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub approved_by: Uuid,
}

/// An approved withdrawal was paid out: `held -= amount`; the withdrawals-paid system account
/// is credited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalCompleted {
    pub withdrawal_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Decimal,
    pub completed_by: Uuid,
}

/// A pending or approved withdrawal was refused: `held -= amount`, `available += amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalRejected {
    pub withdrawal_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub amount: Decimal,
    pub rejected_by: Uuid,
    pub reason: Option<String>,
}

/// Points from a withdrawal id to the account stream that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalOpened {
    pub withdrawal_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
}

/// The sender's side of a P2P transfer: `available -= amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSent {
    pub transfer_id: Uuid,
    pub from_user: Uuid,
    pub to_user: Uuid,
    pub asset: String,
    pub amount: Decimal,
    pub note: Option<String>,
}

/// The recipient's side of a P2P transfer, appended atomically with [`TransferSent`]:
/// `available += amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReceived {
    pub transfer_id: Uuid,
    pub from_user: Uuid,
    pub to_user: Uuid,
    pub asset: String,
    pub amount: Decimal,
    pub note: Option<String>,
}

/// Every event of the ledger family: the `account-…`, `credits-…` and `withdrawal-…` streams
/// (the last is an index from a withdrawal id to its account, but its one event type is checked
/// with the withdrawal's lifecycle, so it belongs here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    FundsDeposited(FundsDeposited),
    WithdrawalRequested(WithdrawalRequested),
    WithdrawalApproved(WithdrawalApproved),
    WithdrawalCompleted(WithdrawalCompleted),
    WithdrawalRejected(WithdrawalRejected),
    WithdrawalOpened(WithdrawalOpened),
    TransferSent(TransferSent),
    TransferReceived(TransferReceived),
}

crate::domain::event_family! {
    LedgerEvent {
        FundsDeposited = "FundsDeposited",
        WithdrawalRequested = "WithdrawalRequested",
        WithdrawalApproved = "WithdrawalApproved",
        WithdrawalCompleted = "WithdrawalCompleted",
        WithdrawalRejected = "WithdrawalRejected",
        WithdrawalOpened = "WithdrawalOpened",
        TransferSent = "TransferSent",
        TransferReceived = "TransferReceived",
    }
}

impl LedgerEvent {
    /// The ledger event in `envelope`; `Ok(None)` for another family's event. **The ledger's
    /// only decode and upcasting seam**: it dispatches on `(event_type, schema_version)`; when
    /// a type's payload changes, its old version gets an arm here that reads the old shape and
    /// converts it to the current type.
    pub fn decode(envelope: &EventEnvelope) -> Result<Option<Self>, DecodeError> {
        let event = match (envelope.event_type.as_str(), envelope.schema_version) {
            (FundsDeposited::EVENT_TYPE, 1) => Self::FundsDeposited(payload(envelope)?),
            (WithdrawalRequested::EVENT_TYPE, 1) => Self::WithdrawalRequested(payload(envelope)?),
            (WithdrawalApproved::EVENT_TYPE, 1) => Self::WithdrawalApproved(payload(envelope)?),
            (WithdrawalCompleted::EVENT_TYPE, 1) => Self::WithdrawalCompleted(payload(envelope)?),
            (WithdrawalRejected::EVENT_TYPE, 1) => Self::WithdrawalRejected(payload(envelope)?),
            (WithdrawalOpened::EVENT_TYPE, 1) => Self::WithdrawalOpened(payload(envelope)?),
            (TransferSent::EVENT_TYPE, 1) => Self::TransferSent(payload(envelope)?),
            (TransferReceived::EVENT_TYPE, 1) => Self::TransferReceived(payload(envelope)?),
            _ => return not_decoded(Self::EVENT_TYPES, envelope),
        };
        Ok(Some(event))
    }

    /// The balanced postings this event makes (empty for events that move no money). For every
    /// event the amounts sum to zero per asset; that is what keeps the ledger zero-sum.
    pub fn postings(&self) -> Vec<Posting> {
        let post = |account, asset: &str, amount| Posting {
            account,
            asset: asset.to_owned(),
            amount,
        };
        match self {
            Self::FundsDeposited(e) => vec![
                post(Account::Available(e.user_id), &e.asset, e.amount),
                post(Account::ExternalDeposits(e.user_id), &e.asset, -e.amount),
            ],
            Self::WithdrawalRequested(e) => vec![
                post(Account::Available(e.user_id), &e.asset, -e.amount),
                post(Account::Held(e.user_id), &e.asset, e.amount),
            ],
            Self::WithdrawalCompleted(e) => vec![
                post(Account::Held(e.user_id), &e.asset, -e.amount),
                post(Account::WithdrawalsPaid(e.user_id), &e.asset, e.amount),
            ],
            Self::WithdrawalRejected(e) => vec![
                post(Account::Held(e.user_id), &e.asset, -e.amount),
                post(Account::Available(e.user_id), &e.asset, e.amount),
            ],
            // The matching credit is the TransferReceived event of the same append; the
            // sender's side posts against the recipient so that each event balances on its own.
            Self::TransferSent(e) => vec![
                post(Account::Available(e.from_user), &e.asset, -e.amount),
                post(Account::Available(e.to_user), &e.asset, e.amount),
            ],
            // TransferSent carries both sides of the transfer.
            Self::TransferReceived(_) | Self::WithdrawalApproved(_) | Self::WithdrawalOpened(_) => {
                Vec::new()
            }
        }
    }
}

/// The stream of one user's account in one asset.
pub fn account_stream(user_id: Uuid, asset: &str) -> String {
    format!("account-{user_id}-{asset}")
}

/// The stream of money coming into one user's account in one asset.
pub fn credits_stream(user_id: Uuid, asset: &str) -> String {
    format!("credits-{user_id}-{asset}")
}

/// The asset of an `account-…` or `credits-…` stream id: its last `-`-separated part (asset
/// codes are capital letters only).
pub fn stream_asset(stream_id: &str) -> &str {
    stream_id
        .rsplit_once('-')
        .map_or(stream_id, |(_, asset)| asset)
}

/// Whether `stream_id` is a credits stream (see [`credits_stream`]).
pub fn is_credits_stream(stream_id: &str) -> bool {
    stream_id.starts_with("credits-")
}

/// The stream pointing a withdrawal id to its account.
pub fn withdrawal_stream(withdrawal_id: Uuid) -> String {
    format!("withdrawal-{withdrawal_id}")
}

/// A ledger account: a user's bucket, or a system account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Account {
    Available(Uuid),
    Held(Uuid),
    /// Money that entered from outside through one user's deposits; its balance is minus all
    /// of that user's deposits. Kept per user so that it is bounded like the user's own
    /// balance (by the credits cap of the user's account), which a single row summing every
    /// user's deposits would not be.
    ExternalDeposits(Uuid),
    /// Money that left through one user's completed withdrawals (per user, like
    /// [`Account::ExternalDeposits`]).
    WithdrawalsPaid(Uuid),
}

/// One side of a double entry: `amount` is added to `account` (negative: subtracted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: Account,
    pub asset: String,
    pub amount: Decimal,
}

/// The balanced postings of a stored event (see [`LedgerEvent::postings`]): empty for another
/// family's event and for a ledger event that does not decode (the invariant checker reports
/// those).
pub fn postings(event: &EventEnvelope) -> Vec<Posting> {
    match LedgerEvent::decode(event) {
        Ok(Some(event)) => event.postings(),
        Ok(None) | Err(_) => Vec::new(),
    }
}
