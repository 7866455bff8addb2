//! Verification of the hash chain, fed one event at a time in position order.

use serde::Serialize;

use crate::canonical::event_hash;
use crate::envelope::{EventEnvelope, GENESIS_HASH};

/// Why the chain is broken at a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChainBreakKind {
    /// No event holds this position although a later one exists (or the head says it should).
    MissingPosition,
    /// The stored `hash` is not the hash of the stored content: the event was altered.
    HashMismatch { stored: String, computed: String },
    /// `prev_hash` does not equal the previous event's hash: an event before it was removed,
    /// replaced or reordered.
    PrevHashMismatch { stored: String, expected: String },
    /// The stored document does not decode as an envelope.
    Unreadable { reason: String },
}

/// The first position at which the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub position: u64,
    #[serde(flatten)]
    pub kind: ChainBreakKind,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ChainBreakKind::MissingPosition => {
                write!(f, "position {}: event missing", self.position)
            }
            ChainBreakKind::HashMismatch { stored, computed } => write!(
                f,
                "position {}: content altered (stored hash {stored}, computed {computed})",
                self.position
            ),
            ChainBreakKind::Unreadable { reason } => {
                write!(f, "position {}: unreadable event ({reason})", self.position)
            }
            ChainBreakKind::PrevHashMismatch { stored, expected } => write!(
                f,
                "position {}: prev_hash {stored} does not match previous event's hash {expected}",
                self.position
            ),
        }
    }
}

/// Checks events in ascending position order, starting at position 1.
///
/// Memory is constant: it keeps only the previous position and hash.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    next_position: u64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            next_position: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        }
    }
}

impl ChainVerifier {
    /// A verifier that has accepted the events up to `position` (0: none), the last of them
    /// with hash `last_hash`: it expects position `position + 1` with `prev_hash = last_hash`.
    pub fn resume(position: u64, last_hash: &str) -> Self {
        Self {
            next_position: position + 1,
            prev_hash: last_hash.to_owned(),
        }
    }

    /// Checks the next event. Returns the first break found; after a break the verifier's state
    /// is unspecified and it should not be fed further.
    pub fn push(&mut self, event: &EventEnvelope) -> Result<(), ChainBreak> {
        if event.position != self.next_position {
            return Err(ChainBreak {
                position: self.next_position.min(event.position),
                kind: ChainBreakKind::MissingPosition,
            });
        }
        let computed = event_hash(event);
        if computed != event.hash {
            return Err(ChainBreak {
                position: event.position,
                kind: ChainBreakKind::HashMismatch {
                    stored: event.hash.clone(),
                    computed,
                },
            });
        }
        self.push_link(event.position, &event.prev_hash, &event.hash)
    }

    /// Checks the next link of the chain without the event's content: `position` is the next
    /// one and `prev_hash` the previous event's hash; `hash` is taken as the event's hash
    /// unchecked. Only for hashes the caller computed itself from the content (the events its
    /// own process sealed); events read from storage go through [`Self::push`].
    pub fn push_link(
        &mut self,
        position: u64,
        prev_hash: &str,
        hash: &str,
    ) -> Result<(), ChainBreak> {
        if position != self.next_position {
            return Err(ChainBreak {
                position: self.next_position.min(position),
                kind: ChainBreakKind::MissingPosition,
            });
        }
        if prev_hash != self.prev_hash {
            return Err(ChainBreak {
                position,
                kind: ChainBreakKind::PrevHashMismatch {
                    stored: prev_hash.to_owned(),
                    expected: self.prev_hash.clone(),
                },
            });
        }
        self.next_position += 1;
        hash.clone_into(&mut self.prev_hash);
        Ok(())
    }

    /// Checks that the log ends where the store's head record says it ends: a log whose last
    /// events were deleted is otherwise a perfectly valid shorter chain.
    pub fn finish(&self, head_position: u64, head_hash: &str) -> Result<(), ChainBreak> {
        let last = self.next_position - 1;
        if head_position > last {
            return Err(ChainBreak {
                position: last + 1,
                kind: ChainBreakKind::MissingPosition,
            });
        }
        if head_position == last && head_hash != self.prev_hash {
            return Err(ChainBreak {
                position: last,
                kind: ChainBreakKind::HashMismatch {
                    stored: head_hash.to_owned(),
                    computed: self.prev_hash.clone(),
                },
            });
        }
        Ok(())
    }

    /// Number of events accepted so far.
    pub fn verified(&self) -> u64 {
        self.next_position - 1
    }

    /// Hash of the last accepted event ([`GENESIS_HASH`] before the first).
    pub fn last_hash(&self) -> &str {
        &self.prev_hash
    }
}
