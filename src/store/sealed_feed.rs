//! The links of the chain this process committed, handed to its notary in memory.
//!
//! The writer seals every event itself (it computes `hash` from the content and `prev_hash`),
//! so once a group's commit is acknowledged (`w: majority, j: true`) it knows those events'
//! positions and hashes without reading them back. The notary takes them from here instead of
//! reading, decoding and re-hashing its own process's events (issue 16's cost bound);
//! positions it does not find here (other processes' events, anything after a restart or a
//! rebuild, commits whose outcome was unknown) it reads from the log and checks in full.
//!
//! **Invariant:** an entry is published only after its group's commit was acknowledged, and
//! holds the values the writer inserted. The feed is a cache: losing entries (capacity,
//! restart) costs a read, never correctness.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use cryptovault_events::EventEnvelope;

/// Most links kept; beyond it the oldest are dropped (the notary reads those instead).
const CAPACITY: usize = 50_000;

/// One committed event's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedLink {
    pub position: u64,
    /// Hex hash of the event before it.
    pub prev_hash: String,
    /// Hex hash of the event, as the writer computed it from the content.
    pub hash: String,
}

/// Committed links by position. Off (nothing kept) until a consumer turns it on.
#[derive(Default)]
pub struct SealedFeed {
    enabled: AtomicBool,
    links: Mutex<BTreeMap<u64, SealedLink>>,
}

impl SealedFeed {
    /// Starts keeping links (the notary calls it once).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Release);
    }

    /// Records the events of an acknowledged commit.
    pub(crate) fn publish(&self, envelopes: &[EventEnvelope]) {
        self.insert(envelopes.iter().map(|e| SealedLink {
            position: e.position,
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        }));
    }

    fn insert(&self, new: impl Iterator<Item = SealedLink>) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut links) = self.links.lock() else {
            return;
        };
        for link in new {
            links.insert(link.position, link);
        }
        while links.len() > CAPACITY {
            links.pop_first();
        }
    }

    /// The first position at or after `next` held here: every position before it is committed
    /// (the log commits in position order), so a gap up to it is other processes' events.
    pub fn first_from(&self, next: u64) -> Option<u64> {
        let links = self.links.lock().ok()?;
        links.range(next..).next().map(|(position, _)| *position)
    }

    /// Removes and returns the links from position `next` on, as long as they are contiguous,
    /// at most `limit`; links before `next` are dropped (the consumer is past them). Empty when
    /// `next` itself is not here.
    pub fn take_from(&self, next: u64, limit: usize) -> Vec<SealedLink> {
        let Ok(mut links) = self.links.lock() else {
            return Vec::new();
        };
        let rest = links.split_off(&next);
        *links = rest;
        let mut taken = Vec::new();
        let mut expected = next;
        while taken.len() < limit {
            match links.first_key_value() {
                Some((&position, _)) if position == expected => {
                    if let Some((_, link)) = links.pop_first() {
                        taken.push(link);
                    }
                    expected += 1;
                }
                _ => break,
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(position: u64) -> SealedLink {
        SealedLink {
            position,
            prev_hash: format!("h{}", position - 1),
            hash: format!("h{position}"),
        }
    }

    fn publish(feed: &SealedFeed, positions: impl IntoIterator<Item = u64>) {
        feed.insert(positions.into_iter().map(link));
    }

    #[test]
    fn nothing_is_kept_until_enabled() {
        let feed = SealedFeed::default();
        publish(&feed, [1]);
        assert!(feed.take_from(1, 10).is_empty());
        feed.enable();
        publish(&feed, [1]);
        assert_eq!(feed.take_from(1, 10).len(), 1);
    }

    #[test]
    fn takes_only_the_contiguous_run_from_next_and_drops_what_is_behind() {
        let feed = SealedFeed::default();
        feed.enable();
        publish(&feed, [1, 2, 3]);
        publish(&feed, [5, 6]);
        let taken = feed.take_from(2, 10);
        assert_eq!(
            taken.iter().map(|l| l.position).collect::<Vec<_>>(),
            [2, 3],
            "1 is behind, 4 is missing (another process's event)"
        );
        assert!(feed.take_from(4, 10).is_empty());
        assert_eq!(feed.first_from(4), Some(5));
        let taken = feed.take_from(5, 1);
        assert_eq!(taken[0].position, 5);
        assert_eq!(taken[0].prev_hash, "h4");
        assert_eq!(feed.take_from(6, 10)[0].hash, "h6");
    }

    #[test]
    fn the_oldest_links_go_beyond_capacity() {
        let feed = SealedFeed::default();
        feed.enable();
        publish(&feed, 1..=(CAPACITY as u64 + 2));
        assert!(feed.take_from(1, 10).is_empty());
        assert_eq!(feed.take_from(3, 1)[0].position, 3);
    }
}
