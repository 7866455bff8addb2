//! Ledger commands against the event store. A command is decided by pure code
//! (`super::decision`, on an `AccountState`) and appended here, on one of two paths:
//!
//! - [`Ledger::credit`] (deposits): no read and no lock — a credit cannot lower a balance; the
//!   store checks the credit cap atomically.
//! - [`Ledger::debit`] (withdrawals, their transitions, transfers): decide on the account's
//!   state — the cached one, or after a conflict or a refusal the stored one — and append
//!   expecting the last event the decision saw; when a concurrent command on the account won
//!   the race, decide again. A conflict is never surfaced to the client.

use chrono::Utc;
use cryptovault_events::ledger::{account_stream, withdrawal_stream, WithdrawalOpened};
use cryptovault_events::{DomainEvent, EventEnvelope, EventMetadata};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::account::{AccountState, Refusal};
use super::amount::Assets;
use super::cache::AccountCache;
pub use super::decision::CommandIds;
use super::decision::{self, Command, Decided};
use super::loader::AccountLoader;
use super::slots::AccountSlots;
use crate::identity::RequestMeta;
use crate::store::snapshots::SnapshotStore;
use crate::store::{AppendError, AppendResult, EventStore, ExpectedVersion, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("withdrawal {0} not found")]
    UnknownWithdrawal(Uuid),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

/// A P2P transfer: `amount` of `asset` from one user to another.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub from: Uuid,
    pub to: Uuid,
    pub asset: String,
    pub amount: Decimal,
    pub note: Option<String>,
}

/// An applied command: the main event and the log position a reader must reach to see it.
#[derive(Debug, Clone)]
pub struct Applied<E> {
    pub event: E,
    pub position: u64,
}

/// Attempts of one command before giving up on a hot account (every attempt after the first
/// reads the account's stored streams).
const MAX_ATTEMPTS: usize = 64;

#[derive(Clone)]
pub struct Ledger {
    store: EventStore,
    pub assets: Assets,
    /// Last known state per account: refreshed incrementally from its streams when read, and
    /// moved forward by every batch this process queues on the account, as if it had already
    /// committed (dropped again when it does not). A decision may start from it without reading
    /// (see [`Ledger::debit`] for why that is safe).
    cache: AccountCache,
    /// Commands on one account in this process decide one at a time and queue behind each
    /// other (races between processes are settled by expected versions).
    slots: AccountSlots,
    /// Brings accounts up to date with the log, from their snapshots when not cached.
    loader: AccountLoader,
}

/// Who credits a deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depositor {
    /// The account's owner, self-service.
    Owner,
    /// An admin, with the reference of the payment it books; never into their own account
    /// (four eyes: [`Refusal::OwnDeposit`]).
    Admin { admin: Uuid, reference: String },
    /// The payment provider's signed webhook, with the provider's event id.
    Provider { event_id: String },
}

fn metadata(meta: &RequestMeta, actor: Uuid) -> EventMetadata {
    EventMetadata {
        request_id: meta.request_id.clone(),
        correlation_id: meta.request_id.clone(),
        causation_id: None,
        actor: Some(actor.to_string()),
        // Personal data stays out of the ledger's events (issue 14): the request's ip and user
        // agent are in the request log, not in the immutable log.
        ip: None,
        user_agent: None,
    }
}

impl Ledger {
    pub fn new(store: EventStore, assets: Assets, snapshots: SnapshotStore) -> Self {
        let cache = AccountCache::default();
        Self {
            loader: AccountLoader::new(store.clone(), snapshots, cache.clone()),
            store,
            assets,
            cache,
            slots: AccountSlots::default(),
        }
    }

    /// Renews an account's snapshot every `events` events instead of
    /// [`loader::SNAPSHOT_EVERY`](super::loader::SNAPSHOT_EVERY).
    pub fn with_snapshot_every(mut self, events: u64) -> Self {
        self.loader = self.loader.with_snapshot_every(events);
        self
    }

    /// The context of one command's decisions: its ids, metadata and time, the credit cap.
    fn command(&self, ids: CommandIds, meta: &RequestMeta, actor: Uuid) -> Command {
        Command {
            ids,
            metadata: metadata(meta, actor),
            occurred_at: Utc::now(),
            credit_cap: self.assets.credit_cap(),
        }
    }

    /// The state a decision starts from: the cached state as it is (no read), or — when
    /// `fresh`, or when the account is not cached — the stored state ([`Ledger::account`]).
    async fn account_for_decision(
        &self,
        user_id: Uuid,
        asset: &str,
        fresh: bool,
    ) -> Result<AccountState, LedgerError> {
        if !fresh {
            if let Some(state) = self.cache.state(&account_stream(user_id, asset)) {
                return Ok(state);
            }
        }
        self.account(user_id, asset).await
    }

