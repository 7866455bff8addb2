//! What this process remembers per account (keyed by its `account-…` stream id), in one map
//! with one bound: the last known state of the account, and the event count of its last
//! snapshot known here.
//!
//! A cached state is a hint, never an authority: it may run ahead of the log by the batches this
//! process has queued ([`AccountCache::advance`]) and behind it by other processes' events. Every
//! debit decided on it names the last event it saw as its expectation, so a wrong hint ends in
//! a conflict and a decision on freshly read state (`super::service`), and the loader checks
//! that a cached state still follows the log before extending it (`super::loader`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cryptovault_events::{EventEnvelope, NewEvent};

use super::account::AccountState;
use crate::store::StreamAppend;

/// Accounts remembered before the cache starts afresh (states and snapshot marks together).
const ACCOUNT_CACHE_LIMIT: usize = 100_000;

#[derive(Default)]
struct Entry {
    /// The last known state; `None` once forgotten (the snapshot mark stays).
    state: Option<AccountState>,
    /// The event count (`version + credits_version`) of the last snapshot known to this
    /// process, or of one being written.
    snapshot_mark: u64,
}

/// Shared by the ledger service and its loader. Cheap to clone.
#[derive(Clone, Default)]
pub struct AccountCache {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl AccountCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().expect("account cache poisoned")
    }

    /// The entry of `account`, making room first when the cache is full.
    fn entry<'a>(entries: &'a mut HashMap<String, Entry>, account: &str) -> &'a mut Entry {
        if !entries.contains_key(account) {
            if entries.len() >= ACCOUNT_CACHE_LIMIT {
                entries.clear();
            }
            entries.insert(account.to_owned(), Entry::default());
        }
        entries.get_mut(account).expect("inserted above")
    }

    /// The last known state of `account`.
    pub fn state(&self, account: &str) -> Option<AccountState> {
        self.entries().get(account)?.state.clone()
    }

    /// Remembers `state` unless the cache holds one that is ahead of it on either stream.
    pub fn offer(&self, account: &str, state: &AccountState) {
        let mut entries = self.entries();
        let entry = Self::entry(&mut entries, account);
        if entry.state.as_ref().is_none_or(|cached| {
            cached.version() <= state.version()
                && cached.credits_version() <= state.credits_version()
        }) {
            entry.state = Some(state.clone());
        }
    }

    /// Right after queueing a batch: moves the cached account forward by `stream`'s events (the
    /// batch's part on its `account-…` stream), as if they were already committed, so that the
    /// next command on the account can decide and queue behind it without waiting. Returns the
    /// new state; if the cached state is not the one the batch was decided on (it was dropped or
    /// replaced meanwhile), it is dropped and `None` returned.
    pub fn advance(&self, stream: &StreamAppend) -> Option<AccountState> {
        let mut entries = self.entries();
        let entry = entries.get_mut(&stream.stream_id)?;
        let state = entry.state.as_mut()?;
        if state.expected_version() != stream.expected {
            entry.state = None;
            return None;
        }
        let expected = state.version();
        for (offset, event) in (1..).zip(&stream.events) {
            state.apply(&queued_envelope(
                event,
                &stream.stream_id,
                expected + offset,
            ));
        }
        Some(state.clone())
    }

    /// Drops the state of `account`: a queued batch it assumed did not commit as assumed.
    pub fn forget(&self, account: &str) {
        if let Some(entry) = self.entries().get_mut(account) {
            entry.state = None;
        }
    }

    /// Records that a snapshot of `account` holding `events` events exists (keeps the highest).
    pub fn saw_snapshot(&self, account: &str, events: u64) {
        let mut entries = self.entries();
        let entry = Self::entry(&mut entries, account);
        entry.snapshot_mark = entry.snapshot_mark.max(events);
    }

    /// Whether a state with `events` events is `every` or more beyond the last snapshot known
    /// here; if so, marks it as the snapshot being written (so one is written, not several).
    pub fn snapshot_due(&self, account: &str, events: u64, every: u64) -> bool {
        let mut entries = self.entries();
        // Looked up before inserting: this runs for every queued batch, and most find the mark
        // far enough behind without allocating a key.
        match entries.get_mut(account) {
            Some(entry) if events < entry.snapshot_mark + every => false,
            Some(entry) => {
                entry.snapshot_mark = events;
                true
            }
            None if events < every => false,
            None => {
                Self::entry(&mut entries, account).snapshot_mark = events;
                true
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn an_older_state_never_replaces_a_newer_one() {
        let cache = AccountCache::default();
        let newer = AccountState::restore(crate::ledger::account::AccountSnapshot {
            user_id: Uuid::from_u128(1),
            asset: "USD".into(),
            available: cryptovault_events::Units::ZERO,
            held: cryptovault_events::Units::ZERO,
            withdrawals: Default::default(),
            version: 3,
            last_event: None,
            credits_version: 0,
        })
        .unwrap();
        cache.offer("a", &newer);
        cache.offer("a", &AccountState::new(Uuid::from_u128(1), "USD"));
        assert_eq!(cache.state("a").map(|s| s.version()), Some(3));
        cache.forget("a");
        assert!(cache.state("a").is_none());
    }

    #[test]
    fn one_snapshot_is_due_per_step() {
        let cache = AccountCache::default();
        assert!(!cache.snapshot_due("a", 999, 1_000));
        assert!(cache.snapshot_due("a", 1_000, 1_000));
        assert!(
            !cache.snapshot_due("a", 1_500, 1_000),
            "one is being written"
        );
        assert!(cache.snapshot_due("a", 2_000, 1_000));
        cache.saw_snapshot("b", 5_000);
        assert!(!cache.snapshot_due("b", 5_500, 1_000));
    }
}
