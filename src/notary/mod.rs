//! The notary: keeps the RFC 6962 Merkle tree over the log and signs checkpoints of it
//! (issue 16).
//!
//! Every instance runs one ([`Notary::start`]); they share the stored tree
//! (`store::tree`), which is a pure function of the log, so any number of them cooperate:
//! whoever is first stores a batch's subtrees and moves the stored head by compare-and-set;
//! the others find the same subtrees stored (compared, never overwritten) and follow.
//!
//! **Rules** (pure, [`rules`]):
//! - A leaf is the event's chain hash (32 bytes): leaf `i` is the event at position `i + 1`.
//! - The tree grows only by events that continue the chain from the stored head: next
//!   position, hash = hash of the content, `prev_hash` = the previous event's hash. An
//!   altered, removed or reordered event stops the tree at that position (refusal
//!   `chain`, logged with the position, `ledger_checkpoint_refusals_total{reason="chain"}`);
//!   the tree then stays behind the log (`ledger_tree_behind_events` grows).
//! - A checkpoint is signed when the tree grew past the latest one by `CHECKPOINT_EVERY_EVENTS`
//!   leaves, when the latest is `CHECKPOINT_EVERY_SECS` old, or on demand — and only after the
//!   latest stored checkpoint verifies under this service's keys and a consistency proof
//!   computed from the stored subtrees shows the new tree extends it. A tree rebuilt from a
//!   rewritten log is therefore never signed (refusal `inconsistent`).

pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use cryptovault_events::checkpoint::{Checkpoint, SignerKey, VerifierKey};
use cryptovault_events::merkle::{self, Frontier, Hash, Subtree};
use cryptovault_events::{ChainBreak, ChainBreakKind, ChainVerifier};
use tokio::sync::Mutex;

use crate::config::CheckpointSettings;
use crate::store::tree::{Extended, Inserted, StoredCheckpoint, TreeHead, TreeStore};
use crate::store::{Database, EventStore, StoreError};
pub use rules::Refusal;

/// Events read per tree extension.
const BATCH: usize = 5_000;
/// How long a missing position is waited out before it is a refusal (the store never commits
/// a gap, but a slow commit may show a later position first; a killed writer's transaction is
/// ended within seconds, see `store/writer_sessions.rs`).
const GAP_GRACE: Duration = Duration::from_secs(10);
/// Batches of work a request that needs a checkpoint may do (the background task does the
/// rest): beyond it the request answers `checkpoint_pending`.
const FORCED_BATCHES: usize = 4;
/// Forced (on-demand) signatures per process are at least this far apart.
const FORCED_SPACING: Duration = Duration::from_secs(1);
/// The background task's pause when the tree is caught up.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The background task's syncs start at least this far apart, so their fixed queries (about
/// five) are paid at most 10 times a second however fast the log grows; the tree follows the
/// log within about this much.
const FOLLOW_SPACING: Duration = Duration::from_millis(100);

/// Where a tree extension's events came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// This process's own acknowledged commits (`store::sealed_feed`).
    Memory,
    /// Read from the log and checked in full.
    Log,
}

impl Source {
    /// The `source` label of `ledger_tree_events_total`.
    fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Log => "log",
        }
    }
}

/// Why a notary operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NotaryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The stored tree does not reach this size yet (it is being built or rebuilt).
    #[error("the tree covers {tree_size} events, not yet {wanted}")]
    Behind { tree_size: u64, wanted: u64 },
    /// A stored subtree a proof needs is missing (damage; a rebuild repairs it).
    #[error("stored subtree {0} is missing")]
    MissingSubtree(Subtree),
    /// The arguments do not describe a proof (index beyond size, sizes out of order).
    #[error("{0}")]
    BadRange(String),
}

impl From<Refusal> for NotaryError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

/// A handle to this instance's notary. Cheap to clone.
#[derive(Clone)]
pub struct Notary {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    tree: TreeStore,
    signer: Arc<SignerKey>,
    /// The current key's verifier first, then the retired ones.
    verifiers: Vec<VerifierKey>,
    every_events: u64,
    every: Duration,
    /// One extension or signature at a time per process; this process's own tree.
    work: Mutex<Option<Cache>>,
    /// The last refusal (cleared by a sync that passes every check), for `/api/audit/tree`.
    refusal: std::sync::Mutex<Option<Refusal>>,
    /// The largest checkpoint this process signed or verified, `(size, root)`: the stored
    /// checkpoints must never fall behind it or leave it (a deleted or replaced row).
    known: std::sync::Mutex<Option<(u64, Hash)>>,
    /// When this process last signed on demand.
    last_forced: Mutex<Option<Instant>>,
    /// Leaves of this process's tree (for the gauges).
    tree_size: std::sync::atomic::AtomicU64,
}

