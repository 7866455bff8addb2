//! Ledger commands against the event store: load the account(s), decide (pure, in
//! `account`), append with the accounts' versions as expected versions, and retry the whole
//! command when a concurrent command on the same account won the race. A conflict is never
//! surfaced to the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use cryptovault_events::ledger::{
    account_stream, credits_stream, stream_asset, withdrawal_stream, WithdrawalOpened,
};
use cryptovault_events::{DomainEvent, EventEnvelope, EventMetadata, NewEvent};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::account::{AccountState, Refusal};
use super::amount::Assets;
use super::loader::AccountLoader;
use super::slots::AccountSlots;
use crate::identity::RequestMeta;
use crate::store::snapshots::SnapshotStore;
use crate::store::{AppendBatch, AppendError, EventStore, ExpectedVersion, StoreError};

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

/// Accounts remembered by the in-process cache before it starts afresh.
const ACCOUNT_CACHE_LIMIT: usize = 100_000;

#[derive(Clone)]
pub struct Ledger {
    store: EventStore,
    pub assets: Assets,
    /// Last known state per account: refreshed incrementally from its streams when read, and
    /// moved forward by every batch this process queues on the account, as if it had already
    /// committed (dropped again when it does not). A decision may start from it without reading
    /// (see [`Ledger::run`] for why that is safe).
    cache: Arc<Mutex<HashMap<String, AccountState>>>,
    /// Commands on one account in this process decide one at a time and queue behind each
    /// other (races between processes are settled by expected versions).
    slots: AccountSlots,
    /// Brings accounts up to date with the log, from their snapshots when not cached.
    loader: AccountLoader,
}

fn new_event<E: DomainEvent + Clone>(event: &E, id: Uuid, metadata: &EventMetadata) -> NewEvent {
    let mut new = event.clone().into_new_event(Utc::now(), metadata.clone());
    new.event_id = id;
    new
}

