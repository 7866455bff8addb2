//! The notary's rules, pure: what a leaf is, how new events extend the tree, when a
//! checkpoint is due, and when one must not be signed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cryptovault_events::merkle::{self, CompletedSubtree, Frontier, Hash};
use cryptovault_events::{ChainBreak, ChainBreakKind, ChainVerifier, EventEnvelope};

use crate::store::sealed_feed::SealedLink;

/// The leaf bytes of an event: the 32 bytes of its chain hash (`envelope.hash`, hex). The
/// chain hash commits to the event's canonical bytes and to `prev_hash`, so a verifier holding
/// the envelope recomputes it, and from it the leaf hash `SHA-256(0x00 ‖ hash)`.
pub fn leaf_bytes(event: &EventEnvelope) -> Result<Hash, ChainBreak> {
    link_leaf_bytes(event.position, &event.hash)
}

/// The leaf bytes of the event at `position` whose hex chain hash is `hash`.
fn link_leaf_bytes(position: u64, hash: &str) -> Result<Hash, ChainBreak> {
    cryptovault_events::bundle::event_leaf(hash).ok_or_else(|| ChainBreak {
        position,
        kind: ChainBreakKind::Unreadable {
            reason: "hash is not 64 hex digits".into(),
        },
    })
}

/// The RFC 6962 leaf hash of `event` (leaf index `position - 1`).
pub fn leaf_hash(event: &EventEnvelope) -> Result<Hash, ChainBreak> {
    Ok(merkle::leaf_hash(&leaf_bytes(event)?))
}

/// Appends `events` (in position order, starting at the verifier's next position) to
/// `frontier`, checking each against the chain first: its position is the next one, its hash
/// is the hash of its content, its `prev_hash` the previous event's hash. Returns the subtrees
/// the new leaves completed. On a break nothing of `events` should be stored: the error names
/// the first position that does not hold (an altered, removed or reordered event).
pub fn extend(
    verifier: &mut ChainVerifier,
    frontier: &mut Frontier,
    events: &[EventEnvelope],
) -> Result<Vec<CompletedSubtree>, ChainBreak> {
    let mut completed = Vec::new();
    for event in events {
        verifier.push(event)?;
        completed.extend(append_leaf(frontier, event.position, &leaf_hash(event)?)?);
    }
    Ok(completed)
}

/// Appends the links of events this process sealed and committed itself (`links`, in
/// position order from the verifier's next position) to `frontier`, checking each link of the
/// chain (next position, `prev_hash` = the previous hash) but not re-hashing content the
/// writer hashed itself. Returns the subtrees the new leaves completed.
pub fn extend_sealed(
    verifier: &mut ChainVerifier,
    frontier: &mut Frontier,
    links: &[SealedLink],
) -> Result<Vec<CompletedSubtree>, ChainBreak> {
    let mut completed = Vec::new();
    for link in links {
        verifier.push_link(link.position, &link.prev_hash, &link.hash)?;
        let leaf = merkle::leaf_hash(&link_leaf_bytes(link.position, &link.hash)?);
        completed.extend(append_leaf(frontier, link.position, &leaf)?);
    }
    Ok(completed)
}

fn append_leaf(
    frontier: &mut Frontier,
    position: u64,
    leaf_hash: &Hash,
) -> Result<Vec<CompletedSubtree>, ChainBreak> {
    frontier.append(*leaf_hash).map_err(|e| ChainBreak {
        position,
        kind: ChainBreakKind::Unreadable {
            reason: e.to_string(),
        },
    })
}

/// Checkpoints due by count are at least this far apart: at 17,000 events/s and
/// `CHECKPOINT_EVERY_EVENTS` = 1,000 the notary would otherwise sign (and check, and store)
/// 17 a second, which cost the append path about 5 µs of mongod time per event (issue 16's
/// benchmark); one a second is more than any auditor fetches, and receipts sign on demand.
pub const COUNT_SIGNING_SPACING: Duration = Duration::from_secs(1);

