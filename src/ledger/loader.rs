//! Bringing an account's state up to date with the log: from the state the caller has cached, or
//! else from the account's stored snapshot (or nothing), fold the events of its `account-…` and
//! `credits-…` streams that follow, in bounded chunks — and keep the snapshots fresh.
//!
//! A snapshot only ever holds a fold of committed events (see [`AccountLoader::keep_fresh`]);
//! ARCHITECTURE.md "Account snapshots" has the rules.

use cryptovault_events::ledger::{account_stream, credits_stream};
use uuid::Uuid;

use super::account::AccountState;
use super::cache::AccountCache;
use crate::store::snapshots::SnapshotStore;
use crate::store::{EventStore, StoreError};

/// Events read per stream read while folding an account (memory stays bounded however long
/// its history).
const FOLD_CHUNK: usize = 5_000;

/// An account's snapshot is renewed once its two streams have this many events beyond it.
pub const SNAPSHOT_EVERY: u64 = 1_000;

#[derive(Clone)]
pub struct AccountLoader {
    store: EventStore,
    snapshots: SnapshotStore,
    every: u64,
    /// Where the snapshot marks are kept (the event count of each account's last snapshot
    /// known to this process).
    cache: AccountCache,
}

impl AccountLoader {
    pub fn new(store: EventStore, snapshots: SnapshotStore, cache: AccountCache) -> Self {
        Self {
            store,
            snapshots,
            every: SNAPSHOT_EVERY,
            cache,
        }
    }

    /// Renews snapshots every `events` events instead of [`SNAPSHOT_EVERY`].
    pub fn with_snapshot_every(mut self, events: u64) -> Self {
        self.every = events.max(1);
        self
    }

    /// The account `stream` (its `account-…` stream id) up to date with the log: `cached` —
    /// or, without it, the stored snapshot — plus the events that follow (concurrent reads of
    /// the new events only).
    pub async fn load(
        &self,
        stream: &str,
        cached: Option<AccountState>,
        user_id: Uuid,
        asset: &str,
    ) -> Result<AccountState, StoreError> {
        let (mut state, committed_only) = match cached {
            Some(state) if self.follows_log(&state).await? => (state, false),
            Some(_) => {
                metrics::counter!("ledger_cache_diverged_total").increment(1);
                (self.snapshot_or_empty(stream, user_id, asset).await, true)
            }
            None => (self.snapshot_or_empty(stream, user_id, asset).await, true),
        };
        let folded = self.fold_new_events(&mut state).await?;
        metrics::counter!("ledger_account_events_folded_total").increment(folded);
        if folded > 0 {
            self.keep_fresh(stream, &state, committed_only);
        }
        Ok(state)
    }

    /// The cache moved `state` ahead by a queued batch (not yet committed).
    pub fn moved_ahead(&self, stream: &str, state: &AccountState) {
        self.keep_fresh(stream, state, false);
    }

    /// The account's stored snapshot (remembered as its snapshot mark), or the empty account.
    /// A snapshot whose last folded events are not in the log (a database restored to an
    /// earlier point) is ignored.
    async fn snapshot_or_empty(&self, stream: &str, user_id: Uuid, asset: &str) -> AccountState {
        let empty = || AccountState::new(user_id, asset);
        let state = match self.snapshots.load(stream, user_id, asset).await {
            Some(state) if self.events_exist(&state).await => state,
            Some(_) => {
                tracing::warn!(
                    account = stream,
                    "account snapshot ahead of the log; ignored"
                );
                metrics::counter!("ledger_snapshots_ignored_total").increment(1);
                empty()
            }
            None => empty(),
        };
        self.cache
            .saw_snapshot(stream, state.version() + state.credits_version());
        state
    }

    /// Whether `state`'s last folded event of the `account-…` stream is the stored event at its
    /// version. A cached state runs ahead of the log by the batches this process has queued;
    /// until they commit — or when one failed and another writer's event took its version —
    /// extending it by the events that follow would fold a history that never existed, and a
    /// decision on it would name a real event as its expectation. Such a state is replaced by
    /// a fold of committed events. Every account-stream append names the event it follows
    /// ([`AccountState::expected_version`]), so a cached state whose last event is in the log
    /// agrees with the log up to it.
    async fn follows_log(&self, state: &AccountState) -> Result<bool, StoreError> {
        if state.version() == 0 {
            return Ok(true);
        }
        let found = self
            .store
            .read_stream(
                &account_stream(state.user_id(), state.asset()),
                state.version(),
                1,
            )
            .await?;
        Ok(found.first().is_some_and(|e| {
            e.stream_version == state.version()
                && state.last_event().is_none_or(|id| id == e.event_id)
        }))
    }

    /// Whether the last events `state` has folded (one per stream) are in the log.
    async fn events_exist(&self, state: &AccountState) -> bool {
        let exists = |stream: String, version: u64| async move {
            version == 0
                || self
                    .store
                    .read_stream(&stream, version, 1)
                    .await
                    .is_ok_and(|found| found.first().is_some_and(|e| e.stream_version == version))
        };
        let (debits, credits) = tokio::join!(
            async { self.follows_log(state).await.unwrap_or(false) },
            exists(
                credits_stream(state.user_id(), state.asset()),
                state.credits_version()
            ),
        );
        debits && credits
    }

    /// Folds the events of the account's two streams after `state`'s versions, in chunks of
    /// [`FOLD_CHUNK`] per stream; returns how many.
    async fn fold_new_events(&self, state: &mut AccountState) -> Result<u64, StoreError> {
        let (account, credits) = (
            account_stream(state.user_id(), state.asset()),
            credits_stream(state.user_id(), state.asset()),
        );
        let mut folded = 0;
        loop {
            let (debits, credited) = tokio::try_join!(
                self.store
                    .read_stream(&account, state.version() + 1, FOLD_CHUNK),
                self.store
                    .read_stream(&credits, state.credits_version() + 1, FOLD_CHUNK),
            )?;
            let more = debits.len() == FOLD_CHUNK || credited.len() == FOLD_CHUNK;
            for event in debits.iter().chain(&credited) {
                state.apply(event);
            }
            folded += (debits.len() + credited.len()) as u64;
            if !more {
                return Ok(folded);
            }
        }
    }

    /// Renews the account's snapshot once it is [`SNAPSHOT_EVERY`] events behind `state`.
    /// `state` itself is stored when it is a fold of committed events only (`committed`: it did
    /// not start from the cache, which runs ahead of the log by the batches still queued);
    /// otherwise a background task folds the committed events after the stored snapshot.
    fn keep_fresh(&self, stream: &str, state: &AccountState, committed: bool) {
        if !self.cache.snapshot_due(
            stream,
            state.version() + state.credits_version(),
            self.every,
        ) {
            return;
        }
        let (loader, stream, state) = (self.clone(), stream.to_owned(), state.clone());
        tokio::spawn(async move {
            let state = if committed {
                state
            } else {
                let mut stored = loader
                    .snapshot_or_empty(&stream, state.user_id(), state.asset())
                    .await;
                if let Err(error) = loader.fold_new_events(&mut stored).await {
                    tracing::warn!(%error, account = %stream, "account snapshot not renewed");
                    return;
                }
                stored
            };
            loader.snapshots.save(&stream, &state).await;
        });
    }
}