    /// The current state of an account: the cached fold — or, when the account is not cached,
    /// its snapshot — plus whatever its `account-…` and `credits-…` streams have gained since
    /// (concurrent reads of the new events only).
    pub async fn account(&self, user_id: Uuid, asset: &str) -> Result<AccountState, LedgerError> {
        let stream = account_stream(user_id, asset);
        let cached = self.cache.state(&stream);
        let state = self.loader.load(&stream, cached, user_id, asset).await?;
        self.cache.offer(&stream, &state);
        Ok(state)
    }

    /// When a keyed command's first event exists, the command was applied: its answer.
    async fn already_applied<E: DomainEvent>(
        &self,
        ids: &CommandIds,
    ) -> Result<Option<Applied<E>>, LedgerError> {
        if !ids.derived {
            return Ok(None);
        }
        let Some(found) = self.store.read_event(ids.event_id(0)).await? else {
            return Ok(None);
        };
        let event =
            E::from_envelope(&found).map_err(|e| anyhow::anyhow!("idempotent replay: {e}"))?;
        Ok(Some(Applied {
            event,
            position: self.last_position_of(ids, &found).await?,
        }))
    }

    async fn last_position_of(
        &self,
        ids: &CommandIds,
        first: &EventEnvelope,
    ) -> Result<u64, LedgerError> {
        let second = self.store.read_event(ids.event_id(1)).await?;
        Ok(second.map_or(first.position, |e| e.position.max(first.position)))
    }

    /// Appends a credit, decided without reading the account (`decide` runs once). Its only
    /// expectation is the credit cap of the credited `credits-…` stream; at the cap the command
    /// is refused ([`Refusal::BalanceLimit`] for `asset`).
    async fn credit<E: DomainEvent>(
        &self,
        command: &Command,
        asset: &str,
        decide: impl FnOnce(&Command) -> Decided<E>,
    ) -> Result<Applied<E>, LedgerError> {
        if let Some(done) = self.already_applied(&command.ids).await? {
            return Ok(done);
        }
        let Decided { event, batch } = decide(command);
        match settled(self.store.append(batch).await, asset)? {
            Some(result) => Ok(Applied {
                event,
                position: result.last_position(),
            }),
            None => Err(LedgerError::Internal(anyhow::anyhow!(
                "a credit conflicted on something other than its credit cap"
            ))),
        }
    }

    /// Decides on the state of the account (`user_id`, `asset`) and appends, retrying on
    /// conflicts (`decide` may run several times).
    ///
    /// Each attempt holds the account's in-process lock only while it decides and queues its
    /// batch, then applies the batch to the cached account and lets the next command on the
    /// account decide on that state while this one commits. Several commands on one account
    /// thus share a group commit instead of taking one each.
    ///
    /// Deciding on the cache without reading is safe: an accepted decision is appended expecting
    /// the last event the cached state has folded, so if the account changed otherwise (another
    /// process, a queued batch that failed) the append conflicts and the next attempt reads the
    /// stored streams; and credits the cache has not seen can only make `available` higher
    /// than it thinks. A refusal decided on the cache is never reported before the decision is
    /// repeated on freshly read state.
    async fn debit<E: DomainEvent>(
        &self,
        command: &Command,
        user_id: Uuid,
        asset: &str,
        decide: impl Fn(&AccountState, &Command) -> Result<Decided<E>, Refusal>,
    ) -> Result<Applied<E>, LedgerError> {
        if let Some(done) = self.already_applied(&command.ids).await? {
            return Ok(done);
        }
        let stream = account_stream(user_id, asset);
        let mut fresh = false;
        for _ in 0..MAX_ATTEMPTS {
            let turn = self.slots.decide(&stream).await;
            if fresh {
                // Read a stored state that includes every batch this process has queued.
                turn.settle().await;
            }
            let account = self.account_for_decision(user_id, asset, fresh).await?;
            let Decided { event, batch } = match decide(&account, command) {
                Ok(decided) => decided,
                Err(_) if !fresh => {
                    fresh = true;
                    continue;
                }
                Err(refused) => return Err(refused.into()),
            };
            let outcome = match self.store.enqueue(batch.clone()).await {
                Ok(outcome) => {
                    let debited = batch.streams.iter().find(|s| s.stream_id == stream);
                    if let Some(state) = debited.and_then(|part| self.cache.advance(part)) {
                        self.loader.moved_ahead(&stream, &state);
                    }
                    let in_flight = turn.queued().await;
                    let outcome = outcome.await;
                    if !matches!(&outcome, Ok(result) if !result.already_appended) {
                        self.cache.forget(&stream);
                    }
                    drop(in_flight);
                    outcome
                }
                Err(error) => Err(error),
            };
            match settled(outcome, asset)? {
                Some(result) => {
                    return Ok(Applied {
                        event,
                        position: result.last_position(),
                    });
                }
                None => {
                    metrics::counter!("ledger_command_conflicts_total").increment(1);
                    fresh = true;
                    tokio::task::yield_now().await;
                }
            }
        }
        // A hot account contended from several processes: passing, so 503 and a retry.
        Err(LedgerError::from(StoreError::RetriesExhausted {
            attempts: MAX_ATTEMPTS as u32,
            last: "the account kept changing concurrently".into(),
        }))
    }