/// An event this process has queued on an account stream at `stream_version`, as an envelope
/// to fold into the cache. Without position and chain fields: it is folded, never stored or
/// shown.
fn queued_envelope(event: &NewEvent, stream_id: &str, stream_version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: event.event_id,
        stream_id: stream_id.to_owned(),
        stream_version,
        position: 0,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        occurred_at: event.occurred_at,
        metadata: event.metadata.clone(),
        payload: event.payload.clone(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn metadata(meta: &RequestMeta, actor: Uuid) -> EventMetadata {
    EventMetadata {
        request_id: meta.request_id.clone(),
        correlation_id: meta.request_id.clone(),
        causation_id: None,
        actor: Some(actor.to_string()),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    }
}

impl Ledger {
    pub fn new(store: EventStore, assets: Assets, snapshots: SnapshotStore) -> Self {
        Self {
            loader: AccountLoader::new(store.clone(), snapshots),
            store,
            assets,
            cache: Arc::default(),
            slots: AccountSlots::default(),
        }
    }

    /// Renews an account's snapshot every `events` events instead of
    /// [`loader::SNAPSHOT_EVERY`](super::loader::SNAPSHOT_EVERY).
    pub fn with_snapshot_every(mut self, events: u64) -> Self {
        self.loader = self.loader.with_snapshot_every(events);
        self
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
            let cached = self
                .cache
                .lock()
                .expect("cache poisoned")
                .get(&account_stream(user_id, asset))
                .cloned();
            if let Some(state) = cached {
                return Ok(state);
            }
        }
        self.account(user_id, asset).await
    }

    /// Right after queueing an accepted decision (under the account's lock): moves the cached
    /// account forward by the batch's events on its `account-…` stream, as if they were already
    /// committed, so that the next command on the account can decide and queue behind it
    /// without waiting. If the entry is not at the version the batch expects (it was dropped or
    /// replaced meanwhile), it is dropped.
    fn apply_queued(&self, account: &str, batch: &AppendBatch) {
        let Some(stream) = batch.streams.iter().find(|s| s.stream_id == account) else {
            return;
        };
        let mut cache = self.cache.lock().expect("cache poisoned");
        let Some(state) = cache.get_mut(account) else {
            return;
        };
        if state.expected_version() != stream.expected {
            cache.remove(account);
            return;
        }
        let expected = state.version;
        for (offset, event) in (1..).zip(&stream.events) {
            state.apply(&queued_envelope(event, account, expected + offset));
        }
        self.loader.moved_ahead(account, state);
    }

    /// Drops an account from the cache: a queued batch it assumed did not commit as assumed.
    fn forget(&self, account: &str) {
        self.cache.lock().expect("cache poisoned").remove(account);
    }

    /// The current state of an account: the cached fold — or, when the account is not cached,
    /// its snapshot — plus whatever its `account-…` and `credits-…` streams have gained since
    /// (concurrent reads of the new events only).
    pub async fn account(&self, user_id: Uuid, asset: &str) -> Result<AccountState, LedgerError> {
        let stream = account_stream(user_id, asset);
        let cached = self
            .cache
            .lock()
            .expect("cache poisoned")
            .get(&stream)
            .cloned();
        let state = self.loader.load(&stream, cached, user_id, asset).await?;
        let mut cache = self.cache.lock().expect("cache poisoned");
        if cache.len() >= ACCOUNT_CACHE_LIMIT {
            cache.clear();
        }
        if cache.get(&stream).is_none_or(|c| {
            c.version <= state.version && c.credits_version <= state.credits_version
        }) {
            cache.insert(stream, state.clone());
        }
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

    /// Decides and appends, retrying on conflicts. `attempt(fresh)` decides on the state of
    /// `account` (user, asset) from [`Ledger::account_for_decision`]; `None` for commands that
    /// read no account (deposits).
    ///
    /// Each attempt holds the account's in-process lock only while it decides and queues its
    /// batch, then applies the batch to the cached account and lets the next command on the
    /// account decide on that state while this one commits. Several commands on one account
    /// thus share a group commit instead of taking one each.
    ///
    /// Deciding on the cache without reading is safe: an accepted decision is appended with the
    /// cached version as expected version, so if the account changed otherwise (another
    /// process, a queued batch that failed) the append conflicts and the next attempt reads the
    /// stored streams; and credits the cache has not seen can only make `available` higher
    /// than it thinks. A refusal decided on the cache is never reported before the decision is
    /// repeated on freshly read state.
    async fn run<E, F, Fut>(
        &self,
        ids: &CommandIds,
        account: Option<(Uuid, &str)>,
        mut attempt: F,
    ) -> Result<Applied<E>, LedgerError>
    where
        E: DomainEvent,
        F: FnMut(bool) -> Fut,
        Fut: std::future::Future<Output = Result<(E, AppendBatch), LedgerError>>,
    {
        if let Some(done) = self.already_applied(ids).await? {
            return Ok(done);
        }
        let stream = account.map(|(user_id, asset)| account_stream(user_id, asset));
        let mut fresh = false;
        for _ in 0..MAX_ATTEMPTS {
            let turn = match &stream {
                Some(stream) => Some(self.slots.decide(stream).await),
                None => None,
            };
            if let (Some(turn), true) = (&turn, fresh) {
                // Read a stored state that includes every batch this process has queued.
                turn.settle().await;
            }
            let (event, batch) = match attempt(fresh).await {
                Ok(decided) => decided,
                Err(LedgerError::Refused(_)) if !fresh => {
                    fresh = true;
                    continue;
                }
                Err(refused) => return Err(refused),
            };
            let outcome = match (&stream, turn) {
                (Some(stream), Some(turn)) => match self.store.enqueue(batch.clone()).await {
                    Ok(outcome) => {
                        self.apply_queued(stream, &batch);
                        let in_flight = turn.queued().await;
                        let outcome = outcome.await;
                        if !matches!(&outcome, Ok(result) if !result.already_appended) {
                            self.forget(stream);
                        }
                        drop(in_flight);
                        outcome
                    }
                    Err(error) => Err(error),
                },
                _ => self.store.append(batch).await,
            };
            match outcome {
                Ok(result) => {
                    return Ok(Applied {
                        event,
                        position: result.last_position(),
                    });
                }
                Err(AppendError::Conflict {
                    stream_id,
                    expected: ExpectedVersion::FewerThan(_),
                    ..
                }) => {
                    // A credits stream at its cap: the account cannot be credited more without
                    // leaving the exact range (`Assets::credit_cap`). Nothing was written.
                    metrics::counter!("ledger_credit_cap_refusals_total").increment(1);
                    return Err(LedgerError::Refused(Refusal::BalanceLimit {
                        asset: stream_asset(&stream_id).to_owned(),
                    }));
                }
                Err(AppendError::Conflict { .. }) => {
                    metrics::counter!("ledger_command_conflicts_total").increment(1);
                    fresh = true;
                    tokio::task::yield_now().await;
                }
                Err(other) => return Err(LedgerError::Internal(other.into())),
            }
        }
        // A hot account contended from several processes: passing, so 503 and a retry.
        Err(LedgerError::from(StoreError::RetriesExhausted {
            attempts: MAX_ATTEMPTS as u32,
            last: "the account kept changing concurrently".into(),
        }))
    }

    pub async fn deposit(
        &self,
        user_id: Uuid,
        asset: &str,
        amount: Decimal,
        ids: CommandIds,
        meta: &RequestMeta,
    ) -> Result<Applied<cryptovault_events::ledger::FundsDeposited>, LedgerError> {
        let metadata = metadata(meta, user_id);
        let metadata = &metadata;
        // A credit cannot lower a balance: no read, no lock; its only expectation is the
        // credits stream's cap, which keeps every balance within the exact range.
        let credit_cap = self.assets.credit_cap();
        self.run(&ids, None, |_| async move {
            let event = AccountState::new(user_id, asset).deposit(ids.entity_id, amount);
            let batch = AppendBatch::single(
                credits_stream(user_id, asset),
                ExpectedVersion::FewerThan(credit_cap),
                vec![new_event(&event, ids.event_id(0), metadata)],
            );
            Ok((event, batch))
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
        let metadata = metadata(meta, user_id);
        let metadata = &metadata;
        self.run(&ids, Some((user_id, asset)), |fresh| async move {
            let account = self.account_for_decision(user_id, asset, fresh).await?;
            let event = account.request_withdrawal(ids.entity_id, amount, address)?;
            let opened = WithdrawalOpened {
                withdrawal_id: ids.entity_id,
                user_id,
                asset: asset.to_owned(),
            };
            let batch = AppendBatch::single(
                account_stream(user_id, asset),
                account.expected_version(),
                vec![new_event(&event, ids.event_id(0), metadata)],
            )
            .with(
                withdrawal_stream(ids.entity_id),
                ExpectedVersion::NoStream,
                vec![new_event(&opened, ids.event_id(1), metadata)],
            );
            Ok((event, batch))
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
        let metadata = metadata(meta, admin);
        let (metadata, asset, decide) = (&metadata, asset.as_str(), &decide);
        self.run(&ids, Some((user_id, asset)), |fresh| async move {
            let account = self.account_for_decision(user_id, asset, fresh).await?;
            let event = decide(&account)?;
            let batch = AppendBatch::single(
                account_stream(user_id, asset),
                account.expected_version(),
                vec![new_event(&event, ids.event_id(0), metadata)],
            );
            Ok((event, batch))
        })
        .await
    }

    /// Moves `amount` from `from` to `to` atomically: both sides in one append, the sender's
    /// account at its expected version, the recipient's credits stream at any version.
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
        let (from, to, amount, asset) = (*from, *to, *amount, asset.as_str());
        let metadata = metadata(meta, from);
        let (metadata, note) = (&metadata, note);
        let credit_cap = self.assets.credit_cap();
        self.run(&ids, Some((from, asset)), |fresh| async move {
            let account = self.account_for_decision(from, asset, fresh).await?;
            let (sent, received) = account.transfer(ids.entity_id, to, amount, note.clone())?;
            let batch = AppendBatch::single(
                account_stream(from, asset),
                account.expected_version(),
                vec![new_event(&sent, ids.event_id(0), metadata)],
            )
            .with(
                credits_stream(to, asset),
                ExpectedVersion::FewerThan(credit_cap),
                vec![new_event(&received, ids.event_id(1), metadata)],
            );
            Ok((sent, batch))
        })
        .await
    }
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