/// This process's tree: built from position 1 or from a checkpoint whose signature and root it
/// verified, and extended only by events it read and chain-checked. Stored subtrees and the
/// stored head are never trusted for signing; they are compared with it.
struct Cache {
    generation: String,
    head: TreeHead,
    frontier: Frontier,
    gap_since: Option<Instant>,
    /// `(checkpoint size, tree size)` last found consistent.
    checked: Option<(u64, u64)>,
}

impl Notary {
    /// The notary of `settings`' key, with its background task started; `None` when no
    /// signing key is configured (no tree, no checkpoints).
    pub fn start(store: EventStore, db: &Database, settings: &CheckpointSettings) -> Option<Self> {
        let signer = settings.signer.clone()?;
        let mut verifiers = vec![signer.verifier()];
        verifiers.extend(settings.retired.iter().cloned());
        let notary = Self {
            inner: Arc::new(Inner {
                store,
                tree: TreeStore::new(db),
                signer,
                verifiers,
                every_events: settings.every_events,
                every: settings.every,
                work: Mutex::new(None),
                refusal: std::sync::Mutex::new(None),
                known: std::sync::Mutex::new(None),
                last_forced: Mutex::new(None),
                tree_size: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        notary.inner.store.sealed().enable();
        tokio::spawn(notary.clone().run());
        Some(notary)
    }

    /// The origin line of every checkpoint (the signing key's name).
    pub fn origin(&self) -> &str {
        self.inner.signer.name()
    }

    /// The key that signs new checkpoints.
    pub fn verifier(&self) -> &VerifierKey {
        &self.inner.verifiers[0]
    }

    /// Keys that signed earlier checkpoints (`CHECKPOINT_RETIRED_KEYS`).
    pub fn retired(&self) -> &[VerifierKey] {
        &self.inner.verifiers[1..]
    }

    /// The signing key (for other signed documents bound to checkpoints: liabilities,
    /// statement digests).
    pub fn signer(&self) -> &SignerKey {
        &self.inner.signer
    }

    pub fn tree(&self) -> &TreeStore {
        &self.inner.tree
    }

    /// The last refusal since the tree last grew, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.inner.refusal.lock().ok().and_then(|r| r.clone())
    }

    /// The latest signed checkpoint.
    pub async fn latest(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.inner.tree.latest_checkpoint().await
    }

    /// A signed checkpoint that covers `position` (the smallest stored one, else a new one
    /// signed now after bringing the tree up to the log's head).
    pub async fn covering(&self, position: u64) -> Result<StoredCheckpoint, NotaryError> {
        if let Some(found) = self.inner.tree.checkpoint_covering(position).await? {
            return Ok(found);
        }
        // At most one on-demand signature per FORCED_SPACING per process: requests arriving
        // together share it.
        {
            let mut last = self.inner.last_forced.lock().await;
            if let Some(wait) = last.and_then(|t| FORCED_SPACING.checked_sub(t.elapsed())) {
                tokio::time::sleep(wait).await;
            }
            if let Some(found) = self.inner.tree.checkpoint_covering(position).await? {
                return Ok(found);
            }
            *last = Some(Instant::now());
        }
        match self.sync(true).await? {
            Some(latest) if latest.size >= position => Ok(latest),
            latest => Err(NotaryError::Behind {
                tree_size: latest.map_or(0, |c| c.size),
                wanted: position,
            }),
        }
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves, from the stored
    /// subtrees (one query).
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, NotaryError> {
        let nodes = merkle::inclusion_proof_nodes(index, size)
            .map_err(|e| NotaryError::BadRange(e.to_string()))?;
        let source = self.stored(&nodes, size).await?;
        merkle::inclusion_proof(&source, index, size).map_err(proof_error)
    }

    /// The inclusion proofs of the leaves `indices` in the tree of `size` leaves, in that
    /// order, from the stored subtrees they need, read in one query (a statement's batch of
    /// movements: `O(k log n)` subtrees, fewer where the paths share nodes).
    pub async fn inclusion_proofs(
        &self,
        indices: &[u64],
        size: u64,
    ) -> Result<Vec<Vec<Hash>>, NotaryError> {
        let mut nodes = std::collections::BTreeSet::new();
        for index in indices {
            let needed = merkle::inclusion_proof_nodes(*index, size)
                .map_err(|e| NotaryError::BadRange(e.to_string()))?;
            nodes.extend(needed);
        }
        let nodes: Vec<Subtree> = nodes.into_iter().collect();
        let source = self.stored(&nodes, size).await?;
        indices
            .iter()
            .map(|index| merkle::inclusion_proof(&source, *index, size).map_err(proof_error))
            .collect()
    }

    /// The consistency proof from `old_size` to `new_size` leaves, from the stored subtrees.
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, NotaryError> {
        let nodes = merkle::consistency_proof_nodes(old_size, new_size)
            .map_err(|e| NotaryError::BadRange(e.to_string()))?;
        let source = self.stored(&nodes, new_size).await?;
        merkle::consistency_proof(&source, old_size, new_size).map_err(proof_error)
    }

    /// The stored subtrees `nodes` of a tree of `size` leaves (the stored tree must reach it).
    async fn stored(
        &self,
        nodes: &[Subtree],
        size: u64,
    ) -> Result<std::collections::BTreeMap<Subtree, Hash>, NotaryError> {
        let head = self.inner.tree.head().await?;
        if head.size < size {
            return Err(NotaryError::Behind {
                tree_size: head.size,
                wanted: size,
            });
        }
        Ok(self.inner.tree.subtrees(nodes).await?)
    }

    /// Brings the stored tree up to the log as far as it holds (bounded work per call), then
    /// signs a checkpoint if one is due (`forced`: if the tree grew at all). Returns the
    /// latest checkpoint.
    pub async fn sync(&self, forced: bool) -> Result<Option<StoredCheckpoint>, NotaryError> {
        let mut cache = self.inner.work.lock().await;
        let tree = &self.inner.tree;
        let state = tree.state().await?;
        let cached = match cache.take() {
            // A new generation (a rebuild began): start again.
            Some(c) if c.generation == state.generation => c,
            _ => self.bootstrap(&state).await?,
        };
        let cached = cache.insert(cached);
        let batches = if forced { FORCED_BATCHES } else { 200 };
        // A background sync reads the log past the links in memory once: a position beyond
        // them is usually this process's next group, committed but not yet handed over, and
        // the next sync takes it from memory. A forced one reads on to the log's head.
        let mut from_memory = false;
        let mut extended = Ok(());
        for _ in 0..batches {
            match self.extend_once(cached, forced || !from_memory).await {
                Ok(Some(Source::Memory)) => from_memory = true,
                Ok(Some(Source::Log)) => {}
                Ok(None) => break,
                Err(error) => {
                    extended = Err(error);
                    break;
                }
            }
        }
        // What was stored is recorded even when a later batch failed.
        if cached.head.size > state.head.size {
            tree.advance(&cached.generation, &cached.head).await?;
        }
        self.inner
            .tree_size
            .store(cached.head.size, std::sync::atomic::Ordering::Relaxed);
        extended?;
        let latest = self.sign_if_due(&mut cache, forced).await?;
        if let Ok(mut last) = self.inner.refusal.lock() {
            *last = None;
        }
        Ok(latest)
    }

    async fn run(self) {
        let mut backoff =
            crate::store::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut head = self.inner.store.head_watch();
        loop {
            let started = tokio::time::Instant::now();
            match self.sync(false).await {
                Ok(latest) => {
                    backoff.reset();
                    self.record_gauges(latest.as_ref()).await;
                    let _ = tokio::time::timeout(IDLE_POLL, head.changed()).await;
                    tokio::time::sleep_until(started + FOLLOW_SPACING).await;
                }
                Err(NotaryError::Refused(refusal)) => {
                    metrics::counter!("ledger_checkpoint_refusals_total", "reason" => refusal.label())
                        .increment(1);
                    tracing::error!(
                        position = refusal.position(),
                        %refusal,
                        "notary: the tree is not extended and nothing is signed"
                    );
                    if let Ok(mut last) = self.inner.refusal.lock() {
                        *last = Some(refusal);
                    }
                    if let Ok(latest) = self.latest().await {
                        self.record_gauges(latest.as_ref()).await;
                    }
                    // The log does not heal by itself: look again now and then.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "notary: retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn record_gauges(&self, latest: Option<&StoredCheckpoint>) {
        let tree_size = self
            .inner
            .tree_size
            .load(std::sync::atomic::Ordering::Relaxed);
        let log_head = self.inner.store.known_head();
        metrics::gauge!("ledger_tree_size").set(tree_size as f64);
        metrics::gauge!("ledger_tree_behind_events").set(log_head.saturating_sub(tree_size) as f64);
        if let Some(latest) = latest {
            metrics::gauge!("ledger_checkpoint_size").set(latest.size as f64);
            let age = (Utc::now() - latest.issued_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::gauge!("ledger_checkpoint_age_seconds").set(age);
        }
    }

    /// Extends this process's tree by one batch of events and stores the subtrees it completed
    /// (the caller records the new size in `merkle_state`). Returns where the batch came from,
    /// `None` if the tree did not grow. The batch is this process's own commits from memory
    /// when the next position is there; else the log up to the next link in memory (another
    /// process's events: certainly committed, as a later position is), or, when `read_on`, up
    /// to [`BATCH`] events.
    async fn extend_once(
        &self,
        cached: &mut Cache,
        read_on: bool,
    ) -> Result<Option<Source>, NotaryError> {
        let tree = &self.inner.tree;
        let head = cached.head.clone();
        let mut verifier = ChainVerifier::resume(head.size, &head.last_hash);
        let mut frontier = cached.frontier.clone();
        // This process's own commits come from memory; the rest is read from the log.
        let feed = self.inner.store.sealed();
        let links = feed.take_from(head.size + 1, BATCH);
        let (completed, source) = if links.is_empty() {
            let limit = match feed.first_from(head.size + 1) {
                Some(local) => {
                    usize::try_from(local - head.size - 1).map_or(BATCH, |gap| gap.min(BATCH))
                }
                None if read_on => BATCH,
                None => return Ok(None),
            };
            // While a position is missing, look for it alone: re-reading a whole batch behind
            // it every sync cost seconds of CPU in both processes (issue 16's benchmark).
            let limit = if cached.gap_since.is_some() { 1 } else { limit };
            let events = self.inner.store.read_all(head.size + 1, limit).await?;
            let contiguous = events
                .iter()
                .zip(head.size + 1..)
                .take_while(|(e, position)| e.position == *position)
                .count();
            if contiguous == 0 {
                if events.is_empty() {
                    cached.gap_since = None;
                    return Ok(None);
                }
                let since = *cached.gap_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GAP_GRACE && self.inner.store.head().await?.0 > head.size {
                    return Err(Refusal::Chain(ChainBreak {
                        position: head.size + 1,
                        kind: ChainBreakKind::MissingPosition,
                    })
                    .into());
                }
                return Ok(None);
            }
            let events = &events[..contiguous];
            (
                rules::extend(&mut verifier, &mut frontier, events),
                Source::Log,
            )
        } else {
            (
                rules::extend_sealed(&mut verifier, &mut frontier, &links),
                Source::Memory,
            )
        };
        let completed = completed.map_err(Refusal::Chain)?;
        metrics::counter!("ledger_tree_events_total", "source" => source.label())
            .increment(verifier.verified() - head.size);
        cached.gap_since = None;
        let new_head = TreeHead {
            size: verifier.verified(),
            last_hash: verifier.last_hash().to_owned(),
        };
        if let Extended::Diverged {
            subtree,
            stored,
            computed,
        } = tree.store_subtrees(&completed).await?
        {
            return Err(Refusal::Diverged {
                subtree: subtree.to_string(),
                stored: hex::encode(stored),
                computed: hex::encode(computed),
            }
            .into());
        }
        cached.head = new_head;
        cached.frontier = frontier;
        Ok(Some(source))
    }

    /// A tree to extend, trusting nothing stored that no signature vouches for: the latest
    /// checkpoint's tree when it verifies (its note under this service's keys, the stored
    /// frontier folds to its signed root, and the event at its last position is that root's
    /// last leaf), else the empty tree (a rebuild from position 1).
    async fn bootstrap(&self, state: &crate::store::tree::TreeState) -> Result<Cache, NotaryError> {
        let empty = || Cache {
            generation: state.generation.clone(),
            head: TreeHead {
                size: 0,
                last_hash: cryptovault_events::GENESIS_HASH.to_owned(),
            },
            frontier: Frontier::new(),
            gap_since: None,
            checked: None,
        };
        let Some(latest) = self.latest().await? else {
            return Ok(empty());
        };
        if latest.size > state.head.size {
            // This generation's subtrees do not reach it yet (a rebuild in progress).
            return Ok(empty());
        }
        self.check_ours(&latest)?;
        let size = latest.size;
        let frontier = self.frontier_at(size).await?;
        let diverged = |what: &str, stored: &Hash| Refusal::Diverged {
            subtree: what.to_owned(),
            stored: hex::encode(stored),
            computed: hex::encode(latest.root),
        };
        if frontier.root() != latest.root {
            return Err(diverged(&format!("frontier of {size}"), &frontier.root()).into());
        }
        let last = self
            .inner
            .store
            .read_all(size, 1)
            .await?
            .into_iter()
            .find(|e| e.position == size)
            .ok_or(Refusal::Chain(ChainBreak {
                position: size,
                kind: ChainBreakKind::MissingPosition,
            }))?;
        let computed = cryptovault_events::canonical::event_hash(&last);
        if computed != last.hash {
            return Err(Refusal::Chain(ChainBreak {
                position: size,
                kind: ChainBreakKind::HashMismatch {
                    stored: last.hash.clone(),
                    computed,
                },
            })
            .into());
        }
        let leaf = rules::leaf_hash(&last).map_err(Refusal::Chain)?;
        let proof = self.inclusion_proof(size - 1, size).await?;
        if merkle::verify_inclusion(&leaf, size - 1, size, &proof, &latest.root).is_err() {
            return Err(Refusal::Chain(ChainBreak {
                position: size,
                kind: ChainBreakKind::HashMismatch {
                    stored: last.hash.clone(),
                    computed: "not the signed tree's last leaf".into(),
                },
            })
            .into());
        }
        self.remember(size, latest.root);
        Ok(Cache {
            generation: state.generation.clone(),
            head: TreeHead {
                size,
                last_hash: last.hash,
            },
            frontier,
            gap_since: None,
            checked: Some((size, size)),
        })
    }

    /// Records `(size, root)` as verified or signed by this process, if it is the largest.
    fn remember(&self, size: u64, root: Hash) {
        if let Ok(mut known) = self.inner.known.lock() {
            if known.is_none_or(|(k, _)| k < size) {
                *known = Some((size, root));
            }
        }
    }

    /// The frontier of the stored tree of `size` leaves.
    async fn frontier_at(&self, size: u64) -> Result<Frontier, NotaryError> {
        let nodes = merkle::root_nodes(size);
        let stored = self.inner.tree.subtrees(&nodes).await?;
        Frontier::from_source(&stored, size)
            .map_err(|missing| NotaryError::MissingSubtree(missing.0))
    }

    async fn sign_if_due(
        &self,
        cache: &mut Option<Cache>,
        forced: bool,
    ) -> Result<Option<StoredCheckpoint>, NotaryError> {
        let Some(cached) = cache.as_mut() else {
            return Ok(self.latest().await?);
        };
        let size = cached.head.size;
        let root = cached.frontier.root();
        let latest = self.latest().await?;
        let known = self.inner.known.lock().ok().and_then(|k| *k);
        if let Some((known_size, known_root)) = known {
            // The stored checkpoints were cut back or replaced under this process.
            let rolled_back = match &latest {
                None => true,
                Some(l) => l.size < known_size || (l.size == known_size && l.root != known_root),
            };
            if rolled_back {
                return Err(Refusal::Rollback { size: known_size }.into());
            }
        }
        let due = rules::signing_due(
            latest.as_ref().map(|c| (c.size, c.issued_at)),
            size,
            Utc::now(),
            self.inner.every_events,
            self.inner.every,
            forced,
        );
        if let Some(old) = &latest {
            // The rule, checked before signing and whenever the latest checkpoint moved or this
            // tree first reaches it (so a tree rebuilt from a rewritten log is reported at
            // once): the latest signed tree, and the largest this process ever verified, are
            // prefixes of this process's tree (built from the log).
            let unchecked = match cached.checked {
                None => true,
                Some((checked_old, checked_size)) => {
                    checked_old != old.size || (due && checked_size != size)
                }
            };
            if old.size <= size && unchecked {
                self.check_ours(old)?;
                self.check_extends(old.size, &old.root, size, &root).await?;
                if let Some((known_size, known_root)) = known.filter(|(k, _)| *k < old.size) {
                    self.check_extends(known_size, &known_root, size, &root)
                        .await?;
                }
                self.remember(old.size, old.root);
                cached.checked = Some((old.size, size));
            } else if old.size > size {
                self.check_ours(old)?;
                let log_head = self.inner.store.head().await?.0;
                if old.size > log_head {
                    return Err(Refusal::BeyondLog {
                        size: old.size,
                        log_head,
                    }
                    .into());
                }
            }
        }
        if !due {
            return Ok(latest);
        }
        let note = Checkpoint::new(self.origin(), size, root)
            .and_then(|c| c.sign(&self.inner.signer))
            .map_err(|e| StoreError::CommitFailed(format!("signing a checkpoint: {e}")))?;
        let signed = StoredCheckpoint {
            size,
            root,
            note: note.to_string(),
            issued_at: Utc::now(),
        };
        match self
            .inner
            .tree
            .insert_checkpoint(&signed, self.inner.signer.key_id())
            .await?
        {
            Inserted::New => {
                self.remember(size, root);
                cached.checked = Some((size, size));
                metrics::counter!("ledger_checkpoints_signed_total").increment(1);
                tracing::info!(size, root = %hex::encode(root), "notary: checkpoint signed");
                Ok(Some(signed))
            }
            Inserted::Existing(existing) if existing.root == root => Ok(Some(existing)),
            Inserted::Existing(_) => Err(Refusal::Conflicting { size }.into()),
        }
    }

    /// This process's tree of `size` leaves (root `root`, computed from the log) extends the
    /// signed tree `(old_size, old_root)`: the stored subtrees fold to `root` and their
    /// consistency proof leads from `old_root` to it.
    async fn check_extends(
        &self,
        old_size: u64,
        old_root: &Hash,
        size: u64,
        root: &Hash,
    ) -> Result<(), NotaryError> {
        // This process stored its tree's subtrees up to `size` itself: one read of them.
        let mut nodes = merkle::consistency_proof_nodes(old_size, size)
            .map_err(|e| NotaryError::BadRange(e.to_string()))?;
        nodes.extend(merkle::root_nodes(size));
        nodes.sort_unstable();
        nodes.dedup();
        let stored = self.inner.tree.subtrees(&nodes).await?;
        let proof = merkle::consistency_proof(&stored, old_size, size).map_err(proof_error)?;
        let stored_root = merkle::tree_root(&stored, size)
            .map_err(|missing| NotaryError::MissingSubtree(missing.0))?;
        if stored_root != *root {
            return Err(Refusal::Diverged {
                subtree: format!("root of {size}"),
                stored: hex::encode(stored_root),
                computed: hex::encode(root),
            }
            .into());
        }
        Ok(rules::check_extends(
            old_size,
            old_root,
            size,
            &stored_root,
            &proof,
        )?)
    }

    /// The stored checkpoint `old` verifies under one of this service's keys and says what
    /// its stored root says.
    fn check_ours(&self, old: &StoredCheckpoint) -> Result<(), Refusal> {
        let mut last_error = String::from("no key");
        for key in &self.inner.verifiers {
            match Checkpoint::open(&old.note, key, &[]) {
                Ok((checkpoint, _))
                    if checkpoint.size() == old.size && *checkpoint.root() == old.root =>
                {
                    return Ok(())
                }
                Ok(_) => last_error = "its note names another size or root".into(),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(Refusal::ForeignCheckpoint {
            size: old.size,
            reason: last_error,
        })
    }
}

fn proof_error(
    error: merkle::ProofError<cryptovault_events::merkle::MissingSubtree>,
) -> NotaryError {
    match error {
        merkle::ProofError::Invalid(e) => NotaryError::BadRange(e.to_string()),
        merkle::ProofError::Source(missing) => NotaryError::MissingSubtree(missing.0),
    }
}