    /// A self-service deposit: the owner credits their own account (`DEPOSITS_MODE`).
    pub async fn deposit(
        &self,
        user_id: Uuid,
        asset: &str,
        amount: Decimal,
        ids: CommandIds,
        meta: &RequestMeta,
    ) -> Result<Applied<cryptovault_events::ledger::FundsDeposited>, LedgerError> {
        self.deposit_by(&Depositor::Owner, user_id, asset, amount, ids, meta)
            .await
    }

    /// A deposit credited by `depositor` (recorded as the event's actor, and the provider's or
    /// admin's reference as its causation id).
    pub async fn deposit_by(
        &self,
        depositor: &Depositor,
        user_id: Uuid,
        asset: &str,
        amount: Decimal,
        ids: CommandIds,
        meta: &RequestMeta,
    ) -> Result<Applied<cryptovault_events::ledger::FundsDeposited>, LedgerError> {
        let mut command = self.command(ids, meta, user_id);
        match depositor {
            Depositor::Owner => {}
            Depositor::Admin { admin, .. } if *admin == user_id => {
                return Err(LedgerError::Refused(Refusal::OwnDeposit));
            }
            Depositor::Admin { admin, reference } => {
                command.metadata.actor = Some(format!("admin:{admin}"));
                command.metadata.causation_id = Some(format!("reference:{reference}"));
            }
            Depositor::Provider { event_id } => {
                command.metadata.actor = Some("payment-provider".to_owned());
                command.metadata.causation_id = Some(format!("webhook:{event_id}"));
            }
        }
        self.credit(&command, asset, |command| {
            decision::deposit(user_id, asset, amount, command)
        })
        .await
    }

    pub async fn request_withdrawal(
        &self,
        user_id: Uuid,
        asset: &str,
        amount: Decimal,
        address: &str,
        ids: CommandIds,
        meta: &RequestMeta,
    ) -> Result<Applied<cryptovault_events::ledger::WithdrawalRequested>, LedgerError> {
        let command = self.command(ids, meta, user_id);
        self.debit(&command, user_id, asset, |account, command| {
            decision::request_withdrawal(account, amount, address, command)
        })
        .await
    }

    /// The account holding a withdrawal.
    pub async fn withdrawal_account(
        &self,
        withdrawal_id: Uuid,
    ) -> Result<(Uuid, String), LedgerError> {
        let events = self
            .store
            .read_stream(&withdrawal_stream(withdrawal_id), 1, 1)
            .await?;
        let opened = events
            .first()
            .and_then(|e| WithdrawalOpened::from_envelope(e).ok())
            .ok_or(LedgerError::UnknownWithdrawal(withdrawal_id))?;
        Ok((opened.user_id, opened.asset))
    }

    /// Applies an admin transition (`decide` picks approve, complete or reject).
    pub async fn transition<E: DomainEvent + Clone>(
        &self,
        withdrawal_id: Uuid,
        admin: Uuid,
        ids: CommandIds,
        meta: &RequestMeta,
        decide: impl Fn(&AccountState) -> Result<E, Refusal>,
    ) -> Result<Applied<E>, LedgerError> {
        let (user_id, asset) = self.withdrawal_account(withdrawal_id).await?;
        let command = self.command(ids, meta, admin);
        self.debit(&command, user_id, &asset, |account, command| {
            decision::transition(account, &decide, command)
        })
        .await
    }

    /// Moves `amount` from `from` to `to` atomically: the sender's debit and the recipient's
    /// credit in one append ([`decision::transfer`]).
    pub async fn transfer(
        &self,
        request: &TransferRequest,
        ids: CommandIds,
        meta: &RequestMeta,
    ) -> Result<Applied<cryptovault_events::ledger::TransferSent>, LedgerError> {
        let TransferRequest {
            from,
            to,
            asset,
            amount,
            note,
        } = request;
        let command = self.command(ids, meta, *from);
        self.debit(&command, *from, asset, |account, command| {
            decision::transfer(account, *to, *amount, note.clone(), command)
        })
        .await
    }
}

/// An append's outcome for a command on `asset`: the result, `None` for a conflict to decide
/// again on, or the error to answer with. A conflict on the credit cap is the refusal
/// [`Refusal::BalanceLimit`]: the credited account cannot be credited more without leaving the
/// exact range (`Assets::credit_cap`); nothing was written. A command credits only its own
/// asset (transfers do not convert), so `asset` names the capped account's asset.
fn settled(
    outcome: Result<AppendResult, AppendError>,
    asset: &str,
) -> Result<Option<AppendResult>, LedgerError> {
    match outcome {
        Ok(result) => Ok(Some(result)),
        Err(AppendError::Conflict {
            expected: ExpectedVersion::FewerThan(_),
            ..
        }) => {
            metrics::counter!("ledger_credit_cap_refusals_total").increment(1);
            Err(LedgerError::Refused(Refusal::BalanceLimit {
                asset: asset.to_owned(),
            }))
        }
        Err(AppendError::Conflict { .. }) => Ok(None),
        Err(other) => Err(LedgerError::Internal(other.into())),
    }
}