/// When to sign: the tree has grown past the latest checkpoint, and either by `every_events`
/// leaves (the latest being at least [`COUNT_SIGNING_SPACING`] old), or the latest is `every`
/// old, or there is none, or a caller asked (`forced`).
pub fn signing_due(
    latest: Option<(u64, DateTime<Utc>)>,
    tree_size: u64,
    now: DateTime<Utc>,
    every_events: u64,
    every: Duration,
    forced: bool,
) -> bool {
    match latest {
        None => tree_size > 0,
        Some((size, _)) if tree_size <= size => false,
        Some(_) if forced => true,
        Some((size, issued_at)) => {
            let age = (now - issued_at).to_std().unwrap_or(Duration::ZERO);
            (tree_size - size >= every_events && age >= COUNT_SIGNING_SPACING) || age >= every
        }
    }
}

/// Why the notary refuses to extend the tree or to sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The log does not hold at this position (altered, removed or reordered event).
    #[error("the log breaks at {0}")]
    Chain(ChainBreak),
    /// The stored tree is not an extension of the latest signed checkpoint.
    #[error(
        "the tree of {new_size} events is not consistent with the checkpoint of {old_size} \
         events: the log before position {old_size} was rewritten"
    )]
    Inconsistent { old_size: u64, new_size: u64 },
    /// A stored subtree differs from the one computed from the log.
    #[error(
        "stored subtree {subtree} differs from the log's (stored {stored}, computed {computed})"
    )]
    Diverged {
        subtree: String,
        stored: String,
        computed: String,
    },
    /// The latest stored checkpoint is not one this service signed.
    #[error("the stored checkpoint of {size} events does not verify: {reason}")]
    ForeignCheckpoint { size: u64, reason: String },
    /// Another process signed this size with another root.
    #[error("a checkpoint of {size} events with another root is stored")]
    Conflicting { size: u64 },
    /// The stored checkpoints no longer hold the one of `size` events this process signed or
    /// verified (rows deleted or replaced).
    #[error("the stored checkpoints were cut back below the checkpoint of {size} events this process verified")]
    Rollback { size: u64 },
    /// A stored checkpoint covers more events than the log holds.
    #[error("the stored checkpoint of {size} events is beyond the log's head {log_head}")]
    BeyondLog { size: u64, log_head: u64 },
}

impl Refusal {
    /// The `reason` label of `ledger_checkpoint_refusals_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Chain(_) => "chain",
            Self::Inconsistent { .. } => "inconsistent",
            Self::Diverged { .. } => "diverged",
            Self::ForeignCheckpoint { .. } => "foreign_checkpoint",
            Self::Conflicting { .. } => "conflicting",
            Self::Rollback { .. } => "rollback",
            Self::BeyondLog { .. } => "beyond_log",
        }
    }

    /// The log position the refusal names, if it names one.
    pub fn position(&self) -> Option<u64> {
        match self {
            Self::Chain(b) => Some(b.position),
            Self::Inconsistent { .. }
            | Self::Diverged { .. }
            | Self::ForeignCheckpoint { .. }
            | Self::Conflicting { .. }
            | Self::Rollback { .. }
            | Self::BeyondLog { .. } => None,
        }
    }
}

/// The rule before every signature: the tree of `new_size` leaves with root `new_root` must
/// extend the latest signed tree (`old_size`, `old_root`), proven by `proof` (computed from the
/// stored subtrees).
pub fn check_extends(
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), Refusal> {
    merkle::verify_consistency(old_size, new_size, old_root, new_root, proof)
        .map_err(|_| Refusal::Inconsistent { old_size, new_size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptovault_events::{EventMetadata, NewEvent, GENESIS_HASH};
    use std::collections::BTreeMap;
    use uuid::Uuid;

    fn log(n: u64) -> Vec<EventEnvelope> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|position| {
                let event = NewEvent::new(
                    Uuid::from_u128(u128::from(position)),
                    "FundsDeposited",
                    1,
                    DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
                    EventMetadata::default(),
                    serde_json::json!({ "n": position.to_string() }),
                );
                let sealed =
                    EventEnvelope::seal(event, "s".into(), position, position, prev.clone());
                prev.clone_from(&sealed.hash);
                sealed
            })
            .collect()
    }

    #[test]
    fn extending_in_pieces_gives_the_root_of_the_whole_log() {
        let events = log(37);
        let leaves: Vec<Hash> = events.iter().map(|e| leaf_hash(e).unwrap()).collect();
        let mut verifier = ChainVerifier::default();
        let mut frontier = Frontier::new();
        let mut tree = BTreeMap::new();
        for piece in events.chunks(5) {
            for c in extend(&mut verifier, &mut frontier, piece).unwrap() {
                tree.insert(c.subtree, c.hash);
            }
        }
        assert_eq!(frontier.root(), merkle::root(&leaves));
        assert_eq!(merkle::tree_root(&tree, 37).unwrap(), merkle::root(&leaves));
        // Resuming from the stored subtrees and the last hash continues the same tree.
        let mut resumed = Frontier::from_source(&tree, 20).unwrap();
        let mut verifier = ChainVerifier::resume(20, &events[19].hash);
        extend(&mut verifier, &mut resumed, &events[20..]).unwrap();
        assert_eq!(resumed.root(), merkle::root(&leaves));
    }

    #[test]
    fn an_altered_removed_or_reordered_event_is_refused_naming_its_position() {
        let events = log(10);
        let run = |events: &[EventEnvelope]| {
            extend(&mut ChainVerifier::default(), &mut Frontier::new(), events).unwrap_err()
        };
        let mut altered = events.clone();
        altered[4].payload = serde_json::json!({ "n": "999" });
        assert_eq!(run(&altered).position, 5);
        assert!(matches!(
            run(&altered).kind,
            ChainBreakKind::HashMismatch { .. }
        ));

        let mut removed = events.clone();
        removed.remove(6);
        assert_eq!(run(&removed).position, 7);

        let mut reordered = events.clone();
        reordered.swap(2, 3);
        assert_eq!(run(&reordered).position, 3);

        // A rehashed alteration breaks the link of the next event.
        let mut rehashed = events.clone();
        rehashed[4].payload = serde_json::json!({ "n": "999" });
        rehashed[4].hash = cryptovault_events::canonical::event_hash(&rehashed[4]);
        let error = run(&rehashed);
        assert_eq!(error.position, 6);
        assert!(matches!(
            error.kind,
            ChainBreakKind::PrevHashMismatch { .. }
        ));
    }

    #[test]
    fn a_rewritten_history_is_not_consistent_with_the_old_checkpoint() {
        let events = log(16);
        let leaves: Vec<Hash> = events.iter().map(|e| leaf_hash(e).unwrap()).collect();
        let mut tree = BTreeMap::new();
        let mut frontier = Frontier::new();
        for leaf in &leaves {
            for c in frontier.append(*leaf).unwrap() {
                tree.insert(c.subtree, c.hash);
            }
        }
        let old_root = merkle::root(&leaves[..9]);
        let new_root = frontier.root();
        let proof = merkle::consistency_proof(&tree, 9, 16).unwrap();
        check_extends(9, &old_root, 16, &new_root, &proof).unwrap();

        let mut rewritten = leaves.clone();
        rewritten[3] = merkle::leaf_hash(b"another history");
        let mut other = BTreeMap::new();
        let mut frontier = Frontier::new();
        for leaf in &rewritten {
            for c in frontier.append(*leaf).unwrap() {
                other.insert(c.subtree, c.hash);
            }
        }
        let proof = merkle::consistency_proof(&other, 9, 16).unwrap();
        assert_eq!(
            check_extends(9, &old_root, 16, &frontier.root(), &proof).unwrap_err(),
            Refusal::Inconsistent {
                old_size: 9,
                new_size: 16
            }
        );
    }

    #[test]
    fn signing_is_due_by_count_by_age_or_on_demand_and_never_without_growth() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let every = Duration::from_secs(10);
        let due = |latest, size, now_secs: i64, forced| {
            signing_due(
                latest,
                size,
                t0 + chrono::Duration::seconds(now_secs),
                100,
                every,
                forced,
            )
        };
        assert!(!due(None, 0, 0, true));
        assert!(due(None, 1, 0, false));
        assert!(!due(Some((50, t0)), 50, 100, true));
        assert!(!due(Some((50, t0)), 149, 9, false));
        assert!(
            !due(Some((50, t0)), 150, 0, false),
            "by count, at most one a second"
        );
        assert!(due(Some((50, t0)), 150, 1, false));
        assert!(due(Some((50, t0)), 51, 10, false));
        assert!(due(Some((50, t0)), 51, 0, true));
    }
}
